"""Plots of a run's metrics as PNG files.

The ``draw_*`` functions take plain data (the rows of ``metrics.jsonl`` as
`metric_writer.read_metrics` returns them, lists of numbers) and a path,
draw one figure with titles, axis labels and legends, and return what they
drew, read back from the figure's artists::

  {panel title: {line label: (x values, y values)}}

so a caller (or a test) sees the numbers on the page. Panels with no logged
value are left out; a figure with no panel is not written.

The ``plot_*`` functions are the trainer's: they read a work directory's
``metrics.jsonl`` and write ``blend.png``, ``ogm.png`` or
``per_class_accuracy.png`` into it. ``python -m experiments.plot`` draws
every figure of a finished run.
"""

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from gblend_jax.training import metric_writer  # noqa: E402

Rows = Sequence[Mapping[str, float]]
Drawn = dict[str, dict[str, tuple[list[float], list[float]]]]

# Many/medium/few-shot boundaries in training images (Zhang et al., AAAI 2021).
SHOT_THRESHOLDS = (20, 100)


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel of a figure.

  Attributes:
    title: the panel's title (also its key in the returned `Drawn`).
    ylabel: the y axis label.
    lines: ``{legend label: metric name}``.
    yscale: 'linear', or 'log' (drawn linear when a value is not positive).
  """

  title: str
  ylabel: str
  lines: Mapping[str, str]
  yscale: str = 'linear'


def metric_series(rows: Rows, name: str) -> tuple[list[int], list[float]]:
  """The steps and values of one metric, in the order they were logged.

  Args:
    rows: rows of ``metrics.jsonl`` (``{'step': N, name: value, ...}``).
    name: the metric's name, e.g. ``'holdout/fused/loss'``.

  Returns:
    ``(steps, values)``; both empty when the metric was never logged.
  """
  points = [(int(r['step']), float(r[name])) for r in rows if name in r]
  return [s for s, _ in points], [v for _, v in points]


def logged_names(rows: Rows, pattern: str) -> list[str]:
  """The first group of `pattern` over the logged metric names.

  Args:
    rows: rows of ``metrics.jsonl``.
    pattern: a regular expression matched against whole metric names, with
      one group, e.g. ``r'blend/weight/([^/]+)'``.

  Returns:
    The distinct matches in the order they were first logged (the trainer
    logs heads and modalities in their model order).
  """
  regex = re.compile(pattern)
  found = {}
  for row in rows:
    for name in row:
      match = regex.fullmatch(name)
      if match:
        found.setdefault(match.group(1), None)
  return list(found)


def _head_order(heads: Sequence[str]) -> list[str]:
  """The paper's order: modality heads, ``fused``, then OGM's shares."""
  return sorted(heads, key=lambda h: (h == 'fused') + 2 * h.startswith(
      'unimodal_'))


def draw_panels(
    rows: Rows, panels: Sequence[Panel], path: str, title: str
) -> Drawn | None:
  """Draws metric series in stacked panels that share the step axis.

  Args:
    rows: rows of ``metrics.jsonl``.
    panels: the panels to draw; those with no logged value are left out.
    path: the PNG to write.
    title: the figure's title.

  Returns:
    What was drawn, or None (and no file) when no panel has data.
  """
  series = [{label: metric_series(rows, name)
             for label, name in panel.lines.items()} for panel in panels]
  kept = [(p, {k: v for k, v in s.items() if v[0]})
          for p, s in zip(panels, series, strict=True)]
  kept = [(p, s) for p, s in kept if s]
  if not kept:
    return None
  figure, axes = plt.subplots(len(kept), 1, figsize=(7, 2.8 * len(kept) + 0.6),
                              sharex=True, squeeze=False, layout='constrained')
  for axis, (panel, lines) in zip(axes[:, 0], kept, strict=True):
    for label, (steps, values) in lines.items():
      # A line keeps its colour across panels whichever lines are missing.
      color = f'C{list(panel.lines).index(label) % 10}'
      axis.plot(steps, values, marker='.', label=label, color=color)
    values = [v for _, vs in lines.values() for v in vs if math.isfinite(v)]
    positive = values and min(values) > 0
    axis.set_yscale(panel.yscale if positive else 'linear')
    axis.set_title(panel.title)
    axis.set_ylabel(panel.ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  axes[-1, 0].set_xlabel('training step')
  axes[-1, 0].xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  figure.suptitle(title)
  return _save(figure, path)


def draw_losses(rows: Rows, path: str) -> Drawn | None:
  """Train and held-out loss of every head over training (``losses.png``).

  One panel per head (modalities, ``fused``, OGM's ``unimodal_<m>``): the
  loss of the training batches (``train_step/<head>/loss``) and, at each
  evaluation, of the train and held-out splits (``train/<head>/loss``,
  ``holdout/<head>/loss``).

  Args:
    rows: rows of ``metrics.jsonl``.
    path: the PNG to write.

  Returns:
    What was drawn, or None when no head loss was logged.
  """
  heads = _head_order(
      logged_names(rows, r'(?:train_step|train|holdout)/([^/]+)/loss'))
  return draw_panels(rows, [
      Panel(f'head: {head}', 'cross-entropy', {
          'train batches': f'train_step/{head}/loss',
          'train split (evaluation)': f'train/{head}/loss',
          'held-out split (evaluation)': f'holdout/{head}/loss',
      }) for head in heads
  ], path, 'Loss per head')


def draw_blend(
    rows: Rows, path: str, heads: Sequence[str] | None = None
) -> Drawn | None:
  """G-Blend's weights, OGR, gains and variances over training.

  Algorithm 1 logs ``blend/{weight,gain,ogr}/<head>`` at each estimate;
  gradient mode logs ``blend/{weight,gain,sigma_sq}/<head>``. The OGR is
  ``|ΔO / ΔG|`` (Wang et al., CVPR 2020, Eq. 3); the weights are
  ``∝ G / O²`` (Algorithm 1) or ``∝ gain / σ²`` (Proposition 1).

  Args:
    rows: rows of ``metrics.jsonl``.
    path: the PNG to write.
    heads: head names in blend order; by default those with a logged
      ``blend/weight/<head>``, modality heads first, then ``fused``.

  Returns:
    What was drawn, or None when no blend weight was logged.
  """
  if heads is None:
    heads = _head_order(logged_names(rows, r'blend/weight/([^/]+)'))
  if not any(metric_series(rows, f'blend/weight/{h}')[0] for h in heads):
    return None

  def lines(quantity):
    return {h: f'blend/{quantity}/{h}' for h in heads}

  return draw_panels(rows, [
      Panel('blend weights', 'weight w', lines('weight')),
      Panel('overfitting-to-generalisation ratio', 'OGR = |ΔO / ΔG|',
            lines('ogr'), 'log'),
      Panel('generalisation gain', 'G', lines('gain')),
      Panel('overfitting variance (gradient mode)', 'σ²', lines('sigma_sq'),
            'log'),
  ], path, 'Gradient Blending')


def draw_modulation(
    rows: Rows, path: str, modalities: Sequence[str] | None = None
) -> Drawn | None:
  """OGM-GE's quantities over training, per modality (``ogm.png``).

  Panels: the discrepancy ratio ρ, the coefficient ``k = 1 - tanh(α ρ)``
  (Peng et al., CVPR 2022, Eq. 10), the score (mean true-class probability
  of each modality's share of the logits) and the held-out accuracy of the
  unimodal logits and of the fused head.

  Args:
    rows: rows of ``metrics.jsonl``.
    path: the PNG to write.
    modalities: the modalities in fusion order; by default those with a
      logged ``ogm/ratio/<m>``.

  Returns:
    What was drawn, or None when no ``ogm/...`` metric was logged (a run
    without modulation; its unimodal accuracies alone are not drawn here).
  """
  if modalities is None:
    modalities = logged_names(rows, r'ogm/ratio/([^/]+)')
  if not any(name.startswith('ogm/') for row in rows for name in row):
    return None
  return draw_panels(rows, [
      Panel('discrepancy ratio', 'ratio ρ',
            {m: f'ogm/ratio/{m}' for m in modalities}, 'log'),
      Panel('modulation coefficient', 'coefficient k',
            {m: f'ogm/coefficient/{m}' for m in modalities}),
      Panel('unimodal score', 'score (mean p_y)',
            {m: f'ogm/score/{m}' for m in modalities}),
      Panel('held-out accuracy', 'accuracy', {
          **{f'unimodal {m}': f'holdout/unimodal_{m}/accuracy'
             for m in modalities},
          'fused': 'holdout/fused/accuracy',
      }),
  ], path, 'OGM-GE')


def draw_per_class_accuracy(
    train_counts: Sequence[int], accuracy: Sequence[float], path: str
) -> Drawn:
  """Per-class test accuracy against training-class size.

  The many-, medium- and few-shot thresholds (`SHOT_THRESHOLDS`) are drawn
  as vertical lines. Classes with no test example (accuracy NaN) are left
  out.

  Args:
    train_counts: ``[C]`` training images per class.
    accuracy: ``[C]`` test accuracy per class (fractions).
    path: the PNG to write.

  Returns:
    ``{'per-class accuracy': {'classes': (training images, accuracy %)}}``.

  Raises:
    ValueError: when the two lengths differ.
  """
  if len(train_counts) != len(accuracy):
    raise ValueError(
        f'{len(train_counts)} class counts but {len(accuracy)} per-class '
        'accuracies: they must have one entry per class.'
    )
  points = [(c, int(n), 100 * float(a)) for c, (n, a)
            in enumerate(zip(train_counts, accuracy, strict=True))
            if math.isfinite(a)]
  figure, axis = plt.subplots(figsize=(7, 4), layout='constrained')
  axis.scatter([n for _, n, _ in points], [a for _, _, a in points],
               label='classes')
  for c, n, a in points:
    axis.annotate(str(c), (n, a), textcoords='offset points', xytext=(3, 3),
                  fontsize=7)
  for threshold, style, groups in zip(
      SHOT_THRESHOLDS, (':', '--'), ('few | medium', 'medium | many'),
      strict=True):
    axis.axvline(threshold, color='grey', linestyle=style, linewidth=1,
                 label=f'{groups} shot ({threshold} images)')
  axis.set_xscale('log')
  axis.set_xlabel('training images of the class')
  axis.set_ylabel('test accuracy (%)')
  axis.set_title('per-class accuracy')
  axis.legend(fontsize=8)
  figure.suptitle('Per-class test accuracy (labels: class index)')
  return _save(figure, path)


def _save(figure, path: str) -> Drawn:
  """Writes `figure` to `path`, closes it and returns the data it shows."""
  drawn = {}
  for axis in figure.axes:
    lines = {line.get_label(): (list(map(float, line.get_xdata())),
                                list(map(float, line.get_ydata())))
             for line in axis.get_lines()
             if not line.get_label().startswith('_')}
    for collection in axis.collections:
      offsets = collection.get_offsets()
      lines[collection.get_label()] = ([float(x) for x, _ in offsets],
                                       [float(y) for _, y in offsets])
    drawn[axis.get_title()] = lines
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return drawn


# The trainer's entry points: a work directory in, a PNG in it out.


def plot_blend(workdir: str, heads: Sequence[str]) -> str | None:
  """Writes ``blend.png`` (`draw_blend`) from the run's metrics.

  Args:
    workdir: the run's work directory.
    heads: head names in blend order.

  Returns:
    The path of the PNG, or None when the run logged no blend weights.
  """
  path = os.path.join(workdir, 'blend.png')
  drawn = draw_blend(metric_writer.read_metrics(workdir), path, heads)
  return None if drawn is None else path


def plot_modulation(workdir: str, modalities: Sequence[str]) -> str | None:
  """Writes ``ogm.png`` (`draw_modulation`) from the run's metrics.

  Args:
    workdir: the run's work directory.
    modalities: the modalities in fusion order.

  Returns:
    The path of the PNG, or None when nothing was logged.
  """
  path = os.path.join(workdir, 'ogm.png')
  drawn = draw_modulation(metric_writer.read_metrics(workdir), path,
                          modalities)
  return None if drawn is None else path


def plot_per_class_accuracy(
    workdir: str, train_counts: Sequence[int], accuracy: Sequence[float]
) -> str:
  """Writes ``per_class_accuracy.png`` (`draw_per_class_accuracy`).

  Args:
    workdir: the run's work directory.
    train_counts: ``[C]`` training images per class.
    accuracy: ``[C]`` test accuracy per class (fractions).

  Returns:
    The path of the PNG.
  """
  path = os.path.join(workdir, 'per_class_accuracy.png')
  draw_per_class_accuracy(train_counts, accuracy, path)
  return path
