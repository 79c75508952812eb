"""Algorithm 1's head copies trained together equal those trained in turn.

Together: stacked and ``jax.vmap``-ed over the copies, or (``own_models``)
each modality's copy on its own encoder and head only.
"""

import logging

import jax
import ml_collections
import numpy as np
import optax
import pytest

from gblend_jax import config as config_lib
from gblend_jax import data
from gblend_jax import metrics
from gblend_jax import models
from gblend_jax.blending import estimation
from gblend_jax.blending import method as blend_method
from gblend_jax.training import metric_writer
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils

SHAPES = {'strong': (5,), 'weak': (3,)}
HEADS = ('strong', 'weak', 'fused')


def _estimator(stack_copies: bool, own_models: bool = False,
               drop_head_step: bool = False):
  config = config_lib.default_config()
  config.blend.update(mode='online', estimate_epochs=1.0,
                      stack_copies=stack_copies)
  model_config = models.default_model_config()
  model_config.encoder.mlp.update(hidden_sizes=(8,), dropout_rate=0.2)
  model_config.fused_head.hidden_sizes = (8,)
  model = models.build_model(model_config, modalities=SHAPES, num_classes=3)
  rng = np.random.default_rng(0)
  source = data.ArraySource({
      'strong': rng.normal(size=(40, 5)).astype(np.float32),
      'weak': rng.normal(size=(40, 3)).astype(np.float32),
      'label': rng.integers(0, 3, 40).astype(np.int32)})
  tx = optax.sgd(0.5, momentum=0.9)
  train_step = jax.jit(steps.make_train_step(
      model, tx, optax.constant_schedule(0.5), HEADS))
  eval_step = jax.jit(steps.make_eval_step(model))
  head_steps = None
  if own_models:  # What the trainer gives: each modality's own model.
    own_steps = [steps.head_train_step(model, tx, optax.constant_schedule(0.5),
                                       head) for head in HEADS]
    head_steps = [None if step is None else jax.jit(step)
                  for step in own_steps]
    if drop_head_step:
      head_steps = head_steps[:-1]

  def evaluate(state, sources):
    results = {}
    for split, split_source in sources.items():
      sums = [jax.device_get(eval_step(state, b))
              for b in data.eval_batches(split_source, batch_size=16)]
      for name, value in metrics.finalize(sums).items():
        results[f'{split}/{name}'] = value
    return results

  estimator = estimation.ScheduledEstimator(
      config, train_step=train_step, tx=tx,
      make_batches=lambda seed: data.train_iterator(
          source, global_batch_size=8, seed=seed),
      evaluate=evaluate, sources={'train': source, 'holdout': source},
      heads=HEADS, steps_per_epoch=5, put=jax.device_put,
      measure_step=blend_method.measure_step(model),
      eval_batches=lambda s: data.eval_batches(s, batch_size=16),
      head_steps=head_steps)
  state = steps.TrainState.create(model, tx, jax.random.PRNGKey(0), SHAPES)
  return estimator, state


@pytest.mark.parametrize('own_models', [False, True])
def test_stacked_copies_equal_copies_in_turn(own_models):
  stacked, state = _estimator(True, own_models)
  in_turn, _ = _estimator(False, own_models)
  assert stacked.stacked and not in_turn.stacked
  assert stacked.own_models == own_models and not in_turn.own_models
  copies = stacked.train_copies(state, step=3)
  for head in range(len(HEADS)):
    alone = in_turn._train_head(state, head, step=3)  # pylint: disable=protected-access
    jax.tree.map(lambda a, b, h=head: np.testing.assert_allclose(
        a[h], b, rtol=1e-5, atol=1e-6), copies.params, alone.params)
  # Copy i moved only what head i's loss reaches (momentum SGD, no decay).
  moved = jax.tree.map(lambda c, p: np.abs(c - p).max(axis=tuple(
      range(1, c.ndim))) > 0, copies.params, state.params)
  moved = {key: np.any(np.stack(jax.tree.leaves(tree)), axis=0).tolist()
           for key, tree in moved.items()}
  assert moved == {'encoder_strong': [True, False, True],
                   'head_strong': [True, False, False],
                   'encoder_weak': [False, True, True],
                   'head_weak': [False, True, False],
                   'fused_head': [False, False, True]}
  a = stacked(state, 3, np.full(3, 1 / 3))
  b = in_turn(state, 3, np.full(3, 1 / 3))
  for x, y in zip(a.report, b.report, strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a.weights, b.weights, rtol=1e-5, atol=1e-6)


def test_head_steps_not_one_per_head_are_named():
  with pytest.raises(ValueError, match=r"2 head_steps for the heads "
                     r"\['strong', 'weak', 'fused'\]"):
    _estimator(True, own_models=True, drop_head_step=True)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['offline', 'online'])
def test_trainer_stacked_and_in_turn_log_the_same(data_dir, tmp_path, mode,
                                                  caplog):
  rows = {}
  for stack in (True, False):
    config = train_utils.tiny_synthetic_config(data_dir, steps=20)
    config.blend.update(mode=mode, estimate_epochs=1.0, warmup_epochs=1.0,
                        stack_copies=stack)
    workdir = str(tmp_path / str(stack))
    with caplog.at_level(logging.INFO):
      train.train_and_evaluate(config, workdir)
    # The trainer's late-fusion model gives each modality's copy its own
    # encoder and head.
    own = "each modality's copy on its own encoder and head"
    assert (own in caplog.text) == stack
    caplog.clear()
    rows[stack] = metric_writer.read_metrics(workdir)
  blend_rows = [r for r in rows[True] if 'blend/gain/fused' in r]
  assert len(blend_rows) == (1 if mode == 'offline' else 3)
  assert len(rows[True]) == len(rows[False])
  for a, b in zip(rows[True], rows[False], strict=True):
    assert a.keys() == b.keys() and a['step'] == b['step']
    for key in a:
      if 'seconds' not in key and 'per_second' not in key:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_bad_stack_copies_is_rejected(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.blend.mode = 'offline'
  block = config.blend.to_dict()
  block['stack_copies'] = 'yes'  # The block is rebuilt: the field is a bool.
  config.blend = ml_collections.ConfigDict(block)
  with pytest.raises(ValueError, match='blend.stack_copies'):
    train.train_and_evaluate(config, str(tmp_path))
