r"""The front door: the papers' comparison in miniature, on real data.

UCI Multiple Features, kar (strong) + pix re-paired at random for 70% of
the examples (`experiments/configs/mfeat_gblend.py`, 20 training examples
per class): the setting built from real data where naive late fusion falls
below its best view, as audio+RGB fell below RGB on Kinetics. Each row is
one method through the one trainer, over seeds: each view alone, naive
fusion, G-Blend offline, online and gradient (Wang et al., CVPR 2020), and
OGM-GE (Peng et al., CVPR 2022; its own model of `mfeat_ogm.py`: a linear
fused head and SGD, as in the paper). Writes ``WORKDIR/results.md`` (the
table and the command) and ``WORKDIR/demo.png`` (the blend weights and the
per-head held-out loss over training, first seed).

  python -m experiments.demo --seeds 3 --workdir workdirs/demo
"""

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging

from experiments import runs
from experiments import tables
from gblend_jax import plots
from gblend_jax.training import metric_writer

_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per method.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/demo',
                               'Directory of the runs and the outputs.')

CONFIGS = os.path.join(os.path.dirname(__file__), 'configs')
SETTING = 'views=kar+pix,per_class=20,mismatch=0.7'
# (method, config file): the methods' rows, in table order.
ROWS = (
    ('single_a', 'mfeat_gblend.py'),
    ('single_b', 'mfeat_gblend.py'),
    ('naive', 'mfeat_gblend.py'),
    ('offline', 'mfeat_gblend.py'),
    ('online', 'mfeat_gblend.py'),
    ('gradient', 'mfeat_gblend.py'),
    ('ogm_ge', 'mfeat_ogm.py'),
)
HEADS = ('kar', 'pix', 'fused')
DESCRIPTION = 'kar (strong) + pix re-paired at random for 70% of examples'


def run_rows(seeds: int, workdir: str) -> dict[str, list[dict]]:
  """Runs (or reads back) every row; ``{method: [results per seed]}``."""
  results = {}
  for method, config_file in ROWS:
    row = f'{SETTING},method={method}'
    by_row = runs.run_sweep(os.path.join(CONFIGS, config_file), [row], seeds,
                            [], os.path.join(workdir, config_file[:-3]))
    results[method] = by_row[row]
  return results


def table(results: dict[str, list[dict]], seeds: int) -> str:
  """The G-Blend grid's table (`tables.gblend_setting`) of these rows."""
  return (f'Fused-head top-1 accuracy (%), mean ± std over {seeds} seeds; '
          'the weights found (mean over seeds); one run\'s training wall '
          'time and its ratio to naive fusion.\n\n'
          + tables.gblend_setting('kar+pix', DESCRIPTION, results))


def _seed_zero(workdir: str, method: str) -> str:
  row = runs.row_directory(f'{SETTING},method={method}')
  return os.path.join(workdir, 'mfeat_gblend', row, 'seed_0')


def figure(workdir: str) -> str | None:
  """``demo.png``: online and gradient G-Blend's weights, and the held-out
  loss of every head under online G-Blend, against training steps."""
  rows = []
  for method in ('online', 'gradient'):
    for row in metric_writer.read_metrics(_seed_zero(workdir, method)):
      rows.append({'step': row['step'],
                   **{f'{method}:{k}': v for k, v in row.items()
                      if k != 'step'}})
  panels = [
      plots.Panel('G-Blend online: weights (Algorithm 1, each super-epoch)',
                  'weight', {h: f'online:blend/weight/{h}' for h in HEADS}),
      plots.Panel('G-Blend gradient: weights (Proposition 1, in the step)',
                  'weight', {h: f'gradient:blend/weight/{h}'
                             for h in HEADS}),
      plots.Panel('G-Blend online: held-out loss per head', 'cross-entropy',
                  {h: f'online:holdout/{h}/loss' for h in HEADS}, 'log'),
  ]
  path = os.path.join(workdir, 'demo.png')
  drawn = plots.draw_panels(
      rows, panels, path, 'kar + pix (70% re-paired), seed 0')
  return None if drawn is None else path


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  metric_writer.quiet_library_logs()
  workdir = os.path.abspath(_WORKDIR.value)
  # The seeds of a row compile the same programs: compile them once.
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(workdir, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  results = run_rows(_SEEDS.value, workdir)
  body = ('# G-Blend and OGM-GE where naive fusion falls below its best '
          'view\n\n' + __doc__.split('\n\n')[1] + '\n\n'
          + table(results, _SEEDS.value))
  path = os.path.join(workdir, 'results.md')
  runs.write_report(path, body, 'experiments.demo', sys.argv[1:])
  drawn = figure(workdir)
  print(table(results, _SEEDS.value))
  print(f'Table: {path}\nFigure: {drawn}')


if __name__ == '__main__':
  app.run(main)
