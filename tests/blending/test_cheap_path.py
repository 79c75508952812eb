"""The public cheap path, linen and nnx, against ``∇(Σ_k w_k L_k)``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gblend_jax

W = jnp.array([0.2, 0.3, 0.5])
X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
Y = jnp.arange(8) % 3


def _blend(weights, per_loss):
  return jax.tree.map(lambda g: jnp.einsum('i,i...->...', weights, g),
                      per_loss)


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6), a, b)


class LinenNet(nn.Module):
  """Dropout and BatchNorm: the state users find hard."""

  @nn.compact
  def __call__(self, x):
    h = nn.BatchNorm(use_running_average=False)(nn.Dense(8)(x))
    h = nn.Dropout(0.5, deterministic=False)(nn.relu(h))
    return jnp.stack([nn.Dense(3, name=f'head_{k}')(h) for k in range(3)])


def _ce(logits):
  return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


@pytest.mark.parametrize('estimate', [True, False])
def test_linen_blend_equals_gradient_of_weighted_sum(estimate):
  model = LinenNet()
  variables = model.init({'params': jax.random.key(0),
                          'dropout': jax.random.key(1)}, X)

  def head_losses(params):
    logits, new = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, X,
        rngs={'dropout': jax.random.key(2)}, mutable=['batch_stats'])
    return jax.vmap(_ce)(logits), new

  out = gblend_jax.gradient_blend_grads(
      head_losses, variables['params'], W, estimate=estimate,
      holdout_loss=lambda p, aux: head_losses(p)[0][-1], has_aux=True)
  expected = jax.grad(lambda p: jnp.dot(W, head_losses(p)[0]))(
      variables['params'])
  _close(_blend(W, out.grads), expected)
  assert out.update_kwargs['estimate'] is estimate
  assert ('holdout_grads' in out.update_kwargs) is estimate
  assert 'batch_stats' in out.aux
  # The transform takes either: it re-estimates only when told to.
  tx = gblend_jax.gradient_blend(W, estimate_every=10)
  updates, state = tx.update(out.grads, tx.init(variables['params']),
                             variables['params'], **out.update_kwargs)
  assert int(state.estimate_count) == int(estimate)
  _close(updates, _blend(state.weights, out.grads))


def test_estimate_needs_holdout_and_a_static_flag():
  with pytest.raises(ValueError, match='needs holdout_loss'):
    gblend_jax.gradient_blend_grads(lambda p: p * W, 1.0, W, estimate=True)
  with pytest.raises(TypeError, match='Python bool'):
    gblend_jax.gradient_blend_grads(lambda p: p * W, 1.0, W,
                                    estimate=jnp.bool_(True))
  assert [gblend_jax.is_estimate_step(i, 3) for i in range(4)] == [
      True, False, False, True]


class NnxNet(nnx.Module):

  def __init__(self, rngs):
    self.encoder = nnx.Linear(4, 8, rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.heads = nnx.List([nnx.Linear(8, 3, rngs=rngs) for _ in range(3)])

  def __call__(self, x):
    h = self.dropout(nnx.relu(self.norm(self.encoder(x))))
    return jnp.stack([head(h) for head in self.heads])


def _nnx_losses(model):
  return jax.vmap(_ce)(model(X))


@pytest.mark.parametrize('estimate', [True, False])
def test_nnx_blend_equals_gradient_of_weighted_sum(estimate):
  model = NnxNet(nnx.Rngs(0, dropout=1))
  twin = nnx.clone(model)
  out = nnx.jit(lambda m: gblend_jax.nnx_gradient_blend_grads(
      _nnx_losses, m, W, estimate=estimate,
      holdout_loss=lambda m: _nnx_losses(m)[-1]))(model)
  expected = nnx.jit(nnx.grad(lambda m: jnp.dot(W, _nnx_losses(m))))(twin)
  _close(nnx.as_pure(_blend(W, out.grads)), nnx.as_pure(expected))
  # The training pass updated the state once, as nnx.grad did the twin's.
  state = lambda m: nnx.as_pure(nnx.state(m, (nnx.BatchStat, nnx.RngCount)))
  _close(state(model), state(twin))
  assert int(model.dropout.rngs.count[...]) == 1


def test_nnx_optimizer_estimates_and_weights_read_back():
  model = NnxNet(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, optax.chain(
      gblend_jax.gradient_blend(num_heads=3, estimate_every=2),
      optax.sgd(0.1)), wrt=nnx.Param)
  per_loss, _, _ = gblend_jax.nnx_per_loss_grads(_nnx_losses, nnx.clone(model))

  @nnx.jit(static_argnames='estimate')
  def step(model, optimizer, estimate):
    out = gblend_jax.nnx_gradient_blend_grads(
        _nnx_losses, model,
        gblend_jax.opt_state_value(optimizer, 'weights'), estimate=estimate,
        holdout_loss=lambda m: _nnx_losses(m)[-1])
    optimizer.update(model, out.grads, **out.update_kwargs)

  step(model, optimizer, estimate=True)
  weights = gblend_jax.opt_state_value(optimizer, 'weights')
  assert isinstance(weights, jax.Array)
  assert not np.allclose(weights, 1 / 3)
  assert int(gblend_jax.opt_state_value(optimizer, 'estimate_count')) == 1
  step(model, optimizer, estimate=False)
  np.testing.assert_array_equal(
      gblend_jax.opt_state_value(optimizer, 'weights'), weights)
  assert jax.tree.leaves(nnx.as_pure(per_loss))[0].shape[0] == 3
