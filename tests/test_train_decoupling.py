"""Decoupled classifier learning through the real trainer, on a fake
Fashion-MNIST (cRT, LWS, τ-norm: ``config.longtail.decoupling``).

The fake copy (`tests/datasets/fashion_mnist_fakes.py`) made long-tailed as
in `tests/test_train_longtail.py`: 20, 17, 14, 12, 10, 9, 7, 6, 5, 5
training images (105: 6 steps of batch 16 an epoch).
"""

import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.configs import fashion_mnist_lt
from gblend_jax import data
from gblend_jax import models
from gblend_jax.longtail import decoupling
from gblend_jax.longtail import method as longtail_method
from gblend_jax.training import checkpointing
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import fashion_mnist_fakes as fakes

STEPS_PER_EPOCH = 105 // 16
CLASSIFIER = ('fused_head', 'output')


@pytest.fixture(scope='module')
def fake_fmnist(tmp_path_factory) -> tuple[str, str]:
  """``(data_dir, manual_dir)`` with the fake copy prepared once."""
  root = tmp_path_factory.mktemp('fmnist')
  fakes.write_fake_copy(root / 'manual', num_train=300, num_test=50)
  return str(root / 'tfds'), str(root / 'manual')


def _config(fake_fmnist, epochs=3, **longtail) -> ml_collections.ConfigDict:
  """The real config, an MLP on the fake copy; one evaluation at the end."""
  config = fashion_mnist_lt.get_config('recipe=ce,runlocal')
  config.data.data_dir, config.data.manual_dir = fake_fmnist
  config.data.longtail.update(imbalance_factor=4.0, max_count=20)
  config.data.batch_size = 16
  config.data.eval_batch_size = 64
  config.model.encoder.name = 'mlp'
  config.model.encoder.mlp.hidden_sizes = (32,)
  config.num_epochs = epochs
  config.eval_every_epochs = 10.0
  config.log_every_steps = 1
  config.longtail.shot_metrics = False
  config.longtail.update(longtail)
  return config


def _latest(workdir):
  return checkpointing.Checkpointer(workdir).restore_raw(best=False)


def _split(params):
  """``(classifier, everything else)`` as flat ``{path: array}`` dicts."""
  flat = flax.traverse_util.flatten_dict(params)
  head = {k: v for k, v in flat.items() if k[:2] == CLASSIFIER}
  rest = {k: v for k, v in flat.items() if k[:2] != CLASSIFIER}
  return head, rest


def _stage_then_end(config, workdir, monkeypatch):
  """The state at the classifier stage's first step (the run stopped
  there, as on SIGTERM) and at the end (the rerun resumed to it)."""
  boundary = (config.num_epochs - config.longtail.decoupling_epochs) * (
      STEPS_PER_EPOCH)
  with monkeypatch.context() as patch:
    patch.setattr(train, '_StopRequest', train_utils.stop_request_at(boundary))
    assert train.train_and_evaluate(config, workdir) == {
        'interrupted_at_step': boundary}
  before = _latest(workdir)
  assert int(before['step']) == boundary
  results = train.train_and_evaluate(config, workdir)
  return before, _latest(workdir), results


def _logged(workdir, key):
  return {r['step']: r[key] for r in metric_writer.read_metrics(workdir)
          if key in r}


@pytest.mark.slow
def test_crt_freezes_the_backbone_and_re_estimates_batch_norm(
    fake_fmnist, tmp_path, monkeypatch):
  # A CIFAR ResNet (BatchNorm): 2 representation epochs, 1 cRT epoch.
  config = _config(fake_fmnist, decoupling='crt', decoupling_epochs=1)
  config.model.encoder.name = 'cifar_resnet'
  config.model.encoder.cifar_resnet.update(depth=8, width=4)
  workdir = str(tmp_path / 'crt')
  before, after, results = _stage_then_end(config, workdir, monkeypatch)
  assert int(after['step']) == 3 * STEPS_PER_EPOCH
  head_before, rest_before = _split(before['params'])
  head_after, rest_after = _split(after['params'])
  # The backbone is bit-identical after the stage; the classifier moved.
  assert rest_before.keys() == rest_after.keys() and len(rest_before) > 4
  for key in rest_before:
    np.testing.assert_array_equal(rest_after[key], rest_before[key],
                                  err_msg=str(key))
  for key in head_before:
    assert not np.array_equal(head_after[key], head_before[key]), key
  # BatchNorm statistics are re-estimated under the class-balanced
  # batches, as the authors' code does (the backbone in train() mode).
  stats_before = flax.traverse_util.flatten_dict(before['batch_stats'])
  stats_after = flax.traverse_util.flatten_dict(after['batch_stats'])
  assert stats_before and stats_before.keys() == stats_after.keys()
  for key in stats_before:
    assert not np.array_equal(stats_after[key], stats_before[key]), key
  # The classifier stage is on from the boundary step on (logged per step).
  stage = _logged(workdir, 'train_step/longtail/classifier_stage')
  assert all(stage[s] == (s > 2 * STEPS_PER_EPOCH) for s in stage)
  assert len(stage) == 3 * STEPS_PER_EPOCH
  assert np.isfinite(results['final']['test/fused/accuracy'])


def _method(config, splits, model=None):
  return longtail_method.LongTail(methods.RunInfo(
      config=config, model=model, modalities=splits.modalities,
      heads=('fused',), steps_per_epoch=STEPS_PER_EPOCH,
      total_steps=config.num_epochs * STEPS_PER_EPOCH, splits=splits,
      global_batch_size=16))


def test_crt_stage_start_re_initialises_the_classifier(fake_fmnist):
  config = _config(fake_fmnist, decoupling='crt', decoupling_epochs=1)
  splits = data.load_dataset(config.data)
  model = models.build_model(config.model, modalities=splits.modalities,
                             num_classes=splits.num_classes)
  method = _method(config, splits, model)
  assert method.classifier_step == 2 * STEPS_PER_EPOCH
  tx = method.wrap_optimizer(optax.sgd(0.1, momentum=0.9))
  state = steps.TrainState.create(model, tx, jax.random.PRNGKey(0),
                                  splits.modalities)
  method.start(methods.Services(
      workdir='', put=lambda tree: tree, to_global=None,
      train_iterator=None, evaluate=None, eval_batches=None,
      build_train_step=None, write_metrics=None))
  assert method.before_step(11, state) is None
  assert method.before_step(13, state) is None
  new = method.before_step(12, state)
  layer = new.params['fused_head']['output']
  old = state.params['fused_head']['output']
  # A fresh flax Dense init of the key fold_in(rng, 12), zero bias.
  np.testing.assert_array_equal(
      layer['kernel'], jax.nn.initializers.lecun_normal()(
          jax.random.fold_in(state.rng, 12), old['kernel'].shape))
  np.testing.assert_array_equal(layer['bias'], 0.0)
  assert not np.array_equal(layer['kernel'], old['kernel'])
  assert new.params['encoder_image'] is state.params['encoder_image']
  assert int(decoupling.decoupled_state(new.opt_state).stage) == 1
  assert int(decoupling.decoupled_state(state.opt_state).stage) == 0


def test_classifier_stage_samples_class_balanced(fake_fmnist):
  config = _config(fake_fmnist, epochs=4, decoupling='lws',
                   decoupling_epochs=2)
  splits = data.load_dataset(config.data)
  sampler = _method(config, splits).sampler()
  # Instance-balanced permutations in the representation stage, then
  # p_j = 1/C (Kang et al.'s q = 0) for every epoch of the stage.
  assert sampler.probabilities(0) is None
  assert sampler.probabilities(1) is None
  for epoch in (2, 3):
    np.testing.assert_array_equal(sampler.probabilities(epoch), [0.1] * 10)
  labels = data.pipeline.source_labels(splits.train)
  first = np.bincount(labels[sampler.epoch_indices(0)], minlength=10)
  stage = np.bincount(labels[np.concatenate(
      [sampler.epoch_indices(2), sampler.epoch_indices(3)])], minlength=10)
  # An epoch is 96 of the 105 images in order, the head class 20 of them
  # at most; the stage draws every class about 19 times in its 192.
  assert first[0] >= 17 and first[-1] <= 5
  assert stage.min() >= 10 and stage.max() <= 30


@pytest.mark.slow
def test_lws_trains_only_the_scales_of_the_frozen_classifier(
    fake_fmnist, tmp_path, monkeypatch):
  config = _config(fake_fmnist, decoupling='lws', decoupling_epochs=1)
  workdir = str(tmp_path / 'lws')
  before, after, _ = _stage_then_end(config, workdir, monkeypatch)
  head_before, rest_before = _split(before['params'])
  head_after, rest_after = _split(after['params'])
  for key in rest_before:
    np.testing.assert_array_equal(rest_after[key], rest_before[key],
                                  err_msg=str(key))
  # W = W₀ diag(s), b = s ⊙ b₀: one scale per class, the same for the
  # class's column of the kernel and its bias.
  kernel0 = head_before[(*CLASSIFIER, 'kernel')]
  bias0 = head_before[(*CLASSIFIER, 'bias')]
  scales = head_after[(*CLASSIFIER, 'bias')] / bias0
  np.testing.assert_allclose(head_after[(*CLASSIFIER, 'kernel')],
                             kernel0 * scales, rtol=1e-5)
  assert not np.allclose(scales, 1.0)
  # The stage's own cosine schedule from lr 0.1 over its 6 steps, 0 before.
  rates = _logged(workdir, 'train_step/longtail/classifier_learning_rate')
  assert all(rates[s] == 0.0 for s in range(1, 2 * STEPS_PER_EPOCH + 1))
  np.testing.assert_allclose(
      [rates[s] for s in range(2 * STEPS_PER_EPOCH + 1,
                               3 * STEPS_PER_EPOCH + 1)],
      [0.05 * (1 + np.cos(np.pi * k / 6)) for k in range(6)], rtol=1e-5)
  # The scales of the optimiser state are those of the classifier.
  logged = _logged(workdir, 'train_step/longtail/lws_scale_max')
  assert logged[3 * STEPS_PER_EPOCH] == pytest.approx(
      float(np.max(scales)), rel=1e-4)


@pytest.mark.slow
def test_tau_norm_is_measured_with_the_normalised_classifier(
    fake_fmnist, tmp_path):
  config = _config(fake_fmnist, epochs=2, decoupling='tau_norm',
                   decoupling_tau=1.0, shot_metrics=True, posthoc_tau=3.0)
  workdir = str(tmp_path / 'tau')
  results = train.train_and_evaluate(config, workdir)
  final = results['final']
  assert final['tau_norm/tau'] == 1.0
  # By hand: the model with its kernel τ-normalised and the bias zero.
  raw = _latest(workdir)
  params = jax.tree.map(jnp.asarray, raw['params'])
  layer = params['fused_head']['output']
  params['fused_head']['output'] = {
      'kernel': decoupling.tau_normalize(layer['kernel'], 1.0),
      'bias': jnp.zeros_like(layer['bias'])}
  splits = data.load_dataset(config.data)
  model = models.build_model(config.model, modalities=splits.modalities,
                             num_classes=splits.num_classes)
  test = splits.test.arrays
  logits = model.apply({'params': params}, {'image': test['image']},
                       train=False)['logits']['fused']
  accuracy = float(np.mean(np.argmax(logits, -1) == test['label']))
  assert final['test/fused/tau_norm_accuracy'] == pytest.approx(accuracy)
  # The same run's post-hoc logit adjustment, z - 3 log π, by hand.
  trained = model.apply({'params': raw['params']}, {'image': test['image']},
                        train=False)['logits']['fused']
  counts = np.array([20, 17, 14, 12, 10, 9, 7, 6, 5, 5])
  adjusted = np.asarray(trained) - 3.0 * np.log(counts / counts.sum())
  posthoc = float(np.mean(np.argmax(adjusted, -1) == test['label']))
  assert final['test/fused/posthoc_accuracy'] == pytest.approx(posthoc)
  assert 'test/fused/tau_norm_few_shot_accuracy' in final
  # τ = None chooses on the held-out split from the authors' sweep.
  config.longtail.decoupling_tau = None
  config.resume_allowed_changes = 'longtail'
  chosen = train.train_and_evaluate(config, str(tmp_path / 'chosen'))
  assert chosen['final']['tau_norm/tau'] in decoupling.TAU_GRID


def test_posthoc_and_tau_norm_shot_accuracies_of_a_constant_classifier(
    fake_fmnist):
  # A zero kernel and bias (1, 0, ..., 0): every test image is class 0,
  # the only medium-shot class (20 training images; the others 5 to 17).
  # Post hoc (τ = 1) the scores are b - log π, largest for classes 8 and 9
  # (log(105/5) = 3.04 against 1 + log(105/20) = 2.66): argmax 8, few-shot.
  config = _config(fake_fmnist, decoupling='tau_norm', decoupling_tau=1.0,
                   shot_metrics=True, posthoc_tau=1.0)
  splits = data.load_dataset(config.data)
  model = models.build_model(config.model, modalities=splits.modalities,
                             num_classes=splits.num_classes)
  method = _method(config, splits, model)
  method.start(methods.Services(
      workdir='', put=lambda tree: tree, to_global=None,
      train_iterator=None, evaluate=None,
      eval_batches=lambda source: (
          {k: v for k, v in b.items() if k != 'id'}
          for b in data.eval_batches(source, batch_size=64)),
      build_train_step=None, write_metrics=None))
  state = steps.TrainState.create(model, optax.sgd(0.1), jax.random.key(0),
                                  splits.modalities)
  bias = jnp.zeros(10).at[0].set(1.0)
  params = dict(state.params)
  params['fused_head'] = {'output': {
      'kernel': jnp.zeros_like(params['fused_head']['output']['kernel']),
      'bias': bias}}
  metrics = method.final_metrics(state.replace(params=params))
  assert metrics['test/fused/medium_shot_accuracy'] == 1.0
  assert metrics['test/fused/few_shot_accuracy'] == 0.0
  assert metrics['test/fused/posthoc_medium_shot_accuracy'] == 0.0
  assert metrics['test/fused/posthoc_few_shot_accuracy'] == pytest.approx(
      1 / 9)
  assert metrics['test/fused/posthoc_accuracy'] == pytest.approx(0.1)
  # τ-norm drops the bias: all logits 0, argmax class 0 again.
  assert metrics['test/fused/tau_norm_medium_shot_accuracy'] == 1.0


@pytest.mark.parametrize('longtail, message', [
    ({'decoupling': 'ncm'}, r"decoupling='ncm'; valid: \['', 'crt'"),
    ({'decoupling': 'crt'},
     r"decoupling_epochs=0 must be a whole number >= 1 with "
     r"config.longtail.decoupling='crt'"),
    ({'decoupling': 'tau_norm', 'decoupling_epochs': 1},
     r"decoupling_epochs=1 must be 0 with config.longtail.decoupling="
     r"'tau_norm'"),
    ({'decoupling': 'lws', 'decoupling_epochs': -1},
     r"decoupling_epochs=-1 must be a whole number >= 1 with "
     r"config.longtail.decoupling='lws'"),
    ({'decoupling': 'crt', 'decoupling_epochs': 3},
     r'decoupling_epochs=3 leaves no representation epoch'),
    ({'decoupling': 'crt', 'decoupling_epochs': 1,
      'decoupling_learning_rate': 0.0},
     r'decoupling_learning_rate=0.0 must be > 0'),
    ({'decoupling': 'tau_norm', 'decoupling_tau': -1.0},
     r'decoupling_tau=-1.0 must be >= 0'),
    ({'decoupling': 'crt', 'decoupling_epochs': 1, 'loss': 'focal'},
     r"config.longtail.loss='focal' must be 'ce'"),
    ({'decoupling': 'lws', 'decoupling_epochs': 1, 'sampler': 'sqrt'},
     r"config.longtail.sampler='sqrt' must be 'instance'"),
    ({'decoupling': 'crt', 'decoupling_epochs': 1, 'mixup': 'input'},
     r"config.longtail.mixup='input' must be 'none'"),
    ({'decoupling': 'tau_norm', 'normalized_heads': True},
     r'normalized_heads=True makes it a cosine one'),
])
def test_bad_decoupling_configs_are_named_before_training(
    fake_fmnist, tmp_path, longtail, message):
  longtail = dict(longtail)
  normalized = longtail.pop('normalized_heads', False)
  config = _config(fake_fmnist, **longtail)
  config.model.normalized_heads = normalized
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


@pytest.mark.parametrize('decoupling, overrides, message', [
    ('crt', {'mla.enabled': True, 'model.shared_head': True},
     r"decoupling='crt' works on the fused head's classifier, and "
     r'config.model.shared_head=True \(MLA\) has no fused head'),
    ('tau_norm', {'model.shared_head': True},
     r"decoupling='tau_norm' .* config.model.shared_head=True \(MLA\)"),
    ('lws', {'reconboost.enabled': True, 'model.fusion': 'ensemble'},
     r"decoupling='lws' works on the fused head's classifier, and "
     r"config.model.fusion='ensemble' \(ReconBoost\) has none"),
])
def test_decoupling_without_a_fused_classifier_is_refused(
    decoupling, overrides, message):
  config = train_utils.tiny_synthetic_config('/nonexistent', steps=20)
  config.longtail.update(
      decoupling=decoupling,
      decoupling_epochs=0 if decoupling == 'tau_norm' else 1)
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    methods.check_config(config)
  # The same model with one modality has a fused head: not refused.
  if overrides.get('model.fusion') == 'ensemble':
    config.data.modalities = config.data.modalities[:1]
    config.reconboost.enabled = False
    methods.check_config(config)


def test_classifier_stage_is_refused_with_offline_blend():
  config = train_utils.tiny_synthetic_config('/nonexistent', steps=20)
  config.longtail.update(decoupling='crt', decoupling_epochs=1)
  config.blend.mode = 'offline'
  with pytest.raises(ValueError, match=r'config.blend \(model_copies\) .* '
                     r'config.longtail \(resampling\)'):
    methods.check_config(config)
