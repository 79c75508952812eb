"""Long-tailed training through the real trainer, on a fake Fashion-MNIST.

The fake copy (`tests/datasets/fashion_mnist_fakes.py`) has 30 training
images a class; the held-out fraction 0.1 leaves 27, and the exponential
profile with ``n_max = 20`` and ``IF = 4`` keeps
``int(20 · 4^{-c/9})`` = 20, 17, 14, 12, 10, 9, 7, 6, 5, 5 (105 images:
6 steps of batch 16 an epoch).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import fashion_mnist_lt
from gblend_jax import data
from gblend_jax.datasets.fashion_mnist import (
  fashion_mnist_dataset_builder as fmnist,
)
from gblend_jax.longtail import losses as lt_losses
from gblend_jax.longtail import method as longtail_method
from gblend_jax.longtail import mixup as lt_mixup
from gblend_jax.longtail import sampling
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import fashion_mnist_fakes as fakes

LT_COUNTS = [20, 17, 14, 12, 10, 9, 7, 6, 5, 5]
STEPS_PER_EPOCH = 105 // 16


@pytest.fixture(scope='module')
def fake_fmnist(tmp_path_factory) -> tuple[str, str]:
  """``(data_dir, manual_dir)`` with the fake copy prepared once."""
  root = tmp_path_factory.mktemp('fmnist')
  fakes.write_fake_copy(root / 'manual', num_train=300, num_test=50)
  return str(root / 'tfds'), str(root / 'manual')


def _config(fake_fmnist, recipe='ce', **longtail) -> ml_collections.ConfigDict:
  """The real config with an MLP (fast) on the fake copy, 2 epochs."""
  config = fashion_mnist_lt.get_config(f'recipe={recipe},runlocal')
  config.data.data_dir, config.data.manual_dir = fake_fmnist
  config.data.longtail.update(imbalance_factor=4.0, max_count=20)
  config.data.batch_size = 16
  config.data.eval_batch_size = 64
  config.model.encoder.name = 'mlp'
  config.model.encoder.mlp.hidden_sizes = (32,)
  config.num_epochs = 2
  config.eval_every_epochs = 10.0  # Once, at the end.
  config.log_every_steps = 1
  config.longtail.shot_metrics = False  # Tested end to end below.
  config.longtail.update(longtail)
  return config


def _logged(workdir, key):
  return {r['step']: r[key] for r in metric_writer.read_metrics(workdir)
          if key in r}


def test_longtail_split_counts(fake_fmnist):
  config = _config(fake_fmnist)
  splits = data.load_dataset(config.data)
  np.testing.assert_array_equal(splits.train_class_counts, LT_COUNTS)
  np.testing.assert_array_equal(
      np.bincount(splits.train.arrays['label']), LT_COUNTS)
  # Held-out (3 of 30 a class) and test (5 a class) stay balanced.
  np.testing.assert_array_equal(
      np.bincount(splits.holdout.arrays['label']), [3] * 10)
  np.testing.assert_array_equal(
      np.bincount(splits.test.arrays['label']), [5] * 10)
  assert not set(splits.train.arrays['id']) & set(splits.holdout.arrays['id'])
  # The step profile: half the classes keep n_max, the rest int(20 / 4).
  config.data.longtail.profile = 'step'
  splits = data.load_dataset(config.data)
  np.testing.assert_array_equal(splits.train_class_counts,
                                [20] * 5 + [5] * 5)


@pytest.mark.parametrize('key, value, message', [
    ('data.longtail.imbalance_factor', 0.5,
     r'data.longtail.imbalance_factor=0.5 must be >= 1'),
    ('data.longtail.profile', 'pareto',
     r"data.longtail.profile='pareto'; valid: \['none', 'exponential'"),
    ('longtail.loss', 'lsce', r"longtail.loss='lsce'; valid: \['ce'"),
    ('longtail.sampler', 'square', r"sampler='square'; valid: \['instance'"),
    ('longtail.cam_sampling', True, r'cam_sampling=True .* needs '
     r'drs_epoch >= 0'),
    ('longtail.mixup', 'cutmix', r"mixup='cutmix'; valid"),
    ('longtail.focal_form', 'logistic',
     r"focal_form='logistic'; valid: \['softmax', 'sigmoid'\]"),
    ('longtail.reduction', 'sum',
     r"reduction='sum'; valid: \['mean', 'weighted_mean'\]"),
    ('longtail.ldam_scale', 0.0, r'ldam_scale=0.0 must be > 0, or None'),
    ('longtail.drw_epoch', 2, r'drw_epoch=2 is beyond the run \(2 epochs\)'),
    ('longtail.drs_epoch', 1,
     r"drs_epoch=1 defers config.longtail.sampler='instance'"),
    ('longtail.mixup_off_last_epochs', 2,
     r'mixup_off_last_epochs=2 leaves no epoch with mixup'),
    # int(20 · 40^{-8/9}) = int(0.75) = 0 and int(20 / 40) = 0.
    ('data.longtail.imbalance_factor', 40.0, r'classes \[8, 9\] empty'),
])
def test_bad_values_are_rejected_before_training(
    fake_fmnist, tmp_path, key, value, message
):
  config = _config(fake_fmnist, mixup='input')
  config.unlock()
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


def _long_tail(config, splits):
  return longtail_method.LongTail(methods.RunInfo(
      config=config, model=None, modalities=splits.modalities,
      heads=('fused',), steps_per_epoch=STEPS_PER_EPOCH,
      total_steps=2 * STEPS_PER_EPOCH, splits=splits, global_batch_size=16))


@pytest.mark.slow
def test_drw_switches_the_weights_at_the_configured_epoch(
    fake_fmnist, tmp_path
):
  config = _config(fake_fmnist, recipe='drw')  # runlocal: drw_epoch=1.
  assert config.longtail.drw_epoch == 1
  train.train_and_evaluate(config, str(tmp_path))
  # The step run as step s (0-based) is logged at s + 1.
  reweighted = _logged(str(tmp_path), 'train_step/longtail/reweighted')
  assert reweighted == {s + 1: float(s >= STEPS_PER_EPOCH)
                        for s in range(2 * STEPS_PER_EPOCH)}
  # The weights of the second stage are the class-balanced ones.
  splits = data.load_dataset(config.data)
  hooks = _long_tail(config, splits)
  np.testing.assert_array_equal(
      hooks.loss_args(STEPS_PER_EPOCH - 1)['class_weights'], np.ones(10))
  np.testing.assert_allclose(
      hooks.loss_args(STEPS_PER_EPOCH)['class_weights'],
      lt_losses.class_balanced_weights(np.array(LT_COUNTS), 0.9999),
      rtol=1e-6)


def test_drs_sampler_switches_at_the_configured_epoch(fake_fmnist):
  config = _config(fake_fmnist, recipe='drs')  # runlocal: drs_epoch=1.
  splits = data.load_dataset(config.data)
  hooks = _long_tail(config, splits)
  iterator = data.train_iterator(
      splits.train, global_batch_size=16, seed=0,
      sampler=hooks.sampler())
  ids = [next(iterator)['id'] for _ in range(2 * STEPS_PER_EPOCH)]
  first = np.concatenate(ids[:STEPS_PER_EPOCH])
  second = np.concatenate(ids[STEPS_PER_EPOCH:])
  # Epoch 0 is instance-balanced: 96 distinct examples of the 105.
  assert len(set(first.tolist())) == 96
  # Epoch 1 is class-balanced: the draws of p_j = 1/10 for epoch 1.
  position = {i: k for k, i in enumerate(splits.train.arrays['id'])}
  expected = sampling.EpochSampler(
      splits.train.arrays['label'], np.full(10, 0.1), seed=0,
      num_samples=96).epoch_indices(1)
  np.testing.assert_array_equal([position[i] for i in second], expected)


@pytest.mark.slow
def test_best_bag_resumes_exactly_mid_epoch(fake_fmnist, tmp_path,
                                            monkeypatch):
  # Mixup, DRS with CAM-based images at epoch 1, no mixup in the last
  # epoch: 3 epochs, with a CIFAR ResNet (CAMs need conv features).
  config = _config(fake_fmnist, recipe='best_bag')
  config.model.encoder.name = 'cifar_resnet'
  config.model.encoder.cifar_resnet.update(depth=8, width=4)
  config.num_epochs = 3
  config.longtail.update(drs_epoch=1, mixup_off_last_epochs=1)
  assert config.longtail.cam_sampling
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  # Interrupted after the switch, mid-epoch: the resumed run reads the
  # switch-time CAM model back from the work directory.
  resumed = train_utils.interrupted_then_resumed(
      config, str(tmp_path / 'resumed'), STEPS_PER_EPOCH + 2, monkeypatch)
  assert os.path.exists(
      tmp_path / 'resumed' / longtail_method.CAM_MODEL_FILE)
  # CAM-based images from the switch on: none before, some after (g_y is
  # 1 - n_y / 25 >= 0.2 for every class).
  replaced = _logged(str(tmp_path / 'straight'),
                     'train_step/longtail/cam_replaced_fraction')
  assert all(replaced[s] == 0.0 for s in range(1, STEPS_PER_EPOCH + 1))
  assert all(replaced[s] > 0.0
             for s in range(STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH + 1))
  # json: equal NaNs (no many-shot class) compare equal.
  assert json.dumps(resumed['final']) == json.dumps(straight['final'])
  workdir = str(tmp_path / 'straight')
  lam = _logged(workdir, 'train_step/longtail/mixup_lam')
  on = _logged(workdir, 'train_step/longtail/mixup_on')
  # Mixup in the first two epochs (λ ~ Beta(1, 1) is never exactly 1),
  # none in the last.
  assert all(on[s] == 1.0 and lam[s] < 1.0
             for s in range(1, 2 * STEPS_PER_EPOCH + 1))
  assert all(on[s] == 0.0 and lam[s] == 1.0
             for s in range(2 * STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH + 1))
  assert _logged(str(tmp_path / 'resumed'),
                 'train_step/longtail/mixup_lam') == lam


def test_mixup_objective_mixes_inputs_and_targets():
  block = longtail_method.default_longtail_config()
  block.mixup = 'input'
  counts = np.array([3, 1])
  objective = longtail_method.make_objective(block, counts, ('fused',))
  batch = {'image': jnp.array([[0.0], [10.0], [4.0]]),
           'label': jnp.array([0, 1, 1])}
  key = jax.random.PRNGKey(3)
  loss_args = {'class_weights': jnp.ones(2), 'reweighted': 0.0,
               'mixup_on': 1.0}
  logits = {'fused': jnp.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])}

  @jax.jit
  def run(loss_args):
    inputs, head_losses, metrics, interceptor = objective(
        key, batch, loss_args)
    assert interceptor is None  # Input mixup mixes the inputs only.
    return inputs, head_losses(logits), metrics

  inputs, losses, metrics = run(loss_args)
  lam, permutation = lt_mixup.sample_mixup(
      jax.random.fold_in(key, longtail_method.MIXUP_STREAM), 3, 1.0)
  x = np.array([0.0, 10.0, 4.0])
  np.testing.assert_allclose(
      inputs['image'][:, 0], lam * x + (1 - lam) * x[np.asarray(permutation)],
      rtol=1e-6)
  assert metrics['longtail/mixup_lam'] == lam
  # The loss: λ CE(z, y) + (1 - λ) CE(z, y[perm]) with z = 0: ln 2 each.
  labels = np.array([0, 1, 1])
  ce = np.log(2.0) * np.ones(3)
  ce[2] = [np.log(1 + np.exp(-2.0)), 2.0 + np.log(1 + np.exp(-2.0))][1]
  ce_b = ce.copy()
  ce_b[2] = [np.log(1 + np.exp(-2.0)), 2.0 + np.log(1 + np.exp(-2.0))][
      labels[np.asarray(permutation)][2]]
  expected = np.mean(lam * ce + (1 - lam) * ce_b)
  np.testing.assert_allclose(losses, [expected], rtol=1e-5)
  # Off: the inputs and the loss are those of the plain batch.
  inputs, losses, metrics = run({**loss_args, 'mixup_on': 0.0})
  np.testing.assert_array_equal(inputs['image'], batch['image'])
  np.testing.assert_allclose(losses, [np.mean(ce)], rtol=1e-6)
  assert metrics['longtail/mixup_lam'] == 1.0


@pytest.mark.slow
def test_real_config_end_to_end_with_shot_metrics(fake_fmnist, tmp_path):
  # The paper's best bag with its CIFAR ResNet (depth 8) on the fake copy.
  config = fashion_mnist_lt.get_config('recipe=best_bag,runlocal')
  config.data.data_dir, config.data.manual_dir = fake_fmnist
  config.data.longtail.update(imbalance_factor=4.0, max_count=20)
  config.data.batch_size = 16
  config.data.eval_batch_size = 64
  config.model.encoder.cifar_resnet.depth = 8
  # 8 steps (1.33 epochs): DRS from step 6; mixup in steps 0 and 1 only.
  config.num_train_steps = 8
  config.eval_every_epochs = 10.0
  results = train.train_and_evaluate(config, str(tmp_path))
  final = results['final']
  for name in ('top1_error', 'many_shot_accuracy', 'medium_shot_accuracy',
               'few_shot_accuracy'):
    assert f'test/fused/{name}' in final
    assert f'test/fused/{name}' in results['best']
  assert final['test/fused/top1_error'] == pytest.approx(
      1 - final['test/fused/accuracy'], abs=1e-6)
  # Counts 20 .. 5: no many-shot class; 20 is medium, the rest few-shot.
  assert np.isnan(final['test/fused/many_shot_accuracy'])
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['final']['test/fused/few_shot_accuracy'] == (
        final['test/fused/few_shot_accuracy'])
  with open(tmp_path / train.CLASS_COUNTS_FILE) as f:
    counts = json.load(f)
  assert counts['train'] == LT_COUNTS
  assert counts['test'] == [5] * 10
  assert os.path.getsize(tmp_path / 'per_class_accuracy.png') > 0
  assert fmnist.Builder.name == 'fashion_mnist_local'


@pytest.mark.parametrize('sampler, per_class', [('ros', 20), ('rus', 5)])
def test_ros_and_rus_train_on_a_fixed_balanced_multiset(
    fake_fmnist, sampler, per_class
):
  config = _config(fake_fmnist, sampler=sampler)
  splits = data.load_dataset(config.data)
  source = longtail_method.training_source(config, splits.train)
  labels = np.asarray(source.take(np.arange(len(source)))['label'])
  # ROS: n_max = 20 of every class; RUS: n_min = 5 of every class.
  np.testing.assert_array_equal(np.bincount(labels), [per_class] * 10)
  ids = source.take(np.arange(len(source)))['id']
  assert set(ids.tolist()) <= set(splits.train.arrays['id'].tolist())
  if sampler == 'rus':
    assert len(set(ids.tolist())) == 50  # Drawn without replacement.


@pytest.mark.slow
def test_manifold_mixup_and_ros_train_end_to_end(fake_fmnist, tmp_path):
  config = _config(fake_fmnist, recipe='manifold_mixup', sampler='ros')
  assert config.longtail.mixup == 'manifold'
  results = train.train_and_evaluate(config, str(tmp_path))
  # ROS: 200 examples, 12 steps of 16 an epoch, 2 epochs.
  assert results['step'] == 24
  lam = _logged(str(tmp_path), 'train_step/longtail/mixup_lam')
  assert len(lam) == 24 and all(0.0 < v < 1.0 for v in lam.values())
  config.longtail.manifold_layer = 'encoder_sound'
  with pytest.raises(ValueError, match="manifold_layer='encoder_sound' "
                     r"names no layer of the model; valid: \['encoder_image"):
    train.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_cam_sampling_needs_the_deferred_class_balanced_stage(
    fake_fmnist, tmp_path
):
  config = _config(fake_fmnist, recipe='drs_cam')
  config.model.encoder.name = 'cifar_resnet'
  config.longtail.drs_epoch = -1
  with pytest.raises(ValueError, match=r'cam_sampling=True .* needs '
                     r'drs_epoch >= 0'):
    train.train_and_evaluate(config, str(tmp_path))
  config = _config(fake_fmnist, recipe='drs_cam')  # The MLP encoder.
  with pytest.raises(ValueError, match='last convolutional features'):
    train.train_and_evaluate(config, str(tmp_path))


def _objective_losses(block, counts, labels, logits, class_weights=None):
  objective = longtail_method.make_objective(block, counts, ('fused',))
  batch = {'image': jnp.zeros((len(labels), 1)), 'label': jnp.array(labels)}
  loss_args = {'class_weights': (jnp.ones(len(counts)) if class_weights is None
                                 else jnp.asarray(class_weights)),
               'reweighted': 0.0, 'mixup_on': 1.0}
  _, head_losses, metrics, _ = objective(jax.random.PRNGKey(3), batch,
                                         loss_args)
  return head_losses({'fused': jnp.asarray(logits)}), metrics


def test_weighted_mean_divides_by_the_batch_weights():
  # CS-CE with counts (4, 1): w = (1/4, 1). Zero logits: ℓ' = ln 2 for
  # every example; labels (0, 0, 0, 1): Σ w ℓ' = 1.75 ln 2, Σ w = 1.75.
  block = longtail_method.default_longtail_config()
  block.loss = 'cs_ce'
  counts, labels, logits = np.array([4, 1]), [0, 0, 0, 1], np.zeros((4, 2))
  mean, _ = _objective_losses(block, counts, labels, logits)
  np.testing.assert_allclose(mean, [1.75 * math.log(2) / 4], rtol=1e-6)
  block.reduction = 'weighted_mean'
  weighted, _ = _objective_losses(block, counts, labels, logits)
  np.testing.assert_allclose(weighted, [math.log(2)], rtol=1e-6)
  # The two differ by the mean weight, 1.75 / 4: the effective lr factor.
  np.testing.assert_allclose(mean / weighted, [1.75 / 4], rtol=1e-6)
  # DRW's class weights (2, 1) multiply in: w = (1/2, 1), Σ w = 2.5 and
  # Σ w ℓ' = 2.5 ln 2: still ln 2 (all ℓ' equal).
  drw, _ = _objective_losses(block, counts, labels, logits, [2.0, 1.0])
  np.testing.assert_allclose(drw, [math.log(2)], rtol=1e-6)
  # Unequal ℓ': z_3 = (0, ln 3) gives ℓ'_3 = ln 4/3 for label 1, w_3 = 1:
  # (0.75 ln 2 + ln 4/3) / 1.75.
  logits[3, 1] = math.log(3.0)
  weighted, _ = _objective_losses(block, counts, labels, logits)
  np.testing.assert_allclose(
      weighted, [(0.75 * math.log(2) + math.log(4 / 3)) / 1.75], rtol=1e-6)


def test_weighted_mean_with_mixup_normalises_each_label_term():
  # The official λ·CE_w(z, y_a) + (1 - λ)·CE_w(z, y_b), each term
  # Σ w ℓ / Σ w over the batch.
  block = longtail_method.default_longtail_config()
  block.update(loss='cs_ce', reduction='weighted_mean', mixup='input')
  counts, labels = np.array([4, 1]), np.array([0, 0, 1])
  logits = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  losses, metrics = _objective_losses(block, counts, list(labels), logits)
  lam = float(metrics['longtail/mixup_lam'])
  _, permutation = lt_mixup.sample_mixup(
      jax.random.fold_in(jax.random.PRNGKey(3),
                         longtail_method.MIXUP_STREAM), 3, 1.0)
  w = np.array([0.25, 1.0])
  log_p = np.asarray(jax.nn.log_softmax(logits))

  def weighted_ce(y):
    return np.sum(-w[y] * log_p[np.arange(3), y]) / np.sum(w[y])

  expected = (lam * weighted_ce(labels)
              + (1 - lam) * weighted_ce(labels[np.asarray(permutation)]))
  np.testing.assert_allclose(losses, [expected], rtol=1e-5)


def test_ldam_scale_defaults_by_the_heads():
  block = longtail_method.default_longtail_config()
  assert block.ldam_scale is None
  assert longtail_method.ldam_scale(block, normalized_heads=True) == 30.0
  assert longtail_method.ldam_scale(block, normalized_heads=False) == 1.0
  block.ldam_scale = 10.0
  assert longtail_method.ldam_scale(block, normalized_heads=False) == 10.0


@pytest.mark.slow
@pytest.mark.parametrize('options', [
    {'loss': 'focal', 'focal_form': 'sigmoid'},
    {'loss': 'cb_focal', 'focal_form': 'sigmoid', 'mixup': 'input'},
    {'loss': 'cs_ce_sqrt', 'reduction': 'weighted_mean'},
    {'loss': 'ldam', 'drw_epoch': 1, 'mixup': 'input',
     'reduction': 'weighted_mean', 'normalized_heads': True},
], ids=['focal_sigmoid', 'cb_focal_sigmoid_mixup', 'cs_ce_sqrt_weighted',
        'ldam_cosine_drw_mixup'])
def test_fidelity_options_train_end_to_end(fake_fmnist, tmp_path, options):
  options = dict(options)
  normalized = options.pop('normalized_heads', False)
  config = _config(fake_fmnist, **options)
  config.model.normalized_heads = normalized
  results = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results['final']['test/fused/accuracy'])
  losses = _logged(str(tmp_path), 'train_step/loss')
  assert losses and all(np.isfinite(v) for v in losses.values())


@pytest.mark.slow
def test_posthoc_logit_adjustment_on_balanced_data_changes_nothing(
    data_dir, tmp_path):
  # Equal class counts: -τ log π is the same constant for every class, so
  # the adjusted predictions are the plain ones.
  config = train_utils.tiny_synthetic_config(data_dir, steps=10)
  config.longtail.update(posthoc_tau=1.0, loss='logit_adjusted')
  results = train.train_and_evaluate(config, str(tmp_path))
  for key in ('final', 'best'):
    assert results[key]['test/fused/posthoc_accuracy'] == pytest.approx(
        results[key]['test/fused/accuracy'], abs=1e-6)
