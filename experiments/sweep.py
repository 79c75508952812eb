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
the unfinished one from its checkpoint.
"""

import ast
import importlib.util
import json
import os
import shlex
import sys
import time

import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging

from gblend_jax import train

_CONFIG = flags.DEFINE_string('config', None, 'Config file (no arguments).')
_ROWS = flags.DEFINE_multi_string('row', None, 'Config argument of a row.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per row.')
_SET = flags.DEFINE_multi_string(
    'set', [], 'key=value override applied to every run, e.g. num_epochs=5.'
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the sweep.')
_TITLE = flags.DEFINE_string('title', 'Results', 'Heading of the table.')
flags.mark_flags_as_required(['config', 'row', 'workdir'])

COLUMNS = (('test', 'test/fused/accuracy'),
           ('held-out', 'holdout/fused/accuracy'),
           ('train', 'train/fused/accuracy'))


def load_config(path: str, arg: str | None) -> ml_collections.ConfigDict:
  """Calls ``get_config(arg)`` of the config file at `path`."""
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  if spec is None:
    raise FileNotFoundError(f'No config file {path}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[str]
) -> None:
  """Sets ``a.b=value`` overrides; values are Python literals or strings."""
  for override in overrides:
    key, sep, text = override.partition('=')
    if not sep:
      raise ValueError(f'Override {override!r} is not key=value.')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    parent = config
    *path, leaf = key.split('.')
    for part in path:
      parent = parent[part]
    if leaf not in parent:
      raise KeyError(f'Override {override!r}: the config has no key {key}.')
    parent[leaf] = value


def format_table(title: str, rows: dict[str, list[dict]], seeds: int) -> str:
  """A markdown table of mean ± std over seeds for every row."""
  lines = [f'## {title}', '',
           f'Fused-head top-1 accuracy (%), mean ± std over {seeds} seeds.', '',
           '| run | ' + ' | '.join(c for c, _ in COLUMNS) + ' |',
           '|---|' + '---:|' * len(COLUMNS)]
  for row, runs in rows.items():
    cells = []
    for _, key in COLUMNS:
      values = 100 * np.array([r['reported'][key] for r in runs])
      cells.append(f'{values.mean():.2f} ± {values.std():.2f}')
    lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def run_sweep(
    config_path: str, rows: list[str], seeds: int, overrides: list[str],
    workdir: str,
) -> dict[str, list[dict]]:
  """Trains every (row, seed) not finished yet; returns their results."""
  total = len(rows) * seeds
  done = 0
  results: dict[str, list[dict]] = {}
  start = time.perf_counter()
  for row in rows:
    results[row] = []
    for seed in range(seeds):
      run_dir = os.path.join(workdir, row.replace('=', '_').replace(',', '__'),
                             f'seed_{seed}')
      results_path = os.path.join(run_dir, 'results.json')
      if not os.path.exists(results_path):
        config = load_config(config_path, row)
        apply_overrides(config, overrides)
        config.seed = seed
        config.data.shuffle_seed = seed
        train.train_and_evaluate(config, run_dir)
      with open(results_path) as f:
        run = json.load(f)
      # Early-stopped runs report their best held-out checkpoint.
      run['reported'] = run['best'] if run['stopped_early'] else run['final']
      results[row].append(run)
      done += 1
      elapsed = time.perf_counter() - start
      print(f'[{done}/{total}] {row} seed {seed}: test acc '
            f"{100 * run['reported']['test/fused/accuracy']:.2f}% "
            f'({elapsed:.0f} s elapsed)', flush=True)
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  results = run_sweep(_CONFIG.value, _ROWS.value, _SEEDS.value, _SET.value,
                      _WORKDIR.value)
  table = format_table(_TITLE.value, results, _SEEDS.value)
  command = shlex.join(['python', '-m', 'experiments.sweep', *sys.argv[1:]])
  with open(os.path.join(_WORKDIR.value, 'results.md'), 'w') as f:
    f.write(table + f'\nCommand:\n\n    {command}\n')
  with open(os.path.join(_WORKDIR.value, 'results.json'), 'w') as f:
    json.dump({row: [r['reported'] for r in runs]
               for row, runs in results.items()}, f, indent=2)
  print('\n' + table)
  print(f"Written to {os.path.join(_WORKDIR.value, 'results.md')}")


if __name__ == '__main__':
  app.run(main)
