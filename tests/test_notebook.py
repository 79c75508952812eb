"""The Colab notebook runs top to bottom, headless, on a tiny setting."""

import json
import os
import re
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests import train_utils

pytestmark = pytest.mark.slow  # Runs the whole notebook in a kernel.

NOTEBOOK = os.path.join(train_utils.REPO, 'experiments', 'colab',
                        'gblend_tpu.ipynb')
KERNEL = 'gblend-test-python'


def tiny_parameters(data_dir: str, manual_dir: str, workdir: str) -> str:
  """The cell the test inserts after the notebook's parameters cell.

  REPO_DIR stays '': the notebook finds the checkout above its folder.
  """
  return '\n'.join([
      f'DATA_DIR = {data_dir!r}',
      f'MANUAL_DIR = {manual_dir!r}',
      f'WORKDIR = {workdir!r}',
      "METHODS = ('naive', 'online')",
      'SEEDS = 1',
      'LOG_EVERY_STEPS = 1',
      "OVERRIDES = ('num_train_steps=4', 'eval_every_epochs=1',",
      "             'blend.warmup_epochs=0.0', 'blend.estimate_epochs=0.5')",
  ])


def install_kernel_spec(root) -> str:
  """A kernel spec that starts this interpreter (the .venv's), so the test
  needs no `ipykernel install` on a fresh clone; returns JUPYTER_PATH."""
  spec_dir = root / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
               '{connection_file}'],
      'display_name': 'gblend_jax test', 'language': 'python',
  }))
  return str(root)


def outputs_of(cell, kind: str) -> str:
  """All text of one kind (stream text or a display's mime type) of a cell."""
  parts = []
  for output in cell.outputs:
    if kind == 'stream' and output.output_type == 'stream':
      parts.append(output.text)
    elif kind in output.get('data', {}):
      parts.append(output.data[kind])
  return ''.join(parts)


def test_notebook_runs_on_cpu_with_a_tiny_setting(
    data_dir, mfeat_manual_dir, tmp_path, monkeypatch):
  monkeypatch.setenv('JUPYTER_PATH', install_kernel_spec(tmp_path / 'jupyter'))
  monkeypatch.setenv('JUPYTER_RUNTIME_DIR', str(tmp_path / 'runtime'))
  monkeypatch.setenv('IPYTHONDIR', str(tmp_path / 'ipython'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Committed without outputs, to keep diffs small.
  assert all(not c.get('outputs') for c in notebook.cells
             if c.cell_type == 'code')
  index = next(i for i, c in enumerate(notebook.cells)
               if 'parameters' in c.metadata.get('tags', ()))
  workdir = str(tmp_path / 'runs')
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
      tiny_parameters(data_dir, mfeat_manual_dir, workdir)))

  NotebookClient(
      notebook, kernel_name=KERNEL, timeout=300,
      resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}},
  ).execute()

  code = [c for c in notebook.cells if c.cell_type == 'code']
  streams = [outputs_of(c, 'stream') for c in code]
  install = next(s for s in streams if s.startswith('gblend_jax is'))
  assert install == ('gblend_jax is importable: nothing to install.\n'
                     f'checkout: {train_utils.REPO}\n')
  devices = next(s for s in streams if s.startswith('accelerator:'))
  assert devices.startswith('accelerator: CPU')
  assert "Mesh('data': 1" in devices
  assert 'cpu:0: rows 0 to 3 of the batch' in devices
  assert 'mfeat in ' in ''.join(streams)

  table = ''.join(outputs_of(c, 'text/markdown') for c in code)
  assert re.search(r'\| naive \| [\d.]+ ± [\d.]+ \|', table)
  weights = re.search(r'\| online \| .*? \| \[([\d., ]+)\] \|', table)
  np.testing.assert_allclose(
      sum(map(float, weights.group(1).split(', '))), 1.0, atol=2e-3)
  # The weights-and-OGR figure and the per-head accuracy figure.
  assert sum(bool(outputs_of(c, 'image/png')) for c in code) == 2

  # The last cell prints the fused test accuracy of each method's run.
  printed = json.loads(streams[-1].strip().splitlines()[-1])
  for method in ('naive', 'online'):
    run = (f'views_kar+pix__method_{method}__per_class_20__mismatch_0.7/'
           'seed_0/results.json')
    with open(os.path.join(workdir, run)) as f:
      accuracy = json.load(f)['final']['test/fused/accuracy']
    assert printed[method] == round(100 * accuracy, 2)
