"""One resume test for every method: interrupted and rerun equals straight.

Each method declares what a resumed run needs (its optimiser state is in
the train state; its host state, `Method.host_state`, is in the
checkpoint), so the same test covers all of them: a run stopped as on
SIGTERM and rerun must give the same results and the same metrics file,
row for row, as an uninterrupted one.
"""

import json

import pytest

from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils

# Timing columns differ between any two runs.
TIMING = ('train_step/steps_per_second',)

RECONBOOST = {'model.fusion': 'ensemble', 'model.fused_head.hidden_sizes': (8,),
              'reconboost.enabled': True, 'reconboost.learner_epochs': 1.0,
              'reconboost.rectify_epochs': 1.0}

# name -> (config overrides, steps, the step the first invocation stops
# after). 5 steps per epoch; progress lines every 2 steps, so a stop after
# an even step leaves the same lines as a straight run.
CASES = {
    # The dropout key must resume too.
    'naive': ({'model.fused_head.input_dropout_rate': 0.3}, 20, 8),
    'fixed': ({'blend.mode': 'fixed', 'blend.weights': (0.5, 0.2, 0.3)},
              20, 8),
    # Warm-up 2 epochs, super-epochs of 2: estimates at steps 10 and 20;
    # stopped in the middle of the first super-epoch.
    'online': ({'blend.mode': 'online', 'blend.warmup_epochs': 2.0,
                'blend.estimate_epochs': 2.0}, 30, 14),
    'offline': ({'blend.mode': 'offline', 'blend.estimate_epochs': 1.0},
                12, 6),
    # Estimates every 2 steps; the held-out stream must resume too.
    'gradient': ({'blend.mode': 'gradient',
                  'blend.estimate_every_steps': 2}, 20, 8),
    # The modulation noise key and the window are optimiser state.
    'ogm_ge': ({'model.fused_head.hidden_sizes': (),
                'model.modality_heads': False, 'optimizer.name': 'sgd',
                'optimizer.learning_rate': 0.05,
                'modulation.method': 'ogm_ge',
                'modulation.modulated': 'matrices'}, 12, 4),
    # AGM's running scores and last κ are optimiser state; its window
    # opens at step 5, and the stop falls inside it.
    'agm': ({'model.modality_heads': False, 'agm.enabled': True,
             'agm.cap': 10.0, 'agm.clip_threshold': 1.0,
             'agm.start_epoch': 1.0,
             'model.fused_head.input_dropout_rate': 0.3}, 12, 6),
    # MMPareto's last cosines and joint weights are optimiser state; SGD
    # with momentum, whose buffers must come back too.
    'mmpareto': ({'mmpareto.enabled': True, 'optimizer.name': 'sgd',
                  'optimizer.learning_rate': 0.05}, 12, 6),
    # Prototype passes at steps 0, 5, 10, 15, the last two smoothed with
    # the previous prototypes: a stop in epoch 1 resumes from the
    # checkpointed ones.
    'pmr': ({'pmr.enabled': True, 'pmr.momentum': 0.5}, 20, 8),
    # DRW and DRS switch at epoch 1, mixup stops for the last epoch: a
    # stop after the switches, mid-epoch.
    'longtail': ({'longtail.loss': 'focal', 'longtail.drw_epoch': 1,
                  'longtail.sampler': 'sqrt', 'longtail.drs_epoch': 1,
                  'longtail.mixup': 'input',
                  'longtail.mixup_off_last_epochs': 1,
                  'longtail.shot_metrics': True}, 15, 8),
    # P and its step count are optimiser state; momentum of each encoder
    # must come back as its own step left it.
    'mla': ({'mla.enabled': True, 'model.shared_head': True,
             'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05},
            20, 8),
    # Phases of one epoch: stopped in stage 0's rectification (mid-phase)
    # and at the stage boundary (the fresh optimiser state and the new
    # learner come right after the resume).
    'reconboost': (RECONBOOST, 20, 8),
    'reconboost_boundary': (RECONBOOST, 20, 10),
    # Streamed from the prepared files by a grain worker process, with
    # re-pairing and standardisation on indices.
    'streaming': ({'data.streaming': 'always', 'data.workers': 1,
                   'data.standardize': True,
                   'data.mismatched_modalities': {'weak': 0.3}}, 12, 6),
    # Decoupling's classifier stage from step 10: stopped at the boundary
    # (the rerun re-initialises cRT's classifier) and after it (LWS's
    # scales and the stage's optimiser state are restored).
    'decoupling_crt': ({'longtail.decoupling': 'crt',
                        'longtail.decoupling_epochs': 2}, 20, 10),
    'decoupling_lws': ({'longtail.decoupling': 'lws',
                        'longtail.decoupling_epochs': 2}, 20, 12),
}


def _rows(workdir):
  return [{k: v for k, v in row.items() if k not in TIMING}
          for row in metric_writer.read_metrics(workdir)]


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CASES))
def test_interrupted_run_resumes_to_the_straight_run(
    name, data_dir, tmp_path, monkeypatch
):
  overrides, steps, stop_after = CASES[name]
  config = train_utils.tiny_synthetic_config(data_dir, steps=steps)
  config.update_from_flattened_dict(overrides)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  resumed = train_utils.interrupted_then_resumed(
      config, str(tmp_path / 'resumed'), stop_after, monkeypatch)
  # json: equal NaNs (a shot group with no class) compare equal.
  for key in set(straight) | set(resumed):
    if key != 'train_seconds':
      assert json.dumps(resumed.get(key)) == json.dumps(straight.get(key)), key
  # The metrics file reads as one uninterrupted run, row for row.
  assert _rows(str(tmp_path / 'resumed')) == _rows(str(tmp_path / 'straight'))
