"""Checks of `gradient_blend` on 8 CPU devices, run in a subprocess.

Run by `test_multi_device.py` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; JAX must see 8
devices from the start, which the main test process may not. Exits non-zero
(via an uncaught exception) when a check fails.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gblend_jax.blending import blend
from gblend_jax.blending import gradient_space

NUM_DEVICES = 8
NUM_HEADS = 3
SHAPES = {'kernel': (16, 4), 'bias': (8,), 'scale': ()}


def _random_tree(key, leading):
  leaves, treedef = jax.tree.flatten(
      SHAPES, is_leaf=lambda x: isinstance(x, tuple)
  )
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef,
      [
          jax.random.normal(k, (*leading, *s))
          for k, s in zip(keys, leaves, strict=True)
      ],
  )


def _inputs(key, leading):
  """Per-loss gradients around a shared direction, and a held-out gradient."""
  k_base, k_noise, k_holdout = jax.random.split(key, 3)
  base = _random_tree(k_base, ())
  noise = _random_tree(k_noise, (*leading, NUM_HEADS))
  per_loss = jax.tree.map(lambda b, n: b + 0.8 * n, base, noise)
  holdout_noise = _random_tree(k_holdout, leading)
  holdout = jax.tree.map(lambda b, n: b + 0.5 * n, base, holdout_noise)
  return per_loss, holdout


def check_pmap():
  tx = blend.gradient_blend(
      num_heads=NUM_HEADS, axis_name='d', estimate_every=1
  )
  per_loss, holdout = _inputs(jax.random.key(0), (NUM_DEVICES,))
  state = tx.init(None)
  replicated = jax.tree.map(
      lambda x: jnp.broadcast_to(x, (NUM_DEVICES, *x.shape)), state
  )

  def step(per_loss, holdout, state):
    return tx.update(per_loss, state, holdout_grads=holdout)

  updates, new_state = jax.pmap(step, axis_name='d')(
      per_loss, holdout, replicated
  )
  weights = np.asarray(new_state.weights)
  assert weights.shape == (NUM_DEVICES, NUM_HEADS), weights.shape
  for row in weights[1:]:
    np.testing.assert_array_equal(row, weights[0])

  # The same weights from the per-device statistics, averaged by hand.
  stats = [
      gradient_space.gradient_statistics(
          jax.tree.map(lambda g, i=i: g[i], per_loss),
          jax.tree.map(lambda h, i=i: h[i], holdout),
      )
      for i in range(NUM_DEVICES)
  ]
  gain = np.mean([s[0] for s in stats], axis=0)
  sigma_sq = np.mean([s[1] for s in stats], axis=0)
  assert np.any(gain > 0), gain
  expected, _ = gradient_space.weights_from_statistics_with_status(
      gain, sigma_sq, 1e-8)
  np.testing.assert_allclose(weights[0], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(new_state.gain[0], 0.1 * gain, rtol=1e-5)
  # The blended gradients are per device (not reduced by the transform).
  for i in range(NUM_DEVICES):
    for leaf, g in zip(
        jax.tree.leaves(updates), jax.tree.leaves(per_loss), strict=True
    ):
      np.testing.assert_allclose(
          leaf[i], np.tensordot(np.asarray(expected), g[i], axes=1),
          rtol=1e-5, atol=1e-6,
      )
  print('pmap: ok, weights', weights[0])


def check_named_sharding(axis_type):
  mesh = jax.make_mesh((NUM_DEVICES,), ('data',), axis_types=(axis_type,))
  opt = optax.chain(
      blend.gradient_blend(num_heads=NUM_HEADS, estimate_every=1),
      optax.sgd(0.1),
  )
  per_loss, holdout = _inputs(jax.random.key(1), ())
  params = _random_tree(jax.random.key(2), ())

  def param_spec(x):
    # Shard a parameter's first axis over the mesh where it divides.
    if x.ndim and x.shape[0] % NUM_DEVICES == 0:
      return P('data')
    return P()

  param_specs = jax.tree.map(param_spec, params)
  sharded_params = jax.tree.map(
      lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
      params, param_specs,
  )
  sharded_holdout = jax.tree.map(
      lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
      holdout, param_specs,
  )
  sharded_per_loss = jax.tree.map(
      lambda x, s: jax.device_put(x, NamedSharding(mesh, P(None, *s))),
      per_loss, param_specs,
  )
  assert len(sharded_params['kernel'].sharding.device_set) == NUM_DEVICES

  def step(per_loss, holdout, state, params):
    updates, state = opt.update(
        per_loss, state, params, holdout_grads=holdout
    )
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  sharded_out = jax.jit(step)(
      sharded_per_loss, sharded_holdout, state, sharded_params
  )
  cpu0 = jax.devices()[0]
  unsharded = jax.device_put((per_loss, holdout, state, params), cpu0)
  single_out = jax.jit(step)(*unsharded)
  for a, b in zip(
      jax.tree.leaves(sharded_out), jax.tree.leaves(single_out), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  new_params, new_state = sharded_out
  assert new_params['kernel'].sharding.is_equivalent_to(
      sharded_params['kernel'].sharding, 2
  ), new_params['kernel'].sharding
  print(
      f'named sharding ({axis_type}): ok, weights',
      optax.tree.get(new_state, 'weights'),
  )


def main():
  if jax.device_count() != NUM_DEVICES:
    sys.exit(f'expected {NUM_DEVICES} devices, got {jax.device_count()}')
  check_pmap()
  check_named_sharding(AxisType.Explicit)
  check_named_sharding(AxisType.Auto)


if __name__ == '__main__':
  main()
