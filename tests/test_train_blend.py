"""The trainer's Gradient Blending modes: fixed, offline, online, gradient."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import models
from gblend_jax.blending import blend
from gblend_jax.blending import estimation as blend_estimation
from gblend_jax.blending import method as blend_method
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils

HEADS = ('strong', 'weak', 'fused')


def _blend_rows(workdir):
  return [r for r in metric_writer.read_metrics(workdir)
          if 'blend/weight/fused' in r]


def _per_loss_hooks(model):
  return methods.StepHooks(
      update_rule=blend_method.per_loss_gradient_rule(model, HEADS),
      opt_state_metrics=lambda s: blend_method.gradient_state_metrics(
          s, HEADS))


def test_fixed_weights_single_backward_equals_per_loss_blend():
  config = models.default_model_config()
  config.encoder.mlp.hidden_sizes = (8,)
  config.fused_head.hidden_sizes = (8,)
  model = models.build_model(config, modalities={'strong': (5,), 'weak': (3,)},
                             num_classes=3)
  rng = np.random.default_rng(0)
  batch = {'strong': rng.normal(size=(6, 5)).astype(np.float32),
           'weak': rng.normal(size=(6, 3)).astype(np.float32),
           'label': np.array([0, 1, 2, 0, 1, 2], np.int32)}
  weights = jnp.array([0.2, 0.3, 0.5])
  lr = optax.constant_schedule(0.1)

  def state_for(tx):
    return steps.TrainState.create(model, tx, jax.random.PRNGKey(0),
                                   {'strong': (5,), 'weak': (3,)})

  sgd = optax.sgd(0.1, momentum=0.9)
  single = jax.jit(steps.make_train_step(model, sgd, lr, HEADS))
  state_a, metrics_a = single(state_for(sgd), batch,
                              {'head_weights': weights})
  blended_tx = optax.chain(blend.gradient_blend(weights), sgd)
  per_loss = jax.jit(steps.make_train_step(
      model, blended_tx, lr, HEADS, _per_loss_hooks(model)))
  state_b, metrics_b = per_loss(state_for(blended_tx), batch,
                                {'holdout_batch': batch})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               state_a.params, state_b.params)
  np.testing.assert_allclose(metrics_a['loss'], metrics_b['loss'], rtol=1e-6)


def test_gradient_step_skips_per_loss_work_between_estimates():
  # The trainer's alternation (per-loss gradients and an estimate every 3rd
  # step, one weighted backward pass in between) must equal per-loss
  # gradients on every step with gradient_blend's own count rule.
  config = models.default_model_config()
  config.encoder.mlp.hidden_sizes = (8,)
  config.fused_head.hidden_sizes = (8,)
  model = models.build_model(config, modalities={'strong': (5,), 'weak': (3,)},
                             num_classes=3)
  rng = np.random.default_rng(1)

  def batch_of(n):
    return {'strong': rng.normal(size=(n, 5)).astype(np.float32),
            'weak': rng.normal(size=(n, 3)).astype(np.float32),
            'label': rng.integers(0, 3, n).astype(np.int32)}

  batches = [(batch_of(6), batch_of(6)) for _ in range(5)]
  tx = optax.chain(blend.gradient_blend(jnp.full(3, 1 / 3), estimate_every=3),
                   optax.sgd(0.1, momentum=0.9))
  params = steps.TrainState.create(
      model, tx, jax.random.PRNGKey(0), {'strong': (5,), 'weak': (3,)}).params

  def step(**variant):
    return jax.jit(steps.make_train_step(
        model, tx, optax.constant_schedule(0.1), HEADS,
        _per_loss_hooks(model), **variant))

  by_count = step()
  by_host = {e: step(estimate=e) for e in (True, False)}
  states, weights = {}, {}
  for name in ('by_count', 'by_host'):
    state = steps.TrainState(step=jnp.int32(0), params=params,
                             batch_stats={}, opt_state=tx.init(params),
                             rng=jax.random.PRNGKey(1))
    weights[name] = []
    for k, (batch, holdout) in enumerate(batches):
      if name == 'by_count':
        state, metrics = by_count(state, batch, {'holdout_batch': holdout})
      elif k % 3 == 0:
        state, metrics = by_host[True](state, batch,
                                       {'holdout_batch': holdout})
      else:
        state, metrics = by_host[False](state, batch, {})
      weights[name].append([float(metrics[f'blend/weight/{h}'])
                            for h in HEADS])
    states[name] = state
  # Re-estimated at steps 0 and 3: the weights move there and only there.
  w = np.array(weights['by_host'])
  assert not np.allclose(w[0], 1 / 3) and not np.allclose(w[3], w[2])
  np.testing.assert_allclose(w[1], w[0])
  np.testing.assert_allclose(w, weights['by_count'], rtol=1e-5, atol=1e-7)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6),
               states['by_count'].params, states['by_host'].params)
  with pytest.raises(TypeError, match='estimate must be a Python bool'):
    tx.update(jax.tree.map(lambda p: jnp.zeros((3, *p.shape)), params),
              tx.init(params), params, estimate=jnp.bool_(True))


def test_algorithm1_by_hand():
  # Losses before: train [1.0, 1.0, 1.0], held-out [1.2, 1.1, 1.3].
  # After training head i alone, head i's losses (train, held-out):
  #   strong (0.5, 1.0): G = 0.2, O: 0.2 -> 0.5, dO = 0.3, G/dO^2 = 2.222
  #   weak   (0.9, 1.2): G = -0.1 -> weight 0 (held-out loss got worse)
  #   fused  (0.6, 1.1): G = 0.2, O: 0.3 -> 0.5, dO = 0.2, G/dO^2 = 5.0
  before = (np.array([1.0, 1.0, 1.0]), np.array([1.2, 1.1, 1.3]))
  after = {0: (0.5, 1.0), 1: (0.9, 1.2), 2: (0.6, 1.1)}

  def measure(state):
    if state is None:
      return before
    train_losses, holdout = before[0].copy(), before[1].copy()
    train_losses[state], holdout[state] = after[state]
    return train_losses, holdout

  result = blend_estimation.estimate_blend_weights(
      None, num_heads=3, train_head=lambda state, head: head, measure=measure,
      previous_weights=np.full(3, 1 / 3))
  raw = np.array([0.2 / 0.3**2, 0.0, 0.2 / 0.2**2])
  np.testing.assert_allclose(result.weights, raw / raw.sum(), rtol=1e-5)
  np.testing.assert_allclose(result.report.gain, [0.2, -0.1, 0.2], atol=1e-6)
  # OGR = |dO / dG|: strong 0.3/0.2, weak (0.3-0.1)/0.1, fused 0.2/0.2.
  np.testing.assert_allclose(result.report.ogr, [1.5, 2.0, 1.0], rtol=1e-5)
  assert not result.used_fallback
  # If no head generalises, the previous weights stay.
  after.update({0: (0.5, 1.3), 2: (0.6, 1.4)})
  result = blend_estimation.estimate_blend_weights(
      None, num_heads=3, train_head=lambda state, head: head, measure=measure,
      previous_weights=np.array([0.1, 0.2, 0.7]))
  assert result.used_fallback
  np.testing.assert_allclose(result.weights, [0.1, 0.2, 0.7], rtol=1e-6)
  metrics = result.as_metrics(HEADS)
  assert metrics['blend/weight/fused'] == pytest.approx(0.7)
  assert metrics['blend/used_fallback'] == 1.0


@pytest.mark.slow
def test_fixed_mode_trains_with_the_given_weights(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=80)
  config.blend.mode = 'fixed'
  config.blend.weights = (0.5, 0.0, 0.5)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['blend_weights'] == {'strong': 0.5, 'weak': 0.0,
                                      'fused': 0.5}
  rows = metric_writer.read_metrics(str(tmp_path))
  row = next(r for r in rows if 'train_step/loss' in r)
  expected = 0.5 * row['train_step/strong/loss'] + 0.5 * row[
      'train_step/fused/loss']
  assert row['train_step/loss'] == pytest.approx(expected, rel=1e-5)
  # The strong head is trained; the weak head has weight 0 and is not: it
  # stays near chance (1/3).
  assert results['final']['train/strong/accuracy'] > 0.8
  assert results['final']['train/weak/accuracy'] < 0.6


@pytest.mark.slow
def test_offline_estimates_once_from_the_initial_model(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=20)
  config.blend.mode = 'offline'
  config.blend.estimate_epochs = 2.0
  results = train.train_and_evaluate(config, str(tmp_path))
  rows = _blend_rows(str(tmp_path))
  assert [r['step'] for r in rows] == [0]
  weights = np.array([rows[0][f'blend/weight/{h}'] for h in HEADS])
  assert weights.sum() == pytest.approx(1.0, abs=1e-5)
  assert np.all(weights >= 0)
  for head in HEADS:  # A head whose held-out loss rose gets weight 0.
    if rows[0][f'blend/gain/{head}'] <= 0:
      assert rows[0][f'blend/weight/{head}'] == 0
  np.testing.assert_allclose(
      [results['blend_weights'][h] for h in HEADS], weights, rtol=1e-6)
  assert os.path.exists(tmp_path / 'blend.png')


@pytest.mark.slow
def test_online_reestimates_every_super_epoch(data_dir, tmp_path):
  # 5 steps per epoch: warm-up 2 epochs, super-epochs of 2 epochs.
  config = train_utils.tiny_synthetic_config(data_dir, steps=30)
  config.blend.mode = 'online'
  config.blend.warmup_epochs = 2.0
  config.blend.estimate_epochs = 2.0
  results = train.train_and_evaluate(config, str(tmp_path))
  rows = _blend_rows(str(tmp_path))
  assert [r['step'] for r in rows] == [10, 20]
  # The weights in use are the last estimate's (resumed: tests/test_resume).
  assert results['blend_weights'] == {
      h: pytest.approx(rows[-1][f'blend/weight/{h}'], rel=1e-6)
      for h in HEADS}


@pytest.mark.slow
def test_gradient_mode_moves_weights(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=20)
  config.blend.mode = 'gradient'
  config.blend.estimate_every_steps = 2
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  weights = np.array([straight['blend_weights'][h] for h in HEADS])
  assert weights.sum() == pytest.approx(1.0, abs=1e-5)
  assert not np.allclose(weights, 1 / 3)  # Estimated, not the start.
  logged = _blend_rows(str(tmp_path / 'straight'))
  assert logged and all('blend/gain/fused' in r for r in logged)


@pytest.mark.parametrize('mode,weights,match', [
    ('fixed', (), 'needs config.blend.weights'),
    ('fixed', (0.5, 0.5), r'has 2 entries; the heads are'),
    ('fixed', (0.5, -0.1, 0.6), 'non-negative'),
    ('fixed', (0.2, 0.2, 0.2), 'sum to 0.6'),
    ('offline', (0.5, 0.5, 0.5), 'sum to 1.5'),
])
def test_bad_blend_configs_are_rejected(data_dir, tmp_path, mode, weights,
                                        match):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.blend.mode = mode
  config.blend.weights = weights
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path))


def test_blend_mode_needs_modality_heads(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1,
                                             modalities='strong')
  config.blend.mode = 'online'
  with pytest.raises(ValueError, match='several modalities'):
    train.train_and_evaluate(config, str(tmp_path))
