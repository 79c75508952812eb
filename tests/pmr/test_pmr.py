"""PMR against the spec's numpy-verified examples, the prototype pass and
the update rule on a small model, and end to end through the trainer."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gblend_jax
from experiments import runs
from gblend_jax import config as config_lib
from gblend_jax import models
from gblend_jax.pmr import method as pmr_method
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import program as program_lib
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

# SPEC_METHODS.md §3(h).
AUDIO = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
LABELS = np.array([0, 0, 1, 1])


def test_spec_prototypes_are_class_means():
  protos = gblend_jax.pmr_prototypes(jnp.asarray(AUDIO), LABELS, 2)
  np.testing.assert_allclose(protos, [[2.0, 0.0], [0.0, 3.0]])


def test_spec_prototypical_cross_entropy():
  protos = jnp.array([[2.0, 0.0], [0.0, 3.0]])
  query = jnp.array([[1.0, 1.0]])
  logits = gblend_jax.pmr_logits(query, protos)
  np.testing.assert_allclose(logits, [[-1.414214, -2.236068]], rtol=1e-6)
  np.testing.assert_allclose(jax.nn.softmax(logits), [[0.694630, 0.305370]],
                             rtol=1e-5)
  loss = gblend_jax.pmr_loss(query, jnp.array([0]), protos)
  assert float(loss) == pytest.approx(0.364376, rel=1e-5)


def test_spec_moving_average():
  new = jnp.array([[2.0, 0.0], [0.0, 3.0]])
  smoothed = gblend_jax.pmr_update_prototypes(new, jnp.ones((2, 2)), 0.5)
  np.testing.assert_allclose(smoothed, [[1.5, 0.5], [0.5, 2.0]])


def test_spec_ratio_switches_the_loss_to_the_slower_modality():
  scores = jnp.array([0.7 + 0.4, 0.9 + 0.8])  # Audio, visual.
  ratio, beta = gblend_jax.pmr_coefficients(scores, alpha=2.0)
  assert float(ratio) == pytest.approx(1.1 / 1.7, rel=1e-6)  # 0.647059.
  np.testing.assert_array_equal(beta, [2.0, 0.0])


@pytest.mark.parametrize('scores, expected', [
    ((1.7, 1.1), (0.0, 3.0)),  # ρ > 1: the visual modality is behind.
    ((1.2, 1.2), (0.0, 0.0)),  # ρ = 1: neither.
])
def test_switch_other_branches(scores, expected):
  _, beta = gblend_jax.pmr_coefficients(jnp.array(scores), alpha=3.0)
  np.testing.assert_array_equal(beta, expected)


def test_scores_sum_true_class_probabilities():
  protos = jnp.array([[2.0, 0.0], [0.0, 3.0]])
  # (1, 1) with y = 0: 0.694630; (0, 3) sits on c_1: d = (√13, 0), so
  # p_1 = 1 / (1 + e^{-√13}) = 0.973551.
  score = gblend_jax.pmr_scores(jnp.array([[1.0, 1.0], [0.0, 3.0]]),
                                jnp.array([0, 1]), protos)
  expected = 0.694630 + 1 / (1 + np.exp(-np.sqrt(13)))
  assert float(score) == pytest.approx(expected, rel=1e-5)


def test_gradient_reaches_the_features_only():
  protos = jnp.array([[2.0, 0.0], [0.0, 3.0]])
  z = jnp.array([[1.0, 1.0]])
  dz, dc = jax.grad(gblend_jax.pmr_loss, argnums=(0, 2))(z, jnp.array([0]),
                                                          protos)
  # ∂L/∂z = Σ_k (p_k - [k = y]) ∂(-d_k)/∂z, ∂(-d_k)/∂z = -(z - c_k) / d_k.
  p = np.array([0.694630, 0.305370])
  by_hand = ((p[0] - 1) * -np.array([-1.0, 1.0]) / np.sqrt(2)
             + p[1] * -np.array([1.0, -2.0]) / np.sqrt(5))
  np.testing.assert_allclose(dz[0], by_hand, rtol=1e-5)  # (-0.3525, 0.4891)
  np.testing.assert_array_equal(dc, np.zeros((2, 2)))  # Constants.
  # A feature on its prototype: distance 0, a finite (zero) gradient.
  on_top = jax.grad(gblend_jax.pmr_loss)(protos[:1], jnp.array([0]), protos)
  assert np.all(np.isfinite(on_top))


def test_class_sums_add_over_batches_and_an_absent_class_keeps_its_old():
  sums, counts = gblend_jax.pmr_class_sums(jnp.asarray(AUDIO[:2]),
                                           LABELS[:2], 3)
  more_sums, more_counts = gblend_jax.pmr_class_sums(
      jnp.asarray(AUDIO[2:]), LABELS[2:], 3, mask=jnp.array([1.0, 0.0]))
  np.testing.assert_array_equal(counts + more_counts, [2, 1, 0])
  previous = jnp.full((3, 2), 7.0)
  protos = gblend_jax.pmr.prototypes_from_sums(sums + more_sums,
                                               counts + more_counts, previous)
  # Class 1 has only (0, 2) (the other is masked); class 2 none: kept.
  np.testing.assert_allclose(protos, [[2.0, 0.0], [0.0, 2.0], [7.0, 7.0]])


def test_rebalance_loss_is_alpha_times_the_slower_modality_pce():
  protos = {'a': jnp.array([[2.0, 0.0], [0.0, 3.0]]),
            'v': jnp.array([[1.0, 1.0], [-1.0, -1.0]])}
  features = {'a': jnp.array([[1.0, 1.0], [0.0, 1.0]]),
              'v': jnp.array([[1.0, 1.0], [-1.0, -1.0]])}  # On its protos.
  labels = jnp.array([0, 1])
  term, aux = gblend_jax.pmr_rebalance_loss(features, labels, protos,
                                            ('a', 'v'), alpha=2.0)
  assert float(aux['ratio']) < 1  # Visual sits on its prototypes.
  np.testing.assert_array_equal(aux['coefficients'], [2.0, 0.0])
  expected = 2.0 * gblend_jax.pmr_loss(features['a'], labels, protos['a'])
  assert float(term) == pytest.approx(float(expected), rel=1e-6)


# ---- The method on a small model, without the trainer's loop.


def _small_run(config, shapes=None):
  shapes = shapes or {'a': (4,), 'b': (3,)}
  model = models.build_model(config.model, modalities=shapes, num_classes=3)
  heads = steps.head_order(tuple(shapes), config.model.modality_heads)
  run = methods.RunInfo(config=config, model=model, modalities=shapes,
                        heads=heads, steps_per_epoch=10, total_steps=40,
                        splits=types.SimpleNamespace(train='source'))
  return run, model


def _batch(seed, shapes=(('a', 4), ('b', 3)), size=12):
  rng = np.random.default_rng(seed)
  batch = {m: rng.normal(size=(size, d)).astype(np.float32)
           for m, d in shapes}
  batch['label'] = np.arange(size) % 3
  return batch


def test_prototype_pass_means_then_smooths_from_epoch_two():
  config = config_lib.default_config()
  config.pmr.update(enabled=True, momentum=0.25, prototype_fraction=0.2)
  run, model = _small_run(config)
  pmr = pmr_method.PMR(run)
  program = program_lib.build_program(run, [pmr])
  state = program.init(jax.random.PRNGKey(0))
  seeds = []

  def train_iterator(source, seed):
    assert source == 'source'
    seeds.append(seed)
    return iter([_batch(seed + k) for k in range(5)])

  pmr.start(methods.Services(
      workdir='', put=lambda x: x, to_global=lambda x: x,
      train_iterator=train_iterator, evaluate=None, eval_batches=None,
      build_train_step=None, write_metrics=None))

  def means(seed):  # 10 steps per epoch, a fifth: two batches.
    batches = [_batch(seed), _batch(seed + 1)]
    out = {m: [] for m in 'ab'}
    for b in batches:
      feats = model.apply({'params': state.params}, b, train=False)
      for m in 'ab':
        out[m].append(np.asarray(feats['features'][m]))
    labels = np.concatenate([b['label'] for b in batches])
    return {m: np.stack([np.concatenate(out[m])[labels == k].mean(0)
                         for k in range(3)]) for m in 'ab'}

  for step in range(0, 31):
    assert pmr.before_step(step, state) is None
    if step == 0:
      first = means(seeds[0])
      for m in 'ab':
        np.testing.assert_allclose(pmr.protos[m], first[m], rtol=1e-5)
    if step == 10:  # The pass after epoch 0 is not smoothed.
      for m in 'ab':
        np.testing.assert_allclose(pmr.protos[m], means(seeds[1])[m],
                                   rtol=1e-5)
      before = dict(pmr.protos)
    if step == 20:
      for m in 'ab':
        np.testing.assert_allclose(
            pmr.protos[m], 0.75 * means(seeds[2])[m] + 0.25 * before[m],
            rtol=1e-5)
  # One pass per epoch, each with a shuffle of its own.
  assert len(seeds) == 4 and len(set(seeds)) == 4
  assert pmr.host_state()['epoch'] == 3


def test_update_rule_adds_the_pce_gradient_to_the_slower_encoder_only():
  config = config_lib.default_config()
  config.pmr.update(enabled=True, alpha=2.0)
  run, model = _small_run(config)
  pmr = pmr_method.PMR(run)
  state = program_lib.build_program(run, [pmr]).init(jax.random.PRNGKey(1))
  batch = _batch(3)
  protos = {m: jnp.asarray(_batch(9, size=3)[m][:, :1].repeat(
      pmr.protos[m].shape[1], axis=1)) for m in 'ab'}
  args = {'head_weights': jnp.array([0.0, 0.0, 1.0]), 'label': batch['label'],
          'pmr': {'prototypes': protos, 'active': jnp.float32(1.0)}}
  loss_vector = steps.training_losses(model, state, batch, run.heads)
  with_pmr, report = pmr_method.make_update_rule(('a', 'b'), alpha=2.0)(
      loss_vector, state, args)
  plain, _ = steps.weighted_sum_rule(loss_vector, state, args)
  metrics = with_pmr.objective_metrics
  slow = 'a' if float(metrics['pmr/ratio']) < 1 else 'b'
  fast = 'b' if slow == 'a' else 'a'
  assert float(metrics[f'pmr/coefficient/{slow}']) == 2.0
  assert float(metrics[f'pmr/coefficient/{fast}']) == 0.0
  total, _ = report(None)
  expected = float(plain.per_head[-1]
                   + 2.0 * metrics[f'pmr/prototype_loss/{slow}'])
  assert float(total) == pytest.approx(expected, rel=1e-6)
  diff = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))),
                      with_pmr.grads, plain.grads)
  assert max(jax.tree.leaves(diff[f'encoder_{slow}'])) > 1e-4
  for name, part in diff.items():
    if name != f'encoder_{slow}':
      assert max(jax.tree.leaves(part)) == 0.0, name
  # Outside the window the step is the plain one.
  args['pmr']['active'] = jnp.float32(0.0)
  closed, _ = pmr_method.make_update_rule(('a', 'b'), alpha=2.0)(
      loss_vector, state, args)
  jax.tree.map(np.testing.assert_array_equal, closed.grads, plain.grads)


# ---- Config refusals, before training.


@pytest.mark.parametrize('overrides, message', [
    ({'pmr.alpha': 0.0}, r'config\.pmr\.alpha=0\.0 must be > 0'),
    ({'pmr.momentum': 1.0}, r'config\.pmr\.momentum=1\.0 must be in \[0, 1\)'),
    ({'pmr.prototype_fraction': 0.0},
     r'config\.pmr\.prototype_fraction=0\.0 must be in \(0, 1\]'),
    ({'pmr.start_epoch': 3.0, 'pmr.end_epoch': 2.0},
     r'config\.pmr window \[start_epoch, end_epoch\) = \[3\.0, 2\.0\)'),
    ({'data.modalities': ('strong',)},
     r"config\.pmr\.enabled=True balances two modalities; "
     r"config\.data\.modalities=\('strong',\)"),
])
def test_bad_values_are_refused_before_training(data_dir, tmp_path,
                                                overrides, message):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.pmr.enabled = True
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_defaults_turn_nothing_on():
  config = config_lib.default_config()
  assert not pmr_method.PMR.enabled(config)
  pmr_method.PMR.check_config(config)


# ---- End to end.


@pytest.mark.slow
def test_trains_the_weak_view_toward_its_prototypes_inside_the_window(
    data_dir, tmp_path):
  # 5 steps per epoch; the prototypical loss over epoch 0 only.
  config = train_utils.tiny_synthetic_config(data_dir, steps=10)
  config.log_every_steps = 1
  config.pmr.update(enabled=True, alpha=2.0, end_epoch=1.0)
  train.train_and_evaluate(config, str(tmp_path / 'pmr'))
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'pmr'))
          if 'pmr/ratio' in r]
  assert [r['step'] for r in rows] == list(range(1, 11))
  for row in rows:
    pce = sum(row[f'pmr/coefficient/{m}'] * row[f'pmr/prototype_loss/{m}']
              for m in ('strong', 'weak'))
    assert row['train_step/loss'] == pytest.approx(
        row['train_step/fused/loss'] + pce, rel=1e-5)
  inside, after = rows[:5], rows[5:]
  # The synthetic weak view is the slower one: it gets the loss.
  for row in inside:
    assert row['pmr/active'] == 1.0 and row['pmr/ratio'] > 1
    assert row['pmr/coefficient/weak'] == 2.0
    assert row['pmr/coefficient/strong'] == 0.0
  for row in after:
    assert row['pmr/active'] == 0.0
    assert row['train_step/loss'] == row['train_step/fused/loss']
  # No prototype pass after the window: the checkpoint holds epoch 0's.
  extra = json_extra(tmp_path / 'pmr')
  assert extra['epoch'] == 0
  assert np.asarray(extra['prototypes']['weak']).shape[0] == 3  # Classes.

  # The same run with the window closed over epoch 0: the same prototypes
  # (the same pass of the same initial model), so step 1 logs the same
  # values; its update differs only in the weak encoder (the PCE's
  # gradient reaches nothing else), so step 2's strong view is unchanged.
  config.num_train_steps = 2
  config.pmr.update(start_epoch=1.0, end_epoch=-1.0)
  train.train_and_evaluate(config, str(tmp_path / 'closed'))
  closed = [r for r in metric_writer.read_metrics(str(tmp_path / 'closed'))
            if 'pmr/ratio' in r]
  assert [r['pmr/active'] for r in closed] == [0.0, 0.0]
  for m in ('strong', 'weak'):
    assert closed[0][f'pmr/prototype_loss/{m}'] == (
        inside[0][f'pmr/prototype_loss/{m}'])
  assert closed[1]['pmr/prototype_loss/strong'] == pytest.approx(
      inside[1]['pmr/prototype_loss/strong'], rel=1e-6)
  assert (closed[1]['pmr/prototype_loss/weak']
          != inside[1]['pmr/prototype_loss/weak'])


def json_extra(workdir):
  """PMR's host state in the latest checkpoint (orbax's JSON of extra)."""
  root = os.path.join(str(workdir), 'checkpoints')
  latest = max(int(name) for name in os.listdir(root) if name.isdigit())
  with open(os.path.join(root, str(latest), 'extra', 'metadata')) as f:
    return json.load(f)['methods']['pmr']


AV_CONFIG = os.path.join(train_utils.REPO, 'experiments', 'configs',
                         'av_ogm.py')


def test_av_config_has_the_authors_crema_d_values():
  config = runs.load_config(AV_CONFIG, 'dataset=crema_d,method=pmr')
  assert config.pmr.to_dict() == {
      'enabled': True, 'alpha': 2.0, 'momentum': 0.0, 'start_epoch': 0.0,
      'end_epoch': 71.0, 'prototype_fraction': 0.1}
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.optimizer.b2, config.optimizer.schedule) == (
              'adam', 1e-3, 0.99, 'constant')
  assert config.num_epochs == 130 and config.data.batch_size == 64
  assert config.modulation.method == 'none'


@pytest.mark.slow
def test_av_pmr_runlocal_trains_on_a_fake_crema_d_copy(tmp_path):
  config = runs.load_config(AV_CONFIG, 'dataset=crema_d,method=pmr,runlocal')
  av_fakes.on_crema_d_copy(config, tmp_path)
  av_fakes.with_small_encoders(config)
  config.num_train_steps = 4
  config.log_every_steps = 1
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'pmr/ratio' in r]
  assert len(rows) == 4
  for row in rows:
    # Exactly one modality gets α = 2 (ρ = 1 exactly is not expected).
    betas = sorted(row[f'pmr/coefficient/{m}'] for m in ('audio', 'visual'))
    assert betas == [0.0, 2.0]
    pce = sum(row[f'pmr/coefficient/{m}'] * row[f'pmr/prototype_loss/{m}']
              for m in ('audio', 'visual'))
    assert np.isfinite(row['train_step/loss'])
    assert row['train_step/loss'] == pytest.approx(
        row['train_step/fused/loss'] + pce, rel=1e-5)
  extra = json_extra(tmp_path / 'run')
  # 18 training clips, batch 8: 2 steps per epoch, passes before epochs 0, 1.
  assert extra['epoch'] == 1
  assert np.asarray(extra['prototypes']['audio']).shape[0] == 6
