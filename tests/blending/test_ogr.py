"""Tests of `gblend_jax.blending.ogr` on a hand-made loss history."""

import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax.blending import blend
from gblend_jax.blending import ogr

# Three heads (audio, video, fused) at checkpoints N and N+n.
TRAIN_BEFORE = jnp.array([1.00, 0.90, 0.80])
HOLDOUT_BEFORE = jnp.array([1.10, 1.00, 1.00])
TRAIN_AFTER = jnp.array([0.80, 0.50, 0.30])
HOLDOUT_AFTER = jnp.array([1.00, 1.05, 0.90])
# By hand:
#   O_N     = [0.10, 0.10, 0.20]
#   O_{N+n} = [0.20, 0.55, 0.60]
#   ΔO      = [0.10, 0.45, 0.40]
#   ΔG      = [0.10, -0.05, 0.10]
#   OGR     = [1.0, 9.0, 4.0]


def test_components():
  np.testing.assert_allclose(
      ogr.overfitting(TRAIN_BEFORE, HOLDOUT_BEFORE), [0.1, 0.1, 0.2], atol=1e-6
  )
  np.testing.assert_allclose(
      ogr.generalization_gain(HOLDOUT_BEFORE, HOLDOUT_AFTER),
      [0.1, -0.05, 0.1],
      atol=1e-6,
  )
  np.testing.assert_allclose(
      ogr.overfitting_delta(
          TRAIN_BEFORE, HOLDOUT_BEFORE, TRAIN_AFTER, HOLDOUT_AFTER
      ),
      [0.1, 0.45, 0.4],
      atol=1e-6,
  )
  np.testing.assert_allclose(
      ogr.ogr(TRAIN_BEFORE, HOLDOUT_BEFORE, TRAIN_AFTER, HOLDOUT_AFTER),
      [1.0, 9.0, 4.0],
      rtol=1e-5,
  )


def test_report_and_algorithm_1_weights():
  report = ogr.OGRReport.from_losses(
      TRAIN_BEFORE, HOLDOUT_BEFORE, TRAIN_AFTER, HOLDOUT_AFTER
  )
  np.testing.assert_allclose(report.gain, [0.1, -0.05, 0.1], atol=1e-6)
  np.testing.assert_allclose(report.overfit_delta, [0.1, 0.45, 0.4], atol=1e-6)
  np.testing.assert_allclose(
      report.overfitting_before, [0.1, 0.1, 0.2], atol=1e-6
  )
  np.testing.assert_allclose(
      report.overfitting_after, [0.2, 0.55, 0.6], atol=1e-6
  )
  np.testing.assert_allclose(report.ogr, [1.0, 9.0, 4.0], rtol=1e-5)
  # Algorithm 1: w = G / O² = [10, 0 (worse), 0.625] / 10.625.
  weights = blend.blend_weights(report.gain, report.overfit_delta)
  np.testing.assert_allclose(
      weights, np.array([10.0, 0.0, 0.625]) / 10.625, rtol=1e-4
  )


def test_zero_gain_gives_infinite_ogr():
  ratio = ogr.ogr(
      jnp.array([1.0, 1.0]), jnp.array([1.2, 1.2]),
      jnp.array([0.9, 1.0]), jnp.array([1.2, 1.2]),
  )
  np.testing.assert_array_equal(ratio, [np.inf, np.inf])


def test_accuracy_mode_flips_signs():
  # Accuracies: higher is better.
  report = ogr.OGRReport.from_losses(
      train_before=jnp.array([0.60, 0.70]),
      holdout_before=jnp.array([0.55, 0.60]),
      train_after=jnp.array([0.80, 0.95]),
      holdout_after=jnp.array([0.70, 0.58]),
      higher_is_better=True,
  )
  # G = acc^V_{N+n} - acc^V_N; O = acc^T - acc^V.
  np.testing.assert_allclose(report.gain, [0.15, -0.02], atol=1e-6)
  np.testing.assert_allclose(report.overfitting_before, [0.05, 0.10], atol=1e-6)
  np.testing.assert_allclose(report.overfitting_after, [0.10, 0.37], atol=1e-6)
  np.testing.assert_allclose(report.overfit_delta, [0.05, 0.27], atol=1e-6)
  np.testing.assert_allclose(report.ogr, [1 / 3, 13.5], rtol=1e-4)
  np.testing.assert_allclose(
      ogr.generalization_gain(
          jnp.array([0.55]), jnp.array([0.70]), higher_is_better=True
      ),
      [0.15],
      atol=1e-6,
  )


def test_under_jit():
  report = jax.jit(ogr.OGRReport.from_losses)(
      TRAIN_BEFORE, HOLDOUT_BEFORE, TRAIN_AFTER, HOLDOUT_AFTER
  )
  np.testing.assert_allclose(report.ogr, [1.0, 9.0, 4.0], rtol=1e-5)
