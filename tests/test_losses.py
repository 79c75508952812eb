"""Hand-checked values of the per-head losses."""

import math

import jax.numpy as jnp
import numpy as np

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
