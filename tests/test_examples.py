"""The reuse example: G-Blend and OGM-GE in a user's own training loop."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments.examples import own_training_loop
from tests import train_utils


@pytest.mark.slow
def test_own_training_loop_runs_and_balances(tmp_path):
  env = {**os.environ, 'GBLEND_DATA_DIR': str(tmp_path)}  # Nothing prepared.
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.examples.own_training_loop',
       '--data', 'auto', '--steps', '40', '--batch_size', '32'],
      cwd=train_utils.REPO, env=env, capture_output=True, text=True,
      timeout=300,
  )
  assert completed.returncode == 0, completed.stderr
  out = completed.stdout
  # --data auto falls back to the synthetic views: 4 classes, chance 0.25.
  assert 'data: synthetic, 1200 examples, 4 classes, chance 0.250' in out
  accuracy = dict(re.findall(r'(\w+)=([\d.]+)', out.split('\n')[1]))
  assert float(accuracy['fused']) > 0.6
  assert float(accuracy['a']) > 0.6  # The strong view's own head.
  weights = np.array(re.search(
      r'gblend weights \[a, b, fused\]: \[(.*)\] \(sum (.*)\)', out
  ).group(1).split(', '), float)
  assert weights.shape == (3,)
  assert abs(weights.sum() - 1) < 2e-3 and (weights >= 0).all()
  # The weak view's head generalises least: it gets the smallest weight.
  assert weights.argmin() == 1
  fused = float(re.search(r'ogm_ge test accuracy: fused=([\d.]+)', out)[1])
  assert fused > 0.6
  # View a dominates: k_a = 1 - tanh(0.8 rho_a) < 1 - tanh(0.8) with rho_a
  # > 1; the weak view b is not modulated (k_b = 1).
  k_a, k_b = map(float, re.search(
      r'ogm_ge last coefficients \[a, b\]: \[(.*), (.*)\]', out).groups())
  assert k_a < 1 - np.tanh(0.8) and k_b == 1.0


def test_mfeat_views_are_the_real_standardised_views(
    data_dir, mfeat_manual_dir):
  a, b, y = own_training_loop.mfeat_views(
      ('kar', 'mor'), data_dir=data_dir, manual_dir=mfeat_manual_dir)
  assert a.shape == (2000, 64) and b.shape == (2000, 6)
  np.testing.assert_array_equal(np.bincount(y), [200] * 10)
  np.testing.assert_allclose(b.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(b.std(0), 1, atol=1e-3)
