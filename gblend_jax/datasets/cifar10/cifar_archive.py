"""Reading CIFAR-10/100 from the python archives, and their common builder.

The python versions of CIFAR (Krizhevsky, 2009,
https://www.cs.toronto.edu/~kriz/cifar.html) are gzipped tar files of
pickled dicts. A batch holds ``data``, uint8 [n, 3072] (row-major: the
1024 red values of the 32 x 32 image, then the green, then the blue), and
the labels as a list (``labels`` in CIFAR-10, ``fine_labels`` and
``coarse_labels`` in CIFAR-100); a meta member holds the label names. The
pickles were written by Python 2, so they are read with ``encoding='bytes'``
(dict keys come back as bytes).

The members are read from the archive in memory; nothing is extracted to
disk. Unpickling runs only the few numpy constructors an array needs: any
other global in a member is an error (a pickle can run arbitrary code).
"""

import io
import os
import pickle
import tarfile
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SHAPE = (32, 32, 3)
NUM_TRAIN = 50_000  # Test ids start here.
# The globals that unpickling a numpy array needs, by module and name
# (numpy 1 wrote numpy.core, numpy 2 writes numpy._core; Python 3 writes
# bytes as _codecs.encode calls at pickle protocols 0 to 2).
_ARRAY_GLOBALS = frozenset({
    ('_codecs', 'encode'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
})


class _ArrayUnpickler(pickle.Unpickler):
  """An unpickler of builtin containers and numpy arrays only."""

  def find_class(self, module: str, name: str):
    if (module, name) not in _ARRAY_GLOBALS:
      raise pickle.UnpicklingError(
          f'{module}.{name} is not allowed in a CIFAR batch (only numpy '
          'arrays, lists, dicts, strings and numbers are).'
      )
    return super().find_class(module, name)


def read_member(archive: tarfile.TarFile, member: str,
                archive_path: str) -> dict[str, object]:
  """Unpickles one member of an open CIFAR archive.

  Args:
    archive: The open tar file.
    member: The member's path in the archive, e.g.
      ``cifar-10-batches-py/data_batch_1``.
    archive_path: The archive's path, for error messages.

  Returns:
    The pickled dict, with its keys decoded to str.

  Raises:
    FileNotFoundError: if the archive has no such member.
  """
  try:
    handle = archive.extractfile(member)
  except KeyError:
    handle = None
  if handle is None:
    raise FileNotFoundError(
        f'{archive_path} has no member {member!r}; is it the python '
        'version of the archive?'
    )
  with handle:
    content = _ArrayUnpickler(io.BytesIO(handle.read()),
                              encoding='bytes').load()
  return {_text(key): value for key, value in content.items()}


def _text(value: bytes | str) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else value


def batch_images(data: np.ndarray, where: str) -> np.ndarray:
  """A batch's ``data`` rows as images.

  Args:
    data: uint8 ``[n, 3072]``: each row the 1024 red, 1024 green and 1024
      blue values of a 32 x 32 image, row by row.
    where: The archive member, for error messages.

  Returns:
    uint8 ``[n, 32, 32, 3]`` (height, width, channel).

  Raises:
    ValueError: if ``data`` is not ``[n, 3072]``.
  """
  data = np.asarray(data)
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise ValueError(f'{where}: data has shape {data.shape}, expected '
                     '[n, 3072].')
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)


def read_split(
    archive_path: str, members: Sequence[str], label_key: str,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
  """The images and labels of the batches ``members``, concatenated.

  Args:
    archive_path: A ``cifar-*-python.tar.gz`` file.
    members: Batch members, in order.
    label_key: ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).
    num_classes: Labels must be in ``[0, num_classes)``.

  Returns:
    ``(images uint8 [n, 32, 32, 3], labels int64 [n])``.

  Raises:
    ValueError: for a batch without ``data`` or ``label_key``, with as many
      labels as images, or with a label out of range.
  """
  images, labels = [], []
  with tarfile.open(archive_path, 'r:gz') as archive:
    for member in members:
      where = f'{archive_path}:{member}'
      batch = read_member(archive, member, archive_path)
      missing = [k for k in ('data', label_key) if k not in batch]
      if missing:
        raise ValueError(f'{where}: no {missing} in the batch; keys: '
                         f'{sorted(batch)}.')
      batch_labels = np.asarray(batch[label_key], np.int64)
      batch_data = batch_images(batch['data'], where)
      if batch_labels.shape != (len(batch_data),):
        raise ValueError(f'{where}: {len(batch_data)} images and labels of '
                         f'shape {batch_labels.shape}.')
      bad = np.flatnonzero((batch_labels < 0)
                           | (batch_labels >= num_classes))
      if bad.size:
        raise ValueError(f'{where}: label {batch_labels[bad[0]]} of row '
                         f'{bad[0]} is not in [0, {num_classes}).')
      images.append(batch_data)
      labels.append(batch_labels)
  return np.concatenate(images), np.concatenate(labels)


def read_label_names(archive_path: str, member: str, key: str) -> list[str]:
  """The label names in the archive's meta member."""
  with tarfile.open(archive_path, 'r:gz') as archive:
    meta = read_member(archive, member, archive_path)
  if key not in meta:
    raise ValueError(f'{archive_path}:{member}: no {key!r}; keys: '
                     f'{sorted(meta)}.')
  return [_text(name) for name in meta[key]]


def how_to_get(archive: str, url: str,
               manual_dir: str = '<manual_dir>') -> str:
  """Where an archive goes and where to download it.

  Args:
    archive: Its file name, e.g. ``cifar-10-python.tar.gz``.
    url: Where to download it.
    manual_dir: The manual dir, or a placeholder for it.

  Returns:
    Instructions for the user.
  """
  return (f'Expected the python version of the archive, {archive}, at '
          f'{os.path.join(manual_dir, archive)}. Download it from {url} (as '
          'is; it is read without extracting) into the manual dir '
          '(<data_dir>/downloads/manual unless data.manual_dir names '
          'another).')


def check_label_names(found: Sequence[str], expected: Sequence[str],
                      where: str) -> None:
  """Raises a ValueError naming the first label whose name differs."""
  if len(found) != len(expected):
    raise ValueError(f'{where}: {len(found)} label names, expected '
                     f'{len(expected)}; is it the right archive?')
  for label, (name, want) in enumerate(zip(found, expected, strict=True)):
    if name != want:
      raise ValueError(f'{where}: label {label} is named {name!r}, '
                       f'expected {want!r}; is it the right archive?')


class CifarBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR from its python archive in the manual dir.

  A subclass sets ``name``, ``ARCHIVE`` (the archive's file name), ``URL``
  (where to download it), ``SPLIT_MEMBERS`` (split to batch members),
  ``LABEL_KEY``, ``META_MEMBER`` and ``META_KEY`` (the label names' member
  and key), ``CLASS_NAMES`` (in label order; checked against the meta
  member) and ``MANUAL_DOWNLOAD_INSTRUCTIONS`` (``how_to_get``). Features:
  ``id`` (the row in the train batches, in order, or ``NUM_TRAIN`` + the
  row in the test batch), ``label`` and ``image`` uint8 [32, 32, 3].
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  ARCHIVE = ''
  URL = ''
  SPLIT_MEMBERS: dict[str, tuple[str, ...]] = {}
  LABEL_KEY = ''
  META_MEMBER = ''
  META_KEY = ''
  CLASS_NAMES: tuple[str, ...] = ()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Scalar(dtype=np.int64),
            'label': tfds.features.ClassLabel(names=self.CLASS_NAMES),
            'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
        }),
        supervised_keys=None,
        homepage='https://www.cs.toronto.edu/~kriz/cifar.html',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError as error:  # No manual dir, or an empty one.
      raise FileNotFoundError(str(error)) from error
    archive_path = os.path.join(manual_dir, self.ARCHIVE)
    if not os.path.isfile(archive_path):
      raise FileNotFoundError(
          f'{self.name}: {archive_path} not found. '
          + how_to_get(self.ARCHIVE, self.URL, manual_dir))
    check_label_names(
        read_label_names(archive_path, self.META_MEMBER, self.META_KEY),
        self.CLASS_NAMES, f'{archive_path}:{self.META_MEMBER}')
    return {
        split: self._generate_examples(archive_path, members,
                                       0 if split == 'train' else NUM_TRAIN)
        for split, members in self.SPLIT_MEMBERS.items()
    }

  def _generate_examples(
      self, archive_path: str, members: Sequence[str], first_id: int
  ) -> Iterator[tuple[int, dict[str, object]]]:
    images, labels = read_split(archive_path, members, self.LABEL_KEY,
                                len(self.CLASS_NAMES))
    for row, (image, label) in enumerate(zip(images, labels, strict=True)):
      example_id = first_id + row
      yield example_id, {'id': example_id, 'label': int(label),
                         'image': image}
