"""Hand-checked values of the per-head losses."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax import losses


def test_cross_entropy_matches_hand_value():
  # Logits (0, ln 3) for label 1: p = 3/4, loss = ln(4/3).
  # Logits (0, 0) for label 0: p = 1/2, loss = ln 2.
  logits = jnp.array([[0.0, math.log(3.0)], [0.0, 0.0]])
  labels = jnp.array([1, 0])
  expected = (math.log(4 / 3) + math.log(2)) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected,
                             rtol=1e-6)


def test_mask_excludes_padding():
  logits = jnp.array([[0.0, math.log(3.0)], [5.0, -5.0]])
  labels = jnp.array([1, 1])
  mask = jnp.array([1.0, 0.0])
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, mask),
                             math.log(4 / 3), rtol=1e-6)


def test_weighted_loss_is_sum_of_weighted_heads():
  per_head = {'fused': jnp.float32(2.0), 'a': jnp.float32(3.0),
              'b': jnp.float32(5.0)}
  total = losses.weighted_loss(per_head, {'fused': 0.5, 'a': 0.25})
  assert float(total) == pytest.approx(0.5 * 2 + 0.25 * 3)


def test_weighted_loss_rejects_unknown_head():
  with pytest.raises(ValueError, match=r"\['video'\]"):
    losses.weighted_loss({'fused': jnp.float32(1.0)}, {'video': 1.0})
