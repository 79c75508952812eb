"""MMPareto's audio-visual config trained end to end on a fake CREMA-D copy."""

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


@pytest.mark.parametrize('dataset', ['crema_d', 'kinetics_sounds'])
def test_official_settings_are_the_authors(dataset):
  config = runs.load_config(AV_CONFIG, f'dataset={dataset},method=mmpareto')
  train.check_config(config)
  assert config.mmpareto.enabled and config.modulation.method == 'none'
  assert config.mmpareto.gamma == 1.5 and config.model.modality_heads
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.optimizer.momentum, config.optimizer.weight_decay,
          config.optimizer.schedule) == ('sgd', 0.002, 0.9, 1e-4, 'constant')
  assert (config.data.batch_size, config.num_epochs) == (64, 50)


@pytest.mark.slow
def test_av_mmpareto_runlocal_trains_on_a_fake_crema_d_copy(tmp_path):
  config = runs.load_config(AV_CONFIG,
                            'dataset=crema_d,method=mmpareto,runlocal')
  av_fakes.on_crema_d_copy(config, tmp_path)
  av_fakes.with_small_encoders(config)
  config.num_train_steps = 3
  config.log_every_steps = 1
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'test/audio/accuracy' in results['final']
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'mmpareto/cosine/audio' in r]
  assert len(rows) == 3
  for r in rows:
    for m in ('audio', 'visual'):
      # The joint loss's weight in the Pareto combination lies in [0, 1],
      # and it is 1/2 exactly where the two gradients do not conflict.
      weight, cosine = r[f'mmpareto/joint_weight/{m}'], r[
          f'mmpareto/cosine/{m}']
      assert 0.0 <= weight <= 1.0 and -1.0 <= cosine <= 1.0
      if cosine >= 0:
        assert weight == pytest.approx(0.5)
    assert np.isfinite(r['train_step/loss'])
