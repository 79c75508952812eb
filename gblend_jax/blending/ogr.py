"""Overfitting, generalisation and their ratio (OGR) between two checkpoints.

Per-head measurements at checkpoints N and N+n (Wang et al., Section 3),
with ``L^T`` the training loss and ``L^V`` the held-out loss:

* overfitting ``O_N = L^V_N - L^T_N``;
* generalisation gain ``ΔG = L^V_N - L^V_{N+n}``;
* overfitting delta ``ΔO = O_{N+n} - O_N``;
* Overfitting-to-Generalisation Ratio ``OGR = |ΔO / ΔG|``.

Algorithm 1 sets ``w_i = ΔG_i / ΔO_i²``
(`gblend_jax.blending.blend.blend_weights`).

Accuracy mode (``higher_is_better=True``): the paper notes that accuracy can
replace loss. Higher is then better, so the signs flip:
``O = acc^T - acc^V``, ``ΔG = acc^V_{N+n} - acc^V_N`` and ``ΔO`` as before
from these ``O``. A positive ``ΔG`` still means the head improved on held-out
data and a positive ``ΔO`` that it overfitted more.

Every function takes arrays of any matching shape, usually [H] (one entry per
head: each modality's head, then the fused head), and is jit-compatible.

References:
  Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
  Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681 (Section 3,
  Algorithm 1).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = (
    'OGRReport',
    'generalization_gain',
    'ogr',
    'overfitting',
    'overfitting_delta',
)


def overfitting(
    train_loss: jax.Array,
    holdout_loss: jax.Array,
    *,
    higher_is_better: bool = False,
) -> jax.Array:
  """Overfitting ``O = L^V - L^T`` (accuracy: ``acc^T - acc^V``).

  Args:
    train_loss: training loss (or accuracy) per head.
    holdout_loss: held-out loss (or accuracy) per head.
    higher_is_better: True when the inputs are accuracies.

  Returns:
    The overfitting per head.
  """
  train_loss = jnp.asarray(train_loss)
  holdout_loss = jnp.asarray(holdout_loss)
  if higher_is_better:
    return train_loss - holdout_loss
  return holdout_loss - train_loss


def generalization_gain(
    holdout_before: jax.Array,
    holdout_after: jax.Array,
    *,
    higher_is_better: bool = False,
) -> jax.Array:
  """Generalisation gain ``ΔG = L^V_N - L^V_{N+n}`` (accuracy: after - before).

  Args:
    holdout_before: held-out loss (or accuracy) at checkpoint N.
    holdout_after: held-out loss (or accuracy) at checkpoint N+n.
    higher_is_better: True when the inputs are accuracies.

  Returns:
    ``ΔG`` per head; positive when the head improved on held-out data.
  """
  holdout_before = jnp.asarray(holdout_before)
  holdout_after = jnp.asarray(holdout_after)
  if higher_is_better:
    return holdout_after - holdout_before
  return holdout_before - holdout_after


def overfitting_delta(
    train_before: jax.Array,
    holdout_before: jax.Array,
    train_after: jax.Array,
    holdout_after: jax.Array,
    *,
    higher_is_better: bool = False,
) -> jax.Array:
  """Overfitting delta ``ΔO = O_{N+n} - O_N``.

  Args:
    train_before: training loss (or accuracy) at checkpoint N.
    holdout_before: held-out loss (or accuracy) at checkpoint N.
    train_after: training loss (or accuracy) at checkpoint N+n.
    holdout_after: held-out loss (or accuracy) at checkpoint N+n.
    higher_is_better: True when the inputs are accuracies.

  Returns:
    ``ΔO`` per head; positive when the train/held-out gap widened.
  """
  before = overfitting(
      train_before, holdout_before, higher_is_better=higher_is_better
  )
  after = overfitting(
      train_after, holdout_after, higher_is_better=higher_is_better
  )
  return after - before


def _ratio(overfit_delta: jax.Array, gain: jax.Array) -> jax.Array:
  safe_gain = jnp.where(gain == 0, 1.0, gain)
  return jnp.where(gain == 0, jnp.inf, jnp.abs(overfit_delta / safe_gain))


def ogr(
    train_before: jax.Array,
    holdout_before: jax.Array,
    train_after: jax.Array,
    holdout_after: jax.Array,
    *,
    higher_is_better: bool = False,
) -> jax.Array:
  """Overfitting-to-Generalisation Ratio ``OGR = |ΔO / ΔG|``.

  ``ΔG = 0`` gives ``inf`` (also when ``ΔO = 0``): nothing was learnt that
  generalises, so the ratio is as bad as it gets. NaN inputs give NaN.

  Args:
    train_before: training loss (or accuracy) at checkpoint N.
    holdout_before: held-out loss (or accuracy) at checkpoint N.
    train_after: training loss (or accuracy) at checkpoint N+n.
    holdout_after: held-out loss (or accuracy) at checkpoint N+n.
    higher_is_better: True when the inputs are accuracies.

  Returns:
    The OGR per head.
  """
  return OGRReport.from_losses(
      train_before,
      holdout_before,
      train_after,
      holdout_after,
      higher_is_better=higher_is_better,
  ).ogr


class OGRReport(NamedTuple):
  """Per-head measurements between checkpoints N and N+n (arrays [H]).

  Attributes:
    gain: ``ΔG``, the generalisation gain (Algorithm 1's ``G_i``).
    overfit_delta: ``ΔO = O_{N+n} - O_N`` (Algorithm 1's ``O_i``).
    overfitting_before: ``O_N``.
    overfitting_after: ``O_{N+n}``.
    ogr: ``|ΔO / ΔG|`` (``inf`` where ``ΔG = 0``).
  """

  gain: jax.Array
  overfit_delta: jax.Array
  overfitting_before: jax.Array
  overfitting_after: jax.Array
  ogr: jax.Array

  @classmethod
  def from_losses(
      cls,
      train_before: jax.Array,
      holdout_before: jax.Array,
      train_after: jax.Array,
      holdout_after: jax.Array,
      *,
      higher_is_better: bool = False,
  ) -> 'OGRReport':
    """Builds the report from losses (or accuracies) at N and N+n.

    Args:
      train_before: training loss (or accuracy) at checkpoint N.
      holdout_before: held-out loss (or accuracy) at checkpoint N.
      train_after: training loss (or accuracy) at checkpoint N+n.
      holdout_after: held-out loss (or accuracy) at checkpoint N+n.
      higher_is_better: True when the inputs are accuracies.

    Returns:
      The report. ``blend_weights(report.gain, report.overfit_delta)`` are
      Algorithm 1's weights.

    Examples:
      >>> from gblend_jax.blending.ogr import OGRReport
      >>> report = OGRReport.from_losses(
      ...     train_before=[1.0, 1.0], holdout_before=[1.2, 1.1],
      ...     train_after=[0.5, 0.9], holdout_after=[1.0, 1.2])
      >>> [round(float(g), 3) for g in report.gain]  # Head 1 got worse.
      [0.2, -0.1]
      >>> [round(float(o), 3) for o in report.overfit_delta]
      [0.3, 0.2]
      >>> [round(float(r), 3) for r in report.ogr]
      [1.5, 2.0]
    """
    before = overfitting(
        train_before, holdout_before, higher_is_better=higher_is_better
    )
    after = overfitting(
        train_after, holdout_after, higher_is_better=higher_is_better
    )
    gain = generalization_gain(
        holdout_before, holdout_after, higher_is_better=higher_is_better
    )
    overfit_delta = after - before
    return cls(
        gain=gain,
        overfit_delta=overfit_delta,
        overfitting_before=before,
        overfitting_after=after,
        ogr=_ratio(overfit_delta, gain),
    )
