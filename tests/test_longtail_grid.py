"""The long-tail grid's decoupling rows merge into the table file in place;
its --train_seeds are checked, and processes sharing the epoch grid skip
each other's runs."""

import subprocess
import sys

from experiments import runs
from experiments import tables
from tests import train_utils

BEGIN, END, NOTES = '<!-- begin -->', '<!-- end -->', '## What it shows'
SECTION = f'{BEGIN}\n## new rows\n| a | 1 |\n{END}\n'


def _merge(text, section):
  return tables.merge_section(text, section, begin=BEGIN, end=END,
                              before=NOTES)


def test_section_goes_before_the_notes_and_replaces_itself():
  text = ('# Table\n\n| ce | 47.58 |\n\nCommand: `x`\n\n'
          '## What it shows\n\nnotes\n')
  merged = _merge(text, SECTION)
  head, notes = text.split(NOTES)
  assert merged == head + SECTION + '\n' + NOTES + notes
  # A rerun replaces its own section and nothing else.
  again = _merge(merged, SECTION.replace('| a | 1 |', '| a | 2 |'))
  assert again == merged.replace('| a | 1 |', '| a | 2 |')
  # Without notes the section goes at the end.
  assert _merge('# T\n', SECTION) == '# T\n\n' + SECTION


def test_write_section_merges_into_the_file_in_place(tmp_path):
  path = tmp_path / 'results.md'
  text = '# Table\n\n| ce | 47.58 |\n\n## What it shows\n\nnotes\n'
  path.write_text(text)
  runs.write_section(str(path), SECTION, begin=BEGIN, end=END, before=NOTES)
  assert path.read_text() == _merge(text, SECTION)


def test_decoupling_rows_train_seeds_and_a_shared_epoch_grid():
  # The grid defines absl flags at import: a process of its own.
  check = (
      'from experiments import longtail_grid as g\n'
      'from experiments.configs import longtail_recipes as r\n'
      'rows = g.DECOUPLING_ROWS.values()\n'
      'assert all(recipe in r.RECIPES for recipe, _ in rows)\n'
      "assert {p for _, p in rows} == {'', 'posthoc_', 'tau_norm_'}\n")
  # --train_seeds: the seeds asked for, and one outside 0 .. seeds-1 named.
  check += (
      'from absl import app\n'
      "g.flags.FLAGS(['grid', '--train_seeds', '2,0'])\n"
      'assert g._train_seeds(3) == [2, 0]\n'
      "g.flags.FLAGS(['grid', '--train_seeds', '1,3'])\n"
      'try:\n'
      '  g._train_seeds(3)\n'
      '  raise AssertionError(\'seed 3 of 3 accepted\')\n'
      'except app.UsageError as e:\n'
      "  assert '[3] not in 0 .. 2' in str(e), e\n"
      "g.flags.FLAGS(['grid', '--train_seeds', 'one'])\n"
      'try:\n'
      '  g._train_seeds(3)\n'
      '  raise AssertionError(\'seed one accepted\')\n'
      'except app.UsageError as e:\n'
      "  assert 'must be integers' in str(e), e\n"
      "g.flags.FLAGS.unparse_flags()\n"
      "g.flags.FLAGS(['grid'])\n"
      'assert g._train_seeds(2) == [0, 1]\n')
  # Processes sharing a grid: a run another process holds is skipped, the
  # rest are trained in order, and only the finished are reported.
  check += (
      'from gblend_jax.training import workdir as w\n'
      'trained, held = [], (list(g.EPOCH_ROWS)[1], 1)\n'
      'def run_one(config, row, seed, overrides, workdir):\n'
      "  recipe = row.split(',')[0].split('=')[1]\n"
      '  if (recipe, seed) == held:\n'
      "    raise w.WorkdirLockedError('held')\n"
      '  trained.append((recipe, seed))\n'
      "  return {'reported': {'test/fused/accuracy': 0.5},\n"
      "          'train_seconds': 1}\n"
      'def finished_result(config, row, seed, overrides, workdir):\n'
      "  recipe = row.split(',')[0].split('=')[1]\n"
      "  return None if (recipe, seed) == held else {'seed': seed}\n"
      'g.runs.run_one, g.runs.finished_result = run_one, finished_result\n'
      "results, stopped = g._epoch_results(2, ['100'], [1, 0])\n"
      "assert stopped == ''\n"
      'expected = [(r, s) for s in (1, 0) for r in g.EPOCH_ROWS]\n'
      'expected.remove(held)\n'
      'assert trained == expected, trained\n'
      "rows = results['100']\n"
      'assert rows[held[0]] == [{\'seed\': 0}]\n'
      "assert rows[list(g.EPOCH_ROWS)[0]] == [{'seed': 0}, {'seed': 1}]\n"
      # The epoch section's table: the paper's CIFAR-10-LT error beside the
      # rows that have one (CE 28.05 at IF 100), '—' beside the others.
      'def run(error):\n'
      "  reported = {'test/fused/top1_error': error}\n"
      "  reported.update({f'test/fused/{k}_accuracy': 0.5 for k in (\n"
      "      'many_shot', 'medium_shot', 'few_shot')})\n"
      "  return {'reported': reported, 'train_seconds': 10.0}\n"
      'def seeded(error, seed):\n'
      "  return dict(run(error), seed=seed)\n"
      "section = g._epoch_section({'100': {'ce': [seeded(0.3, 0)],\n"
      "                                   'progressive': [seeded(0.2, 0)]}},\n"
      '                           3)\n'
      "assert '| 10 | 1 | 28.05 |' in section, section\n"
      "assert '| 20.00 ± 0.00 |' in section and '| 10 | 1 | — |' in section\n"
      # Paired by seed: mixup's seeds 0, 2 against CE's 0, 1, 2 -> seeds
      # 0 and 2, differences -5 and -1 points: mean -3, std 2.83 (n - 1).
      "paired = g._paired_differences({\n"
      "    'ce': [seeded(0.30, 0), seeded(0.40, 1), seeded(0.32, 2)],\n"
      "    'mixup': [seeded(0.25, 0), seeded(0.31, 2)]})\n"
      "assert paired == ('- mixup − ce: -3.00 ± 2.83 (seeds 0, 2: -5.00, '\n"
      "                  '-1.00)\\n'), paired\n")
  subprocess.run([sys.executable, '-c', check], cwd=train_utils.REPO,
                 check=True)
