"""MLA's library pieces against the spec's worked examples and by hand."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import mla
from gblend_jax import models

# SPEC_METHODS.md §4(h), numpy-verified.
P1 = np.array([[0.523217, -0.475651], [-0.475651, 0.523217]])
GRAD_W = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])  # torch [C, d]


def test_projection_update_is_the_spec_example():
  p = mla.update_projection(jnp.eye(2), jnp.ones(2), mla.owm_alpha(0, 10))
  np.testing.assert_allclose(p, P1, atol=1e-6)
  # The mean-feature direction is almost removed.
  np.testing.assert_allclose(p @ jnp.ones(2), [0.047565, 0.047565],
                             atol=1e-6)
  np.testing.assert_allclose(mla.owm_alpha(5, 10), 0.031623, atol=1e-6)
  np.testing.assert_allclose(mla.owm_alpha(10, 10), 0.01, rtol=1e-6)


def test_projection_of_the_head_gradient_is_the_spec_example():
  # A flax kernel is W transposed: [d, C].
  kernel_grad = jnp.asarray(GRAD_W.T)
  paper = mla.project_kernel_gradient(kernel_grad, jnp.asarray(P1))
  np.testing.assert_allclose(paper.T, [[0.523217, -0.475651],
                                       [-0.475651, 0.523217],
                                       [1.522085, -1.474520]], atol=1e-6)
  bb = mla.project_kernel_gradient(kernel_grad, jnp.asarray(P1),
                                   'balance_benchmark')
  np.testing.assert_allclose(bb.T, [[1.523217, -0.475651],
                                    [-0.475651, 1.523217],
                                    [3.522085, -2.474520]], atol=1e-6)


def test_projection_update_by_hand_with_another_feature():
  # d = 2, P = I, r = (2, 0), α = 0.01: k = (2, 0), r k = 4,
  # P = I - [[4, 0], [0, 0]] / 4.01 = diag(0.01/4.01, 1), then / ‖P‖_F.
  p = mla.update_projection(jnp.eye(2), jnp.array([2.0, 0.0]), 0.01)
  a = 0.01 / 4.01
  np.testing.assert_allclose(
      p, np.diag([a, 1.0]) / np.hypot(a, 1.0), atol=1e-6)  # float32 1 - 4/4.01


def _head_params():
  return {'kernel': jnp.asarray(GRAD_W.T), 'bias': jnp.array([1., 2., 3.])}


def test_transform_skips_the_first_step_then_projects_the_kernel_only():
  mask = {'kernel': True, 'bias': False}
  tx = mla.head_gradient_projection(mask)
  grads = _head_params()
  state = tx.init(grads)
  extra = dict(feature_mean=jnp.ones(2), batch_index=0, batches_per_epoch=10)
  update = jax.jit(lambda g, s: tx.update(g, s, **extra))
  first, state = update(grads, state)
  # The code's exp_count == 0: nothing modified, P not updated.
  np.testing.assert_allclose(first['kernel'], grads['kernel'])
  inner = state.inner_state
  np.testing.assert_allclose(inner.projection, np.eye(2))
  assert int(inner.count) == 1
  second, state = update(grads, state)
  np.testing.assert_allclose(state.inner_state.projection, P1, atol=1e-6)
  np.testing.assert_allclose(second['kernel'].T[2], [1.522085, -1.474520],
                             atol=1e-6)
  np.testing.assert_allclose(second['bias'], grads['bias'])
  assert int(state.inner_state.count) == 2
  # The second jitted call compiled nothing new: same shapes, same trace.
  assert update._cache_size() == 1  # pylint: disable=protected-access


def test_transform_chains_with_an_optimiser():
  tx = optax.chain(mla.head_gradient_projection(
      {'kernel': True, 'bias': False}), optax.sgd(1.0))
  params = _head_params()
  state = tx.init(params)
  extra = dict(feature_mean=jnp.ones(2), batch_index=0, batches_per_epoch=10)
  _, state = tx.update(params, state, params, **extra)
  updates, _ = tx.update(params, state, params, **extra)
  np.testing.assert_allclose(-updates['kernel'].T[0], [0.523217, -0.475651],
                             atol=1e-6)


def test_bad_mode_and_bad_mask_are_named():
  with pytest.raises(ValueError, match=r"mode='owm'"):
    mla.head_gradient_projection({'kernel': True}, mode='owm')
  tx = mla.head_gradient_projection({'kernel': True, 'bias': True})
  with pytest.raises(ValueError, match=r'exactly one \[d, C\] kernel'):
    tx.init(_head_params())


def test_entropy_fusion_is_the_spec_example():
  o_a, o_v = jnp.array([[2.0, 0.0, 0.0]]), jnp.array([[1.0, 1.0, 0.0]])
  np.testing.assert_allclose(mla.prediction_entropy(o_a), [0.665573],
                             atol=1e-6)
  np.testing.assert_allclose(mla.prediction_entropy(o_v), [1.017357],
                             atol=1e-6)
  np.testing.assert_allclose(mla.entropy_weights([o_a, o_v])[:, 0],
                             [0.587050, 0.412950], atol=1e-6)
  np.testing.assert_allclose(mla.entropy_weighted_fusion([o_a, o_v]),
                             [[1.587050, 0.412950, 0.0]], atol=1e-6)


def test_entropy_fusion_is_per_sample():
  # Equal entropies weigh equally: the mean. A uniform modality (H = log 3)
  # against a confident one: weights exp(-H) normalised, by hand.
  o_a = jnp.array([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  o_v = jnp.array([[0.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
  fused = mla.entropy_weighted_fusion([o_a, o_v])
  np.testing.assert_allclose(fused[0], [1.5, 1.5, 0.0], atol=1e-6)
  p = np.exp([5.0, 0.0, 0.0]) / np.exp([5.0, 0.0, 0.0]).sum()
  h_v = -(p * np.log(p)).sum()
  w_a = np.exp(-np.log(3)) / (np.exp(-np.log(3)) + np.exp(-h_v))
  np.testing.assert_allclose(fused[1], [(1 - w_a) * 5.0, 0.0, 0.0],
                             rtol=1e-5)
  # An example's prediction does not depend on its batch (the released
  # code's batch-axis softmax does).
  alone = mla.entropy_weighted_fusion([o_a[1:], o_v[1:]])
  np.testing.assert_allclose(alone[0], fused[1], rtol=1e-6)


def _shared_head_model(**kwargs):
  config = models.default_model_config()
  config.encoder.mlp.hidden_sizes = (4,)
  config.shared_head = True
  config.update(kwargs)
  return models.build_model(config, modalities={'a': (3,), 'b': (5,)},
                            num_classes=3)


def test_shared_head_model_fuses_its_modality_logits():
  model = _shared_head_model()
  inputs = {'a': jnp.ones((2, 3)), 'b': jnp.arange(10.0).reshape(2, 5)}
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  assert set(variables['params']) == {'encoder_a', 'encoder_b',
                                      'shared_head'}
  out = model.apply(variables, inputs, train=False)
  head = variables['params']['shared_head']['output']
  for m in ('a', 'b'):
    np.testing.assert_allclose(
        out['logits'][m],
        out['features'][m] @ head['kernel'] + head['bias'], rtol=1e-5)
  np.testing.assert_allclose(
      out['logits']['fused'],
      mla.entropy_weighted_fusion([out['logits']['a'], out['logits']['b']]),
      rtol=1e-6)
  fixed = _shared_head_model(shared_head_fusion_weights=(0.55, 0.45))
  out = fixed.apply(variables, inputs, train=False)
  np.testing.assert_allclose(
      out['logits']['fused'],
      0.55 * out['logits']['a'] + 0.45 * out['logits']['b'], rtol=1e-6)


def test_shared_head_needs_one_feature_width():
  config = models.default_model_config()
  config.shared_head = True
  config.encoders = {'b': {'hidden_sizes': (6,)}}
  model = models.build_model(config, modalities={'a': (3,), 'b': (5,)},
                             num_classes=3)
  with pytest.raises(ValueError, match=r"widths \{'a': 256, 'b': 6\}"):
    model.init(jax.random.PRNGKey(0), {'a': jnp.ones((1, 3)),
                                       'b': jnp.ones((1, 5))}, train=False)


def _toy_problem():
  """Scalar encoders z_m = θ_m x_m and a shared head (w, b) on 1 feature,
  two classes: logits = (w z + b, 0)."""
  params = {'encoder_a': jnp.array(1.0), 'encoder_b': jnp.array(-0.5),
            'shared_head': {'w': jnp.array(0.3), 'b': jnp.array(0.0)}}
  x = {'a': jnp.array([1.0, 2.0]), 'b': jnp.array([1.0, -1.0])}
  labels = jnp.array([0, 1])

  def loss(params, m):
    z = params[f'encoder_{m}'] * x[m]
    head = params['shared_head']
    logits = jnp.stack([head['w'] * z + head['b'], jnp.zeros_like(z)], -1)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None],
                              1)
    return jnp.mean(ce), (z[:, None], None)

  trained = {m: {'encoder_a': m == 'a', 'encoder_b': m == 'b',
                 'shared_head': {'w': True, 'b': True}} for m in 'ab'}
  return params, x, labels, loss, trained


def test_alternating_updates_by_hand_with_sgd():
  params, x, labels, loss, trained = _toy_problem()
  lr = 0.5
  tx = optax.sgd(lr)
  new, _, losses, _, _ = mla.alternating_updates(
      tx, loss, params, tx.init(params), modalities=('a', 'b'),
      trained=trained, batch_index=0, batches_per_epoch=1)

  # By hand: p(class 0) = sigmoid(w z + b - 0); dCE/dlogit0 = p0 - y0.
  def step(theta, w, b, xs):
    z = theta * xs
    p0 = 1 / (1 + np.exp(-(w * z + b)))
    d = p0 - (np.asarray(labels) == 0)
    ce = -np.mean(np.where(np.asarray(labels) == 0, np.log(p0),
                           np.log(1 - p0)))
    return ce, np.mean(d * w * xs), np.mean(d * z), np.mean(d)

  ce_a, g_ta, g_w, g_b = step(1.0, 0.3, 0.0, np.asarray(x['a']))
  theta_a, w, b = 1.0 - lr * g_ta, 0.3 - lr * g_w, -lr * g_b
  # Modality b sees the head as a's step left it.
  ce_b, g_tb, g_w, g_b = step(-0.5, w, b, np.asarray(x['b']))
  theta_b, w, b = -0.5 - lr * g_tb, w - lr * g_w, b - lr * g_b
  np.testing.assert_allclose(losses, [ce_a, ce_b], rtol=1e-5)
  np.testing.assert_allclose(new['encoder_a'], theta_a, rtol=1e-5)
  np.testing.assert_allclose(new['encoder_b'], theta_b, rtol=1e-5)
  np.testing.assert_allclose(new['shared_head']['w'], w, rtol=1e-5)
  np.testing.assert_allclose(new['shared_head']['b'], b, rtol=1e-5)


def test_each_step_leaves_the_other_encoders_optimizer_state_alone():
  params, _, _, loss, trained = _toy_problem()
  tx = optax.adam(0.1)
  state = tx.init(params)
  new, new_state, _, grads, _ = mla.alternating_updates(
      tx, loss, params, state, modalities=('a', 'b'), trained=trained,
      batch_index=0, batches_per_epoch=1)
  adam = new_state[0]
  # One batch: Adam's count (bias correction, schedule) advanced once,
  # not once per modality.
  assert int(adam.count) == 1
  # Each encoder's first moment is (1 - b1) times its own gradient, once:
  # the other modality's step (a zero gradient) did not decay it.
  np.testing.assert_allclose(adam.mu['encoder_a'], 0.1 * grads[0][
      'encoder_a'], rtol=1e-5)
  np.testing.assert_allclose(adam.mu['encoder_b'], 0.1 * grads[1][
      'encoder_b'], rtol=1e-5)
  # Adam's first step moves each encoder by lr (sign of its gradient).
  np.testing.assert_allclose(
      abs(new['encoder_a'] - params['encoder_a']), 0.1, rtol=1e-4)
  np.testing.assert_allclose(
      abs(new['encoder_b'] - params['encoder_b']), 0.1, rtol=1e-4)
  # The head was stepped twice: its moment holds both gradients.
  np.testing.assert_allclose(
      adam.mu['shared_head']['w'],
      0.9 * 0.1 * grads[0]['shared_head']['w']
      + 0.1 * grads[1]['shared_head']['w'], rtol=1e-5)


@pytest.mark.slow
def test_benchmark_times_mlas_step_on_its_shared_head_model():
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  setting = benchmark.mfeat_setting(tiny=True)
  config = benchmark.method_config(setting, 'mla')
  assert config.model.shared_head and config.mla.enabled
  assert not setting.model.shared_head  # The setting itself is untouched.
  timed = benchmark.method_steps(setting, ['naive', 'mla'])
  # Two forward and backward passes (one per modality) against one.
  assert timed['mla'].flops > 1.5 * timed['naive'].flops
  timed['mla'].run()
  timed['mla'].sync()


@pytest.mark.parametrize('module', [mla.fusion, mla.projection])
def test_docstring_examples_run(module):
  assert doctest.testmod(module).failed == 0
