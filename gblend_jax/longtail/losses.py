"""Re-weighting losses for long-tailed classification, one value per example.

Every loss takes logits ``[B, C]``, integer labels ``[B]`` and, where it needs
them, the training-set class counts ``n_c`` ``[C]``, and returns the
per-example losses ``[B]`` (float32). Two reductions of a class-weighted
loss are in use (`reduce_losses`): ``'mean'``, ``(1/B) Σ_b w_{y_b} ℓ_b``
(Cui et al.'s code, and the bag of tricks' and Cao et al.'s focal losses),
and ``'weighted_mean'``, ``Σ_b w_{y_b} ℓ_b / Σ_b w_{y_b}`` (PyTorch's
``F.cross_entropy(weight=w)``, which the bag of tricks' and Cao et al.'s
code use for every weighted cross-entropy: CS-CE, CB-CE, LDAM, DRW).

The tricks of Zhang et al. (2021, §"Re-weighting methods"):

* cost-sensitive CE: ``w_c = (n_min / n_c)^γ``, γ = 1 (``cs_ce``) or the
  square-root weights γ = 1/2 (``cs_ce_sqrt``, the authors' "smooth CS-CE");
* focal loss (Lin et al., 2017, §3.2, Eq. 4), in two forms: ``'sigmoid'``,
  ``-Σ_c (1 - p_{t,c})^γ log p_{t,c}`` over per-class sigmoids (Lin et
  al.'s detector, Cui et al.'s and the bag of tricks' code), and
  ``'softmax'``, ``-(1 - p_y)^γ log p_y`` on the softmax probability (Cao
  et al.'s LDAM-DRW code);
* class-balanced CE / focal (Cui et al., 2019, §3.2 and §4):
  ``w_c = (1 - β) / (1 - β^{n_c})`` normalised so that ``Σ_c w_c = C``;
* LDAM (Cao et al., 2019, §3.2): ``CE(s·(z - Δ_y e_y), y)`` with margins
  ``Δ_c ∝ n_c^{-1/4}``, the largest one ``max_margin``;
* balanced softmax (Ren et al., 2020, §3.1): ``CE(z + log n, y)``.

`make_loss` builds any of them by name as ``loss_fn(logits, labels) -> [B]``.
All functions are pure and jit-compatible (the counts may be traced arrays;
the hyper-parameters are Python floats).

References:
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
  Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection",
  ICCV 2017, https://arxiv.org/abs/1708.02002.
  Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective
  Number of Samples", CVPR 2019, https://arxiv.org/abs/1901.05555.
  Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019,
  https://arxiv.org/abs/1906.07413.
  Ren, Yu, Sheng, Ma, Zhao, Yi, Li, "Balanced Meta-Softmax for Long-Tailed
  Visual Recognition", NeurIPS 2020, https://arxiv.org/abs/2007.10740.
"""

import functools
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = (
    'LOSSES',
    'balanced_softmax_loss',
    'class_balanced_cross_entropy',
    'class_balanced_focal_loss',
    'class_balanced_weights',
    'cost_sensitive_cross_entropy',
    'cost_sensitive_weights',
    'cross_entropy',
    'focal_loss',
    'ldam_loss',
    'ldam_margins',
    'loss_class_weights',
    'make_loss',
    'reduce_losses',
    'sigmoid_focal_loss',
)

FOCAL_FORMS = ('softmax', 'sigmoid')
REDUCTIONS = ('mean', 'weighted_mean')

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _log_probabilities(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``log softmax(logits)[b, labels_b]``, ``[B]`` float32."""
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(
        f'Expected logits [B, C] and labels [B]; got {logits.shape} and '
        f'{labels.shape}.'
    )
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]


def _class_weight(
    weights: jax.Array | np.ndarray | None, labels: jax.Array
) -> jax.Array | float:
  if weights is None:
    return 1.0
  return jnp.asarray(weights, jnp.float32)[labels]


def _counts(counts: jax.Array | np.ndarray) -> jax.Array:
  counts = jnp.asarray(counts, jnp.float32)
  if counts.ndim != 1:
    raise ValueError(f'Class counts must be [C]; got shape {counts.shape}.')
  return counts


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    weights: jax.Array | np.ndarray | None = None,
) -> jax.Array:
  """Per-example softmax cross-entropy ``-w_y log p_y``.

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    weights: optional ``[C]`` class weights ``w_c`` (None: all 1).

  Returns:
    ``[B]`` float32 losses.

  Examples:
    >>> logits = jnp.array([[0.0, math.log(3.0)]])
    >>> round(float(cross_entropy(logits, jnp.array([1]))[0]), 4)  # ln 4/3
    0.2877
  """
  return -_class_weight(weights, labels) * _log_probabilities(logits, labels)


def focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    gamma: float = 2.0,
    weights: jax.Array | np.ndarray | None = None,
    form: str = 'softmax',
) -> jax.Array:
  """Per-example focal loss, softmax ``-w_y (1 - p_y)^γ log p_y`` or sigmoid.

  Lin et al. (2017), §3.2: ``FL = -(1 - p_t)^γ log p_t`` (Eq. 4), with the
  class weights ``w`` in the role of the α-balancing ``α_t`` (Eq. 5).
  ``form='softmax'``: ``p_y`` is the softmax probability of the true class
  (the multi-class form of Cao et al.'s LDAM-DRW code); ``form='sigmoid'``:
  `sigmoid_focal_loss`, one binary focal term per class (Lin et al.'s
  detector; the bag of tricks' and Cui et al.'s code). γ = 0 is
  cross-entropy (softmax) or the sum of per-class binary cross-entropies
  (sigmoid).

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    gamma: focusing parameter ``γ >= 0``.
    weights: optional ``[C]`` class weights (None: all 1).
    form: ``'softmax'`` or ``'sigmoid'``.

  Returns:
    ``[B]`` float32 losses.

  Examples:
    >>> logits = jnp.array([[0.0, math.log(3.0)]])  # p_1 = 3/4.
    >>> # (1/4)^2 * ln(4/3)
    >>> round(float(focal_loss(logits, jnp.array([1]), gamma=2.0)[0]), 5)
    0.01798
  """
  if form not in FOCAL_FORMS:
    raise ValueError(
        f'Unknown focal form {form!r}; valid: {list(FOCAL_FORMS)}.'
    )
  if gamma < 0:
    raise ValueError(f'gamma={gamma} must be non-negative.')
  if form == 'sigmoid':
    return sigmoid_focal_loss(logits, labels, gamma=gamma, weights=weights)
  log_p = _log_probabilities(logits, labels)
  one_minus_p = -jnp.expm1(log_p)
  # The clip keeps the gradient of x^γ finite at p = 1 for γ < 1.
  modulator = jnp.power(jnp.maximum(one_minus_p, 1e-30), gamma)
  return -_class_weight(weights, labels) * modulator * log_p


def sigmoid_focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    gamma: float = 2.0,
    weights: jax.Array | np.ndarray | None = None,
) -> jax.Array:
  """Per-example sigmoid focal loss ``w_y Σ_c (1 - p_{t,c})^γ BCE_c``.

  Lin et al. (2017), Eq. 4 applied to each class as a binary problem:
  ``p_c = σ(z_c)``, ``t_c = 1[c = y]``, ``p_{t,c} = p_c`` if ``t_c`` else
  ``1 - p_c``, ``BCE_c = -log p_{t,c}``; the example's loss is the sum over
  the ``C`` classes times its class weight ``w_y``. This is the focal loss
  of the bag of tricks' code (``FocalLoss``, ``ClassBalanceFocal``: the sum
  over the batch and classes divided by ``B``) and of Cui et al.'s code
  (``focal_loss`` in ``cifar_main.py``: divided by ``Σ t = B``); both are
  ``(1/B) Σ_b`` of this value. The modulator is computed as
  ``exp(-γ softplus(-u))`` with ``u = (1 - 2 t) z``, Cui et al.'s stable
  form, and ``BCE = softplus(u)``.

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    gamma: focusing parameter ``γ >= 0``.
    weights: optional ``[C]`` class weights (None: all 1).

  Returns:
    ``[B]`` float32 losses.

  Examples:
    >>> # z = (0, 0), y = 1: each class has p_t = 1/2, BCE = ln 2.
    >>> loss = sigmoid_focal_loss(jnp.zeros((1, 2)), jnp.array([1]),
    ...                           gamma=1.0)
    >>> round(float(loss[0]), 4)  # 2 * (1/2) * ln 2
    0.6931
  """
  if gamma < 0:
    raise ValueError(f'gamma={gamma} must be non-negative.')
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(
        f'Expected logits [B, C] and labels [B]; got {logits.shape} and '
        f'{labels.shape}.'
    )
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  # u = -z for the true class, z for the others: BCE = softplus(u) and
  # 1 - p_t = σ(u) = exp(-softplus(-u)).
  u = (1.0 - 2.0 * targets) * logits
  bce = jax.nn.softplus(u)
  modulator = jnp.exp(-gamma * jax.nn.softplus(-u)) if gamma else 1.0
  per_example = jnp.sum(modulator * bce, axis=-1)
  return _class_weight(weights, labels) * per_example


def cost_sensitive_weights(
    counts: jax.Array | np.ndarray, power: float = 1.0
) -> jax.Array:
  """Cost-sensitive class weights ``w_c = (n_min / n_c)^γ``.

  Zhang et al. (2021), Eq. 2 for γ = 1; γ = 1/2 gives the square-root
  weights of the authors' "smooth CS-CE" (their code's
  ``CostSensitiveCE.GAMMA``; its ``*_square.yaml`` configs, which should
  set 0.5, set 1.0).

  Args:
    counts: ``[C]`` training examples per class, all positive.
    power: the exponent ``γ`` in ``[0, 1]`` (0: all weights 1).

  Returns:
    ``[C]`` float32 weights; the rarest class has weight 1.

  Examples:
    >>> [round(float(w), 4) for w in cost_sensitive_weights([100, 10, 50])]
    [0.1, 1.0, 0.2]
    >>> [round(float(w), 4) for w in cost_sensitive_weights([100, 25], 0.5)]
    [0.5, 1.0]
  """
  if not 0.0 <= power <= 1.0:
    raise ValueError(f'power={power} must be in [0, 1].')
  counts = _counts(counts)
  return (jnp.min(counts) / counts) ** power


def class_balanced_weights(
    counts: jax.Array | np.ndarray, beta: float = 0.9999
) -> jax.Array:
  """Class-balanced weights by the effective number (Cui et al., 2019).

  ``w_c ∝ 1 / E_{n_c}`` with the effective number
  ``E_n = (1 - β^n) / (1 - β)`` (Cui et al., §3.2, Proposition 1),
  normalised so that ``Σ_c w_c = C`` (§4). β = 0 gives equal weights;
  β → 1 gives inverse-frequency weights ``∝ 1 / n_c``.

  Args:
    counts: ``[C]`` training examples per class, all positive.
    beta: ``β`` in ``[0, 1)``.

  Returns:
    ``[C]`` float32 weights summing to ``C``.

  Examples:
    >>> # beta = 0.5: 1 - beta^n = 1/2, 3/4 for n = 1, 2; w ∝ 2, 4/3.
    >>> [round(float(w), 4) for w in class_balanced_weights([1, 2], 0.5)]
    [1.2, 0.8]
  """
  if not 0.0 <= beta < 1.0:
    raise ValueError(f'beta={beta} must be in [0, 1).')
  counts = _counts(counts)
  if beta == 0.0:
    return jnp.ones_like(counts)
  # 1 - beta^n, computed without cancellation for beta close to 1.
  not_effective = -jnp.expm1(counts * math.log(beta))
  weights = 1.0 / not_effective
  return weights * (counts.shape[0] / jnp.sum(weights))


def cost_sensitive_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    power: float = 1.0,
) -> jax.Array:
  """Cross-entropy weighted by ``(n_min / n_y)^γ`` (CS-CE, Zhang et al.).

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    counts: ``[C]`` training examples per class.
    power: ``γ`` of `cost_sensitive_weights` (1; 1/2: square-root).

  Returns:
    ``[B]`` float32 losses.
  """
  return cross_entropy(
      logits, labels, weights=cost_sensitive_weights(counts, power))


def _cost_sensitive_sqrt(logits, labels, counts):
  """CS-CE with the square-root weights ``(n_min / n_y)^{1/2}``."""
  return cost_sensitive_cross_entropy(logits, labels, counts, power=0.5)


def class_balanced_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    beta: float = 0.9999,
) -> jax.Array:
  """Class-balanced softmax cross-entropy (Cui et al., 2019, §4.1).

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    counts: ``[C]`` training examples per class.
    beta: ``β`` of `class_balanced_weights`.

  Returns:
    ``[B]`` float32 losses ``-w_y log p_y``.
  """
  return cross_entropy(
      logits, labels, weights=class_balanced_weights(counts, beta)
  )


def class_balanced_focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    beta: float = 0.9999,
    gamma: float = 2.0,
    form: str = 'softmax',
) -> jax.Array:
  """Class-balanced focal loss (Cui et al., 2019, §4.3, Eq. 12).

  ``w_y · FL`` with ``w = class_balanced_weights(n, β)`` and ``FL`` the
  `focal_loss` of ``form``: ``'sigmoid'`` is Cui et al.'s Eq. 12 and the
  form of their code and of the bag of tricks' (``ClassBalanceFocal``);
  ``'softmax'`` puts the softmax probability of the true class in the
  focal term.

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    counts: ``[C]`` training examples per class.
    beta: ``β`` of `class_balanced_weights`.
    gamma: focusing parameter of `focal_loss`.
    form: ``'softmax'`` or ``'sigmoid'``.

  Returns:
    ``[B]`` float32 losses.
  """
  return focal_loss(
      logits, labels, gamma=gamma,
      weights=class_balanced_weights(counts, beta), form=form,
  )


def ldam_margins(
    counts: jax.Array | np.ndarray, max_margin: float = 0.5
) -> jax.Array:
  """LDAM margins ``Δ_c = K / n_c^{1/4}`` (Cao et al., 2019, §3.2).

  The constant ``K`` is chosen so that the largest margin (that of the rarest
  class) is ``max_margin``: ``Δ_c = max_margin · (n_min / n_c)^{1/4}``.

  Args:
    counts: ``[C]`` training examples per class, all positive.
    max_margin: the margin of the rarest class (0.5 in Cao et al.).

  Returns:
    ``[C]`` float32 margins.

  Examples:
    >>> [round(float(m), 4) for m in ldam_margins([1, 16, 81])]
    [0.5, 0.25, 0.1667]
  """
  counts = _counts(counts)
  inverse_root = counts ** -0.25
  return inverse_root * (max_margin / jnp.max(inverse_root))


def ldam_loss(
    logits: jax.Array,
    labels: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    max_margin: float = 0.5,
    scale: float = 30.0,
    weights: jax.Array | np.ndarray | None = None,
) -> jax.Array:
  """Label-distribution-aware margin loss (Cao et al., 2019, §3.2).

  ``-w_y log softmax(s · (z - Δ_y e_y))_y``: the margin ``Δ_y`` of
  `ldam_margins` is subtracted from the true-class logit only, and all
  logits are multiplied by the scale ``s`` (Cao et al. normalise features
  and weights and use s = 30; the logits here are used as given). With
  ``weights`` set to `class_balanced_weights` after the switch epoch this is
  LDAM-DRW (Cao et al., Algorithm 1).

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    counts: ``[C]`` training examples per class.
    max_margin: the largest margin.
    scale: ``s``.
    weights: optional ``[C]`` class weights (None: all 1).

  Returns:
    ``[B]`` float32 losses.

  Examples:
    >>> # Class 1 is rare: margin 0.5; 30 * (1 - 0.5) vs 30 * 1 for class 0.
    >>> logits = jnp.array([[1.0, 1.0]])
    >>> loss = ldam_loss(logits, jnp.array([1]), np.array([10000, 1]))
    >>> round(float(loss[0]), 4)  # log(1 + e^{30 - 15})
    15.0
  """
  margins = ldam_margins(counts, max_margin)
  one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  shifted = logits.astype(jnp.float32) - one_hot * margins[labels][:, None]
  return cross_entropy(scale * shifted, labels, weights=weights)


def balanced_softmax_loss(
    logits: jax.Array, labels: jax.Array, counts: jax.Array | np.ndarray
) -> jax.Array:
  """Balanced softmax: cross-entropy of ``z + log n`` (Ren et al., 2020).

  ``-log (n_y e^{z_y} / Σ_c n_c e^{z_c})`` (Ren et al., §3.1): the softmax
  with the training label prior ``π_c ∝ n_c`` folded in. Adding ``log n_c``
  or ``log π_c`` gives the same loss. At test time the plain logits are used.

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer classes.
    counts: ``[C]`` training examples per class, all positive.

  Returns:
    ``[B]`` float32 losses.

  Examples:
    >>> # Equal logits, counts 3 and 1: p_1 = 1/4.
    >>> loss = balanced_softmax_loss(jnp.zeros((1, 2)), jnp.array([1]),
    ...                              np.array([3, 1]))
    >>> round(float(loss[0]), 4)  # ln 4
    1.3863
  """
  log_prior = jnp.log(_counts(counts))
  return cross_entropy(logits.astype(jnp.float32) + log_prior, labels)


def _log_prior(counts: jax.Array | np.ndarray, tau: float) -> jax.Array:
  """``log(π^τ + 1e-12)`` with ``π = n / Σ n`` (the official code's guard)."""
  counts = _counts(counts)
  return jnp.log((counts / jnp.sum(counts)) ** tau + 1e-12)


def logit_adjustment_loss(
    logits: jax.Array,
    labels: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    tau: float = 1.0,
) -> jax.Array:
  """The logit-adjusted loss per example (Menon et al., ICLR 2021, Eq. 10).

  ``-log softmax(f + τ log π)_y`` with the training label prior
  ``π_c = n_c / Σ n``; with τ = 1 it is the balanced softmax loss. The
  official code (``google-research/logit_adjustment``, ``utils.py``) adds
  ``log(π^τ + 1e-12)``, as here.

  Args:
    logits: ``[B, C]`` scores ``f``.
    labels: ``[B]`` integer classes.
    counts: ``[C]`` training examples per class, all positive.
    tau: the temperature τ (1.0 in the official code).

  Returns:
    ``[B]`` float32 losses.

  Examples:
    >>> # The spec's example: f = (2, 1, 0.5), y = 2, π = (0.7, 0.2, 0.1).
    >>> loss = logit_adjustment_loss(jnp.array([[2.0, 1.0, 0.5]]),
    ...                              jnp.array([2]), np.array([7, 2, 1]))
    >>> round(float(loss[0]), 5)
    3.57429
  """
  return cross_entropy(logits.astype(jnp.float32) + _log_prior(counts, tau),
                       labels)


def logit_adjusted_loss(
    logits: jax.Array,
    labels: jax.Array,
    class_counts: jax.Array | np.ndarray,
    *,
    tau: float = 1.0,
) -> jax.Array:
  """`logit_adjustment_loss` averaged over the batch (a scalar)."""
  return jnp.mean(logit_adjustment_loss(logits, labels, class_counts,
                                        tau=tau))


def posthoc_adjusted_logits(
    logits: jax.Array,
    class_counts: jax.Array | np.ndarray,
    *,
    tau: float = 1.0,
) -> jax.Array:
  """Post-hoc logit adjustment (Menon et al., ICLR 2021, Eq. 9).

  Predict ``argmax_y f_y(x) - τ log π_y`` from a model trained with plain
  cross-entropy; ``log(π^τ + 1e-12)`` as in the official code.

  Args:
    logits: ``[..., C]`` scores.
    class_counts: ``[C]`` training examples per class, all positive.
    tau: the temperature τ.

  Returns:
    The adjusted ``[..., C]`` float32 scores.

  Examples:
    >>> adjusted = posthoc_adjusted_logits(jnp.array([2.0, 1.0, 0.5]),
    ...                                    np.array([7, 2, 1]))
    >>> int(jnp.argmax(adjusted))  # Class 0 without the adjustment.
    2
  """
  return logits.astype(jnp.float32) - _log_prior(class_counts, tau)


def _cross_entropy_by_name(logits, labels, counts, *, weights=None):
  del counts  # Unused; kept so that every registered loss takes counts.
  return cross_entropy(logits, labels, weights=weights)


def _focal_by_name(logits, labels, counts, *, gamma=2.0, weights=None,
                   form='softmax'):
  del counts
  return focal_loss(logits, labels, gamma=gamma, weights=weights, form=form)


# Name -> loss taking (logits, labels, counts, **hyper_parameters).
LOSSES: dict[str, Callable[..., jax.Array]] = {
    'ce': _cross_entropy_by_name,
    'cs_ce': cost_sensitive_cross_entropy,
    'cs_ce_sqrt': _cost_sensitive_sqrt,
    'focal': _focal_by_name,
    'cb_ce': class_balanced_cross_entropy,
    'cb_focal': class_balanced_focal_loss,
    'ldam': ldam_loss,
    'balanced_softmax': balanced_softmax_loss,
    'logit_adjusted': logit_adjustment_loss,
}


def make_loss(
    name: str, counts: jax.Array | np.ndarray, **kwargs
) -> LossFn:
  """A per-example loss ``loss_fn(logits, labels) -> [B]`` by name.

  Names: ``'ce'``, ``'cs_ce'``, ``'cs_ce_sqrt'``, ``'focal'``, ``'cb_ce'``,
  ``'cb_focal'``, ``'ldam'``, ``'balanced_softmax'``, ``'logit_adjusted'``
  (``tau``) (see the module
  docstring for the formulas). Keyword arguments are the loss's
  hyper-parameters: ``gamma`` and ``form`` (focal, cb_focal), ``power``
  (cs_ce), ``beta`` (cb_ce, cb_focal), ``max_margin`` and
  ``scale`` (ldam), ``weights`` (ce, focal, ldam; e.g. the
  `class_balanced_weights` of deferred re-weighting).

  Args:
    name: a key of `LOSSES`.
    counts: ``[C]`` training examples per class (ignored by ce and focal).
    **kwargs: hyper-parameters of that loss.

  Returns:
    A jit-compatible function of ``(logits [B, C], labels [B])``.

  Raises:
    ValueError: for an unknown name or a hyper-parameter the loss does not
      take, listing the valid ones.

  Examples:
    >>> loss_fn = make_loss('cb_focal', np.array([100, 10]), beta=0.99,
    ...                     gamma=1.0)
    >>> loss_fn(jnp.zeros((3, 2)), jnp.array([0, 1, 1])).shape
    (3,)
  """
  if name not in LOSSES:
    raise ValueError(
        f'Unknown long-tail loss {name!r}; valid: {sorted(LOSSES)}.'
    )
  loss = LOSSES[name]
  accepted = sorted(
      p.name for p in inspect.signature(loss).parameters.values()
      if p.kind is inspect.Parameter.KEYWORD_ONLY
  )
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(
        f'Loss {name!r} takes no {unknown}; its hyper-parameters: '
        f'{accepted}.'
    )
  counts = np.asarray(counts) if not isinstance(counts, jax.Array) else counts
  return functools.partial(_apply, loss, counts=counts, kwargs=kwargs)


def _apply(loss, logits, labels, *, counts, kwargs):
  return loss(logits, labels, counts, **kwargs)


def loss_class_weights(
    name: str, counts: jax.Array | np.ndarray, **kwargs
) -> jax.Array:
  """The class weights ``w_c`` inside the loss ``name``, ``[C]`` float32.

  What ``make_loss(name, counts, **kwargs)`` multiplies each example's loss
  by: `cost_sensitive_weights` (cs_ce, cs_ce_sqrt), `class_balanced_weights`
  (cb_ce, cb_focal), the ``weights`` argument (ce, focal, ldam) or ones.
  The ``'weighted_mean'`` reduction divides by their sum over the batch.

  Args:
    name: a key of `LOSSES`.
    counts: ``[C]`` training examples per class.
    **kwargs: the loss's hyper-parameters (as for `make_loss`).

  Returns:
    ``[C]`` float32 weights.

  Examples:
    >>> [round(float(w), 4) for w in loss_class_weights('cs_ce_sqrt',
    ...                                                 [100, 25])]
    [0.5, 1.0]
  """
  counts = _counts(counts)
  if name == 'cs_ce':
    return cost_sensitive_weights(counts, kwargs.get('power', 1.0))
  if name == 'cs_ce_sqrt':
    return cost_sensitive_weights(counts, 0.5)
  if name in ('cb_ce', 'cb_focal'):
    return class_balanced_weights(counts, kwargs.get('beta', 0.9999))
  if kwargs.get('weights') is not None:
    return jnp.asarray(kwargs['weights'], jnp.float32)
  return jnp.ones_like(counts)


def reduce_losses(
    losses: jax.Array, example_weights: jax.Array, reduction: str = 'mean'
) -> jax.Array:
  """One scalar from per-example weighted losses ``ℓ_b = w_b ℓ'_b``.

  ``'mean'``: ``(1/B) Σ_b ℓ_b`` (Cui et al.'s code). ``'weighted_mean'``:
  ``Σ_b ℓ_b / Σ_b w_b``, PyTorch's ``F.cross_entropy(weight=w)`` and so
  the official code of every weighted cross-entropy of the bag of tricks
  and of LDAM-DRW. With CS-CE (``w_c = n_min / n_c``) the batch's mean
  weight is about ``C n_min / N`` under instance-balanced sampling, so the
  two differ by its inverse: a factor on the effective learning rate.

  Args:
    losses: ``[B]`` per-example losses, each already times its weight.
    example_weights: ``[B]`` those weights ``w_b`` (0 drops an example).
    reduction: ``'mean'`` or ``'weighted_mean'``.

  Returns:
    A float32 scalar.

  Examples:
    >>> losses = jnp.array([1.0, 4.0])  # w = (1, 2) times ℓ' = (1, 2).
    >>> float(reduce_losses(losses, jnp.array([1.0, 2.0]), 'mean'))
    2.5
    >>> round(float(reduce_losses(losses, jnp.array([1.0, 2.0]),
    ...                           'weighted_mean')), 4)  # 5 / 3
    1.6667
  """
  if reduction not in REDUCTIONS:
    raise ValueError(
        f'Unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}.'
    )
  if reduction == 'mean':
    return jnp.mean(losses)
  return jnp.sum(losses) / jnp.sum(example_weights)
