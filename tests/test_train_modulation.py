"""OGM-GE in the trainer: scores from the step, logging, resume, checks."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import runs
from gblend_jax import data
from gblend_jax import models
from gblend_jax.modulation import method as modulation
from gblend_jax.modulation import ogm
from gblend_jax.modulation import unimodal
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

MODALITIES = ('strong', 'weak')
AV_CONFIG = os.path.join(train_utils.REPO, 'experiments', 'configs',
                         'av_ogm.py')


def _ogm_config(data_dir, *, steps_, method='ogm_ge', alpha=0.8):
  config = train_utils.tiny_synthetic_config(data_dir, steps=steps_)
  config.model.fused_head.hidden_sizes = ()
  config.model.modality_heads = False
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.modulation.method = method
  config.modulation.alpha = alpha
  config.modulation.modulated = 'matrices'
  config.log_every_steps = 1
  return config


def _tiny_model_and_batch():
  config = models.default_model_config()
  config.encoder.mlp.hidden_sizes = (8,)
  config.fused_head.hidden_sizes = ()
  config.modality_heads = False
  model = models.build_model(
      config, modalities={'strong': (5,), 'weak': (3,)}, num_classes=3)
  rng = np.random.default_rng(0)
  labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
  # The strong view carries the label, the weak one is noise.
  strong = rng.normal(size=(6, 5)).astype(np.float32)
  strong[np.arange(6), labels] += 3.0
  batch = {'strong': strong,
           'weak': rng.normal(size=(6, 3)).astype(np.float32),
           'label': labels}
  params = model.init(jax.random.PRNGKey(0), batch, train=False)['params']
  return model, batch, params


def test_step_scales_the_dominant_encoder_by_the_coefficient():
  model, batch, params = _tiny_model_and_batch()
  lr = 0.1
  heads = ('fused',)
  weights = jnp.ones((1,))

  def run(tx, **hooks):
    state = steps.TrainState(step=jnp.int32(0), params=params,
                             batch_stats={}, opt_state=tx.init(params),
                             rng=jax.random.PRNGKey(1))
    step = jax.jit(steps.make_train_step(
        model, tx, optax.constant_schedule(lr), heads,
        methods.StepHooks(**hooks)))
    return step(state, batch, {'head_weights': weights})

  plain, _ = run(optax.sgd(lr))
  modulated_tx = optax.chain(
      ogm.ogm_ge(0.8, param_labels=ogm.label_encoders(MODALITIES),
                 noise=False, modulated='matrices', modalities=MODALITIES),
      optax.sgd(lr))
  modulated, metrics = run(
      modulated_tx,
      update_args=modulation.make_update_args(model, MODALITIES),
      opt_state_metrics=lambda s: modulation.state_metrics(s, MODALITIES))

  # The scores the step used, recomputed by hand from the initial model:
  # true-class probabilities of each view's share of the fused logits.
  variables = {'params': params}
  out = model.apply(variables, batch, train=False)
  shares = unimodal.classifier_unimodal_logits(
      model, variables, out['features'], MODALITIES)
  scores = []
  for m in MODALITIES:
    probs = jax.nn.softmax(shares[m])
    scores.append(float(jnp.sum(probs[np.arange(6), batch['label']])))
  for i, m in enumerate(MODALITIES):
    assert metrics[f'ogm/score/{m}'] == pytest.approx(scores[i] / 6, rel=1e-5)
  ratio = scores[0] / scores[1]
  assert metrics['ogm/ratio/strong'] == pytest.approx(ratio, rel=1e-5)
  assert metrics['ogm/ratio/weak'] == pytest.approx(1 / ratio, rel=1e-5)
  dominant = 0 if ratio > 1 else 1
  k = 1 - np.tanh(0.8 * max(ratio, 1 / ratio))
  assert metrics[f'ogm/coefficient/{MODALITIES[dominant]}'] == pytest.approx(
      k, rel=1e-5)
  assert metrics[f'ogm/coefficient/{MODALITIES[1 - dominant]}'] == 1.0

  # Plain SGD: update = -lr g. Modulated: the dominant encoder's kernels
  # move k times as far; its biases, the other encoder and the head as far.
  def delta(state):
    return jax.tree.map(lambda new, old: np.asarray(new - old),
                        state.params, params)

  plain_delta, modulated_delta = delta(plain), delta(modulated)
  dominant_name = f'encoder_{MODALITIES[dominant]}'
  other_name = f'encoder_{MODALITIES[1 - dominant]}'
  np.testing.assert_allclose(
      modulated_delta[dominant_name]['dense_0']['kernel'],
      k * plain_delta[dominant_name]['dense_0']['kernel'], rtol=1e-4,
      atol=2e-7)  # Differences of O(1) float32 parameters.
  for a, b in [(modulated_delta[dominant_name]['dense_0']['bias'],
                plain_delta[dominant_name]['dense_0']['bias']),
               (modulated_delta[other_name], plain_delta[other_name]),
               (modulated_delta['fused_head'], plain_delta['fused_head'])]:
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-7),
                 a, b)


@pytest.mark.slow
def test_ogm_ge_run_logs_ratios_coefficients_and_unimodal_accuracy(
    data_dir, tmp_path
):
  config = _ogm_config(data_dir, steps_=12)
  results = train.train_and_evaluate(config, str(tmp_path))
  rows = metric_writer.read_metrics(str(tmp_path))
  step_rows = [r for r in rows if 'ogm/ratio/strong' in r]
  assert len(step_rows) == 12
  for row in step_rows:
    # ρ_strong ρ_weak = 1 and the coefficients follow the paper's rule.
    rho = np.array([row['ogm/ratio/strong'], row['ogm/ratio/weak']])
    assert rho[0] * rho[1] == pytest.approx(1.0, rel=1e-4)
    assert rho[0] == pytest.approx(
        row['ogm/score/strong'] / row['ogm/score/weak'], rel=1e-4)
    expected = np.where(rho > 1, 1 - np.tanh(0.8 * rho), 1.0)
    np.testing.assert_allclose(
        [row['ogm/coefficient/strong'], row['ogm/coefficient/weak']],
        expected, rtol=1e-4)
  # The strong modality dominates once the model learns.
  assert step_rows[-1]['ogm/ratio/strong'] > 1
  final = results['final']
  for m in MODALITIES:
    assert 0.0 <= final[f'holdout/unimodal_{m}/accuracy'] <= 1.0
  assert final['holdout/unimodal_strong/accuracy'] > 0.5
  assert os.path.exists(tmp_path / 'ogm.png')


@pytest.mark.slow
def test_modulation_window_is_in_epochs(data_dir, tmp_path):
  config = _ogm_config(data_dir, steps_=8, method='ogm')
  splits = data.load_dataset(config.data)
  per_epoch = data.steps_per_epoch(len(splits.train), config.data.batch_size)
  # Active for the steps [2, 5): epochs given as fractions of an epoch.
  config.modulation.start_epoch = 2 / per_epoch
  config.modulation.end_epoch = 5 / per_epoch
  train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metric_writer.read_metrics(str(tmp_path))
          if 'ogm/active' in r]
  # Row i logs the update of step i - 1 (steps count from 0).
  assert [r['ogm/active'] for r in rows] == [0, 0, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize('key, value, message', [
    ('method', 'ogm_magic', r"modulation.method='ogm_magic'.*valid"),
    ('alpha', -0.1, r'alpha=-0.1 must be >= 0'),
    ('modulated', 'biases', r"modulated='biases'.*valid"),
    ('start_epoch', 5.0, r'\[5.0, 2.0\) is empty or reversed'),
])
def test_bad_modulation_configs_are_named(data_dir, tmp_path, key, value,
                                          message):
  config = _ogm_config(data_dir, steps_=1)
  config.modulation.end_epoch = 2.0
  config.modulation[key] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))


def test_modulation_rejects_gradient_blend_and_mid_fusion(data_dir, tmp_path):
  config = _ogm_config(data_dir, steps_=1)
  config.model.modality_heads = True
  config.blend.mode = 'gradient'
  with pytest.raises(ValueError, match=r'config\.blend \(per_loss_gradients\) '
                     r'cannot be combined with config\.modulation'):
    train.train_and_evaluate(config, str(tmp_path))
  config = _ogm_config(data_dir, steps_=1)
  config.model.fusion = 'mid_concat'
  with pytest.raises(ValueError, match='needs late fusion'):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_av_ogm_runlocal_trains_on_a_fake_crema_d_copy(tmp_path):
  config = runs.load_config(AV_CONFIG, 'dataset=crema_d,runlocal')
  av_fakes.on_crema_d_copy(config, tmp_path)
  config.num_train_steps = 4
  config.log_every_steps = 1
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  final = results['final']
  for m in ('audio', 'visual'):
    assert f'test/unimodal_{m}/accuracy' in final
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'ogm/ratio/audio' in r]
  assert len(rows) == 4
  # ResNet encoders: the conv kernels are modulated, so GE noise is drawn
  # and training stays finite.
  assert all(np.isfinite(r['train_step/loss']) for r in rows)
