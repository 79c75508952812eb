"""Fashion-MNIST: 70000 greyscale 28x28 images of clothing, 10 classes.

Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017, https://arxiv.org/abs/1708.07747,
MIT licence) as the four IDX files of the original release:
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``. Read from, in
this order (the first folder holding all four wins):

  1. the manual dir, or its ``fashion-mnist/`` folder;
  2. ``/usr/share/datasets/fashion-mnist/``, where the Debian package
     ``dataset-fashion-mnist`` puts them (SPEC §4; ``make fashion-mnist``
     installs it).

Features: ``image`` uint8 [28, 28] (one channel; the trainer reads it as
float32 in [0, 255]), ``label`` (0 T-shirt/top .. 9 ankle boot) and ``id``:
the row in the train files (0..59999) or 60000 + the row in the t10k files.
Splits: ``train`` (60000, 6000 a class) and ``test`` (10000, 1000 a class),
as released.

Named ``fashion_mnist_local``: TFDS ships a ``fashion_mnist`` builder, and two
builders of one name cannot both be registered. The registry key in
``gblend_jax.data.registry.DATASETS`` is ``fashion_mnist``.
"""

import gzip
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
CLASS_NAMES = ('t-shirt/top', 'trouser', 'pullover', 'dress', 'coat',
               'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot')
# Split -> (images file, labels file, first id).
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 0),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz',
             60_000),
}
# Where the Debian package dataset-fashion-mnist installs the files.
SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
# IDX magic numbers: unsigned bytes, 3 and 1 dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801

_HOW_TO_GET = """\
Fashion-MNIST's IDX files (train-images-idx3-ubyte.gz,
train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz) were found neither in the manual dir
{manual_dir} (or its fashion-mnist/ folder) nor in {system_dir}.
Install the Debian package that carries them:

  apt-get install -y dataset-fashion-mnist   (as root, or with sudo)

or run `make data` in the gblend_jax repo; or copy the four files from
https://github.com/zalandoresearch/fashion-mnist into the manual dir."""


class Builder(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from its IDX files (Debian package or manual dir)."""

  name = 'fashion_mnist_local'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _HOW_TO_GET.format(
      manual_dir='<manual_dir>', system_dir=SYSTEM_DIR)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Scalar(dtype=np.int64),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
            'image': tfds.features.Tensor(shape=IMAGE_SHAPE,
                                          dtype=np.uint8),
        }),
        supervised_keys=None,
        homepage='https://github.com/zalandoresearch/fashion-mnist',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = find_files(_manual_dir(dl_manager))
    return {
        split: self._generate_examples(folder, *files)
        for split, files in FILES.items()
    }

  def _generate_examples(
      self, folder: str, images_file: str, labels_file: str, first_id: int
  ) -> Iterator[tuple[int, dict[str, object]]]:
    images = read_idx(os.path.join(folder, images_file), _IMAGES_MAGIC)
    labels = read_idx(os.path.join(folder, labels_file), _LABELS_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE or len(images) != len(labels):
      raise ValueError(
          f'{folder}: {images_file} holds images {images.shape} and '
          f'{labels_file} labels {labels.shape}; expected [n, 28, 28] and '
          '[n].'
      )
    if labels.size and labels.max() >= NUM_CLASSES:
      raise ValueError(
          f'{os.path.join(folder, labels_file)}: label {labels.max()} is not '
          f'in [0, {NUM_CLASSES}).'
      )
    for row, (image, label) in enumerate(zip(images, labels, strict=True)):
      example_id = first_id + row
      yield example_id, {'id': example_id, 'label': int(label),
                         'image': image}


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> str | None:
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:  # No manual dir, or an empty one.
    return None


def find_files(manual_dir: str | None) -> str:
  """The first folder holding all four IDX files.

  Args:
    manual_dir: the builder's manual dir, or None.

  Returns:
    The manual dir, its ``fashion-mnist/`` folder, or `SYSTEM_DIR`.

  Raises:
    FileNotFoundError: saying how to get the files.
  """
  candidates = []
  if manual_dir:
    candidates += [manual_dir, os.path.join(manual_dir, 'fashion-mnist')]
  candidates.append(SYSTEM_DIR)
  needed = [name for images, labels, _ in FILES.values()
            for name in (images, labels)]
  for folder in candidates:
    if all(os.path.exists(os.path.join(folder, n)) for n in needed):
      return folder
  raise FileNotFoundError(_HOW_TO_GET.format(
      manual_dir=manual_dir or '<data_dir>/downloads/manual',
      system_dir=SYSTEM_DIR))


def read_idx(path: str, magic: int) -> np.ndarray:
  """Reads a gzipped IDX file of unsigned bytes (LeCun's MNIST format).

  The header is the big-endian int32 magic number ``0x0000080D`` (``08``:
  unsigned bytes, ``D``: number of dimensions), then ``D`` big-endian int32
  sizes; the data follow in row-major order.

  Args:
    path: a ``.gz`` IDX file.
    magic: the expected magic number (``0x803`` images, ``0x801`` labels).

  Returns:
    A uint8 array of the sizes in the header.

  Raises:
    ValueError: for a wrong magic number or a data size that does not match
      the header.
  """
  with gzip.open(path, 'rb') as f:
    content = f.read()
  found = int.from_bytes(content[:4], 'big')
  if found != magic:
    raise ValueError(
        f'{path}: magic number {found:#010x}, expected {magic:#010x}.'
    )
  ndim = magic & 0xFF
  shape = tuple(np.frombuffer(content, '>i4', count=ndim, offset=4).tolist())
  data = np.frombuffer(content, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(
        f'{path}: {data.size} bytes of data for the header shape {shape}.'
    )
  return data.reshape(shape)
