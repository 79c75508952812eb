r"""Runs one experiment: a config file, a work directory, optional overrides.

  python -m experiments.main \
      --config experiments/configs/mfeat_fusion.py:views=fou+kar \
      --workdir /tmp/mfeat_fou_kar --config.num_epochs=50

Rerunning the same command on the same work directory resumes from the latest
checkpoint; a rerun with another config is refused, naming the keys that
differ (``--config.resume_allowed_changes=num_train_steps`` lets it change
the listed keys). The exact command is written to ``<workdir>/command.txt``.

``--config.a.b=value`` overrides are applied by `runs.apply_overrides`: the
key must exist, except in the blocks that map names to values
(``--config.init_encoders.fou=WORKDIR``,
``--config.data.mismatched_modalities.fou=0.7``); values are Python literals
or text.

Several hosts: the same command on every host, with the multi-host flags
(`gblend_jax.training.distributed`), which call `jax.distributed.initialize`
before anything else uses JAX:

  python -m experiments.main --config ... --workdir SHARED_DIR \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0

(``--process_id=1`` on the second host), or ``--distributed`` alone where JAX
finds the processes itself (Cloud TPU, SLURM, Open MPI).
"""

import os
import shlex
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import runs
from gblend_jax.training import checkpointing
from gblend_jax.training import distributed
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from gblend_jax.training import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and results.'
)
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (path[:args]).', lock_config=True
)
flags.mark_flags_as_required(['config', 'workdir'])
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Call jax.distributed.initialize; alone, JAX detects the processes '
    '(Cloud TPU, SLURM, Open MPI).')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0 (with --num_processes and --process_id).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes of a multi-host run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process, in [0, --num_processes).')
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    'local_device_ids', None,
    'Local devices this process uses, e.g. 0 (one process per GPU).')

# ``--config.<key>=<value>`` arguments, taken out of argv before absl parses
# it (`_split_overrides`) and applied by `runs.apply_overrides`.
_OVERRIDES: list[str] = []
_ARGV: list[str] = []  # The command line as given.
# Errors whose message says what to do: printed without a traceback.
_CLEAN_ERRORS = (workdir_lib.WorkdirLockedError,
                 workdir_lib.ConfigMismatchError, workdir_lib.DiskFullError,
                 checkpointing.CheckpointError)


def _split_overrides(argv: list[str]) -> list[str]:
  """Moves the ``--config.k=v`` (or ``--config.k v``) arguments to
  `_OVERRIDES`; returns the rest of `argv`."""
  rest = []
  args = iter(argv)
  for arg in args:
    if arg.startswith('--config.'):
      key, sep, value = arg[len('--config.'):].partition('=')
      if not sep:
        value = next(args, None)
        if value is None:
          raise SystemExit(f'FATAL: {arg} needs a value ({arg}=VALUE).')
      _OVERRIDES.append(f'{key}={value}')
    else:
      rest.append(arg)
  return rest


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # ---- Processes: first, before anything uses JAX.
  try:
    distributed.initialize(distributed.distributed_args(
        distributed=_DISTRIBUTED.value,
        coordinator_address=_COORDINATOR_ADDRESS.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
        local_device_ids=_LOCAL_DEVICE_IDS.value))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  metric_writer.quiet_library_logs()
  config = flags.FLAGS.config
  try:
    runs.apply_overrides(config, _OVERRIDES)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  os.makedirs(_WORKDIR.value, exist_ok=True)
  command = shlex.join([os.path.basename(sys.executable), '-m',
                        'experiments.main', *_ARGV[1:]])
  if jax.process_index() == 0:  # One line per launch, not per process.
    with open(os.path.join(_WORKDIR.value, 'command.txt'), 'a') as f:
      f.write(command + '\n')
  try:
    results = train.train_and_evaluate(config, _WORKDIR.value)
  except _CLEAN_ERRORS as e:
    logging.error('%s: %s', type(e).__name__, e)
    sys.exit(1)
  if 'final' in results:
    final = results['final']
    logging.info(
        'Done at step %d: fused test accuracy %.4f, held-out %.4f; results '
        'in %s.', results['step'], final['test/fused/accuracy'],
        final['holdout/fused/accuracy'],
        os.path.join(_WORKDIR.value, 'results.json'),
    )


if __name__ == '__main__':
  # config_flags reads sys.argv itself: the overrides leave it.
  _ARGV = list(sys.argv)
  sys.argv[:] = _split_overrides(sys.argv)
  app.run(main)
