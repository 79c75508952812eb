"""Plots of a run's metrics, written as PNG files into its work directory."""

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from gblend_jax import metric_writer  # noqa: E402


def plot_blend(workdir: str, heads: Sequence[str]) -> str | None:
  """Plots the blend weights (and OGR, when measured) over training.

  Reads ``blend/weight/<head>`` and ``blend/ogr/<head>`` from the run's
  ``metrics.jsonl`` and writes ``blend.png``.

  Args:
    workdir: the run's work directory.
    heads: head names in blend order.

  Returns:
    The path of the PNG, or None when the run logged no blend weights.
  """
  rows = metric_writer.read_metrics(workdir)
  panels = [(q, label) for q, label in (('weight', 'blend weight'),
                                        ('ogr', 'OGR = |ΔO / ΔG|'))
            if any(f'blend/{q}/{heads[0]}' in r for r in rows)]
  if not panels:
    return None
  figure, axes = plt.subplots(len(panels), 1, figsize=(7, 3 * len(panels)),
                              sharex=True, squeeze=False)
  for axis, (quantity, label) in zip(axes[:, 0], panels, strict=True):
    for head in heads:
      key = f'blend/{quantity}/{head}'
      points = [(r['step'], r[key]) for r in rows if key in r]
      axis.plot(*zip(*points, strict=True), marker='.', label=head)
    axis.set_ylabel(label)
    if quantity == 'ogr':
      axis.set_yscale('log')
    axis.grid(alpha=0.3)
  axes[0, 0].legend()
  axes[-1, 0].set_xlabel('step')
  figure.tight_layout()
  path = os.path.join(workdir, 'blend.png')
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path
