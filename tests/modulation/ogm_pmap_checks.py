"""Checks of `ogm_ge` inside `jax.pmap` on 8 CPU devices, run in a subprocess.

Run by `test_ogm.py` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; JAX must see 8
devices from the start, which the main test process may not.
Exits non-zero (via an uncaught exception) when a check fails.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax.modulation import ogm

NUM_DEVICES = 8
MODALITIES = ('a', 'b', 'c')


def check_pmap():
  rng = np.random.default_rng(0)
  grads = {
      f'encoder_{m}': {'kernel': jnp.asarray(rng.normal(size=(6, 4)),
                                             jnp.float32)}
      for m in MODALITIES
  }
  # Per-device scores (true-class probabilities summed over each device's
  # share of the batch); the global scores are their sum, and c dominates.
  local_scores = rng.uniform(0.0, 1.0, size=(NUM_DEVICES, 3)) * [1, 2, 4]
  local_scores = jnp.asarray(local_scores, jnp.float32)
  global_scores = jnp.sum(local_scores, axis=0)
  expected = np.asarray(ogm.ogm_coefficients(global_scores, 0.8))
  assert expected[2] < 1.0 and expected[0] == expected[1] == 1.0, expected

  tx = ogm.ogm_ge(
      0.8,
      param_labels=ogm.label_encoders(MODALITIES),
      modalities=MODALITIES,
      modulated='matrices',  # MLP kernels (2-D).
      axis_name='d',
  )
  state = tx.init(grads)
  replicate = lambda x: jnp.broadcast_to(x, (NUM_DEVICES, *jnp.shape(x)))
  replicated_grads = jax.tree.map(replicate, grads)
  replicated_state = jax.tree.map(replicate, state)

  def step(grads, state, scores):
    return tx.update(grads, state, scores=scores)

  out, new_state = jax.pmap(step, axis_name='d')(
      replicated_grads, replicated_state, local_scores
  )
  # Every device has the coefficients of the global scores.
  for row in np.asarray(new_state.coefficients):
    np.testing.assert_allclose(row, expected, rtol=1e-6)
  for row in np.asarray(new_state.ratios):
    np.testing.assert_allclose(
        row, ogm.ogm_ratios(global_scores), rtol=1e-6
    )
  # Identical gradients and a shared key: identical noisy updates everywhere.
  for leaf in jax.tree.leaves(out):
    leaf = np.asarray(leaf)
    for row in leaf[1:]:
      np.testing.assert_array_equal(row, leaf[0])
  assert not np.array_equal(
      out['encoder_a']['kernel'][0], grads['encoder_a']['kernel']
  )
  print('pmap: ok, coefficients', expected)


def main():
  if jax.device_count() != NUM_DEVICES:
    sys.exit(f'expected {NUM_DEVICES} devices, got {jax.device_count()}')
  check_pmap()


if __name__ == '__main__':
  main()
