"""Reliability round 2: no stuck work directory, no silent resume of another
config, no silent mix of two runs (the work directory's lock, atomic writes,
the recorded config, the config checks before training)."""

import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from experiments import runs
from gblend_jax import data
from gblend_jax.training import checkpointing
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from gblend_jax.training import workdir as workdir_lib
from tests import train_utils

SYNTHETIC = os.path.join(train_utils.REPO, 'experiments', 'configs',
                         'synthetic_fusion.py')


def _digest(directory, pattern='**') -> dict[str, str]:
  digests = {}
  for path in sorted(glob.glob(os.path.join(str(directory), pattern),
                               recursive=True)):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, str(directory))] = hashlib.sha256(
            f.read()).hexdigest()
  return digests


def _rows(workdir):
  return [{k: v for k, v in r.items() if 'per_second' not in k}
          for r in metric_writer.read_metrics(str(workdir))]


def _drop_checkpoints_after(workdir, step):
  for path in glob.glob(os.path.join(str(workdir), 'checkpoints', '*')):
    name = os.path.basename(path)
    if name.isdigit() and int(name) > step:
      shutil.rmtree(path)
  os.remove(os.path.join(str(workdir), 'results.json'))


# 1. A kill between the commits of best/T and checkpoints/T.
def test_best_checkpoint_newer_than_the_resumed_step_is_set_aside(
    data_dir, tmp_path
):
  # 5 steps per epoch: evaluated and checkpointed at 5, 10, 12.
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  config.max_checkpoints_to_keep = 100
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  best = checkpointing.Checkpointer(str(tmp_path / 'straight')).best_step()
  shutil.copytree(tmp_path / 'straight', tmp_path / 'killed')
  # As if killed after best/<best> committed but before checkpoints/<best>.
  _drop_checkpoints_after(tmp_path / 'killed', best - 1)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'killed'))
  assert resumed['final'] == straight['final']
  assert resumed['best'] == straight['best']
  assert resumed['best_step'] == straight['best_step'] == best
  assert os.path.isdir(tmp_path / 'killed' / 'damaged_checkpoints'
                       / f'best_{best}')


# 2. A torn last line of metrics.jsonl.
def test_torn_last_metrics_line_is_dropped_on_resume(
    data_dir, tmp_path, monkeypatch, caplog
):
  config = train_utils.tiny_synthetic_config(data_dir, steps=8)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  workdir = tmp_path / 'torn'
  with monkeypatch.context() as patch:
    patch.setattr(train, '_StopRequest', train_utils.stop_request_at(7))
    train.train_and_evaluate(config, str(workdir))
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 8, "train_st')  # A write cut short.
  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(config, str(workdir))
  assert resumed['final'] == straight['final']
  assert 'torn last line' in caplog.text
  assert str(workdir / 'metrics.jsonl') in caplog.text
  # Each row once, as in an uninterrupted run (the progress line at step 8
  # averages one step, not two, after the resume from step 7).
  assert [(r['step'], sorted(r)) for r in _rows(workdir)] == [
      (r['step'], sorted(r)) for r in _rows(tmp_path / 'straight')]


# 3. results.json is written atomically; the sweep survives a 0-byte one.
def test_sweep_rerun_survives_an_empty_results_file(data_dir, tmp_path):
  overrides = [f'data.data_dir={data_dir!s}', 'num_train_steps=3',
               'data.batch_size=16']
  rows = ['builder=tiny']
  first = runs.run_sweep(SYNTHETIC, rows, 1, overrides, str(tmp_path))
  results_path = tmp_path / 'builder_tiny' / 'seed_0' / 'results.json'
  open(results_path, 'w').close()  # SIGKILL during an in-place write.
  again = runs.run_sweep(SYNTHETIC, rows, 1, overrides, str(tmp_path))
  assert again[rows[0]][0]['final'] == first[rows[0]][0]['final']
  # No temp files are left beside the atomically written ones.
  assert not glob.glob(str(tmp_path / '**' / '.results.json.*'),
                       recursive=True)


def test_unreadable_json_names_the_file(tmp_path):
  path = tmp_path / 'results.json'
  path.write_text('')
  with pytest.raises(ValueError, match=str(path)):
    workdir_lib.read_json(str(path))


# 4. A missing or misplaced best checkpoint after the end.
def test_missing_best_checkpoint_reports_the_final_state(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=50)
  config.optimizer.learning_rate = 0.0
  config.early_stopping_patience = 2  # Best at step 5, stops at step 15.
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert (straight['best_step'], straight['step']) == (5, 15)

  shutil.copytree(tmp_path / 'straight', tmp_path / 'gone')
  os.remove(tmp_path / 'gone' / 'results.json')
  shutil.rmtree(tmp_path / 'gone' / 'best')
  gone = train.train_and_evaluate(config, str(tmp_path / 'gone'))
  assert gone['best_step'] == 15
  assert gone['best'] == gone['final'] == straight['final']
  assert 'no best checkpoint of step 5' in gone['best_checkpoint_missing']

  # The bookkeeping says step 5, but best/5 holds step 10's state.
  shutil.copytree(tmp_path / 'straight', tmp_path / 'other')
  os.remove(tmp_path / 'other' / 'results.json')
  shutil.rmtree(tmp_path / 'other' / 'best' / '5')
  shutil.copytree(tmp_path / 'other' / 'checkpoints' / '10',
                  tmp_path / 'other' / 'best' / '5')
  other = train.train_and_evaluate(config, str(tmp_path / 'other'))
  assert 'holds the state of step 10' in other['best_checkpoint_missing']
  assert other['best_step'] == 15
  with open(tmp_path / 'other' / 'results.json') as f:
    assert json.load(f)['best_step'] == 15

  # A damaged best checkpoint (orbax reads a flipped byte without error).
  shutil.copytree(tmp_path / 'straight', tmp_path / 'damaged')
  os.remove(tmp_path / 'damaged' / 'results.json')
  state_files = [f for f in glob.glob(str(tmp_path / 'damaged' / 'best' / '5'
                                          / 'state' / '**'), recursive=True)
                 if os.path.isfile(f)]
  with open(max(state_files, key=os.path.getsize), 'r+b') as f:
    f.seek(os.path.getsize(f.name) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  damaged = train.train_and_evaluate(config, str(tmp_path / 'damaged'))
  assert 'is damaged' in damaged['best_checkpoint_missing']
  assert damaged['best'] == damaged['final']


# 6. Resuming with another config.
def test_rerun_with_another_config_is_refused_and_changes_nothing(
    data_dir, tmp_path
):
  config = train_utils.tiny_synthetic_config(data_dir, steps=6)
  train.train_and_evaluate(config, str(tmp_path))
  before = _digest(tmp_path)

  def changed(**values):
    new = train_utils.tiny_synthetic_config(
        data_dir, steps=values.pop('steps', 6),
        modalities=values.pop('modalities', 'strong+weak'))
    new.update_from_flattened_dict(values)
    return new

  for new, diff in (
      (changed(modalities='weak+strong'), "data.modalities: ['strong', "
       "'weak'] -> ['weak', 'strong']"),
      (changed(**{'data.batch_size': 8}), 'data.batch_size: 16 -> 8'),
      (changed(steps=8), 'num_train_steps: 6 -> 8'),
      (changed(**{'num_epochs': 3}), 'num_epochs: 20 -> 3'),
  ):
    with pytest.raises(workdir_lib.ConfigMismatchError) as error:
      train.train_and_evaluate(new, str(tmp_path))
    assert diff in str(error.value)
    assert 'resume_allowed_changes' in str(error.value)
    assert _digest(tmp_path) == before  # config.json included.

  # A shorter run cannot resume from a checkpoint past its end.
  shorter = changed(steps=4, resume_allowed_changes='num_train_steps')
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match='at step 6, past this run.s end at step 4'):
    train.train_and_evaluate(shorter, str(tmp_path))
  assert _digest(tmp_path) == before

  # An explicit opt-in extends the run, and config.json records it.
  longer = changed(steps=8, resume_allowed_changes='num_train_steps')
  assert train.train_and_evaluate(longer, str(tmp_path))['step'] == 8
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['num_train_steps'] == 8


def test_other_shapes_say_another_config_not_damaged(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=6)
  train.train_and_evaluate(config, str(tmp_path))
  config.model.fused_head.hidden_sizes = (32, 32)
  config.resume_allowed_changes = 'model'
  before = _digest(tmp_path / 'checkpoints')
  with pytest.raises(checkpointing.CheckpointConfigError,
                     match=r'made with another config.*fused_head.*'
                           r'model.fused_head.hidden_sizes'):
    train.train_and_evaluate(config, str(tmp_path))
  assert _digest(tmp_path / 'checkpoints') == before
  assert not os.path.exists(tmp_path / 'damaged_checkpoints')
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['fused_head']['hidden_sizes'] == [64, 64]


# 7. A sweep rerun with other --set values.
def test_sweep_rerun_with_other_overrides_is_refused(data_dir, tmp_path):
  overrides = [f'data.data_dir={data_dir!s}', 'num_train_steps=3',
               'data.batch_size=16']
  rows = ['builder=tiny']
  runs.run_sweep(SYNTHETIC, rows, 1, overrides, str(tmp_path))
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match='num_train_steps: 3 -> 4'):
    runs.run_sweep(SYNTHETIC, rows, 1, overrides[:1] + [
        'num_train_steps=4', 'data.batch_size=16'], str(tmp_path))
  extended = runs.run_sweep(SYNTHETIC, rows, 1, overrides[:1] + [
      'num_train_steps=4', 'data.batch_size=16',
      'resume_allowed_changes=num_train_steps'], str(tmp_path))
  assert extended[rows[0]][0]['step'] == 4


# 8. One run per work directory.
def test_a_live_lock_holder_stops_a_second_run_at_once(data_dir, tmp_path):
  holder = subprocess.Popen([sys.executable, '-c',
                             'import time; time.sleep(120)'])
  try:
    (tmp_path / 'lock').write_text(json.dumps(
        {'host': socket.gethostname(), 'pid': holder.pid}))
    config = train_utils.tiny_synthetic_config(data_dir, steps=2)
    with pytest.raises(workdir_lib.WorkdirLockedError,
                       match=f'in use by process {holder.pid} on host '):
      train.train_and_evaluate(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['lock']
  finally:
    holder.kill()
    holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(
    data_dir, tmp_path, caplog
):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (tmp_path / 'lock').write_text(json.dumps(
      {'host': socket.gethostname(), 'pid': dead.pid}))
  config = train_utils.tiny_synthetic_config(data_dir, steps=2)
  with caplog.at_level(logging.WARNING):
    assert train.train_and_evaluate(config, str(tmp_path))['step'] == 2
  assert f'stale lock {tmp_path / "lock"} of process {dead.pid}' in (
      caplog.text)
  assert not os.path.exists(tmp_path / 'lock')  # Released at the end.


def _launcher(data_dir, workdir, *extra):
  return [sys.executable, '-m', 'experiments.main',
          '--config', 'experiments/configs/synthetic_fusion.py:builder=tiny',
          '--workdir', str(workdir), f'--config.data.data_dir={data_dir}',
          '--config.data.batch_size=16', *extra]


@pytest.mark.slow
def test_second_launcher_on_a_training_workdir_fails_naming_the_holder(
    data_dir, tmp_path
):
  first = subprocess.Popen(
      _launcher(data_dir, tmp_path, '--config.num_train_steps=1000000',
                '--config.log_every_steps=1'),
      cwd=train_utils.REPO, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONUNBUFFERED='1'))
  try:
    for line in first.stderr:
      if 'step 2/' in line:
        break
    second = subprocess.run(
        _launcher(data_dir, tmp_path, '--config.num_train_steps=1000000',
                  '--config.seed=1'),
        cwd=train_utils.REPO, capture_output=True, text=True, timeout=120,
        check=False)
    assert second.returncode == 1, second.stderr[-3000:]
    assert f'in use by process {first.pid} on host' in second.stderr
  finally:
    first.send_signal(signal.SIGTERM)
    _, rest = first.communicate(timeout=120)
  assert first.returncode == 0, rest[-3000:]


# 9. Every metrics row once after a resume from a super-epoch checkpoint.
def test_online_resume_from_an_estimate_step_writes_each_row_once(
    data_dir, tmp_path
):
  # 5 steps per epoch; estimates (and checkpoints) at steps 10 and 20.
  config = train_utils.tiny_synthetic_config(data_dir, steps=30)
  config.blend.mode = 'online'
  config.blend.warmup_epochs = 2.0
  config.blend.estimate_epochs = 2.0
  config.max_checkpoints_to_keep = 100
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  shutil.copytree(tmp_path / 'straight', tmp_path / 'killed')
  _drop_checkpoints_after(tmp_path / 'killed', 10)  # SIGKILL after step 10.
  resumed = train.train_and_evaluate(config, str(tmp_path / 'killed'))
  assert resumed['final'] == straight['final']
  assert _rows(tmp_path / 'killed') == _rows(tmp_path / 'straight')


# 5, 10, 11, 12. Bad values, before any training step.
@pytest.mark.parametrize('key, value, message', [
    ('max_checkpoints_to_keep', 0, r'max_checkpoints_to_keep=0 must be an '
     'integer >= 1'),
    ('num_epochs', 0, r'num_epochs=0 must be > 0'),
    ('optimizer.learning_rate', -0.1, r'learning_rate=-0.1 must be a finite'),
    ('optimizer.learning_rate', float('nan'), r'learning_rate=nan'),
    ('model.fused_head.dropout_rate', 1.0, r'dropout_rate=1.0 must be in'),
    ('model.encoder.mlp.dropout_rate', -0.5, r'dropout_rate=-0.5 must be in'),
    ('optimizer.momentum', -0.9, r'momentum=-0.9'),
    ('optimizer.weight_decay', -1e-4, r'weight_decay=-0.0001'),
    ('optimizer.grad_clip_norm', -1.0, r'grad_clip_norm=-1.0'),
    ('optimizer.warmup_epochs', -1.0, r'optimizer.warmup_epochs=-1.0'),
    ('blend.decay', 1.0, r'blend.decay=1.0 must be in \[0, 1\)'),
    ('blend.estimate_epochs', 0.0, r'blend.estimate_epochs=0.0 must be > 0'),
    ('blend.measure', 'nope', r"blend.measure='nope' must be one of"),
    ('eval_every_epochs', -1.0, r'eval_every_epochs=-1.0'),
    ('data.batch_size', 10000, r'batch_size=10000 is larger than the '
     r'training split \(\d+ examples\)'),
    ('data.train_examples_per_class', 10000, r'train_examples_per_class='
     r'10000 is larger than class'),
    ('data.eval_batch_size', 0, r'eval_batch_size=0 must be an integer'),
    ('best_metric', 'holdout/fused/acuracy', r"'holdout/fused/acuracy' is "
     r"not measured; choose one of \[.*'holdout/fused/accuracy'"),
    ('data.batch_size', 0, r'data.batch_size=0 must be an integer >= 1'),
    ('model.fused_head.hidden_sizes', (0,), r'hidden_sizes=\(0,\) must be'),
    ('seed', -1, r'config.seed=-1 must be an integer >= 0'),
    ('data.shuffle_seed', -3, r'data.shuffle_seed=-3'),
    ('max_skipped_fraction', 1.5, r'max_skipped_fraction=1.5 must be in'),
])
def test_bad_values_stop_before_the_first_step(
    data_dir, tmp_path, monkeypatch, key, value, message
):
  config = train_utils.tiny_synthetic_config(data_dir, steps=3)
  if key == 'num_epochs':
    config.num_train_steps = -1
  config.update_from_flattened_dict({key: value})

  def no_step(*args, **kwargs):
    raise AssertionError('trained a step with a bad config')

  monkeypatch.setattr(data, 'train_iterator', no_step)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')
  assert not os.path.exists(tmp_path / 'config.json')


# 12, 14. The launcher's overrides.
@pytest.mark.slow
def test_launcher_names_an_unknown_key_and_what_to_do(data_dir, tmp_path):
  out = subprocess.run(_launcher(data_dir, tmp_path, '--config.foo=1'),
                       cwd=train_utils.REPO, capture_output=True, text=True,
                       timeout=120, check=False)
  assert out.returncode == 1
  assert "Override 'foo=1': the config has no key 'foo'" in out.stderr
  assert 'Check the spelling' in out.stderr
  assert 'AttributeError' not in out.stderr


@pytest.mark.slow
def test_documented_open_block_overrides_work_from_the_command_line(
    data_dir, tmp_path
):
  single = subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config',
       'experiments/configs/synthetic_fusion.py:builder=tiny,'
       'modalities=strong', '--workdir', str(tmp_path / 'strong'),
       f'--config.data.data_dir={data_dir}', '--config.data.batch_size=16',
       '--config.num_train_steps=2'],
      cwd=train_utils.REPO, capture_output=True, text=True, timeout=120,
      check=False)
  assert single.returncode == 0, single.stderr[-3000:]
  fused = subprocess.run(
      _launcher(data_dir, tmp_path / 'fused', '--config.num_train_steps=2',
                f'--config.init_encoders.strong={tmp_path / "strong"}',
                '--config.data.mismatched_modalities.weak=0.7'),
      cwd=train_utils.REPO, capture_output=True, text=True, timeout=120,
      check=False)
  assert fused.returncode == 0, fused.stderr[-3000:]
  assert 'Initialised encoder_strong from' in fused.stderr
  with open(tmp_path / 'fused' / 'config.json') as f:
    recorded = json.load(f)
  assert recorded['init_encoders'] == {'strong': str(tmp_path / 'strong')}
  assert recorded['data']['mismatched_modalities'] == {'weak': 0.7}


def test_sweep_set_adds_keys_to_open_blocks(data_dir, tmp_path):
  overrides = [f'data.data_dir={data_dir!s}', 'num_train_steps=2',
               'data.batch_size=16', 'data.mismatched_modalities.weak=0.7']
  runs.run_sweep(SYNTHETIC, ['builder=tiny'], 1, overrides, str(tmp_path))
  with open(tmp_path / 'builder_tiny' / 'seed_0' / 'config.json') as f:
    assert json.load(f)['data']['mismatched_modalities'] == {'weak': 0.7}
  with pytest.raises(ValueError, match="no key 'num_trian_steps'"):
    runs.run_sweep(SYNTHETIC, ['builder=tiny'], 1, ['num_trian_steps=2'],
                   str(tmp_path))


# 15. Skipped steps past a fraction of the run stop it.
class _NaNBatches:
  """A training iterator whose batches number `bad` (1-based) are NaN."""

  def __init__(self, iterator, bad):
    self._iterator, self._bad, self._count = iterator, bad, 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self._iterator))
    self._count += 1
    if self._count in self._bad:
      batch['strong'] = np.full_like(batch['strong'], np.nan)
    return batch

  def get_state(self):
    return self._iterator.get_state()

  def set_state(self, state):
    self._iterator.set_state(state)


def test_too_many_skipped_steps_stop_the_run(data_dir, tmp_path, monkeypatch):
  real = data.train_iterator
  monkeypatch.setattr(data, 'train_iterator',
                      lambda *a, **k: _NaNBatches(real(*a, **k), {3, 4}))
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  config.skip_nonfinite_steps = True  # Up to 10% of 12 steps: 1.
  with pytest.raises(FloatingPointError,
                     match=r'2 training steps were skipped.*'
                           r'max_skipped_fraction=0.1 of the run.s 12 steps'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.json')


# Also: Ctrl-C in a sweep; a full disk.
def test_interrupted_sweep_run_raises_a_clean_interruption(
    data_dir, tmp_path, monkeypatch
):
  monkeypatch.setattr(train, '_StopRequest', train_utils.stop_request_at(2))
  overrides = [f'data.data_dir={data_dir!s}', 'num_train_steps=4',
               'data.batch_size=16']
  with pytest.raises(runs.SweepInterrupted, match='interrupted at step 2'):
    runs.run_sweep(SYNTHETIC, ['builder=tiny'], 1, overrides, str(tmp_path))


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_ends_cleanly(data_dir, tmp_path):
  process = subprocess.Popen(
      [sys.executable, '-m', 'experiments.sweep', '--config', SYNTHETIC,
       '--row', 'builder=tiny', '--seeds', '1', '--workdir', str(tmp_path),
       '--set', f'data.data_dir={data_dir}', '--set', 'data.batch_size=16',
       '--set', 'num_train_steps=1000000', '--set', 'log_every_steps=1'],
      cwd=train_utils.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  metrics = tmp_path / 'builder_tiny' / 'seed_0' / 'metrics.jsonl'
  try:
    for _ in range(600):  # Until training runs (at most a minute).
      if os.path.exists(metrics) and os.path.getsize(metrics):
        break
      try:
        process.wait(timeout=0.1)
        break
      except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 130, err[-3000:]
  assert 'rerun the same command to resume' in out
  assert 'Traceback' not in err, err[-3000:]


def test_full_disk_is_said_once_with_the_path(data_dir, tmp_path,
                                              monkeypatch):
  full = str(tmp_path / 'checkpoints' / '5' / 'state')

  def save(*args, **kwargs):
    try:
      raise OSError(errno.ENOSPC, 'No space left on device', full)
    except OSError as e:
      raise RuntimeError('orbax: a background save failed') from e

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save)
  config = train_utils.tiny_synthetic_config(data_dir, steps=6)
  with pytest.raises(workdir_lib.DiskFullError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert f'No space left on device writing {full}' in str(error.value)
  assert error.value.__suppress_context__
  assert not os.path.exists(tmp_path / 'lock')


def test_a_key_added_after_the_run_at_its_default_is_no_difference(tmp_path):
  """A config recorded before a block existed (a method added since) is
  the same config when the new keys hold their defaults; a new key set to
  another value, or a recorded key that changed, is a difference."""
  from gblend_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.default_config()
  workdir_lib.record_config(config, str(tmp_path))
  path = tmp_path / workdir_lib.CONFIG_FILE
  recorded = json.loads(path.read_text())
  del recorded['mmpareto']  # The run predates MMPareto's block.
  del recorded['longtail']['posthoc_tau']
  path.write_text(json.dumps(recorded))
  assert workdir_lib.config_differences(config, str(tmp_path)) == {}
  config.mmpareto.gamma = 2.0
  config.seed = 7
  assert workdir_lib.config_differences(config, str(tmp_path)) == {
      'mmpareto.gamma': ('<missing>', 2.0), 'seed': (0, 7)}
