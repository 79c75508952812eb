"""Tests of the `gblend_jax.blending.blend.gradient_blend` optax transform."""

import contextlib
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax.blending import blend
from gblend_jax.blending import gradient_space

NUM_HEADS = 3
SHAPES = {
    'encoder': {'kernel': (3, 4), 'bias': (4,)},
    'conv': (2, 2, 3),
    'scale': (),
}


def _params():
  return jax.tree.map(
      jnp.zeros, SHAPES, is_leaf=lambda x: isinstance(x, tuple)
  )


def _per_loss_grads(seed, num_heads=NUM_HEADS):
  leaves, treedef = jax.tree.flatten(
      SHAPES, is_leaf=lambda x: isinstance(x, tuple)
  )
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
      treedef,
      [
          jax.random.normal(k, (num_heads, *s))
          for k, s in zip(keys, leaves, strict=True)
      ],
  )


def _blend(weights, per_loss_grads):
  """The reference: Σ_i w_i g_i with numpy."""
  w = np.asarray(weights, np.float64)
  return jax.tree.map(
      lambda g: np.tensordot(w, np.asarray(g, np.float64), axes=1),
      per_loss_grads,
  )


def _assert_trees_close(actual, desired, rtol=1e-5, atol=1e-6):
  assert jax.tree.structure(actual) == jax.tree.structure(desired)
  for a, d in zip(
      jax.tree.leaves(actual), jax.tree.leaves(desired), strict=True
  ):
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol)


WEIGHTS = jnp.array([0.5, 0.2, 0.3])


@pytest.mark.parametrize('jit', [False, True])
def test_equals_weighted_sum(jit):
  tx = blend.gradient_blend(WEIGHTS)
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(_params())
  grads = _per_loss_grads(0)
  updates, state = update(grads, state)
  _assert_trees_close(updates, _blend(WEIGHTS, grads))
  assert jax.tree.map(jnp.shape, updates) == jax.tree.map(
      jnp.shape, _params()
  )
  np.testing.assert_allclose(optax.tree.get(state, 'weights'), WEIGHTS)
  assert int(state.count) == 1


def test_default_weights_are_uniform():
  tx = blend.gradient_blend(num_heads=NUM_HEADS)
  state = tx.init(_params())
  np.testing.assert_allclose(state.weights, np.full(NUM_HEADS, 1 / 3))
  grads = _per_loss_grads(1)
  updates, _ = tx.update(grads, state)
  _assert_trees_close(updates, _blend(np.full(3, 1 / 3), grads))


def test_keeps_gradient_dtype():
  tx = blend.gradient_blend(WEIGHTS)
  grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), _per_loss_grads(2))
  updates, _ = tx.update(grads, tx.init(_params()))
  for leaf in jax.tree.leaves(updates):
    assert leaf.dtype == jnp.bfloat16


def test_in_chain_with_sgd():
  opt = optax.chain(blend.gradient_blend(WEIGHTS), optax.sgd(0.1))
  state = opt.init(_params())
  grads = _per_loss_grads(3)
  updates, state = jax.jit(opt.update)(grads, state, _params())
  _assert_trees_close(
      updates, jax.tree.map(lambda g: -0.1 * g, _blend(WEIGHTS, grads))
  )
  np.testing.assert_allclose(optax.tree.get(state, 'weights'), WEIGHTS)


def test_in_inject_hyperparams():
  opt = optax.inject_hyperparams(
      lambda learning_rate: optax.chain(
          blend.gradient_blend(WEIGHTS), optax.sgd(learning_rate)
      )
  )(learning_rate=0.1)
  state = opt.init(_params())
  np.testing.assert_allclose(optax.tree.get(state, 'weights'), WEIGHTS)
  grads = _per_loss_grads(4)
  update = jax.jit(opt.update)
  updates, state = update(grads, state, _params())
  _assert_trees_close(
      updates, jax.tree.map(lambda g: -0.1 * g, _blend(WEIGHTS, grads))
  )
  # The learning rate is a hyperparameter; the weights extra arg reaches the
  # blend through the wrapper.
  state.hyperparams['learning_rate'] = jnp.array(1.0)
  new_weights = jnp.array([0.0, 1.0, 0.0])
  updates, state = update(grads, state, _params(), weights=new_weights)
  _assert_trees_close(
      updates, jax.tree.map(lambda g: -g, _blend(new_weights, grads))
  )
  np.testing.assert_allclose(optax.tree.get(state, 'weights'), new_weights)


def test_inject_hyperparams_of_the_transform_itself():
  opt = optax.inject_hyperparams(
      blend.gradient_blend,
      static_args=('num_heads', 'estimate_every', 'fused_index'),
  )(num_heads=NUM_HEADS, estimate_every=1, decay=0.5)
  state = opt.init(_params())
  grads = _per_loss_grads(5)
  holdout = jax.tree.map(lambda g: g[-1] + g[0], grads)
  updates, state = jax.jit(opt.update)(
      grads, state, _params(), holdout_grads=holdout
  )
  gain, sigma_sq = gradient_space.gradient_statistics(grads, holdout)
  expected, _ = gradient_space.weights_from_statistics_with_status(
      gain, sigma_sq, 1e-8)
  np.testing.assert_allclose(
      optax.tree.get(state, 'weights'), expected, rtol=1e-5
  )
  _assert_trees_close(updates, _blend(expected, grads))


@pytest.mark.parametrize('estimate_every', [0, 1])
def test_multi_steps_wrapping_the_chain_is_refused(estimate_every):
  # MultiSteps(chain(blend, adam)).init(per_loss_grads) gives adam a state
  # with the loss axis: the updates keep it and apply_updates would
  # broadcast the parameters to it. The blend sees that it was initialised
  # with gradients and raises.
  opt = optax.MultiSteps(
      optax.chain(
          blend.gradient_blend(num_heads=NUM_HEADS,
                               estimate_every=estimate_every),
          optax.adam(0.1)),
      every_k_schedule=2,
  )
  state = opt.init(_per_loss_grads(0))
  g1 = _per_loss_grads(6)
  with pytest.raises(ValueError, match='initialised with a tree shaped like'):
    opt.update(g1, state, _params(), holdout_grads=_holdout_like(g1, 1))


def test_multi_steps_after_the_blend():
  opt = optax.chain(
      blend.gradient_blend(WEIGHTS),
      optax.MultiSteps(optax.adam(0.1), every_k_schedule=2),
  )
  reference = optax.adam(0.1)
  state = opt.init(_params())
  g1, g2 = _per_loss_grads(6), _per_loss_grads(7)
  updates, state = opt.update(g1, state, _params())
  updates, state = opt.update(g2, state, _params())
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected, _ = reference.update(
      jax.tree.map(jnp.asarray, _blend(WEIGHTS, mean)),
      reference.init(_params()),
  )
  _assert_trees_close(updates, expected)


def test_weights_extra_arg_replaces_state_weights():
  tx = blend.gradient_blend(WEIGHTS)
  state = tx.init(_params())
  grads = _per_loss_grads(8)
  new_weights = jnp.array([0.1, 0.1, 0.8])
  updates, state = tx.update(grads, state, weights=new_weights)
  _assert_trees_close(updates, _blend(new_weights, grads))
  np.testing.assert_allclose(state.weights, new_weights)
  # The new weights persist.
  updates, state = tx.update(grads, state)
  _assert_trees_close(updates, _blend(new_weights, grads))


def test_wrong_leading_axis_raises_naming_the_shape():
  tx = blend.gradient_blend(WEIGHTS)
  state = tx.init(_params())
  grads = _per_loss_grads(9, num_heads=2)
  with pytest.raises(ValueError, match=r'has shape \(2, 2, 2, 3\)'):
    tx.update(grads, state)
  with pytest.raises(ValueError, match=r'has shape \(2, 2, 2, 3\)'):
    jax.jit(tx.update)(grads, state)
  with pytest.raises(ValueError, match='shape'):
    tx.update(grads, state, weights=jnp.ones(2) / 2)


def test_construction_errors():
  with pytest.raises(ValueError, match='num_heads'):
    blend.gradient_blend()
  with pytest.raises(ValueError, match='num_heads'):
    blend.gradient_blend(WEIGHTS, num_heads=2)
  with pytest.raises(ValueError, match='shape'):
    blend.gradient_blend(jnp.ones((2, 2)))


class _ListHandler(logging.Handler):

  def __init__(self, records):
    super().__init__()
    self.records = records

  def emit(self, record):
    self.records.append(record.getMessage())


@contextlib.contextmanager
def _log_compilations():
  """Collects JAX's 'Finished ... compilation' log lines (like optax's)."""
  records = []
  handler = _ListHandler(records)
  logger = logging.getLogger('jax')
  logger.addHandler(handler)
  compilations = []
  try:
    with jax.log_compiles():
      yield compilations
  finally:
    logger.removeHandler(handler)
    compilations.extend(
        r for r in records if re.search(r'Finished .* compilation', r)
    )


def test_second_jitted_call_compiles_nothing():
  opt = optax.chain(
      blend.gradient_blend(WEIGHTS, estimate_every=2), optax.sgd(0.1)
  )

  @jax.jit
  def step(per_loss_grads, holdout, state, weights):
    return opt.update(
        per_loss_grads, state, _params(), holdout_grads=holdout,
        weights=weights,
    )

  state = opt.init(_params())
  inputs = []
  for seed in (10, 11, 12):
    grads = _per_loss_grads(seed)
    inputs.append((grads, _holdout_like(grads, seed + 100)))
  new_weights = jnp.array([0.2, 0.2, 0.6])
  with _log_compilations() as first:
    _, state = step(*inputs[0], state, WEIGHTS)
  assert first, 'the compile counter saw no compilation'
  with _log_compilations() as second:
    for grads, holdout in inputs[1:]:
      _, state = step(grads, holdout, state, new_weights)
  assert not second, second
  assert step._cache_size() == 1


def _holdout_like(grads, seed):
  """A held-out gradient correlated with the fused training gradient."""
  noise = _per_loss_grads(seed, num_heads=1)
  return jax.tree.map(lambda g, n: g[-1] + 0.5 * n[0], grads, noise)


def test_estimation_sets_weights_from_bias_corrected_ema():
  decay = 0.5
  tx = blend.gradient_blend(
      num_heads=NUM_HEADS, estimate_every=1, decay=decay
  )
  update = jax.jit(tx.update)
  state = tx.init(_params())
  grads1 = _per_loss_grads(20)
  holdout1 = _holdout_like(grads1, 21)
  updates, state = update(grads1, state, holdout_grads=holdout1)
  gain1, sigma_sq1 = gradient_space.gradient_statistics(grads1, holdout1)
  # First estimate: the bias-corrected EMA is the batch estimate.
  w1, _ = gradient_space.weights_from_statistics_with_status(
      gain1, sigma_sq1, 1e-8)
  np.testing.assert_allclose(state.weights, w1, rtol=1e-5)
  _assert_trees_close(updates, _blend(w1, grads1))
  np.testing.assert_allclose(state.gain, (1 - decay) * gain1, rtol=1e-5)
  assert int(state.estimate_count) == 1
  assert not bool(state.used_fallback)

  grads2 = _per_loss_grads(22)
  holdout2 = _holdout_like(grads2, 23)
  _, state = update(grads2, state, holdout_grads=holdout2)
  gain2, sigma_sq2 = gradient_space.gradient_statistics(grads2, holdout2)
  correction = 1 - decay**2
  ema_gain = (decay * (1 - decay) * gain1 + (1 - decay) * gain2) / correction
  ema_sigma_sq = (
      decay * (1 - decay) * sigma_sq1 + (1 - decay) * sigma_sq2
  ) / correction
  np.testing.assert_allclose(
      state.weights,
      gradient_space.weights_from_statistics_with_status(
          ema_gain, ema_sigma_sq, 1e-8)[0],
      rtol=1e-5,
  )


def test_estimate_every_skips_steps():
  tx = blend.gradient_blend(WEIGHTS, estimate_every=2)
  state = tx.init(_params())
  grads = _per_loss_grads(30)
  holdout = _holdout_like(grads, 31)
  _, state = tx.update(grads, state, holdout_grads=holdout)  # count 0
  estimated = state.weights
  assert not np.allclose(estimated, WEIGHTS)
  other = _per_loss_grads(32)
  _, state = tx.update(
      other, state, holdout_grads=_holdout_like(other, 33)
  )  # count 1: no estimate.
  np.testing.assert_array_equal(state.weights, estimated)
  assert int(state.estimate_count) == 1
  _, state = tx.update(
      other, state, holdout_grads=_holdout_like(other, 33)
  )  # count 2: estimate.
  assert int(state.estimate_count) == 2


@pytest.mark.parametrize('kwargs', [
    {}, {'estimate': True}, {'holdout_gradients': None}])
def test_estimating_without_holdout_grads_raises(kwargs):
  # Formerly the weights silently stayed uniform (estimate_count 0).
  tx = blend.gradient_blend(WEIGHTS, estimate_every=1)
  state = tx.init(_params())
  error = TypeError if kwargs.get('estimate') is None and kwargs else (
      ValueError)
  match = "did you mean 'holdout_grads'" if error is TypeError else (
      'got no holdout_grads')
  with pytest.raises(error, match=match):
    tx.update(_per_loss_grads(34), state, **kwargs)
  # The cheap path's non-estimating update needs none.
  _, state = tx.update(_per_loss_grads(34), state, estimate=False)
  np.testing.assert_array_equal(state.weights, WEIGHTS)


def test_params_shaped_grads_and_negative_weights_raise():
  tx = blend.gradient_blend(WEIGHTS)
  state = tx.init(_params())
  grads = _per_loss_grads(1)
  wrong = jax.tree.map(lambda g: g[:, None], grads)  # [H, 1, *shape]
  with pytest.raises(ValueError, match=r'expected \(H, \*'):
    tx.update(wrong, state, _params())
  with pytest.raises(ValueError, match='finite and >= 0'):
    blend.gradient_blend(jnp.array([0.5, -0.1, 0.6]))
  with pytest.raises(ValueError, match='finite and >= 0'):
    tx.update(grads, state, weights=jnp.array([0.5, jnp.nan, 0.5]))


def test_no_positive_gain_falls_back_to_previous_weights():
  tx = blend.gradient_blend(WEIGHTS, estimate_every=1)
  state = tx.init(_params())
  grads = _per_loss_grads(40)
  # The held-out gradient points against every training gradient.
  holdout = jax.tree.map(lambda g: -jnp.sum(g, axis=0), grads)
  gain, _ = gradient_space.gradient_statistics(grads, holdout)
  assert np.all(gain < 0)
  updates, state = jax.jit(tx.update)(grads, state, holdout_grads=holdout)
  np.testing.assert_allclose(state.weights, WEIGHTS)
  assert bool(state.used_fallback)
  _assert_trees_close(updates, _blend(WEIGHTS, grads))


def test_non_finite_statistics_keep_everything():
  tx = blend.gradient_blend(WEIGHTS, estimate_every=1)
  state = tx.init(_params())
  grads = _per_loss_grads(41)
  holdout = jax.tree.map(lambda g: jnp.full(g.shape[1:], jnp.nan), grads)
  _, new_state = tx.update(grads, state, holdout_grads=holdout)
  np.testing.assert_array_equal(new_state.weights, WEIGHTS)
  np.testing.assert_array_equal(new_state.gain, state.gain)
  assert int(new_state.estimate_count) == 0
  assert bool(new_state.used_fallback)


def test_holdout_shape_mismatch_raises():
  tx = blend.gradient_blend(WEIGHTS, estimate_every=1)
  state = tx.init(_params())
  grads = _per_loss_grads(42)
  holdout = jax.tree.map(lambda g: g, grads)  # Still has the loss axis.
  with pytest.raises(ValueError, match='holdout_grads'):
    tx.update(grads, state, holdout_grads=holdout)
