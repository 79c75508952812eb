"""AGM's audio-visual config trained end to end on a fake CREMA-D copy."""

import os

import numpy as np
import pytest

from experiments import runs
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

AV_CONFIG = os.path.join(train_utils.REPO, 'experiments', 'configs',
                         'av_ogm.py')


def test_official_settings_are_the_authors():
  config = runs.load_config(AV_CONFIG, 'dataset=kinetics_sounds,method=agm')
  assert config.agm.enabled and config.modulation.method == 'none'
  assert (config.agm.alpha, config.agm.cap, config.agm.clip_threshold,
          config.agm.clip_norm) == (1.0, 10.0, 1.0, 1.0)
  assert (config.agm.start_epoch, config.agm.end_epoch) == (0.0, 20.0)
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.optimizer.momentum, config.optimizer.weight_decay) == (
              'sgd', 1e-5, 0.9, 1e-4)
  assert (config.data.batch_size, config.num_epochs) == (16, 10)
  assert runs.load_config(AV_CONFIG, 'method=agm,alpha=0.5').agm.alpha == 0.5


@pytest.mark.slow
def test_av_agm_runlocal_trains_on_a_fake_crema_d_copy(tmp_path):
  config = runs.load_config(AV_CONFIG, 'dataset=crema_d,method=agm,runlocal')
  av_fakes.on_crema_d_copy(config, tmp_path)
  av_fakes.with_small_encoders(config)
  config.num_train_steps = 4
  config.log_every_steps = 1
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'test/fused/accuracy' in results['final']
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'agm/coefficient/audio' in r]
  assert len(rows) == 4
  for r in rows:
    assert np.isfinite(r['train_step/loss'])
    # Two modalities: r_audio r_visual = 1, and κ from the running scores.
    assert r['agm/ratio/audio'] * r['agm/ratio/visual'] == pytest.approx(1.0)
  # ResNets with BatchNorm: the padded passes run in evaluation mode, yet
  # κ moves off 1 from the first step (η = 1 there).
  assert rows[0]['agm/target/audio'] == 1.0
  assert rows[0]['agm/coefficient/audio'] != 1.0
  assert rows[-1]['agm/running_score/audio'] == pytest.approx(
      np.mean([r['agm/score/audio'] for r in rows]), rel=1e-5)
