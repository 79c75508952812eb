"""Plots of a run's metrics, written as PNG files into its work directory."""

import os
from collections.abc import Mapping
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from gblend_jax import metric_writer  # noqa: E402


def _plot_panels(
    workdir: str,
    filename: str,
    panels: Sequence[tuple[str, Mapping[str, str], str]],
) -> str | None:
  """Plots metric series of ``metrics.jsonl`` in stacked panels.

  Args:
    workdir: the run's work directory.
    filename: name of the PNG written there.
    panels: ``(y label, {line label: metric key}, y scale)`` each; panels
      with no logged value are left out.

  Returns:
    The path of the PNG, or None when no panel has data.
  """
  rows = metric_writer.read_metrics(workdir)
  logged = {k for r in rows for k in r}
  panels = [p for p in panels if logged & set(p[1].values())]
  if not panels:
    return None
  figure, axes = plt.subplots(len(panels), 1, figsize=(7, 3 * len(panels)),
                              sharex=True, squeeze=False)
  for axis, (ylabel, lines, scale) in zip(axes[:, 0], panels, strict=True):
    for label, key in lines.items():
      points = [(r['step'], r[key]) for r in rows if key in r]
      if points:
        axis.plot(*zip(*points, strict=True), marker='.', label=label)
    axis.set_ylabel(ylabel)
    axis.set_yscale(scale)
    axis.grid(alpha=0.3)
    axis.legend()
  axes[-1, 0].set_xlabel('step')
  figure.tight_layout()
  path = os.path.join(workdir, filename)
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


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
  return _plot_panels(workdir, 'blend.png', [
      ('blend weight', {h: f'blend/weight/{h}' for h in heads}, 'linear'),
      ('OGR = |ΔO / ΔG|', {h: f'blend/ogr/{h}' for h in heads}, 'log'),
  ])


def plot_modulation(workdir: str, modalities: Sequence[str]) -> str | None:
  """Plots OGM-GE's quantities over training, per modality.

  Panels: the discrepancy ratio ρ, the coefficient k, the score (mean
  true-class probability of the unimodal logits, per step group) and the
  held-out accuracy of each modality's unimodal logits. Writes ``ogm.png``.

  Args:
    workdir: the run's work directory.
    modalities: the modalities in fusion order.

  Returns:
    The path of the PNG, or None when nothing was logged.
  """
  return _plot_panels(workdir, 'ogm.png', [
      ('ratio ρ', {m: f'ogm/ratio/{m}' for m in modalities}, 'log'),
      ('coefficient k', {m: f'ogm/coefficient/{m}' for m in modalities},
       'linear'),
      ('score (mean p_y)', {m: f'ogm/score/{m}' for m in modalities},
       'linear'),
      ('held-out accuracy', {
          **{f'unimodal {m}': f'holdout/unimodal_{m}/accuracy'
             for m in modalities},
          'fused': 'holdout/fused/accuracy',
      }, 'linear'),
  ])


def plot_per_class_accuracy(
    workdir: str, train_counts: Sequence[int], accuracy: Sequence[float]
) -> str:
  """Per-class test accuracy against training-class size.

  The many-, medium- and few-shot thresholds (100 and 20 training images,
  Zhang et al., AAAI 2021) are drawn as vertical lines.

  Args:
    workdir: the run's work directory.
    train_counts: ``[C]`` training images per class.
    accuracy: ``[C]`` test accuracy per class (fractions).

  Returns:
    The path of ``per_class_accuracy.png``.
  """
  figure, axis = plt.subplots(figsize=(7, 4))
  axis.scatter(train_counts, [100 * a for a in accuracy])
  for c, (n, a) in enumerate(zip(train_counts, accuracy, strict=True)):
    axis.annotate(str(c), (n, 100 * a), textcoords='offset points',
                  xytext=(3, 3), fontsize=7)
  for threshold in (20, 100):
    axis.axvline(threshold, color='grey', linestyle=':', linewidth=1)
  axis.set_xscale('log')
  axis.set_xlabel('training images of the class')
  axis.set_ylabel('test accuracy (%)')
  axis.set_title('Per-class accuracy (labels: class index)')
  figure.tight_layout()
  path = os.path.join(workdir, 'per_class_accuracy.png')
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path
