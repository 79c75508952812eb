"""Tests of `gblend_jax.blending.blend.blend_weights` (Algorithm 1's
weight rule)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.blending import blend
from gblend_jax.blending import gradient_space
from gblend_jax.blending import ogr


def test_hand_computed_values():
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.4]), jnp.array([0.1, 0.5, 0.2])
  )
  # raw = G / O² = [20, 0.4, 10], sum 30.4.
  np.testing.assert_allclose(weights, np.array([20, 0.4, 10]) / 30.4, rtol=1e-6)
  assert weights.dtype == jnp.float32
  np.testing.assert_allclose(jnp.sum(weights), 1.0, rtol=1e-6)


@pytest.mark.parametrize('bad_gain', [0.0, -0.3])
def test_non_positive_gain_gets_zero_weight_never_a_sign_flip(bad_gain):
  weights = blend.blend_weights(
      jnp.array([0.2, bad_gain, 0.4]), jnp.array([0.1, 0.5, 0.2])
  )
  np.testing.assert_allclose(weights, np.array([20, 0, 10]) / 30, rtol=1e-6)


@pytest.mark.parametrize('overfit', [0.0, -0.5])
def test_non_positive_overfit_is_clipped_at_eps(overfit):
  eps = 1e-3
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1]), jnp.array([0.1, overfit]), eps=eps
  )
  raw = np.array([0.2 / 0.1**2, 0.1 / eps**2])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-5)


def test_default_eps_gives_a_finite_dominant_weight():
  weights = blend.blend_weights(jnp.array([0.2, 0.1]), jnp.array([0.1, 0.0]))
  raw = np.array([0.2 / 0.1**2, 0.1 / 1e-6**2])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-5)
  assert np.all(np.isfinite(weights))


def test_all_heads_failing_uses_uniform_fallback_and_says_so():
  weights, used_fallback = blend.blend_weights_with_status(
      jnp.array([-0.1, 0.0, jnp.nan, 0.3]),
      jnp.array([0.1, 0.1, 0.1, jnp.inf]),
  )
  np.testing.assert_allclose(weights, np.full(4, 0.25))
  assert bool(used_fallback)


def test_given_fallback_is_returned():
  fallback = jnp.array([0.5, 0.3, 0.2])
  weights, used_fallback = blend.blend_weights_with_status(
      -jnp.ones(3), jnp.ones(3), fallback=fallback
  )
  np.testing.assert_allclose(weights, fallback)
  assert bool(used_fallback)
  np.testing.assert_allclose(
      blend.blend_weights(-jnp.ones(3), jnp.ones(3), fallback=fallback),
      fallback,
  )


def test_status_is_false_when_a_head_is_valid():
  _, used_fallback = blend.blend_weights_with_status(
      jnp.array([-0.1, 0.2]), jnp.array([0.1, 0.1])
  )
  assert not bool(used_fallback)


@pytest.mark.parametrize(
    'gains, overfits',
    [
        ([0.2, jnp.nan, 0.4], [0.1, 0.5, 0.2]),
        ([0.2, jnp.inf, 0.4], [0.1, 0.5, 0.2]),
        ([0.2, 0.1, 0.4], [0.1, jnp.nan, 0.2]),
        ([0.2, 0.1, 0.4], [0.1, jnp.inf, 0.2]),
        ([0.2, 0.1, 0.4], [0.1, -jnp.inf, 0.2]),
    ],
)
def test_non_finite_input_gets_zero_weight(gains, overfits):
  weights = blend.blend_weights(jnp.array(gains), jnp.array(overfits))
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights, np.array([20, 0, 10]) / 30, rtol=1e-6)


def test_huge_ratios_stay_finite_and_normalised():
  weights = blend.blend_weights(
      jnp.array([1e30, 1e30, 1.0]), jnp.array([0.0, 0.0, 1.0])
  )
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights, [0.5, 0.5, 0.0], atol=1e-6)


def test_under_jit():
  fn = jax.jit(blend.blend_weights_with_status)
  weights, used_fallback = fn(
      jnp.array([0.2, 0.1, 0.4]), jnp.array([0.1, 0.5, 0.2])
  )
  np.testing.assert_allclose(weights, np.array([20, 0.4, 10]) / 30.4, rtol=1e-6)
  assert not bool(used_fallback)
  weights, used_fallback = fn(-jnp.ones(3), jnp.ones(3))
  np.testing.assert_allclose(weights, np.full(3, 1 / 3))
  assert bool(used_fallback)


def test_shape_errors():
  with pytest.raises(ValueError, match='shape'):
    blend.blend_weights(jnp.ones(3), jnp.ones(2))
  with pytest.raises(ValueError, match='fallback'):
    blend.blend_weights(jnp.ones(3), jnp.ones(3), fallback=jnp.ones(2))


def test_weights_from_statistics_rules():
  weights, used_fallback = gradient_space.weights_from_statistics_with_status(
      jnp.array([2.0, -1.0, 1.0, 1.0]), jnp.array([4.0, 1.0, 0.0, jnp.nan]),
      eps=0.5,
  )
  raw = np.array([2.0 / 4.0, 0.0, 1.0 / 0.5, 0.0])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-6)
  assert not bool(used_fallback)


@pytest.mark.parametrize('module', [blend, ogr, gradient_space])
def test_doctests(module):
  result = doctest.testmod(module)
  assert result.attempted > 0, f'{module.__name__} has no doctest examples'
  assert result.failed == 0
