"""Multi-host launch: the flags of `experiments.main` and a 2-process run.

The flags are checked by `gblend_jax.training.distributed.distributed_args`
(every bad combination named before JAX starts); two processes launched
through ``experiments.main --coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=P`` on one CPU device each write the same
metrics rows as one process.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from gblend_jax.training import distributed
from gblend_jax.training import metric_writer
from tests import train_utils


def test_no_flag_is_a_one_process_run():
  assert distributed.distributed_args() is None


def test_explicit_flags_are_passed_on():
  assert distributed.distributed_args(
      coordinator_address='127.0.0.1:1234', num_processes=2, process_id=1,
      local_device_ids=['0']) == distributed.DistributedArgs(
          '127.0.0.1:1234', 2, 1, (0,))
  assert distributed.distributed_args(
      coordinator_address='[::1]:80', num_processes=1,
      process_id=0).coordinator_address == '[::1]:80'


def test_bare_distributed_leaves_everything_to_jax():
  assert distributed.distributed_args(distributed=True) == (
      distributed.DistributedArgs())
  # Given values override what JAX would detect.
  assert distributed.distributed_args(
      distributed=True, coordinator_address='host0:99') == (
          distributed.DistributedArgs(coordinator_address='host0:99'))


@pytest.mark.parametrize('flags, message', [
    ({'process_id': 1}, '--process_id without --coordinator_address, '
     '--num_processes'),
    ({'distributed': True, 'process_id': 1},
     '--process_id=1 without --num_processes'),
    ({'num_processes': 2, 'process_id': 0},
     '--num_processes, --process_id without --coordinator_address'),
    ({'coordinator_address': 'h:1', 'num_processes': 2, 'process_id': 2},
     '--process_id=2 must be in [0, 2)'),
    ({'coordinator_address': 'h:1', 'num_processes': 2, 'process_id': -1},
     '--process_id=-1 must be in [0, 2)'),
    ({'coordinator_address': 'h:1', 'num_processes': 0, 'process_id': 0},
     '--num_processes=0 must be at least 1'),
    ({'coordinator_address': 'host0', 'num_processes': 2, 'process_id': 0},
     "--coordinator_address='host0' must be host:port"),
    ({'coordinator_address': 'h:70000', 'num_processes': 2, 'process_id': 0},
     "--coordinator_address='h:70000' must be host:port"),
    ({'local_device_ids': ['0']}, '--local_device_ids=0 needs a distributed'),
    ({'distributed': True, 'local_device_ids': ['0', '0']},
     '--local_device_ids=0,0 must be distinct'),
    ({'distributed': True, 'local_device_ids': ['gpu0']},
     '--local_device_ids=gpu0 must be distinct'),
])
def test_bad_flag_combinations_are_named(flags, message):
  with pytest.raises(ValueError) as e:
    distributed.distributed_args(**flags)
  assert message in str(e.value)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env() -> dict[str, str]:
  # One CPU device per process.
  return train_utils.subprocess_env(JAX_PLATFORMS='cpu',
                                    PYTHONPATH=train_utils.REPO)


def _launch(data_dir, workdir, *flags: str) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.main',
       '--config', 'experiments/configs/synthetic_fusion.py:builder=tiny',
       '--workdir', str(workdir), *flags,
       f'--config.data.data_dir={data_dir}',
       '--config.data.batch_size=16', '--config.data.eval_batch_size=32',
       '--config.num_train_steps=6', '--config.log_every_steps=2',
       '--config.eval_every_epochs=1.0',
       # Per-example dropout masks follow the examples' order in the global
       # batch, which is interleaved across processes: none here.
       '--config.model.fused_head.input_dropout_rate=0.0'],
      cwd=train_utils.REPO, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _finish(processes) -> list[str]:
  logs = []
  for process in processes:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    logs.append(err)
  return logs


def _rows(workdir) -> list[dict[str, float]]:
  return [{k: v for k, v in row.items() if 'per_second' not in k}
          for row in metric_writer.read_metrics(str(workdir))]


# Both runs read the data streamed from the prepared files (a grain worker
# per process): each process reads its share of every batch by index.
STREAMED = ('--config.data.streaming=always', '--config.data.workers=1')


@pytest.mark.slow
def test_two_processes_launched_with_the_flags_match_one(tmp_path):
  # A fresh data directory: process 0 prepares the data set, process 1
  # waits for it and reads the same copy.
  data_dir = tmp_path / 'tfds'
  port = _free_port()
  logs = _finish([
      _launch(data_dir, tmp_path / 'two',
              f'--coordinator_address=127.0.0.1:{port}',
              '--num_processes=2', f'--process_id={p}',
              '--local_device_ids=0', *STREAMED)
      for p in range(2)])
  for p, log in enumerate(logs):
    assert f'Process {p} of 2; 1 local of 2 devices.' in log
    assert 'streamed from the prepared files by index' in log
  assert os.listdir(data_dir / 'synthetic_multimodal' / 'tiny') == ['1.0.0']
  _finish([_launch(data_dir, tmp_path / 'one', *STREAMED)])  # One process.
  one, two = _rows(tmp_path / 'one'), _rows(tmp_path / 'two')
  assert [r['step'] for r in two] == [r['step'] for r in one]
  assert any('test/fused/accuracy' in r for r in one)
  for row_one, row_two in zip(one, two, strict=True):
    assert row_two.keys() == row_one.keys()
    for key, value in row_one.items():
      # The same global batches; only the order of sums differs.
      assert row_two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (
          row_one['step'], key)
  with open(tmp_path / 'two' / 'results.json') as f:
    final = json.load(f)['final']
  with open(tmp_path / 'one' / 'results.json') as f:
    assert final == pytest.approx(json.load(f)['final'], rel=1e-5, abs=1e-6)
  # The chief alone records the command: one line for the launch.
  with open(tmp_path / 'two' / 'command.txt') as f:
    assert len(f.read().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize('flag, message', [
    ('--process_id=1',
     '--process_id without --coordinator_address, --num_processes'),
    ('--distributed',
     '--distributed: JAX found no cluster environment to detect the '
     'processes from'),
])
def test_launcher_names_a_bad_flag_before_training(tmp_path, flag, message):
  # No cluster environment for JAX to detect.
  env = {k: v for k, v in _env().items()
         if not k.startswith(('SLURM_', 'OMPI_', 'PMI_', 'JAX_COORDINATOR',
                              'TPU_', 'MEGASCALE_'))}
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.main',
       '--config', 'experiments/configs/synthetic_fusion.py:builder=tiny',
       '--workdir', str(tmp_path / 'run'), flag],
      cwd=train_utils.REPO, env=env, capture_output=True, text=True,
      timeout=300)
  assert completed.returncode != 0
  assert message in completed.stderr, completed.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'run')  # Stopped before anything.
