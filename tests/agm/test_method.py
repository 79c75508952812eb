"""AGM in the trainer: the step's gradient, the logged statistics, the
window and the config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import config as config_lib
from gblend_jax import models
from gblend_jax.agm import agm
from gblend_jax.agm import method as agm_method
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import program as program_lib
from gblend_jax.training import trainer as train
from tests import train_utils

MODALITIES = ('strong', 'weak')
SHAPES = {'strong': (5,), 'weak': (3,)}


def _run_info(*, hidden, alpha=1.0, cap=10.0, clip=None, start_epoch=0.0):
  config = config_lib.default_config()
  config.model.encoder.mlp.hidden_sizes = hidden
  config.model.fused_head.hidden_sizes = ()
  config.model.modality_heads = False
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 1.0
  config.optimizer.momentum = 0.0
  config.optimizer.weight_decay = 0.0
  config.agm.update(enabled=True, alpha=alpha, cap=cap,
                    clip_threshold=clip, start_epoch=start_epoch)
  methods.check_config(config)
  model = models.build_model(config.model, modalities=SHAPES, num_classes=3)
  return methods.RunInfo(config=config, model=model, modalities=SHAPES,
                         heads=('fused',), steps_per_epoch=4,
                         total_steps=8)


def _batch():
  rng = np.random.default_rng(0)
  labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
  strong = rng.normal(size=(6, 5)).astype(np.float32)
  strong[np.arange(6), labels] += 3.0
  return {'strong': jnp.asarray(strong),
          'weak': jnp.asarray(rng.normal(size=(6, 3)).astype(np.float32)),
          'label': jnp.asarray(labels)}


def _one_step(run, batch):
  active = methods.enabled_methods(run)
  program = program_lib.build_program(run, active)
  state = program.init(jax.random.PRNGKey(3))
  params = jax.tree.map(np.asarray, state.params)
  args = {'head_weights': jnp.ones((1,))}
  args.update(active[0].step_args(0, state))
  new_state, metrics = program.train_step()(state, batch, args)
  delta = jax.tree.map(lambda new, old: old - np.asarray(new),
                       new_state.params, params)  # = lr * gradient
  return params, delta, metrics, new_state


def _cross_entropy(logits, labels):
  return -jnp.mean(jnp.take_along_axis(
      jax.nn.log_softmax(logits), labels[:, None], axis=-1))


def test_linear_case_scales_each_views_columns_and_the_bias():
  # Identity encoders, concatenation, a linear head: m_k = W_k x_k + b/2,
  # so W_k's gradient is κ_k times the plain one and b's (κ_1 + κ_2)/2
  # times (SPEC_METHODS §2 (b), the linear case).
  run = _run_info(hidden=())
  batch = _batch()
  params, delta, metrics, _ = _one_step(run, batch)
  kernel = params['fused_head']['output']['kernel']  # [5 + 3, 3]
  bias = params['fused_head']['output']['bias']
  x = jnp.concatenate([batch['strong'], batch['weak']], axis=-1)
  plain = jax.grad(lambda w, b: _cross_entropy(x @ w + b, batch['label']),
                   argnums=(0, 1))(kernel, bias)

  # The scores by hand: each view's own logits plus half the bias.
  own = {'strong': batch['strong'] @ kernel[:5] + bias / 2,
         'weak': batch['weak'] @ kernel[5:] + bias / 2}
  scores = np.array([float(_cross_entropy(own[m], batch['label']))
                     for m in MODALITIES])
  # Step 1: the running scores are 0, so η = 1.
  r = np.exp([scores[1] - scores[0], scores[0] - scores[1]])
  kappa = np.exp(1.0 - r)
  for i, m in enumerate(MODALITIES):
    assert metrics[f'agm/score/{m}'] == pytest.approx(scores[i], rel=1e-5)
    assert metrics[f'agm/coefficient/{m}'] == pytest.approx(kappa[i],
                                                            rel=1e-5)
    assert metrics[f'agm/running_score/{m}'] == pytest.approx(scores[i],
                                                              rel=1e-5)
  got = delta['fused_head']['output']
  np.testing.assert_allclose(got['kernel'][:5], kappa[0] * plain[0][:5],
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(got['kernel'][5:], kappa[1] * plain[0][5:],
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(got['bias'], kappa.mean() * plain[1],
                             rtol=1e-4, atol=1e-7)
  assert not np.allclose(kappa, 1.0, atol=1e-3)


def test_step_gradient_is_the_kappa_weighted_sum_of_response_jacobians():
  # ReLU encoders with biases (φ(0) ≠ 0): the authors' backward,
  # ∇θ = Σ_k κ_k (∂m_k/∂θ)ᵀ ∂CE(out)/∂out, written out with jax.vjp.
  run = _run_info(hidden=(4,), alpha=0.7)
  batch = _batch()
  params, delta, metrics, _ = _one_step(run, batch)
  model = run.model

  def f(p, strong_on, weak_on):
    x = {'strong': batch['strong'] * strong_on,
         'weak': batch['weak'] * weak_on}
    return model.apply({'params': p}, x, train=False)['logits']['fused']

  def responses(p):
    full, pad_weak, pad_strong = f(p, 1, 1), f(p, 1, 0), f(p, 0, 1)
    return (0.5 * (full - pad_strong + pad_weak),
            0.5 * (full - pad_weak + pad_strong))

  (m_s, m_w), vjp = jax.vjp(responses, params)
  out = m_s + m_w
  d_out = jax.grad(_cross_entropy)(out, batch['label'])
  kappa = np.array([metrics['agm/coefficient/strong'],
                    metrics['agm/coefficient/weak']])
  expected = vjp((kappa[0] * d_out, kappa[1] * d_out))[0]
  scores = [float(_cross_entropy(m, batch['label'])) for m in (m_s, m_w)]
  np.testing.assert_allclose(
      kappa, np.exp(0.7 * (1 - np.exp([scores[1] - scores[0],
                                       scores[0] - scores[1]]))),
      rtol=1e-5)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(
      g, e, rtol=2e-4, atol=1e-6), delta, expected)
  # And it is not the plain gradient.
  plain = jax.grad(lambda p: _cross_entropy(f(p, 1, 1), batch['label']))(
      params)
  assert not np.allclose(delta['encoder_strong']['dense_0']['kernel'],
                         plain['encoder_strong']['dense_0']['kernel'],
                         rtol=1e-3)


def test_padded_passes_use_the_updated_batch_statistics_as_constants():
  # A BatchNorm encoder: f(a,v) in training mode updates the running
  # statistics; the padded passes read them in evaluation mode, as the
  # authors' eval() after the training-mode pass does, and no gradient
  # flows through them (PyTorch's running statistics are buffers).
  shapes = {'strong': (4, 4, 1), 'weak': (3,)}
  config = config_lib.default_config()
  config.model.encoders = {'strong': {'name': 'cifar_resnet', 'depth': 8,
                                      'width': 2}}
  config.model.encoder.mlp.hidden_sizes = (4,)
  config.model.fused_head.hidden_sizes = ()
  config.model.modality_heads = False
  config.optimizer.update(name='sgd', learning_rate=1.0, momentum=0.0,
                          weight_decay=0.0)
  config.agm.update(enabled=True, cap=10.0)
  model = models.build_model(config.model, modalities=shapes, num_classes=3)
  run = methods.RunInfo(config=config, model=model, modalities=shapes,
                        heads=('fused',), steps_per_epoch=4, total_steps=8)
  rng = np.random.default_rng(1)
  batch = {'strong': jnp.asarray(rng.normal(size=(6, 4, 4, 1)), jnp.float32),
           'weak': jnp.asarray(rng.normal(size=(6, 3)), jnp.float32),
           'label': jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)}
  active = methods.enabled_methods(run)
  program = program_lib.build_program(run, active)
  state = program.init(jax.random.PRNGKey(3))
  params = jax.tree.map(np.asarray, state.params)
  stats = jax.tree.map(np.asarray, state.batch_stats)
  args = {'head_weights': jnp.ones((1,)), **active[0].step_args(0, state)}
  new_state, metrics = program.train_step()(state, batch, args)
  kappa = np.array([metrics['agm/coefficient/strong'],
                    metrics['agm/coefficient/weak']])

  def responses(p):
    out, updated = model.apply(
        {'params': p, 'batch_stats': stats}, batch, train=True,
        mutable=['batch_stats'])
    frozen = jax.lax.stop_gradient(updated['batch_stats'])

    def f(strong_on, weak_on):
      x = {'strong': batch['strong'] * strong_on,
           'weak': batch['weak'] * weak_on}
      return model.apply({'params': p, 'batch_stats': frozen}, x,
                         train=False)['logits']['fused']

    full = out['logits']['fused']
    pad_weak, pad_strong = f(1, 0), f(0, 1)
    return (0.5 * (full - pad_strong + pad_weak),
            0.5 * (full - pad_weak + pad_strong)), updated['batch_stats']

  @jax.jit  # One program instead of the reference's ops one by one.
  def reference(params, kappa):
    (m_s, m_w), vjp, updated = jax.vjp(responses, params, has_aux=True)
    d_out = jax.grad(_cross_entropy)(m_s + m_w, batch['label'])
    return vjp((kappa[0] * d_out, kappa[1] * d_out))[0], updated, m_s

  expected, updated, m_s = reference(params, kappa)
  delta = jax.tree.map(lambda new, old: old - np.asarray(new),
                       new_state.params, params)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(
      g, e, rtol=2e-3, atol=2e-6), delta, expected)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               new_state.batch_stats, updated)
  assert metrics['agm/score/strong'] == pytest.approx(
      float(_cross_entropy(m_s, batch['label'])), rel=1e-5)


def test_before_the_window_kappa_is_one_and_the_gradient_plain():
  run = _run_info(hidden=(), start_epoch=1.0)  # Opens at step 4.
  batch = _batch()
  params, delta, metrics, state = _one_step(run, batch)
  assert metrics['agm/coefficient/strong'] == 1.0
  assert metrics['agm/coefficient/weak'] == 1.0
  kernel = params['fused_head']['output']['kernel']
  bias = params['fused_head']['output']['bias']
  x = jnp.concatenate([batch['strong'], batch['weak']], axis=-1)
  plain = jax.grad(lambda w: _cross_entropy(x @ w + bias, batch['label']))(
      kernel)
  np.testing.assert_allclose(delta['fused_head']['output']['kernel'], plain,
                             rtol=1e-5, atol=1e-7)
  # The running scores are kept from the first step on.
  running = agm_method.find_agm_state(state.opt_state).running_scores
  np.testing.assert_allclose(
      running, [metrics['agm/score/strong'], metrics['agm/score/weak']])


def test_clip_on_the_fused_kernel_bounds_the_update_norm():
  run = _run_info(hidden=(), clip=1e-6)  # Always exceeded.
  _, delta, metrics, _ = _one_step(run, _batch())
  assert metrics['agm/clipped'] == 1.0
  assert optax.global_norm(delta) == pytest.approx(1.0, rel=1e-5)


def _tiny_config(data_dir, steps):
  config = train_utils.tiny_synthetic_config(data_dir, steps=steps)
  config.model.modality_heads = False
  config.agm.update(enabled=True, cap=10.0, clip_threshold=1.0)
  config.log_every_steps = 1
  return config


@pytest.mark.slow
def test_trainer_run_logs_kappa_from_its_own_running_scores(data_dir,
                                                             tmp_path):
  # 5 steps per epoch; κ recomputed in epochs [1, 3), kept after.
  config = _tiny_config(data_dir, steps=20)
  config.agm.update(start_epoch=1.0, end_epoch=3.0, alpha=2.0)
  train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metric_writer.read_metrics(str(tmp_path))
          if 'agm/score/strong' in r]
  assert [r['step'] for r in rows] == list(range(1, 21))
  scores = np.array([[r[f'agm/score/{m}'] for m in MODALITIES]
                     for r in rows])
  kappa = np.array([[r[f'agm/coefficient/{m}'] for m in MODALITIES]
                    for r in rows])
  running = np.array([[r[f'agm/running_score/{m}'] for m in MODALITIES]
                      for r in rows])
  # S_t: the cumulative mean of every step's scores, window or not.
  np.testing.assert_allclose(
      running, np.cumsum(scores, 0) / np.arange(1, 21)[:, None], rtol=1e-5)
  before = np.vstack([np.zeros((1, 2)), running[:-1]])
  expected = np.asarray(agm.agm_coefficients(
      jnp.asarray(scores), jnp.asarray(before), alpha=2.0, cap=10.0))
  np.testing.assert_allclose(kappa[:5], 1.0)  # Steps 0-4: before.
  np.testing.assert_allclose(kappa[5:15], expected[5:15], rtol=1e-5)
  np.testing.assert_allclose(kappa[15:], np.tile(kappa[14], (5, 1)))
  # The strong view (it carries the label) is held back, the weak one
  # pushed, on average over the window.
  log_kappa = np.log(kappa[5:15]).mean(axis=0)
  assert log_kappa[0] < 0 < log_kappa[1], log_kappa


@pytest.mark.parametrize('key, value, message', [
    ('alpha', -0.5, r'config\.agm\.alpha=-0\.5 must be >= 0'),
    ('cap', 0.0, r'config\.agm\.cap=0\.0 must be > 0'),
    ('start_epoch', -1.0, r'config\.agm window .*\[-1\.0, -1\.0\)'),
    ('end_epoch', 0.0, r'config\.agm window .*\[0\.0, 0\.0\) is empty'),
    ('clip_threshold', -1.0, r'config\.agm\.clip_threshold=-1\.0 must be'),
    ('clip_norm', 0.0, r'config\.agm\.clip_norm=0\.0 must be > 0'),
])
def test_bad_agm_values_are_named_before_training(data_dir, tmp_path, key,
                                                  value, message):
  config = _tiny_config(data_dir, steps=2)
  config.agm[key] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()


def test_one_modality_is_refused(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=2,
                                             modalities='strong')
  config.agm.enabled = True
  with pytest.raises(ValueError, match=r'config\.agm\.enabled=True balances '
                     r"several modalities; the data have \['strong'\]"):
    train.train_and_evaluate(config, str(tmp_path))
