"""The reuse examples: G-Blend and OGM-GE in a user's own loop (linen, nnx).

Both run as a copied file would: by path, from a directory outside the
repository, with only the package importable.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments.examples import own_training_loop
from tests import train_utils

EXAMPLES = os.path.join(train_utils.REPO, 'experiments', 'examples')


def _run_outside_the_repo(script, tmp_path, *flags):
  env = {**os.environ, 'GBLEND_DATA_DIR': str(tmp_path),  # Nothing prepared.
         'PYTHONPATH': train_utils.REPO}  # The package only, as installed.
  completed = subprocess.run(
      [sys.executable, os.path.join(EXAMPLES, script), *flags],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
  )
  assert completed.returncode == 0, completed.stderr
  return completed.stdout


def _check_output(out, steps):
  accuracy = dict(re.findall(r'(\w+)=([\d.]+)', out.split('\n')[1]))
  assert float(accuracy['fused']) > 0.6
  match = re.search(
      r'gblend weights \[a, b, fused\]: \[(.*)\] \(sum (.*)\), (\d+) '
      r'estimates', out)
  weights = np.array(match.group(1).split(', '), float)
  assert weights.shape == (3,)
  assert abs(weights.sum() - 1) < 2e-3 and (weights >= 0).all()
  # The cheap path estimated on steps 0, 10, 20, ... only.
  assert int(match.group(3)) == -(-steps // 10)
  fused = float(re.search(r'ogm_ge test accuracy: fused=([\d.]+)', out)[1])
  assert fused > 0.6
  # View a dominates: k_a = 1 - tanh(0.8 rho_a) < 1 - tanh(0.8) with rho_a
  # > 1; the weak view b is not modulated (k_b = 1).
  k_a, k_b = map(float, re.search(
      r'ogm_ge last coefficients \[a, b\]: \[([\d.]+), ([\d.]+)\]',
      out).groups())
  assert k_a < 1 - np.tanh(0.8) and k_b == 1.0


@pytest.mark.slow
def test_linen_example_runs_outside_the_repo(tmp_path):
  out = _run_outside_the_repo('own_training_loop.py', tmp_path, '--data',
                              'auto', '--steps', '40', '--batch_size', '32')
  # --data auto falls back to the synthetic views: 4 classes, chance 0.25.
  assert 'data: synthetic, 1200 examples, 4 classes, chance 0.250' in out
  _check_output(out, 40)


@pytest.mark.slow
def test_nnx_example_runs_outside_the_repo(tmp_path):
  out = _run_outside_the_repo('own_training_loop_nnx.py', tmp_path,
                              '--steps', '40', '--batch_size', '32')
  _check_output(out, 40)


def test_mfeat_views_are_the_real_standardised_views(
    data_dir, mfeat_manual_dir):
  a, b, y = own_training_loop.mfeat_views(
      ('kar', 'mor'), data_dir=data_dir, manual_dir=mfeat_manual_dir)
  assert a.shape == (2000, 64) and b.shape == (2000, 6)
  np.testing.assert_array_equal(np.bincount(y), [200] * 10)
  np.testing.assert_allclose(b.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(b.std(0), 1, atol=1e-3)
