"""Proposition 1 in gradient space, checked on linear regression.

Two "modalities" are two feature subsets of a linear model. Head 1 predicts
``X1 a + c1``, head 2 ``X2 b + c2`` and the fused head ``X1 a + X2 b + cf``;
every loss is half the mean squared error. All gradients are computed in
closed form with numpy and compared with `gradient_statistics` fed by
``jax.jacrev`` of the three losses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax.blending import blend
from gblend_jax.blending import gradient_space

D1, D2 = 3, 2
ALPHA = np.array([1.0, -2.0, 0.5])
BETA = np.array([0.7, -0.4])


def _data(rng, n, flip_second=False):
  x1 = rng.normal(size=(n, D1))
  x2 = rng.normal(size=(n, D2))
  beta = -BETA if flip_second else BETA
  y = x1 @ ALPHA + x2 @ beta + 0.1 * rng.normal(size=n)
  return x1, x2, y


def _params(rng):
  return {
      'a': rng.normal(size=D1) * 0.1,
      'b': rng.normal(size=D2) * 0.1,
      'c1': np.float64(0.1),
      'c2': np.float64(-0.2),
      'cf': np.float64(0.05),
  }


def _losses(params, x1, x2, y):
  """The three losses [head 1, head 2, fused] (jax)."""
  p1 = x1 @ params['a'] + params['c1']
  p2 = x2 @ params['b'] + params['c2']
  pf = x1 @ params['a'] + x2 @ params['b'] + params['cf']
  return jnp.stack(
      [0.5 * jnp.mean((p - y) ** 2) for p in (p1, p2, pf)]
  )


def _flat(a, b, c1, c2, cf):
  return np.concatenate([a, b, [c1, c2, cf]])


def _closed_form_grads(params, x1, x2, y):
  """Per-loss gradients by hand, flattened as [a, b, c1, c2, cf]: [3, P]."""
  n = len(y)
  r1 = x1 @ params['a'] + params['c1'] - y
  r2 = x2 @ params['b'] + params['c2'] - y
  rf = x1 @ params['a'] + x2 @ params['b'] + params['cf'] - y
  zeros1, zeros2 = np.zeros(D1), np.zeros(D2)
  v1 = _flat(x1.T @ r1 / n, zeros2, r1.mean(), 0.0, 0.0)
  v2 = _flat(zeros1, x2.T @ r2 / n, 0.0, r2.mean(), 0.0)
  vf = _flat(x1.T @ rf / n, x2.T @ rf / n, 0.0, 0.0, rf.mean())
  return np.stack([v1, v2, vf])


def _jax_grads(params, x1, x2, y):
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  args = [jnp.asarray(v, jnp.float32) for v in (x1, x2, y)]
  per_loss = jax.jacrev(_losses)(params, *args)
  holdout_like = jax.grad(lambda p: _losses(p, *args)[-1])(params)
  return per_loss, holdout_like


def _problem(flip_holdout=False, seed=0):
  rng = np.random.default_rng(seed)
  params = _params(rng)
  train = _data(rng, 64)
  holdout = _data(rng, 48, flip_second=flip_holdout)
  return params, train, holdout


def _numpy_statistics(params, train, holdout):
  v = _closed_form_grads(params, *train)
  h = _closed_form_grads(params, *holdout)[-1]
  u = v[-1]
  return v @ h, (v @ (u - h)) ** 2, v, h


def test_jacrev_gradients_match_closed_form():
  params, train, _ = _problem()
  per_loss, _ = _jax_grads(params, *train)
  v = _closed_form_grads(params, *train)
  flat = np.concatenate(
      [np.asarray(per_loss[k]).reshape(3, -1)
       for k in ('a', 'b', 'c1', 'c2', 'cf')],
      axis=1,
  )
  np.testing.assert_allclose(flat, v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('flip_holdout', [False, True])
def test_statistics_equal_closed_form(flip_holdout):
  params, train, holdout = _problem(flip_holdout)
  per_loss, _ = _jax_grads(params, *train)
  _, holdout_grads = _jax_grads(params, *holdout)
  gain, sigma_sq = jax.jit(gradient_space.gradient_statistics)(
      per_loss, holdout_grads
  )
  expected_gain, expected_sigma_sq, v, h = _numpy_statistics(
      params, train, holdout
  )
  np.testing.assert_allclose(gain, expected_gain, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(sigma_sq, expected_sigma_sq, rtol=1e-4, atol=1e-7)
  # The unimodal heads' own biases do not touch the fused loss: changing
  # them changes neither statistic (they are zero in u and h).
  assert h[D1 + D2] == 0 and h[D1 + D2 + 1] == 0
  assert v[-1][D1 + D2] == 0 and v[-1][D1 + D2 + 1] == 0


def test_weights_follow_proposition_1():
  params, train, holdout = _problem()
  gain, sigma_sq, _, _ = _numpy_statistics(params, train, holdout)
  assert np.all(gain > 0)
  weights, _ = gradient_space.weights_from_statistics_with_status(
      gain, sigma_sq)
  # w_k = <∇L*, v_k> / (σ_k² Z), Z = Σ_k <∇L*, v_k> / (2σ_k²).
  z = np.sum(gain / (2 * sigma_sq))
  proposition_1 = gain / (sigma_sq * z)
  np.testing.assert_allclose(
      weights, proposition_1 / proposition_1.sum(), rtol=1e-5
  )
  np.testing.assert_allclose(weights, (gain / sigma_sq) / np.sum(
      gain / sigma_sq), rtol=1e-5)


def test_head_against_the_holdout_gradient_gets_zero_weight():
  # On held-out data the second feature subset predicts with the opposite
  # sign, so head 2's training gradient points against the held-out one.
  params, train, holdout = _problem(flip_holdout=True)
  per_loss, _ = _jax_grads(params, *train)
  _, holdout_grads = _jax_grads(params, *holdout)
  gain, sigma_sq = gradient_space.gradient_statistics(per_loss, holdout_grads)
  assert gain[1] < 0 and gain[0] > 0
  weights, used_fallback = (
      gradient_space.weights_from_statistics_with_status(gain, sigma_sq)
  )
  assert weights[1] == 0.0
  assert not bool(used_fallback)
  np.testing.assert_allclose(jnp.sum(weights), 1.0, rtol=1e-6)

  # The same through the transform, with an optax chain and one SGD step.
  opt = optax.chain(
      blend.gradient_blend(num_heads=3, estimate_every=1), optax.sgd(0.1)
  )
  state = opt.init(jax.tree.map(lambda g: g[0], per_loss))
  updates, state = jax.jit(opt.update)(
      per_loss, state, holdout_grads=holdout_grads
  )
  np.testing.assert_allclose(
      optax.tree.get(state, 'weights'), weights, rtol=1e-5, atol=1e-7
  )
  expected = jax.tree.map(
      lambda g: -0.1 * jnp.einsum('i,i...->...', weights, g), per_loss
  )
  for a, e in zip(
      jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True
  ):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7)


def test_fused_index():
  params, train, holdout = _problem()
  per_loss, _ = _jax_grads(params, *train)
  _, holdout_grads = _jax_grads(params, *holdout)
  # Fused head first instead of last.
  reordered = jax.tree.map(lambda g: g[jnp.array([2, 0, 1])], per_loss)
  gain, sigma_sq = gradient_space.gradient_statistics(
      reordered, holdout_grads, fused_index=0
  )
  expected_gain, expected_sigma_sq, _, _ = _numpy_statistics(
      params, train, holdout
  )
  np.testing.assert_allclose(gain, expected_gain[[2, 0, 1]], rtol=1e-4)
  np.testing.assert_allclose(
      sigma_sq, expected_sigma_sq[[2, 0, 1]], rtol=1e-4, atol=1e-7
  )
  with pytest.raises(ValueError, match='fused_index'):
    gradient_space.gradient_statistics(per_loss, holdout_grads, fused_index=3)
