"""Failure behaviour of the trainer: damaged checkpoints, non-finite values,
real interruptions, determinism and multi-host runs (issue 7)."""

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from gblend_jax import data
from gblend_jax.training import checkpointing
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils


def _tree_digest(directory) -> dict[str, str]:
  """Path -> sha256 of every file under `directory`."""
  digests = {}
  for path in sorted(glob.glob(os.path.join(directory, '**'),
                               recursive=True)):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, directory)] = hashlib.sha256(
            f.read()).hexdigest()
  return digests


def _largest_state_file(step_dir) -> str:
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**'),
                                recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _truncate(step_dir) -> None:
  path = _largest_state_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def _flip_a_byte(step_dir) -> None:
  # orbax reads this without complaint: only the checksum notices.
  path = _largest_state_file(step_dir)
  with open(path, 'rb') as f:
    content = bytearray(f.read())
  content[len(content) // 2] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(content)


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_previous_good_one(
    data_dir, tmp_path, caplog
):
  # 5 steps per epoch: checkpoints at steps 5, 10 and 12; 10 and 12 kept.
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert checkpointing.Checkpointer(
      str(tmp_path / 'straight')).latest_step() == 12

  for name, damage in (('truncated', _truncate), ('flipped', _flip_a_byte)):
    workdir = tmp_path / name
    shutil.copytree(tmp_path / 'straight', workdir)
    os.remove(workdir / 'results.json')
    damage(str(workdir / 'checkpoints' / '12'))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      resumed = train.train_and_evaluate(config, str(workdir))
    warning = [r.getMessage() for r in caplog.records
               if 'Falling back' in r.getMessage()]
    assert len(warning) == 1, caplog.text
    assert 'step 12 (' + str(workdir / 'checkpoints' / '12') in warning[0]
    assert 'step 10 (' + str(workdir / 'checkpoints' / '10') in warning[0]
    # Steps 11 and 12 are trained again, to the same result.
    assert resumed['final'] == straight['final'], name
    assert os.path.isdir(workdir / 'damaged_checkpoints' / '12')
    assert checkpointing.Checkpointer(str(workdir)).latest_step() == 12


@pytest.mark.slow
def test_no_usable_checkpoint_stops_without_overwriting(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  train.train_and_evaluate(config, str(tmp_path))
  _truncate(str(tmp_path / 'checkpoints' / '12'))
  _flip_a_byte(str(tmp_path / 'checkpoints' / '10'))
  before = _tree_digest(tmp_path / 'checkpoints')
  best_before = _tree_digest(tmp_path / 'best')
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'No usable checkpoint.*step 12.*step 10.*'
                           'Nothing was overwritten'):
    train.train_and_evaluate(config, str(tmp_path))
  assert _tree_digest(tmp_path / 'checkpoints') == before
  assert _tree_digest(tmp_path / 'best') == best_before
  assert not os.path.exists(tmp_path / 'damaged_checkpoints')


class _NaNAtBatch:
  """A training iterator whose `bad_batch`-th batch (1-based) has NaN
  features of one modality."""

  def __init__(self, iterator, bad_batch: int, modality: str):
    self._iterator, self._bad, self._modality = iterator, bad_batch, modality
    self._count = 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self._iterator))
    self._count += 1
    if self._count == self._bad:
      batch[self._modality] = np.full_like(batch[self._modality], np.nan)
    return batch

  def get_state(self):
    return self._iterator.get_state()

  def set_state(self, state):
    self._iterator.set_state(state)

  def close(self):
    self._iterator.close()


def _nan_in_step(monkeypatch, step: int, modality: str = 'strong'):
  real = data.train_iterator
  monkeypatch.setattr(
      data, 'train_iterator',
      lambda *a, **k: _NaNAtBatch(real(*a, **k), step, modality))


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_step_and_head(
    data_dir, tmp_path, monkeypatch
):
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  config.log_every_steps = 4  # Found at step 7 all the same.
  _nan_in_step(monkeypatch, 7)
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert 'training step 7 ' in message
  # The strong modality's head and the fused head; not the weak head.
  assert "'strong/loss': nan" in message
  assert "'fused/loss': nan" in message
  assert 'weak/loss' not in message
  assert 'last good checkpoint (step 5' in message
  # Nothing after the bad step was saved; step 5 restores.
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  assert checkpointer.latest_step() == 5
  assert not os.path.exists(tmp_path / 'results.json')


@pytest.mark.slow
def test_skip_nonfinite_steps_counts_and_logs_skips(
    data_dir, tmp_path, monkeypatch
):
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  config.skip_nonfinite_steps = True
  _nan_in_step(monkeypatch, 7)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 12
  assert results['skipped_steps'] == 1
  assert all(np.isfinite(v) for v in results['final'].values())
  rows = [r for r in metric_writer.read_metrics(str(tmp_path))
          if 'train_step/skipped_steps' in r]
  assert [r['train_step/skipped_steps'] for r in rows] == [
      0, 0, 0, 1, 1, 1]  # Logged every 2 steps; step 7 is in the 4th line.
  assert all(np.isfinite(r['train_step/loss']) for r in rows)
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['skipped_steps'] == 1


def _launcher(data_dir, workdir, steps):
  return [
      sys.executable, '-m', 'experiments.main',
      '--config', 'experiments/configs/synthetic_fusion.py:builder=tiny',
      '--workdir', str(workdir),
      f'--config.data.data_dir={data_dir}',
      '--config.data.batch_size=16',
      f'--config.num_train_steps={steps}',
      '--config.log_every_steps=1',
      '--config.model.fused_head.input_dropout_rate=0.3',
  ]


def _run_until_sigterm(command, after_step: int) -> int:
  """Runs `command`, sends SIGTERM once it reports `after_step`; returns the
  step its exit message names."""
  process = subprocess.Popen(
      command, cwd=train_utils.REPO, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONUNBUFFERED='1'))
  for line in process.stderr:
    if f'step {after_step}/' in line:
      process.send_signal(signal.SIGTERM)
      break
  _, rest = process.communicate(timeout=120)
  assert process.returncode == 0, rest
  stopped = re.search(r'SIGTERM received: saved the checkpoint at step (\d+)',
                      rest)
  assert stopped, rest
  return int(stopped.group(1))


@pytest.mark.slow
def test_real_sigterm_at_several_steps_resumes_bit_for_bit(
    data_dir, tmp_path
):
  # 5 steps per epoch, evaluated and checkpointed at steps 25, 50 and 60.
  steps = 60
  straight = subprocess.run(
      _launcher(data_dir, tmp_path / 'straight', steps), cwd=train_utils.REPO,
      capture_output=True, text=True, timeout=120, check=False)
  assert straight.returncode == 0, straight.stderr[-3000:]

  command = _launcher(data_dir, tmp_path / 'interrupted', steps)
  first = _run_until_sigterm(command, 3)
  assert 3 <= first < 25
  second = _run_until_sigterm(command, first + 9)  # Past the step-25 save.
  assert first + 9 <= second < steps
  resumed = subprocess.run(command, cwd=train_utils.REPO,
                           capture_output=True, text=True, timeout=120,
                           check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from the checkpoint at step {second}' in resumed.stderr
  results = {}
  for name in ('straight', 'interrupted'):
    with open(tmp_path / name / 'results.json') as f:
      results[name] = json.load(f)
  # JSON floats: equal values are equal bit for bit.
  assert results['interrupted']['final'] == results['straight']['final']
  assert results['interrupted']['best'] == results['straight']['best']
  assert results['interrupted']['step'] == steps


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_differs(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=6)
  config.model.fused_head.input_dropout_rate = 0.3
  runs = {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    config.seed = seed
    runs[name] = train.train_and_evaluate(config, str(tmp_path / name))
    rows = metric_writer.read_metrics(str(tmp_path / name))
    runs[name] = (runs[name]['final'],
                  [{k: v for k, v in r.items() if 'per_second' not in k}
                   for r in rows])
  assert runs['a'] == runs['b']
  assert runs['a'][0] != runs['c'][0]
  assert runs['a'][0].keys() == runs['c'][0].keys()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _workers(data_dir, workdir, count: int) -> list[subprocess.Popen]:
  # One CPU device per process.
  env = train_utils.subprocess_env(JAX_PLATFORMS='cpu',
                                   PYTHONPATH=train_utils.REPO)
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, os.path.join(train_utils.REPO, 'tests',
                                    'multihost_worker.py'),
       data_dir, str(workdir), str(p), str(count), str(port)],
      cwd=train_utils.REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for p in range(count)]


def _chief_final(processes) -> tuple[dict[str, float], str]:
  outputs = [p.communicate(timeout=240) for p in processes]
  for process, (_, err) in zip(processes, outputs, strict=True):
    assert process.returncode == 0, err[-3000:]
  return json.loads(outputs[0][0].strip().splitlines()[-1]), outputs[0][1]


@pytest.mark.slow
def test_two_processes_match_one_and_their_checkpoint_restores(
    data_dir, tmp_path
):
  # One process first: it also prepares the data set for the two.
  single, _ = _chief_final(_workers(data_dir, tmp_path / 'one', 1))
  double, _ = _chief_final(_workers(data_dir, tmp_path / 'two', 2))
  assert double.keys() == single.keys()
  for key, value in single.items():
    # The same global batches; only the order of sums differs.
    assert double[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
  # The two processes' checkpoint restores in one process.
  shutil.copytree(tmp_path / 'two', tmp_path / 'restored')
  restored, log = _chief_final(_workers(data_dir, tmp_path / 'restored', 1))
  assert 'Resumed from the checkpoint at step 6' in log
  for key, value in double.items():  # Evaluated in one process.
    assert restored[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
