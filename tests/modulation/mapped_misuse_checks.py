"""Misuse of `ogm_ge` and `gradient_blend` on 8 CPU devices, in a subprocess.

Run by `test_ogm.py` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. Checks that a
missing ``axis_name`` raises under ``pmap`` and ``shard_map``, that with it
the replicas agree, and the shard_map gradient rule the docstrings state:
autodiff sums the gradients of replicated parameters, so the gradient of
the per-device mean loss is ``n_devices`` times the global one, and that of
its ``pmean`` is the global one. Exits non-zero when a check fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gblend_jax.blending import blend
from gblend_jax.modulation import ogm

N = 8
GRADS = {'encoder_a': {'kernel': jnp.ones((3, 2))},
         'encoder_b': {'kernel': jnp.ones((3, 2))}}
LABELS = ogm.label_encoders(('a', 'b'))


def _raises(fn, match):
  try:
    fn()
  except ValueError as e:
    assert match in str(e), str(e)
    return
  raise AssertionError(f'no ValueError matching {match!r}')


def check_pmap():
  scores = jnp.asarray(np.random.default_rng(0).uniform(size=(N, 2)))
  for axis_name, ok in ((None, False), ('d', True)):
    tx = ogm.ogm_ge(0.8, param_labels=LABELS, noise=False,
                    modulated='matrices', axis_name=axis_name)
    state = tx.init(GRADS)

    def step(s, tx=tx, state=state):
      _, new = tx.update(GRADS, state, GRADS, scores=s)
      return new.coefficients

    run = lambda step=step: jax.pmap(step, axis_name='d')(scores)
    if ok:
      k = np.asarray(run())
      assert np.all(k == k[0]), k  # Every replica has the global k.
    else:
      _raises(run, "without axis_name")


def check_shard_map():
  mesh = jax.make_mesh((N,), ('d',))
  x = jax.device_put(
      jnp.asarray(np.random.default_rng(1).normal(size=(4 * N, 3)),
                  jnp.float32),
      NamedSharding(mesh, P('d')))
  w = jax.device_put(jnp.ones((3, 2)), NamedSharding(mesh, P()))
  shmap = lambda f: jax.jit(jax.shard_map(
      f, mesh=mesh, in_specs=(P('d'), P()), out_specs=P()))
  local_loss = lambda w, x: jnp.mean((x @ w) ** 2)
  # The global mean loss's gradient, outside any map.
  reference = jax.grad(local_loss)(np.asarray(w), np.asarray(x))
  summed = shmap(lambda x, w: jax.grad(local_loss)(w, x))(x, w)
  np.testing.assert_allclose(summed, N * reference, rtol=1e-5)
  pmeaned = shmap(lambda x, w: jax.lax.pmean(
      jax.grad(local_loss)(w, x), 'd'))(x, w)
  np.testing.assert_allclose(pmeaned, N * reference, rtol=1e-5)
  right = shmap(lambda x, w: jax.grad(
      lambda w: jax.lax.pmean(local_loss(w, x), 'd'))(w))(x, w)
  np.testing.assert_allclose(right, reference, rtol=1e-5)

  # ogm_ge: local scores without axis_name raise (formerly a cryptic
  # 'cond branches must have equal output types'); with it, they are summed.
  for axis_name in (None, 'd'):
    tx = ogm.ogm_ge(0.8, param_labels={'w': 'a', 'v': 'b'}, noise=False,
                    modulated='matrices', axis_name=axis_name)
    params = {'w': w, 'v': w}
    state = tx.init(params)

    def step(x, w, tx=tx, state=state):
      grads = jax.grad(lambda p: jax.lax.pmean(
          local_loss(p['w'], x) + local_loss(p['v'], x), 'd'))(
              {'w': w, 'v': w})
      scores = jnp.stack([jnp.sum(x[:, 0] ** 2), jnp.sum(x[:, 1] ** 2)])
      _, new = tx.update(grads, state, {'w': w, 'v': w},
                               scores=scores)
      return new.coefficients

    if axis_name is None:
      _raises(lambda step=step: shmap(step)(x, w), 'without axis_name')
    else:
      k = shmap(step)(x, w)
      xs = np.asarray(x)
      expected = ogm.ogm_coefficients(
          np.array([np.sum(xs[:, 0] ** 2), np.sum(xs[:, 1] ** 2)]), 0.8)
      np.testing.assert_allclose(k, expected, rtol=1e-5)

  # gradient_blend under shard_map: autodiff-summed per-loss gradients are
  # the same on every device, so no axis_name is needed.
  tx = optax.chain(blend.gradient_blend(num_heads=2, estimate_every=1),
                   optax.sgd(0.1))
  state = tx.init(w)

  def blend_step(x, w):
    def losses(w):
      return jax.lax.pmean(jnp.stack(
          [local_loss(w, x), local_loss(w, x[:, ::-1])]), 'd')
    per_loss = jax.jacrev(losses)(w)
    holdout = jax.grad(lambda w: losses(w)[1])(w)
    _, new = tx.update(per_loss, state, w, holdout_grads=holdout)
    return optax.tree.get(new, 'weights')

  weights = shmap(blend_step)(x, w)
  assert np.all(np.isfinite(weights)), weights


if __name__ == '__main__':
  assert jax.device_count() == N, jax.devices()
  check_pmap()
  check_shard_map()
  print('ok')
