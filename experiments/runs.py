"""Running a config file over several arguments and seeds, and tabulating.

The functions behind `experiments.sweep` and `experiments.gblend_grid` (no
absl flags here, so any script can import them).
"""

import ast
import datetime
import importlib.util
import os
import platform
import shlex
import time
from collections.abc import Callable
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from experiments import tables
from gblend_jax.training import trainer as train
from gblend_jax.training import workdir as workdir_lib

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


# Blocks that map names (modalities, views) to values: an override may add
# keys to them (``init_encoders.fou=WORKDIR``).
OPEN_BLOCKS = ('init_encoders', 'data.mismatched_modalities',
               'model.encoders')


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[str]
) -> None:
  """Sets ``a.b=value`` overrides; values are Python literals or strings.

  Keys must exist, except inside the `OPEN_BLOCKS` (name -> value maps).
  A value that does not fit the key's type is read as text when the key
  holds text; a single value for a tuple key is a 1-tuple.

  Args:
    config: the config to change (may be locked).
    overrides: ``key=value`` strings, as after ``--config.`` or ``--set``.

  Raises:
    ValueError: naming the override, the key and what to do.
  """
  for override in overrides:
    key, sep, text = override.partition('=')
    if not sep or not key:
      raise ValueError(f'Override {override!r} is not key=value.')
    parent = config
    *path, leaf = key.split('.')
    for depth, part in enumerate(path):
      block = '.'.join(path[:depth])
      if part not in parent:
        if block not in OPEN_BLOCKS:
          _no_key(override, '.'.join(path[:depth + 1]), parent)
        with parent.unlocked():
          parent[part] = ml_collections.ConfigDict()
      parent = parent[part]
      if not isinstance(parent, ml_collections.ConfigDict):
        raise ValueError(
            f'Override {override!r}: config.{".".join(path[:depth + 1])} is '
            'a value, not a block of keys.')
    block = '.'.join(path)
    is_open = block in OPEN_BLOCKS or any(
        block.startswith(b + '.') for b in OPEN_BLOCKS)
    if leaf not in parent and not is_open:
      _no_key(override, key, parent)
    value = _parse_value(text, parent.get(leaf) if leaf in parent else None)
    try:
      if leaf in parent:
        parent[leaf] = value
      else:
        with parent.unlocked():
          parent[leaf] = value
    except (TypeError, ValueError) as e:
      raise ValueError(
          f'Override {override!r}: config.{key} holds '
          f'{type(parent[leaf]).__name__} values ({e}); give a value of '
          'that type.') from None


def _no_key(override: str, key: str, parent: ml_collections.ConfigDict):
  raise ValueError(
      f'Override {override!r}: the config has no key {key!r}; the keys '
      f'there are {sorted(parent.keys())}. Check the spelling (see '
      'gblend_jax/config.py).')


def _parse_value(text: str, current):
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, str) and not isinstance(value, str):
    return text
  if isinstance(current, bool) and text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  if isinstance(current, tuple):
    if isinstance(value, list):
      return tuple(value)
    if not isinstance(value, tuple):
      return (value,)
  return value


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


class SweepInterrupted(Exception):
  """A run of the sweep was interrupted (SIGINT/SIGTERM); rerun to resume."""


def run_sweep(
    config_path: str, rows: list[str], seeds: int | Sequence[int],
    overrides: list[str], workdir: str,
) -> dict[str, list[dict]]:
  """Trains every (row, seed) not finished yet; returns their results.

  A run counts as finished when its ``results.json`` reads and its recorded
  ``config.json`` equals this sweep's config of it; otherwise the trainer
  runs on it, which resumes it, or refuses with the keys that differ.

  Args:
    config_path: the config file.
    rows: its arguments, one per row.
    seeds: how many seeds (0, 1, ...), or which (e.g. selection seeds
      ``[10, 11, 12]``, kept apart from a grid's ``0..n-1``).
    overrides: ``key=value`` overrides of every run (`apply_overrides`).
    workdir: runs go to ``workdir/<row_directory(row)>/seed_<seed>``.

  Returns:
    row -> the results of its seeds, in order, each with ``'reported'``.

  Raises:
    SweepInterrupted: when a run was stopped by a signal.
  """
  seed_values = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
  total = len(rows) * len(seed_values)
  done = 0
  results: dict[str, list[dict]] = {}
  start = time.perf_counter()
  for row in rows:
    results[row] = []
    for seed in seed_values:
      run = run_one(config_path, row, seed, overrides, workdir)
      results[row].append(run)
      done += 1
      elapsed = time.perf_counter() - start
      print(f'[{done}/{total}] {row} seed {seed}: test acc '
            f"{100 * run['reported']['test/fused/accuracy']:.2f}% "
            f'({elapsed:.0f} s elapsed)', flush=True)
  return results


def _read_result(run_dir: str) -> dict:
  """A run's ``results.json``, with ``reported``: its best held-out
  checkpoint's metrics if it stopped early, else its final ones."""
  run = workdir_lib.read_json(os.path.join(run_dir, 'results.json'))
  run['reported'] = run['best'] if run['stopped_early'] else run['final']
  return run


def run_one(
    config_path: str, row: str, seed: int, overrides: list[str],
    workdir: str,
) -> dict:
  """Trains one (row, seed) of a sweep unless it is finished; its result.

  Args:
    config_path: The config file.
    row: The config argument of the row (``'recipe=ce,imbalance=100'``).
    seed: The seed (``config.seed`` and ``config.data.shuffle_seed``).
    overrides: ``--config.key=value`` overrides of every run.
    workdir: The sweep's folder; the run is
      ``workdir/row_directory(row)/seed_<seed>``.

  Returns:
    The run's ``results.json`` with ``reported`` (see ``_read_result``).

  Raises:
    SweepInterrupted: when the run was stopped by a signal.
  """
  run_dir = run_directory(workdir, row, seed)
  config = run_config(config_path, row, seed, overrides)
  if not _finished(config, run_dir):
    outcome = train.train_and_evaluate(config, run_dir)
    if 'interrupted_at_step' in outcome:
      raise SweepInterrupted(
          f'{run_dir} interrupted at step '
          f'{outcome["interrupted_at_step"]}')
  return _read_result(run_dir)


def finished_result(
    config_path: str, row: str, seed: int, overrides: list[str],
    workdir: str,
) -> dict | None:
  """One (row, seed)'s result if that run finished with this config.

  Args: as ``run_one``.

  Returns:
    As ``run_one``, or None when the run has no results with exactly this
    config (not started, unfinished or made with another config); nothing
    is trained.
  """
  run_dir = run_directory(workdir, row, seed)
  if not _finished(run_config(config_path, row, seed, overrides), run_dir):
    return None
  return _read_result(run_dir)


def row_directory(row: str) -> str:
  """The folder of a sweep row's runs: ``'a=1,b=2'`` -> ``'a_1__b_2'``."""
  return row.replace('=', '_').replace(',', '__')


def run_directory(workdir: str, row: str, seed: int) -> str:
  """Where `run_sweep` puts the run of ``row`` with ``seed``."""
  return os.path.join(workdir, row_directory(row), f'seed_{seed}')


def run_config(config_path: str, row: str, seed: int,
               overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The config `run_sweep` trains for ``row`` with ``seed``."""
  config = load_config(config_path, row)
  apply_overrides(config, list(overrides))
  config.seed = seed
  config.data.shuffle_seed = seed
  return config


def _finished(config: ml_collections.ConfigDict, run_dir: str) -> bool:
  """Whether `run_dir` holds results made with exactly `config`."""
  try:
    workdir_lib.read_json(os.path.join(run_dir, 'results.json'))
  except (OSError, ValueError):
    return False
  return workdir_lib.config_differences(config, run_dir) == {}


def run_view_pair_grid(
    config_path: str,
    methods: tuple[str, ...],
    settings: tuple[tuple[str, str, str], ...],
    table: Callable[[str, str, dict[str, list[dict]]], str],
    *,
    seeds: int,
    workdir: str,
) -> list[str]:
  """Runs every method on every view-pair setting over seeds.

  Args:
    config_path: a config file taking ``views=a+b,method=m[,args]``.
    methods: the methods, in table order.
    settings: ``(view pair, extra config arguments, description)`` each.
    table: formats one setting: ``table(pair, description, {method:
      [results per seed]})``.
    seeds: seeds per method.
    workdir: where the runs go (finished runs are read, not rerun).

  Returns:
    One markdown section per setting.
  """
  sections = []
  for pair, args, description in settings:
    rows = [','.join(filter(None, (f'views={pair},method={m}', args)))
            for m in methods]
    results = run_sweep(config_path, rows, seeds, [], workdir)
    by_method = dict(zip(methods, results.values(), strict=True))
    sections.append(table(pair, description, by_method))
  return sections


def machine() -> str:
  """The CPU, core count and JAX backend, for result files."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f
                 if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return (f'{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on '
          f'{jax.devices()[0].platform} ({jax.device_count()} device(s))')


def write_section(path: str, section: str, *, begin: str, end: str,
                  before: str) -> None:
  """Replaces one marked section of the result file ``path`` in place.

  Args:
    path: the markdown file (it must exist).
    section, begin, end, before: as `tables.merge_section`.
  """
  with open(path) as f:
    text = f.read()
  workdir_lib.write_text(path, tables.merge_section(
      text, section, begin=begin, end=end, before=before))


def write_report(path: str, body: str, module: str, argv: list[str]) -> str:
  """Writes a result file: ``body``, then the command, date and machine.

  Args:
    path: the markdown file to write.
    body: the tables and their explanation.
    module: the script that made them, e.g. ``'experiments.gblend_grid'``.
    argv: its arguments (``sys.argv[1:]``).

  Returns:
    The text written.
  """
  command = shlex.join(['python', '-m', module, *argv])
  text = (f'{body}\nCommand: `{command}`  \n'
          f'Date: {datetime.date.today().isoformat()}  \n'
          f'Machine: {machine()}\n')
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  workdir_lib.write_text(path, text)
  return text
