"""PMR: class prototypes, the prototypical cross-entropy and the switch.

Fan, Xu, Wu, Wang, "PMR: Prototypical Modal Rebalance for Multimodal
Learning", CVPR 2023; the authors' code `fanyunfeng-bit/Modal-Imbalance-PMR`
(``main_Prototype_grad.py``). With ``z_m`` the features of modality m's
encoder (a ``[B, D_m]`` batch), labels ``y`` and ``C`` classes:

* prototypes: ``c_k^m = mean{z_m,i : y_i = k}`` over a pass of the training
  data in evaluation mode, without gradients (`class_sums`,
  `prototypes_from_sums`; the authors' ``calculate_prototype``), smoothed
  as ``c ← (1 - μ) c_new + μ c_old`` (`update_prototypes`);
* prototype logits: ``-d_{i,k}^m = -‖z_m,i - c_k^m‖₂``, the Euclidean (not
  squared) distance (`prototype_logits`, the code's ``-EU_dist``);
* the prototypical cross-entropy ``L_p^m = CE(-d^m, y)`` (Eq. 4 of the
  paper; `prototype_loss`), whose gradient reaches the encoder only: the
  prototypes are constants;
* the imbalance ratio ``ρ = Σ_i softmax(-d_i^a)_{y_i} / Σ_i
  softmax(-d_i^v)_{y_i}`` of the two modalities (`prototype_scores`) and
  the authors' switch (`pmr_coefficients`): ``ρ > 1`` gives ``β_a = 0,
  β_v = α``; ``ρ < 1`` gives ``β_a = α, β_v = 0``; ``ρ = 1`` gives both 0;
* the loss ``L = CE(o, y) + β_a L_p^a + β_v L_p^v`` (`rebalance_loss`
  gives the added term), with β a constant of the step.

The paper's coefficients grow with the imbalance and it adds an entropy
regulariser of the dominant modality (PER); the released script has
neither, only the binary α switch above, which is what is implemented.
"""

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def class_sums(
    features: Array, labels: Array, num_classes: int,
    mask: Array | None = None,
) -> tuple[Array, Array]:
  """Per-class sums of a batch of features, and the examples per class.

  Args:
    features: ``[B, D]`` features of one modality.
    labels: ``[B]`` integer classes in ``[0, num_classes)``.
    num_classes: ``C``.
    mask: optional ``[B]`` (1 real, 0 padding).

  Returns:
    ``(sums, counts)``: ``[C, D]`` float32 sums ``Σ_{i: y_i = k} z_i`` and
    ``[C]`` float32 counts; add them over batches, then
    `prototypes_from_sums`.
  """
  weights = jnp.ones(labels.shape, jnp.float32) if mask is None else (
      mask.astype(jnp.float32))
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  one_hot = one_hot * weights[:, None]
  sums = one_hot.T @ features.astype(jnp.float32)
  return sums, jnp.sum(one_hot, axis=0)


def prototypes_from_sums(
    sums: Array, counts: Array, previous: Array | None = None
) -> Array:
  """Class means ``c_k = sums_k / counts_k``.

  Args:
    sums: ``[C, D]`` per-class feature sums (`class_sums`).
    counts: ``[C]`` examples per class.
    previous: ``[C, D]`` prototypes a class without examples keeps (zeros
      when None). The authors' code divides by the zero count, which makes
      that class's prototype NaN and every loss after it NaN.

  Returns:
    ``[C, D]`` prototypes.
  """
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  kept = jnp.zeros_like(means) if previous is None else previous
  return jnp.where((counts > 0)[:, None], means, kept)


def class_prototypes(
    features: Array, labels: Array, num_classes: int,
    mask: Array | None = None,
) -> Array:
  """``[C, D]`` class means of one batch of features (zeros for a class
  without examples): ``c_k = mean{z_i : y_i = k}``."""
  return prototypes_from_sums(*class_sums(features, labels, num_classes,
                                          mask))


def update_prototypes(new: Any, old: Any, momentum: float) -> Any:
  """The moving average ``c ← (1 - μ) c_new + μ c_old`` of prototypes.

  Args:
    new: this pass's prototypes (an array or a pytree of them).
    old: the previous prototypes, of the same structure.
    momentum: ``μ`` (the authors' ``momentum_coef``; 0 keeps ``new``).

  Returns:
    The smoothed prototypes.
  """
  return jax.tree.map(lambda n, o: (1 - momentum) * n + momentum * o,
                      new, old)


def _euclidean(features: Array, protos: Array) -> Array:
  diff = features[:, None, :] - protos[None, :, :]
  squared = jnp.sum(diff * diff, axis=-1)
  # sqrt's derivative is infinite at 0: a feature equal to a prototype
  # gets a zero gradient (the value is the same).
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)),
                   0.0)


def prototype_logits(features: Array, protos: Array) -> Array:
  """``-‖z_i - c_k‖₂``: the prototype classifier's ``[B, C]`` logits.

  Args:
    features: ``[B, D]`` features of one modality.
    protos: ``[C, D]`` its class prototypes; treated as constants.

  Returns:
    ``[B, C]`` negative Euclidean distances (float32).
  """
  protos = jax.lax.stop_gradient(protos).astype(jnp.float32)
  return -_euclidean(features.astype(jnp.float32), protos)


def prototype_loss(
    features: Array, labels: Array, protos: Array,
    mask: Array | None = None,
) -> Array:
  """The prototypical cross-entropy ``L_p = CE(-d, y)``, a batch mean.

  ``L_p = -(1/B) Σ_i log softmax(-d_i)_{y_i}`` with ``d_{i,k} = ‖z_i -
  c_k‖₂`` (PMR, Eq. 4; the code's ``criterion(audio_sim, label)``).

  Args:
    features: ``[B, D]`` features of one modality.
    labels: ``[B]`` integer classes.
    protos: ``[C, D]`` class prototypes (constants).
    mask: optional ``[B]`` (1 real, 0 padding).

  Returns:
    A float32 scalar.
  """
  per_example = optax.softmax_cross_entropy_with_integer_labels(
      prototype_logits(features, protos), labels)
  if mask is None:
    return jnp.mean(per_example)
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def prototype_scores(features: Array, labels: Array, protos: Array) -> Array:
  """``s = Σ_i softmax(-d_i)_{y_i}``: the batch's summed true-class
  probability under the prototype classifier (a float32 scalar)."""
  probs = jax.nn.softmax(prototype_logits(features, protos), axis=-1)
  return jnp.sum(jnp.take_along_axis(probs, labels[:, None], axis=-1))


def pmr_coefficients(
    scores: Array, *, alpha: float
) -> tuple[Array, Array]:
  """The imbalance ratio and the authors' switch of the PCE coefficients.

  ``ρ = s_0 / s_1``; ``ρ > 1`` (modality 0 ahead): ``β = (0, α)``;
  ``ρ < 1``: ``β = (α, 0)``; ``ρ = 1``: ``β = (0, 0)``
  (``main_Prototype_grad.py``, the ``ratio_a_p`` branch). Only the slower
  modality gets the prototypical loss.

  Args:
    scores: ``[2]`` prototype scores (`prototype_scores`) of the two
      modalities, audio then visual in the authors' naming.
    alpha: ``α``.

  Returns:
    ``(ρ, β)``: a float32 scalar and ``[2]`` float32 coefficients, outside
    the gradient.
  """
  scores = jax.lax.stop_gradient(jnp.asarray(scores, jnp.float32))
  if scores.shape != (2,):
    raise ValueError(
        f'PMR balances two modalities; got scores of shape {scores.shape}.')
  ratio = scores[0] / scores[1]
  alpha = jnp.asarray(alpha, jnp.float32)
  zero = jnp.zeros((), jnp.float32)
  beta = jnp.where(
      ratio > 1, jnp.stack([zero, alpha]),
      jnp.where(ratio < 1, jnp.stack([alpha, zero]), jnp.zeros(2)))
  return ratio, beta


def rebalance_loss(
    features: Mapping[str, Array],
    labels: Array,
    protos: Mapping[str, Array],
    modalities: Sequence[str],
    *,
    alpha: float,
) -> tuple[Array, dict[str, Array]]:
  """PMR's added loss ``β_a L_p^a + β_v L_p^v`` of one batch.

  The switch comes from the same forward pass (`pmr_coefficients` of the
  prototype scores); the fused loss ``CE(o, y)`` is the caller's.

  Args:
    features: ``{modality: [B, D_m]}`` encoder features (training mode).
    labels: ``[B]`` integer classes.
    protos: ``{modality: [C, D_m]}`` prototypes.
    modalities: the two modalities, in the order of ``ρ = s_0 / s_1``.
    alpha: ``α``.

  Returns:
    ``(term, aux)``: the scalar to add to the loss, and ``aux`` with
    ``ratio`` (ρ), ``coefficients`` ``[2]`` (β), ``scores`` ``[2]`` (s)
    and ``losses`` ``[2]`` (each ``L_p^m``).
  """
  if len(modalities) != 2:
    raise ValueError(
        f'PMR balances two modalities; got {list(modalities)}.')
  losses = jnp.stack([prototype_loss(features[m], labels, protos[m])
                      for m in modalities])
  scores = jnp.stack([prototype_scores(features[m], labels, protos[m])
                      for m in modalities])
  ratio, beta = pmr_coefficients(scores, alpha=alpha)
  aux = {'ratio': ratio, 'coefficients': beta,
         'scores': jax.lax.stop_gradient(scores), 'losses': losses}
  return jnp.dot(beta, losses), aux
