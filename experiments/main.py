r"""Runs one experiment: a config file, a work directory, optional overrides.

  python -m experiments.main \
      --config experiments/configs/mfeat_fusion.py:views=fou+kar \
      --workdir /tmp/mfeat_fou_kar --config.num_epochs=50

Rerunning the same command on the same work directory resumes from the latest
checkpoint. The exact command is written to ``<workdir>/command.txt``.
"""

import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and results.'
)
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (path[:args]).', lock_config=True
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  metric_writer.quiet_library_logs()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  command = shlex.join([os.path.basename(sys.executable), '-m',
                        'experiments.main', *sys.argv[1:]])
  with open(os.path.join(_WORKDIR.value, 'command.txt'), 'a') as f:
    f.write(command + '\n')
  results = train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  if 'final' in results:
    final = results['final']
    logging.info(
        'Done at step %d: fused test accuracy %.4f, held-out %.4f; results '
        'in %s.', results['step'], final['test/fused/accuracy'],
        final['holdout/fused/accuracy'],
        os.path.join(_WORKDIR.value, 'results.json'),
    )


if __name__ == '__main__':
  app.run(main)
