"""Markdown tables of the experiment grids (no absl flags: importable by
tests and by any script)."""

from collections.abc import Sequence

import numpy as np


def gblend_setting(pair: str, description: str,
                   runs: dict[str, list[dict]]) -> str:
  """G-Blend grid: a row per method with weights found and cost vs naive."""
  views = pair.split('+')
  lines = [f'### {pair}: {description}', '',
           '| method | test | train | weights [' + ', '.join(
               [*views, 'fused']) + '] | s/run | × naive |',
           '|---|---:|---:|---|---:|---:|']
  naive_seconds = np.mean([r['train_seconds'] for r in runs['naive']])
  for method, results in runs.items():
    test = 100 * np.array([r['reported']['test/fused/accuracy']
                           for r in results])
    train = 100 * np.array([r['reported']['train/fused/accuracy']
                            for r in results])
    name = {'single_a': f'{views[0]} alone',
            'single_b': f'{views[1]} alone'}.get(method, method)
    weights = '—'
    if 'blend_weights' in results[0]:
      keys = list(results[0]['blend_weights'])
      mean = np.mean([[r['blend_weights'][k] for k in keys]
                      for r in results], axis=0)
      weights = '[' + ', '.join(f'{w:.3f}' for w in mean) + ']'
    seconds = np.mean([r['train_seconds'] for r in results])
    lines.append(
        f'| {name} | {test.mean():.2f} ± {test.std():.2f} | '
        f'{train.mean():.2f} ± {train.std():.2f} | {weights} | '
        f'{seconds:.1f} | {seconds / naive_seconds:.1f} |'
    )
  return '\n'.join(lines) + '\n'


def percent(results: list[dict], key: str) -> str:
  """``'mean ± std'`` over runs of a reported metric, in percent."""
  values = 100 * np.array([r['reported'][key] for r in results])
  return f'{values.mean():.2f} ± {values.std():.2f}'


def ogm_setting(pair: str, description: str,
                by_method: dict[str, list[dict]]) -> str:
  """OGM-GE grid: a row per method with each view's held-out share."""
  views = pair.split('+')
  lines = [f'### {pair}: {description}', '',
           f'| method | test | train | held-out {views[0]} share | '
           f'held-out {views[1]} share | s/run |',
           '|---|---:|---:|---:|---:|---:|']
  for method, results in by_method.items():
    name = {'single_a': f'{views[0]} alone',
            'single_b': f'{views[1]} alone'}.get(method, method)
    shares = []
    for index, view in enumerate(views):
      alone = ('single_a', 'single_b')[index]
      if method == alone:
        shares.append(percent(results, 'holdout/fused/accuracy'))
      elif method.startswith('single'):
        shares.append('—')
      else:
        shares.append(percent(results, f'holdout/unimodal_{view}/accuracy'))
    seconds = np.mean([r['train_seconds'] for r in results])
    lines.append(
        f'| {name} | {percent(results, "test/fused/accuracy")} | '
        f'{percent(results, "train/fused/accuracy")} | {shares[0]} | '
        f'{shares[1]} | {seconds:.1f} |'
    )
  return '\n'.join(lines) + '\n'


def longtail_selection(by_recipe: dict[str, dict], chosen: set[str]) -> str:
  """Long-tail grid, stage 1: one seed of every recipe of a family.

  Args:
    by_recipe: recipe -> the results of its run (``'reported'`` metrics).
    chosen: the recipes picked (best held-out accuracy of their family).

  Returns:
    Markdown rows: held-out and test accuracy, the shot accuracies.
  """
  lines = ['| recipe | held-out | test | many | medium | few | s/run |',
           '|---|---:|---:|---:|---:|---:|---:|']
  for recipe, run in by_recipe.items():
    metrics = run['reported']
    cells = [100 * metrics[f'{split}/fused/accuracy']
             for split in ('holdout', 'test')]
    cells += [100 * metrics[f'test/fused/{group}_accuracy']
              for group in ('many_shot', 'medium_shot', 'few_shot')]
    name = f'**{recipe}**' if recipe in chosen else recipe
    lines.append(f'| {name} | ' + ' | '.join(f'{c:.2f}' for c in cells)
                 + f" | {run['train_seconds']:.0f} |")
  return '\n'.join(lines) + '\n'


def longtail_table(by_row: dict[str, list[dict]],
                   paper: dict[str, str] | None = None,
                   prefixes: dict[str, str] | None = None,
                   seeds: bool = False) -> str:
  """Long-tail grid, stage 2: mean ± std over seeds of each row.

  Args:
    by_row: row label -> the results of its seeds.
    paper: row label -> the paper's top-1 error for it (another data set),
      for the rows that have one.
    prefixes: row label -> the prefix of its metrics' names (``posthoc_``:
      ``test/fused/posthoc_top1_error``, ...), for rows that report a
      post-hoc measurement of a run; default none.
    seeds: Add a ``seeds`` column: how many results each row averages.

  Returns:
    Markdown rows: top-1 error, then many/medium/few-shot accuracy (%), the
    training seconds of one run, (the seeds,) and the paper's error.
  """
  paper, prefixes = paper or {}, prefixes or {}
  lines = ['| recipe | top-1 error | many-shot acc | medium-shot acc | '
           'few-shot acc | s/run | ' + ('seeds | ' if seeds else '')
           + 'paper error (CIFAR-10-LT) |',
           '|---|---:|---:|---:|---:|---:|---:|' + ('---:|' if seeds else '')]
  for label, results in by_row.items():
    prefix = prefixes.get(label, '')
    cells = [percent(results, f'test/fused/{prefix}top1_error')]
    cells += [percent(results, f'test/fused/{prefix}{group}_accuracy')
              for group in ('many_shot', 'medium_shot', 'few_shot')]
    seconds = np.mean([r['train_seconds'] for r in results])
    cells.append(f'{seconds:.0f}')
    if seeds:
      cells.append(str(len(results)))
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' | '
                 f"{paper.get(label, '—')} |")
  return '\n'.join(lines) + '\n'


def _error(results: list[dict]) -> tuple[float, float]:
  errors = 100 * np.array([r['reported']['test/fused/top1_error']
                           for r in results])
  return float(errors.mean()), float(errors.std())


def longtail_findings(
    by_recipe: dict[str, list[dict]],
    claims: Sequence[tuple[str, str, tuple[str, ...]]],
    verdicts: tuple[str, str] = ('agrees', '**disagrees**'),
) -> str:
  """The paper's comparisons, checked on the measured top-1 errors.

  Args:
    by_recipe: recipe -> the results of its seeds (one imbalance factor).
    claims: ``(claim, recipe, others)``: the paper says ``recipe`` has a
      lower error than each of ``others`` (or, if ``claim`` starts with
      ``'worse:'``, a higher one).
    verdicts: The words for a claim the means order as the paper says, and
      for one they do not.

  Returns:
    Markdown bullets: the claim, the mean ± std errors, and whether the
    means order as the paper says; a claim with a recipe that has no
    results is marked not measured yet, naming those recipes.
  """
  lines = []
  for claim, recipe, others in claims:
    worse = claim.startswith('worse:')
    text = claim.removeprefix('worse:').strip()
    absent = [r for r in (recipe, *others) if not by_recipe.get(r)]
    if absent:
      lines.append(f'- {text}: not measured yet (no finished run of '
                   f'{", ".join(absent)}).')
      continue
    mean, std = _error(by_recipe[recipe])
    measured = [f'{recipe} {mean:.2f} ± {std:.2f}']
    holds = True
    for other in others:
      other_mean, other_std = _error(by_recipe[other])
      measured.append(f'{other} {other_mean:.2f} ± {other_std:.2f}')
      holds &= (mean > other_mean) if worse else (mean < other_mean)
    verdict = verdicts[0] if holds else verdicts[1]
    lines.append(f'- {text}: {verdict} (top-1 error %: '
                 + ', '.join(measured) + ').')
  return '\n'.join(lines) + '\n'


def merge_section(text: str, section: str, *, begin: str, end: str,
                  before: str) -> str:
  """``text`` with one marked section replaced, every other line kept.

  Args:
    text: a result file's markdown.
    section: the new section, starting with ``begin`` and ending with
      ``end`` (the marker lines).
    begin: the marker of the section's first line.
    end: the marker of its last line.
    before: where a section not yet in ``text`` goes: before this heading
      (at the end when ``text`` lacks it).

  Returns:
    The merged markdown.
  """
  section = section.rstrip('\n') + '\n'
  if begin in text:
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return head + section + '\n' + tail.lstrip('\n')
  if before in text:
    head, _, tail = text.partition(before)
    return head + section + '\n' + before + tail
  return text.rstrip('\n') + '\n\n' + section
