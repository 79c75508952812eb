r"""Runs one config file with several arguments over seeds; prints a table.

Each row is a config argument string (the text after ``:`` in ``--config``);
each row runs once per seed (the seed changes initialisation, dropout and the
order of the training data; the held-out split stays fixed). The table of
mean ± std of test, held-out and train accuracy of the fused head is printed
and written, with the exact command, to ``<workdir>/results.md``.

  python -m experiments.sweep --config experiments/configs/mfeat_fusion.py \
      --row views=fou --row views=kar --row views=fou+kar \
      --seeds 3 --workdir workdirs/demo

Every run has its own work directory ``<workdir>/<row>/seed_<k>``: an
interrupted sweep rerun with the same command skips finished runs and resumes
the unfinished one from its checkpoint. A run is finished when its
``results.json`` was made with this sweep's config of it: a rerun with other
``--set`` values refuses, naming the keys that differ (or resumes, for the
keys listed in ``--set resume_allowed_changes=...``). Ctrl-C (or SIGTERM)
checkpoints the running run and exits with status 130 and the line
``interrupted ...: rerun the same command to resume``.
"""

import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

from experiments import runs
from gblend_jax.training import metric_writer
from gblend_jax.training import workdir as workdir_lib

_CONFIG = flags.DEFINE_string('config', None, 'Config file (no arguments).')
_ROWS = flags.DEFINE_multi_string('row', None, 'Config argument of a row.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per row.')
_SET = flags.DEFINE_multi_string(
    'set', [], 'key=value override applied to every run, e.g. num_epochs=5.'
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the sweep.')
_TITLE = flags.DEFINE_string('title', 'Results', 'Heading of the table.')
flags.mark_flags_as_required(['config', 'row', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  metric_writer.quiet_library_logs()
  try:
    results = runs.run_sweep(_CONFIG.value, _ROWS.value, _SEEDS.value,
                             _SET.value, _WORKDIR.value)
  except (runs.SweepInterrupted, KeyboardInterrupt) as e:
    where = f' ({e})' if str(e) else ''
    print(f'\nSweep interrupted{where}: rerun the same command to resume.',
          flush=True)
    sys.exit(130)
  table = runs.format_table(_TITLE.value, results, _SEEDS.value)
  command = shlex.join(['python', '-m', 'experiments.sweep', *sys.argv[1:]])
  workdir_lib.write_text(os.path.join(_WORKDIR.value, 'results.md'),
                         table + f'\nCommand:\n\n    {command}\n')
  workdir_lib.write_json(
      os.path.join(_WORKDIR.value, 'results.json'),
      {row: [r['reported'] for r in by_seed]
       for row, by_seed in results.items()})
  print('\n' + table)
  print(f"Written to {os.path.join(_WORKDIR.value, 'results.md')}")


if __name__ == '__main__':
  app.run(main)
