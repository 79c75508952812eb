"""ReconBoost end to end through the trainer, on the tiny synthetic data."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import runs
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

AV_CONFIG = os.path.join(train_utils.REPO, 'experiments', 'configs',
                         'av_ogm.py')

# 5 steps per epoch: stage 0 learns 'strong' (steps 0-4) and rectifies
# (5-9), stage 1 learns 'weak' (10-14) and rectifies (15-19).
RECONBOOST = {'model.fusion': 'ensemble', 'model.fused_head.hidden_sizes': (8,),
              'reconboost.enabled': True, 'reconboost.learner_epochs': 1.0,
              'reconboost.rectify_epochs': 1.0}


def _state_at(workdir, step):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored['state']


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow
def test_stages_train_one_learner_then_the_ensemble(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=20)
  config.update_from_flattened_dict(RECONBOOST)
  config.max_checkpoints_to_keep = 4
  config.log_every_steps = 1
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  states = {t: _state_at(workdir, t) for t in (5, 10, 15, 20)}
  params = {t: s['params'] for t, s in states.items()}
  # Stage 0's rectification: 'weak' is not in the ensemble yet, so its
  # encoder stays as initialised; beta trains.
  assert _same(params[5]['encoder_weak'], params[10]['encoder_weak'])
  assert not _same(params[5]['encoder_strong'], params[10]['encoder_strong'])
  assert params[5]['beta'] == 1.0 != params[10]['beta']
  # Stage 1's learner: 'weak' and the shared head train, nothing else.
  assert _same(params[10]['encoder_strong'], params[15]['encoder_strong'])
  assert params[10]['beta'] == params[15]['beta']
  assert not _same(params[10]['encoder_weak'], params[15]['encoder_weak'])
  assert not _same(params[10]['shared_head'], params[15]['shared_head'])
  members = {t: s['batch_stats']['members'].tolist()
             for t, s in states.items()}
  assert members == {5: [1.0, 0.0], 10: [1.0, 0.0], 15: [1.0, 1.0],
                     20: [1.0, 1.0]}
  rows = metric_writer.read_metrics(workdir)
  evals = {r['step']: r for r in rows if 'test/fused/accuracy' in r}
  # The fused head is the ensemble: after stage 0's learner it holds
  # beta * f_strong with beta = 1, so it is the strong learner's head.
  for name in ('loss', 'accuracy'):
    np.testing.assert_allclose(evals[5][f'test/fused/{name}'],
                               evals[5][f'test/strong/{name}'], rtol=1e-6)
  assert evals[15]['test/fused/loss'] != evals[15]['test/strong/loss']
  # Each phase's loss is the step's loss: the learner's reconcilement
  # loss in phase 1, the ensemble's cross-entropy in phase 2.
  steps_ = [r for r in rows if 'train_step/loss' in r]
  assert [r['reconboost/stage'] for r in steps_] == [0.0] * 10 + [1.0] * 10
  for r in steps_[:5]:
    assert r['train_step/loss'] == r['train_step/strong/loss']
  for r in steps_[5:10] + steps_[15:]:
    assert r['train_step/loss'] == r['train_step/fused/loss']
  assert len({r['reconboost/beta'] for r in steps_[10:15]}) == 1
  assert results['reconboost'] == {
      'beta': pytest.approx(float(params[20]['beta'])),
      'members': ['strong', 'weak'], 'stages_started': 2}
  assert results['final']['test/fused/accuracy'] > 1 / 3


@pytest.mark.slow
def test_av_ogm_reconboost_runlocal_trains_on_a_fake_crema_d_copy(tmp_path):
  config = runs.load_config(AV_CONFIG, 'dataset=crema_d,method=reconboost,'
                            'runlocal')
  # The official values, before runlocal shortens the phases.
  official = runs.load_config(AV_CONFIG, 'dataset=crema_d,method=reconboost')
  assert (official.reconboost.learner_epochs,
          official.reconboost.rectify_epochs) == (4.0, 4.0)
  assert official.optimizer.boundaries_epochs == (240, 480, 720)
  av_fakes.on_crema_d_copy(config, tmp_path)
  av_fakes.with_small_encoders(config)
  # 18 training clips, batch 8: 2 full batches an epoch; phases of
  # 0.5 epoch are one step: audio, rectify, visual, rectify.
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.eval_every_epochs = 1.0
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['reconboost']['members'] == ['audio', 'visual']
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'train_step/loss' in r]
  assert len(rows) == 4
  assert all(np.isfinite(r['train_step/loss']) for r in rows)
  # Each phase's loss is the step's loss: audio's learner, the ensemble,
  # visual's learner, the ensemble.
  for r, head in zip(rows, ['audio', 'fused', 'visual', 'fused'],
                     strict=True):
    assert r['train_step/loss'] == r[f'train_step/{head}/loss']
  # In the first rectification the ensemble is beta * f_audio with beta =
  # 1, and the ensemble of the others is empty (q_y = 1): the learner's
  # logged loss is (w1 - w2) / C = 4/6 of the ensemble's cross-entropy.
  np.testing.assert_allclose(rows[1]['train_step/audio/loss'],
                             4 / 6 * rows[1]['train_step/fused/loss'],
                             rtol=1e-5)
  # beta (logged before each step's update) trains in rectifications only.
  betas = [r['reconboost/beta'] for r in rows]
  assert betas[0] == betas[1] == 1.0
  assert betas[2] == betas[3] != 1.0
