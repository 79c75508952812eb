r"""Every multi-modal balancing method side by side on UCI Multiple Features.

The settings of the G-Blend table (`experiments/gblend_grid.py`: two of
them built from real data so that naive late fusion falls below its best
view, and one where it does not; the first is also the OGM-GE table's
mismatch setting). Each method is one row through the one trainer, over
seeds: each view alone, naive fusion, G-Blend's three modes, OGM-GE (its
own model of `experiments/configs/mfeat_ogm.py`: a linear fused head and
SGD, as in the paper), and the methods that followed them, on the model of
`experiments/configs/mfeat_gblend.py` with their authors' hyper-parameters.
Writes ``experiments/results/balance_mfeat.md``.

  python -m experiments.balance_grid --seeds 5 --workdir workdirs/balance_mfeat
"""

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging

from experiments import runs
from experiments import tables
from experiments.configs import mfeat_gblend
from gblend_jax.training import metric_writer

_SEEDS = flags.DEFINE_integer('seeds', 5, 'Seeds per method.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/balance_mfeat',
                               'Directory of the runs.')
_OUTPUT = flags.DEFINE_string('output', 'experiments/results/balance_mfeat.md',
                              'Where the table goes.')

CONFIGS = os.path.join(os.path.dirname(__file__), 'configs')
# (method, config file): the rows, in table order.
ROWS = (
    ('single_a', 'mfeat_gblend.py'),
    ('single_b', 'mfeat_gblend.py'),
    ('naive', 'mfeat_gblend.py'),
    ('offline', 'mfeat_gblend.py'),
    ('online', 'mfeat_gblend.py'),
    ('gradient', 'mfeat_gblend.py'),
    ('ogm_ge', 'mfeat_ogm.py'),
    ('mmpareto', 'mfeat_gblend.py'),
    ('agm', 'mfeat_gblend.py'),
    ('pmr', 'mfeat_gblend.py'),
    ('mla', 'mfeat_gblend.py'),
    ('reconboost', 'mfeat_gblend.py'),
)

INTRO = """\
# Multi-modal balancing methods on UCI Multiple Features

Every method through the one trainer on the view pairs of the G-Blend table
(`experiments/results/gblend_mfeat.md`, whose introduction describes the
model, the data and the constructions). Rows: each view alone; naive late
fusion; G-Blend (Wang et al., CVPR 2020) offline, online and in gradient
space; OGM-GE (Peng et al., CVPR 2022) on its own model (`mfeat_ogm.py`: a
linear fused head, SGD); then the newer methods on the G-Blend model (MLP
encoders, a linear head per view, the fused head; Adam lr 1e-3, 60 epochs)
with their authors' hyper-parameters (`experiments/configs/mfeat_gblend.py`
says each): MMPareto (Wei & Hu, ICML 2024), AGM (Li et al., ICCV 2023),
PMR (Fan et al., CVPR 2023), MLA (Zhang et al., CVPR 2024; its own
shared-head model) and ReconBoost (Hua et al., ICML 2024; its own
shared-head ensemble).

Columns: the fused model's top-1 test and train accuracy (%), mean ± std
over {seeds} seeds; the weights G-Blend found; one run's wall time on this
machine and its ratio to naive fusion (at a few hundred steps of a
millisecond a run is mostly compilation and evaluation: `make bench` ranks
the methods' cost per step).

"""


def run_setting(pair: str, args: str, seeds: int,
                workdir: str) -> dict[str, list[dict]]:
  """Runs (or reads back) every row on one view pair; ``{method: runs}``."""
  results = {}
  for method, config_file in ROWS:
    row = ','.join(filter(None, (f'views={pair},method={method}', args)))
    by_row = runs.run_sweep(os.path.join(CONFIGS, config_file), [row], seeds,
                            [], os.path.join(workdir, config_file[:-3]))
    results[method] = by_row[row]
  return results


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
  sections = []
  for pair, args, description in mfeat_gblend.SETTINGS:
    results = run_setting(pair, args, _SEEDS.value, workdir)
    sections.append(tables.gblend_setting(pair, description, results))
  text = runs.write_report(
      _OUTPUT.value, INTRO.format(seeds=_SEEDS.value) + '\n'.join(sections),
      'experiments.balance_grid', sys.argv[1:])
  print(text)


if __name__ == '__main__':
  app.run(main)
