r"""Draws the figures of one run from its work directory.

  python -m experiments.plot --workdir WORKDIR [--out DIR]

Reads the files a run leaves in its work directory and writes, into WORKDIR
(or DIR), the figures whose numbers are there:

  losses.png              train and held-out loss per head (metrics.jsonl)
  blend.png               G-Blend weights, OGR and gains (blend/... metrics)
  ogm.png                 OGM-GE's ρ, coefficients, scores and the unimodal
                          held-out accuracies (ogm/... metrics)
  per_class_accuracy.png  test accuracy per class against its training
                          images (results.json `test_per_class_accuracy`
                          and class_counts.json)

It prints the files written and, for each figure not written, why. A sweep's
directory is not a run: pass one of its ``<row>/seed_<k>`` directories.
"""

import argparse
import dataclasses
import json
import os
import sys

from gblend_jax import plots
from gblend_jax.training import metric_writer

METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'
CLASS_COUNTS_FILE = 'class_counts.json'
# The key of results.json holding the final model's test accuracy per class.
PER_CLASS_KEY = 'test_per_class_accuracy'


class NotARunError(ValueError):
  """The directory given is not a run's work directory."""


@dataclasses.dataclass
class PlotReport:
  """What `plot_run` wrote and left out.

  Attributes:
    out: the directory the figures went to.
    written: ``{file name: what it shows}`` (see `plots.Drawn`).
    skipped: ``{file name: why it was not written}``.
  """

  out: str
  written: dict[str, plots.Drawn] = dataclasses.field(default_factory=dict)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def plot_run(workdir: str, out: str | None = None) -> PlotReport:
  """Writes every figure whose numbers the run's work directory holds.

  Args:
    workdir: the run's work directory (it holds ``metrics.jsonl``).
    out: where the PNG files go; the work directory by default.

  Returns:
    The figures written and those skipped, with the reason.

  Raises:
    NotARunError: when `workdir` has no ``metrics.jsonl`` or it is not
      JSON lines.
  """
  rows = _read_metrics(workdir)
  out = workdir if out is None else out
  os.makedirs(out, exist_ok=True)
  report = PlotReport(out=out)

  def record(name, drawn, reason):
    if drawn is None:
      report.skipped[name] = reason
    else:
      report.written[name] = drawn

  record('losses.png', plots.draw_losses(rows, os.path.join(out, 'losses.png')),
         'no <split>/<head>/loss metric in metrics.jsonl')
  record('blend.png', plots.draw_blend(rows, os.path.join(out, 'blend.png')),
         'no blend/weight/<head> metric: not a G-Blend run (blend.mode '
         'offline, online or gradient)')
  record('ogm.png', plots.draw_modulation(rows, os.path.join(out, 'ogm.png')),
         'no ogm/... metric: not an OGM run (modulation.method ogm or '
         'ogm_ge)')
  per_class, reason = _per_class_accuracy(workdir)
  record('per_class_accuracy.png',
         None if per_class is None else plots.draw_per_class_accuracy(
             *per_class, os.path.join(out, 'per_class_accuracy.png')),
         reason)
  return report


def _read_metrics(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    runs = _runs_below(workdir)
    hint = (f' It holds {len(runs)} runs, e.g. {runs[0]}: pass one of them.'
            if runs else '')
    raise NotARunError(
        f'{workdir!r} is not a run\'s work directory: {path!r} does not '
        f'exist.{hint}'
    )
  try:
    return metric_writer.read_metrics(workdir)
  except ValueError as e:  # read_metrics names the line.
    raise NotARunError(f'{path!r} is not JSON lines: {e}') from e


def _runs_below(directory: str) -> list[str]:
  """Run directories (with ``metrics.jsonl``) under a sweep's directory."""
  found = []
  for root, _, files in os.walk(directory):
    if METRICS_FILE in files:
      found.append(root)
  return sorted(found)


def _per_class_accuracy(
    workdir: str,
) -> tuple[tuple[list[int], list[float]] | None, str]:
  """``((train counts, test accuracy per class), '')`` or ``(None, why)``."""
  results_path = os.path.join(workdir, RESULTS_FILE)
  counts_path = os.path.join(workdir, CLASS_COUNTS_FILE)
  if not os.path.isfile(results_path):
    return None, f'no {RESULTS_FILE}: the run has not finished'
  with open(results_path) as f:
    results = json.load(f)
  if PER_CLASS_KEY not in results:
    return None, (
        f'{RESULTS_FILE} has no {PER_CLASS_KEY!r}: the run did not measure '
        'per-class accuracy (longtail.shot_metrics=True) or its trainer did '
        'not save it as numbers'
    )
  if not os.path.isfile(counts_path):
    return None, f'no {CLASS_COUNTS_FILE} (training images per class)'
  with open(counts_path) as f:
    counts = json.load(f)['train']
  return (counts, results[PER_CLASS_KEY]), ''


def main(argv: list[str] | None = None) -> int:
  """Command line: ``--workdir DIR [--out DIR]``; returns the exit status.

  Args:
    argv: the arguments after the program name (``sys.argv[1:]`` if None).

  Returns:
    0 when a figure was written, 1 when none could be, 2 when the directory
    is not a run's.
  """
  parser = argparse.ArgumentParser(
      prog='python -m experiments.plot',
      description='Draws the figures of a run from its work directory.',
  )
  parser.add_argument('--workdir', required=True,
                      help="the run's work directory (holds metrics.jsonl)")
  parser.add_argument('--out', default=None,
                      help='where the PNG files go (default: the workdir)')
  args = parser.parse_args(argv)
  try:
    report = plot_run(args.workdir, args.out)
  except NotARunError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if report.written:
    print(f'Wrote {len(report.written)} figure(s) to {report.out}:')
    for name in report.written:
      print(f'  {os.path.join(report.out, name)}')
  else:
    print(f'Wrote no figure to {report.out}.')
  for name, reason in report.skipped.items():
    print(f'Skipped {name}: {reason}.')
  return 0 if report.written else 1


if __name__ == '__main__':
  sys.exit(main())
