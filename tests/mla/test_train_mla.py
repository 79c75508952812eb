"""MLA through the one trainer: its steps against an independent loop, its
test-time prediction, and its config refusals."""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import runs
from gblend_jax import data
from gblend_jax import models
from gblend_jax.training import checkpointing
from gblend_jax.training import metric_writer
from gblend_jax.training import steps as steps_lib
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

AV_CONFIG = os.path.join(train_utils.REPO, 'experiments', 'configs',
                         'av_ogm.py')
LR, MOMENTUM, STEPS = 0.1, 0.9, 3


def _mla_config(data_dir, projection='paper'):
  config = train_utils.tiny_synthetic_config(data_dir, steps=STEPS)
  config.update_from_flattened_dict({
      'mla.enabled': True, 'mla.projection': projection,
      'model.shared_head': True, 'optimizer.name': 'sgd',
      'optimizer.learning_rate': LR, 'optimizer.momentum': MOMENTUM,
  })
  return config


def _reference_params(config, *, project: bool):
  """MLA's loop written out: per batch, per modality, CE through the shared
  head, P's OWM update and ∇W Pᵀ, SGD with momentum on that modality's
  encoder and the head only."""
  splits = data.load_dataset(config.data)
  model = models.build_model(config.model, modalities=splits.modalities,
                             num_classes=splits.num_classes)
  state = steps_lib.TrainState.create(
      model, jax.tree.map(lambda x: x, _NoOpt()), jax.random.PRNGKey(
          config.seed), splits.modalities)
  params = jax.tree.map(np.asarray, state.params)
  trace = jax.tree.map(np.zeros_like, params)
  per_epoch = data.steps_per_epoch(len(splits.train), config.data.batch_size)
  batches = data.train_iterator(splits.train,
                                global_batch_size=config.data.batch_size,
                                seed=config.data.shuffle_seed)
  d = params['shared_head']['output']['kernel'].shape[0]
  p, count = np.eye(d), 0
  for step, batch in enumerate(itertools.islice(batches, STEPS)):
    inputs = {m: jnp.asarray(batch[m]) for m in splits.modalities}
    labels = jnp.asarray(batch['label'])
    for m in splits.modalities:
      grads, features = _modality_grads(model, m, params, inputs, labels)
      grads = jax.tree.map(np.asarray, grads)
      if project and count:
        r = np.asarray(features).mean(0)
        alpha = 0.1 ** (1 + (step % per_epoch) / per_epoch)
        k = p @ r
        p = p - np.outer(k, k) / (alpha + r @ k)
        p = p / np.sqrt((p ** 2).sum())
        kernel = grads['shared_head']['output']['kernel']
        grads['shared_head']['output']['kernel'] = p @ kernel
      count += 1
      for name in (f'encoder_{m}', 'shared_head'):
        trace[name] = jax.tree.map(lambda t, g: MOMENTUM * t + g,
                                   trace[name], grads[name])
        params[name] = jax.tree.map(lambda w, t: w - LR * t, params[name],
                                    trace[name])
  return params, model, splits


@functools.partial(jax.jit, static_argnums=(0, 1))
def _modality_grads(model, m, params, inputs, labels):
  """Modality `m`'s CE through the shared head: its gradient and features.

  Jitted (one program per modality, reused by every step of both reference
  loops) instead of run op by op; the arithmetic is the same.
  """

  def loss(params):
    out = model.apply({'params': params}, inputs, train=False)
    log_p = jax.nn.log_softmax(out['logits'][m])
    return -jnp.mean(log_p[jnp.arange(len(labels)), labels]), (
        out['features'][m])

  return jax.grad(loss, has_aux=True)(params)


class _NoOpt:
  """A stand-in optimiser: the reference needs only the initial params."""

  def init(self, params):
    del params
    return ()


@pytest.mark.slow
def test_trainer_steps_equal_mlas_loop_written_out(data_dir, tmp_path):
  config = _mla_config(data_dir)
  results = train.train_and_evaluate(config, str(tmp_path / 'paper'))
  trained = checkpointing.Checkpointer(str(tmp_path / 'paper')).restore_raw(
      best=False)['params']
  expected, model, splits = _reference_params(config, project=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=2e-6),
               trained, expected)
  # Without the projection the head ends elsewhere: the check can fail.
  unprojected, _, _ = _reference_params(config, project=False)
  kernel = trained['shared_head']['output']['kernel']
  assert np.abs(kernel - unprojected['shared_head']['output']['kernel']
                ).max() > 1e-3
  # The released code's behaviour (no projection) is the plain loop.
  released = train.train_and_evaluate(
      _mla_config(data_dir, projection='released'),
      str(tmp_path / 'released'))
  trained = checkpointing.Checkpointer(
      str(tmp_path / 'released')).restore_raw(best=False)['params']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=2e-6),
               trained, unprojected)
  assert released['final'] != results['final']

  # test/fused/accuracy is the entropy-weighted prediction, per sample.
  params = checkpointing.Checkpointer(str(tmp_path / 'paper')).restore_raw(
      best=False)['params']
  correct = total = 0
  for batch in data.eval_batches(splits.test, batch_size=64):
    out = model.apply({'params': params}, {m: batch[m] for m in
                                           splits.modalities}, train=False)
    logits = [np.asarray(out['logits'][m], np.float64)
              for m in splits.modalities]
    entropy = []
    for o in logits:
      q = np.exp(o - o.max(1, keepdims=True))
      q /= q.sum(1, keepdims=True)
      entropy.append(-(q * np.log(q)).sum(1))
    weights = np.exp(-np.array(entropy))
    weights /= weights.sum(0)
    fused = sum(w[:, None] * o for w, o in zip(weights, logits, strict=True))
    hits = fused.argmax(1) == batch['label']
    correct += (hits * batch['mask']).sum()
    total += batch['mask'].sum()
  assert results['final']['test/fused/accuracy'] == pytest.approx(
      correct / total, abs=1e-6)
  # Each modality's loss is logged at its own step.
  rows = metric_writer.read_metrics(str(tmp_path / 'paper'))
  logged = {k for row in rows for k in row}
  assert {'train_step/strong/loss', 'train_step/weak/loss'} <= logged
  assert not any(k.startswith('test/unimodal_') for k in results['final'])


@pytest.mark.parametrize('overrides, message', [
    ({'mla.enabled': True},
     r'config\.mla\.enabled=True .* set config\.model\.shared_head=True'),
    ({'mla.enabled': True, 'model.shared_head': True,
      'mla.projection': 'owm'},
     r"config\.mla\.projection='owm' must be one of \['paper', "
     r"'balance_benchmark', 'released'\]"),
    ({'mla.enabled': True, 'model.shared_head': True,
      'model.modality_heads': False},
     r'config\.model\.modality_heads=False must be True'),
    ({'mla.enabled': True, 'model.shared_head': True,
      'modulation.method': 'ogm_ge'},
     r'config\.mla \(alternating_steps\) cannot be combined with '
     r'config\.modulation \(gradient_transform\)'),
])
def test_bad_mla_configs_stop_before_training(overrides, message, data_dir,
                                              tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=2)
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_mla_needs_several_modalities(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=2,
                                             modalities='strong')
  config.update_from_flattened_dict({'mla.enabled': True,
                                     'model.shared_head': True})
  with pytest.raises(ValueError, match=r'config\.mla\.enabled=True needs '
                     r'several modalities'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.mark.slow
def test_av_ogm_mla_runlocal_trains_on_a_fake_crema_d_copy(tmp_path):
  config = runs.load_config(AV_CONFIG, 'dataset=crema_d,method=mla,runlocal')
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.optimizer.momentum, config.optimizer.weight_decay) == (
              'sgd', 1e-3, 0.9, 1e-4)
  av_fakes.on_crema_d_copy(config, tmp_path)
  # A BatchNorm ResNet-10 on the spectrogram, the ResNet-18 on the frames:
  # each encoder still has the BatchNorm statistics checked below.
  config.model.encoder.name = 'resnet10'
  config.model.encoder.resnet10.num_filters = 8
  config.num_train_steps = 4
  config.log_every_steps = 1
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  final = results['final']
  assert not any(k.startswith('test/unimodal_') for k in final)
  rows = [r for r in metric_writer.read_metrics(workdir)
          if 'train_step/audio/loss' in r]
  assert len(rows) == 4
  assert all(np.isfinite(r['train_step/loss']) for r in rows)
  state = checkpointing.Checkpointer(workdir).restore_raw(best=False)
  # Two modality steps per batch: P was updated 2 * 4 - 1 times (not on
  # the run's first step), and is a unit-norm d x d matrix.
  d = state['params']['shared_head']['output']['kernel'].shape[0]
  leaves = jax.tree_util.tree_leaves_with_path(state['opt_state'])
  (projection,) = [v for _, v in leaves if np.shape(v) == (d, d)]
  counts = [v for p, v in leaves if 'count' in jax.tree_util.keystr(p)]
  assert 8 in [int(c) for c in counts]
  np.testing.assert_allclose(np.linalg.norm(projection), 1.0, rtol=1e-5)
  # Each ResNet's BatchNorm statistics moved (its step's forward pass).
  for m in ('audio', 'visual'):
    means = [v for p, v in jax.tree_util.tree_leaves_with_path(
        state['batch_stats'][f'encoder_{m}'])
             if 'mean' in jax.tree_util.keystr(p)]
    assert any(np.abs(v).max() > 0 for v in means), m
