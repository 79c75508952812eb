"""Decoupled classifier learning against the spec's numpy-verified examples.

SPEC_METHODS §7(h): ``W = [[3, 4, 0], [1, 0, 0]]`` (rows: classes),
``b = (0.5, -0.5)``, ``s = (0.5, 2)``, ``x = (1, 1, 1)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax.longtail import decoupling
from gblend_jax.longtail import tau_normalize

# Flax kernels are [features, classes]: the transpose of the spec's W.
KERNEL = jnp.array([[3.0, 1.0], [4.0, 0.0], [0.0, 0.0]])
BIAS = jnp.array([0.5, -0.5])
X = jnp.ones((1, 3))


def test_tau_normalize_scales_each_class_column():
  np.testing.assert_allclose(tau_normalize(KERNEL, 0.5).T,
                             [[1.341641, 1.788854, 0.0], [1.0, 0.0, 0.0]],
                             rtol=1e-6)
  np.testing.assert_allclose(tau_normalize(KERNEL, 1.0).T,
                             [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(tau_normalize(KERNEL, 0.0), KERNEL)
  # Logits of x = (1, 1, 1) at τ = 0.5, with the bias dropped.
  np.testing.assert_allclose(jnp.ones(3) @ tau_normalize(KERNEL, 0.5),
                             [3.130495, 1.0], rtol=1e-6)


def test_a_zero_column_stays_zero_and_dtype_is_kept():
  kernel = jnp.array([[0.0, 2.0], [0.0, 0.0]], jnp.bfloat16)
  out = tau_normalize(kernel, 1.0)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out, np.float32),
                                [[0.0, 1.0], [0.0, 0.0]])


def test_tau_normalized_logits_from_the_trained_logits():
  # z = x W + b = (7.5, 0.5); (z - b) / ‖w‖^0.5 = (7 / √5, 1) = the
  # spec's (3.130495, 1).
  logits = X @ KERNEL + BIAS
  np.testing.assert_allclose(
      decoupling.tau_normalized_logits(logits, KERNEL, BIAS, 0.5),
      [[3.130495, 1.0]], rtol=1e-6)


def test_lws_logits_scale_weights_and_bias_as_the_code_does():
  scales = jnp.array([0.5, 2.0])
  # The code's form s ⊙ (W x + b): 0.5 · 7.5 = 3.75, 2 · 0.5 = 1.
  np.testing.assert_allclose(decoupling.lws_logits(X, KERNEL, BIAS, scales),
                             [[3.75, 1.0]])
  # The paper's form s ⊙ (W x) (bias zero): (3.5, 2.0).
  np.testing.assert_allclose(
      decoupling.lws_logits(X, KERNEL, jnp.zeros(2), scales), [[3.5, 2.0]])


def _params():
  return {'encoder': {'kernel': jnp.array([[1.0, -2.0]])},
          'fused_head': {'output': {'kernel': KERNEL, 'bias': BIAS}}}


def test_classifier_labels_and_a_missing_classifier():
  labels = decoupling.classifier_labels(_params())
  assert labels == {'encoder': {'kernel': 'frozen'},
                    'fused_head': {'output': {'kernel': 'classifier',
                                              'bias': 'classifier'}}}
  with pytest.raises(ValueError, match="no classifier at 'head/out'"):
    decoupling.classifier_labels(_params(), ('head', 'out'))


def test_crt_stage_moves_only_the_classifier_even_with_weight_decay():
  params = _params()
  tx = decoupling.crt_classifier(optax.chain(
      optax.add_decayed_weights(0.1), optax.sgd(1.0)))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates['encoder']['kernel'], 0.0)
  # -(g + 0.1 w) with lr 1.
  np.testing.assert_allclose(updates['fused_head']['output']['bias'],
                             -(1.0 + 0.1 * BIAS))


def test_lws_stage_gradient_of_the_scales_by_hand():
  params = _params()
  tx = decoupling.lws_classifier(optax.sgd(0.5))
  state = tx.init(params)
  np.testing.assert_array_equal(state.scales, [1.0, 1.0])
  # Logits s ⊙ (x W₀ + b₀) = (7.5, 0.5) at s = 1; loss L = z_0 - z_1.
  # ∂L/∂W = x^T (1, -1), ∂L/∂b = (1, -1), so ∂L/∂s_c = Σ_d x_d W₀_dc ± b₀:
  # (7 + 0.5, -(1 - 0.5)) = (7.5, -0.5): exactly ∂L/∂s of z = s ⊙ z₀.
  def loss(p):
    z = X @ p['fused_head']['output']['kernel'] + p['fused_head']['output'][
        'bias']
    return jnp.sum(z[:, 0] - z[:, 1]) + jnp.sum(p['encoder']['kernel'])

  grads = jax.grad(loss)(params)
  updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(state.scales, [1 - 0.5 * 7.5, 1 + 0.5 * 0.5])
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['encoder']['kernel'],
                                params['encoder']['kernel'])
  np.testing.assert_allclose(new['fused_head']['output']['kernel'],
                             KERNEL * state.scales, rtol=1e-6)
  np.testing.assert_allclose(new['fused_head']['output']['bias'],
                             BIAS * state.scales, rtol=1e-6)
  # The model's logits are then LWS's, s ⊙ (x W₀ + b₀).
  z = X @ new['fused_head']['output']['kernel'] + new['fused_head'][
      'output']['bias']
  np.testing.assert_allclose(
      z, decoupling.lws_logits(X, KERNEL, BIAS, state.scales), rtol=1e-6)
  assert optax.tree.get(state, 'scales') is state.scales


def test_decoupled_stages_switch_at_the_flip_and_start_fresh():
  params = _params()
  classifier = decoupling.crt_classifier(optax.sgd(0.1, momentum=0.9))
  tx = optax.chain(optax.identity(),
                   decoupling.decoupled_stages(optax.sgd(1.0), classifier))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  step = jax.jit(tx.update)
  updates, state = step(grads, state, params)
  np.testing.assert_array_equal(updates['encoder']['kernel'], -1.0)
  assert int(decoupling.decoupled_state(state).stage) == 0
  state = decoupling.start_classifier_stage(state, params, classifier)
  assert int(decoupling.decoupled_state(state).stage) == 1
  updates, state = step(grads, state, params)
  np.testing.assert_array_equal(updates['encoder']['kernel'], 0.0)
  # Fresh momentum: the first classifier step is -lr · g.
  np.testing.assert_allclose(updates['fused_head']['output']['kernel'], -0.1)
  updates, state = step(grads, state, params)
  np.testing.assert_allclose(updates['fused_head']['output']['kernel'],
                             -0.1 * 1.9, rtol=1e-6)
  with pytest.raises(ValueError, match='no decoupled_stages state'):
    decoupling.start_classifier_stage(optax.sgd(1.0).init(params), params,
                                      classifier)


def test_reinitialized_classifier_is_a_fresh_dense_init():
  params = _params()
  key = jax.random.key(3)
  new = decoupling.reinitialized_classifier(params, key)
  np.testing.assert_array_equal(
      new['fused_head']['output']['kernel'],
      jax.nn.initializers.lecun_normal()(key, (3, 2)))
  np.testing.assert_array_equal(new['fused_head']['output']['bias'], 0.0)
  assert new['encoder'] is params['encoder']
