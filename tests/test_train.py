"""End-to-end tests of the real trainer on tiny configs."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from gblend_jax.training import checkpointing
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils


def _final(results):
  return results['final']


@pytest.mark.slow
def test_trains_synthetic_to_high_accuracy(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=120)
  results = train.train_and_evaluate(config, str(tmp_path))
  final = _final(results)
  # Every split and head is measured.
  for split in ('train', 'holdout', 'test'):
    for head in ('fused', 'strong', 'weak'):
      assert f'{split}/{head}/loss' in final
      assert f'{split}/{head}/top5_accuracy' in final
  # The fused head learns the strong modality's signal: far above chance
  # (1/3), and its loss falls from about ln 3.
  rows = metric_writer.read_metrics(str(tmp_path))
  first_loss = rows[0]['train_step/fused/loss']
  assert first_loss == pytest.approx(np.log(3), abs=0.3)
  assert final['train/fused/loss'] < 0.5 * first_loss
  assert final['test/fused/accuracy'] > 0.8
  # Naive training: the modality heads get no loss, so they stay near chance
  # (and are measured all the same).
  assert final['train/weak/accuracy'] < 0.7
  # Files of the work directory.
  for name in ('config.json', 'metrics.jsonl', 'results.json'):
    assert os.path.exists(tmp_path / name)
  assert os.listdir(tmp_path / 'tensorboard')
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 120


@pytest.mark.slow
def test_single_modality_run(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=4,
                                             modalities='weak')
  results = train.train_and_evaluate(config, str(tmp_path))
  heads = {k.split('/')[1] for k in _final(results)}
  assert heads == {'fused', 'weak'}


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_rerun_resumes(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  command = [
      sys.executable, '-m', 'experiments.main',
      '--config', 'experiments/configs/synthetic_fusion.py:builder=tiny',
      '--workdir', str(workdir),
      f'--config.data.data_dir={data_dir}',
      '--config.data.batch_size=16',
      '--config.num_train_steps=1000000',
      '--config.log_every_steps=1',
  ]
  process = subprocess.Popen(command, cwd=train_utils.REPO, env=env,
                             stderr=subprocess.PIPE, text=True)
  for line in process.stderr:
    if 'step 3/' in line:
      process.send_signal(signal.SIGTERM)
      break
  _, rest = process.communicate(timeout=120)
  assert process.returncode == 0, rest
  assert 'SIGTERM received: saved the checkpoint at step' in rest
  step = checkpointing.Checkpointer(str(workdir)).latest_step()
  assert step >= 3
  # Rerunning resumes from that step (here, to a shorter end: a change of
  # num_train_steps must be allowed explicitly).
  resumed = subprocess.run(
      command[:-2] + [f'--config.num_train_steps={step + 2}',
                      '--config.resume_allowed_changes=num_train_steps'],
      cwd=train_utils.REPO, env=env, capture_output=True, text=True,
      timeout=120,
  )
  assert resumed.returncode == 0, resumed.stderr
  assert f'Resumed from the checkpoint at step {step}' in resumed.stderr
  with open(workdir / 'results.json') as f:
    assert json.load(f)['step'] == step + 2


@pytest.mark.slow
def test_early_stopping_keeps_best_checkpoint(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=50)
  config.optimizer.learning_rate = 0.0  # The held-out metric never improves.
  config.early_stopping_patience = 2
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['stopped_early']
  assert results['best_step'] == 5  # The first evaluation (one epoch).
  assert results['step'] == 15  # Two more evaluations without improvement.
  assert results['best'] == results['final']  # Nothing changed.
  assert checkpointing.Checkpointer(str(tmp_path)).best_step() == 5


@pytest.mark.slow
def test_pretrained_encoder_initialisation(data_dir, tmp_path):
  single = train_utils.tiny_synthetic_config(data_dir, steps=5,
                                             modalities='strong')
  train.train_and_evaluate(single, str(tmp_path / 'single'))
  fused = train_utils.tiny_synthetic_config(data_dir, steps=1)
  fused.optimizer.learning_rate = 0.0
  fused.init_encoders.strong = str(tmp_path / 'single')
  train.train_and_evaluate(fused, str(tmp_path / 'fused'))
  source = checkpointing.Checkpointer(str(tmp_path / 'single')).restore_raw()
  target = checkpointing.Checkpointer(str(tmp_path / 'fused')).restore_raw(
      best=False)
  jax.tree.map(np.testing.assert_array_equal,
               source['params']['encoder_strong'],
               target['params']['encoder_strong'])


def test_bad_config_values_are_named(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.blend.mode = 'magic'
  with pytest.raises(ValueError, match=r"blend.mode='magic'.*valid"):
    train.train_and_evaluate(config, str(tmp_path))
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.best_metric = 'test/fused/accuracy'
  with pytest.raises(ValueError, match='leaks the test set'):
    train.train_and_evaluate(config, str(tmp_path))
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.data.name = 'imagenet21k'
  with pytest.raises(ValueError, match='mfeat'):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize('key, value, message', [
    ('model.encoder.name', 'vit', r"'vit'.*mlp"),
    ('model.fusion', 'attention', r"'attention'.*concat"),
    ('optimizer.name', 'lion', r"optimizer.name='lion'.*sgd"),
    ('optimizer.schedule', 'linear', r"schedule='linear'.*cosine"),
    ('data.holdout_fraction', 1.0, r'holdout_fraction=1.0 must be in'),
])
def test_unknown_names_and_bad_values_stop_before_training(
    data_dir, tmp_path, key, value, message
):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_batch_not_divisible_by_devices_is_named(data_dir, tmp_path,
                                                 monkeypatch):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError,
                     match=r'batch_size=16 is not divisible by the 3 devices'):
    train.train_and_evaluate(config, str(tmp_path))


_DEVICE_RUN = """
import json, sys
import jax
from gblend_jax.training import trainer as train
from tests import train_utils
assert jax.device_count() == int(sys.argv[3]), jax.devices()
config = train_utils.tiny_synthetic_config(sys.argv[1], steps=6)
config.model.fused_head.input_dropout_rate = 0.0
config.blend.mode = sys.argv[4]
config.blend.estimate_every_steps = 2  # Both gradient-mode executables.
results = train.train_and_evaluate(config, sys.argv[2])
print(json.dumps(results['final']))
"""


@pytest.mark.slow
@pytest.mark.parametrize('blend_mode', ['none', 'gradient'])
def test_eight_devices_match_one_device(data_dir, tmp_path, blend_mode):
  finals = {}
  for devices in (1, 8):
    env = train_utils.subprocess_env(devices)
    out = subprocess.run(
        [sys.executable, '-c', _DEVICE_RUN, data_dir,
         str(tmp_path / f'devices_{devices}'), str(devices), blend_mode],
        cwd=train_utils.REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    finals[devices] = json.loads(out.stdout.strip().splitlines()[-1])
  assert finals[1].keys() == finals[8].keys()
  for key, value in finals[1].items():
    assert finals[8][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
