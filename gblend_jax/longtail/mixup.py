"""Mixup for long-tailed training: input, manifold, and Remix.

Input mixup (Zhang et al., ICLR 2018, §2) trains on
``x̃ = λ x_i + (1 - λ) x_j`` with target ``ỹ = λ y_i + (1 - λ) y_j``,
``λ ~ Beta(α, α)`` once per batch and ``j`` a random permutation of the batch.
Manifold mixup (Verma et al., ICML 2019, §2) mixes hidden features
``h_k`` at a layer ``k`` in the same way; Zhang et al. (AAAI 2021) find it best
after the pooling layer and input mixup better overall. Remix (Chou et al.,
ECCV-W 2020, §3) keeps ``x̃`` but moves the label weight towards the rarer
class.

Plugging into a jitted train step: draw ``key = jax.random.fold_in(rng,
step)``; for input mixup call `mixup` (or `remix`) on the batch inputs (any
pytree of ``[B, ...]`` arrays, e.g. a dict of modalities) before the forward
pass; for manifold mixup draw ``lam, permutation = sample_mixup(key, B,
alpha)`` and let the model call ``mix(h, lam, permutation)`` on the features
it chooses. The loss is then `mixed_loss` with any per-example loss of
`gblend_jax.longtail.losses` (or `soft_cross_entropy` on `mixed_targets`).
``alpha`` is static; ``alpha <= 0`` turns mixing off (``λ = 1``), which is the
"fine-tuning without mixup" stage. All functions are pure and jit-compatible.

References:
  Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk
  Minimization", ICLR 2018, https://arxiv.org/abs/1710.09412.
  Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, "Manifold
  Mixup: Better Representations by Interpolating Hidden States", ICML 2019,
  https://arxiv.org/abs/1806.05236.
  Chou, Chang, Pan, Wei, Juan, "Remix: Rebalanced Mixup", ECCV Workshops
  2020, https://arxiv.org/abs/2007.03943.
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
"""

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = (
    'MixupBatch',
    'mix',
    'mixed_loss',
    'mixed_targets',
    'mixup',
    'remix',
    'remix_label_lambda',
    'sample_mixup',
    'soft_cross_entropy',
)


class MixupBatch(NamedTuple):
  """A mixed batch: ``inputs = λ x + (1 - λ) x[permutation]``.

  The target of example ``b`` is ``label_lam[b]`` on ``labels_a[b]`` and
  ``1 - label_lam[b]`` on ``labels_b[b]``.
  """

  inputs: Any  # Pytree of [B, ...] arrays, the mixed inputs.
  labels_a: jax.Array  # shape=[B], int32: the example's own labels.
  labels_b: jax.Array  # shape=[B], int32: labels_a[permutation].
  lam: jax.Array  # shape=(), float32: input weight λ of the own example.
  label_lam: jax.Array  # shape=[B], float32: target weight of labels_a.
  permutation: jax.Array  # shape=[B], int32: the mixing partners.


def sample_mixup(
    rng: jax.Array, batch_size: int, alpha: float = 1.0
) -> tuple[jax.Array, jax.Array]:
  """Draws ``λ ~ Beta(α, α)`` and a random permutation of the batch.

  Args:
    rng: a PRNG key.
    batch_size: ``B`` (static).
    alpha: ``α`` (static); ``α <= 0`` gives ``λ = 1`` (no mixing).

  Returns:
    ``(lam, permutation)``: a float32 scalar and int32 ``[B]``.
  """
  lam_key, perm_key = jax.random.split(rng)
  permutation = jax.random.permutation(perm_key, batch_size).astype(jnp.int32)
  if alpha <= 0:
    return jnp.float32(1.0), permutation
  lam = jax.random.beta(lam_key, alpha, alpha, dtype=jnp.float32)
  return lam, permutation


def mix(x: jax.Array, lam: jax.Array, permutation: jax.Array) -> jax.Array:
  """``λ x + (1 - λ) x[permutation]`` along the leading (batch) axis.

  The manifold-mixup hook (Verma et al., 2019, §2, at layer k): a model
  calls it on its hidden features with the ``lam`` and ``permutation`` of
  `sample_mixup`; on inputs it is input mixup (Zhang et al., 2018, §2).

  Args:
    x: ``[B, ...]`` array.
    lam: scalar weight of ``x``.
    permutation: ``[B]`` mixing partners.

  Returns:
    The mixed ``[B, ...]`` array, in ``x``'s dtype.

  Examples:
    >>> x = jnp.array([[0.0], [10.0]])
    >>> mix(x, 0.75, jnp.array([1, 0])).ravel().tolist()
    [2.5, 7.5]
  """
  lam = jnp.asarray(lam, x.dtype)
  return lam * x + (1 - lam) * jnp.take(x, permutation, axis=0)


def mixup(
    rng: jax.Array, inputs: Any, labels: jax.Array, *, alpha: float = 1.0
) -> MixupBatch:
  """Input mixup of a batch (Zhang et al., 2018, §2).

  Args:
    rng: a PRNG key.
    inputs: a pytree of ``[B, ...]`` arrays (every leaf mixed alike).
    labels: ``[B]`` integer labels.
    alpha: ``α`` of ``Beta(α, α)`` (1 in Zhang et al., 2021).

  Returns:
    The `MixupBatch`; ``label_lam`` is ``λ`` for every example.
  """
  labels = jnp.asarray(labels, jnp.int32)
  lam, permutation = sample_mixup(rng, labels.shape[0], alpha)
  return MixupBatch(
      inputs=jax.tree.map(lambda x: mix(x, lam, permutation), inputs),
      labels_a=labels,
      labels_b=labels[permutation],
      lam=lam,
      label_lam=jnp.full(labels.shape, lam, jnp.float32),
      permutation=permutation,
  )


def remix_label_lambda(
    lam: jax.Array,
    labels_a: jax.Array,
    labels_b: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    kappa: float = 3.0,
    tau: float = 0.5,
) -> jax.Array:
  """Remix's label weight ``λ_y`` (Chou et al., 2020, §3).

  With ``n_i = counts[labels_a]`` (the example weighted by ``λ`` in the
  input) and ``n_j = counts[labels_b]``:

  * ``λ_y = 0`` if ``n_i / n_j >= κ`` and ``λ < τ`` (a rare ``j``: the label
    goes wholly to it);
  * ``λ_y = 1`` if ``n_i / n_j <= 1/κ`` and ``1 - λ < τ`` (a rare ``i``);
  * ``λ_y = λ`` otherwise.

  Args:
    lam: input weight ``λ``, a scalar or ``[B]``.
    labels_a: ``[B]`` labels of the ``λ``-weighted examples.
    labels_b: ``[B]`` labels of the partners.
    counts: ``[C]`` training examples per class.
    kappa: ``κ >= 1`` (3 in Chou et al.).
    tau: ``τ`` in ``[0, 1]`` (0.5 in Chou et al.).

  Returns:
    float32 ``[B]`` label weights of ``labels_a``.

  Examples:
    >>> counts = np.array([100, 10])
    >>> # Majority own label, lam = 0.3 < tau: all to the rare partner.
    >>> lam_y = remix_label_lambda(0.3, jnp.array([0, 1, 0]),
    ...                            jnp.array([1, 0, 0]), counts)
    >>> [round(float(v), 2) for v in lam_y]  # Rare own label: 1 - lam >= tau.
    [0.0, 0.3, 0.3]
  """
  counts = jnp.asarray(counts, jnp.float32)
  ratio = counts[labels_a] / counts[labels_b]
  lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), labels_a.shape)
  label_lam = jnp.where((ratio >= kappa) & (lam < tau), 0.0, lam)
  return jnp.where((ratio <= 1.0 / kappa) & (1.0 - lam < tau), 1.0, label_lam)


def remix(
    rng: jax.Array,
    inputs: Any,
    labels: jax.Array,
    counts: jax.Array | np.ndarray,
    *,
    alpha: float = 1.0,
    kappa: float = 3.0,
    tau: float = 0.5,
) -> MixupBatch:
  """Rebalanced mixup: input mixup with `remix_label_lambda` targets.

  Args:
    rng: a PRNG key.
    inputs: a pytree of ``[B, ...]`` arrays.
    labels: ``[B]`` integer labels.
    counts: ``[C]`` training examples per class.
    alpha: ``α`` of ``Beta(α, α)``.
    kappa: ``κ`` of the label rule.
    tau: ``τ`` of the label rule.

  Returns:
    The `MixupBatch` with Remix's ``label_lam``.
  """
  batch = mixup(rng, inputs, labels, alpha=alpha)
  return batch._replace(label_lam=remix_label_lambda(
      batch.lam, batch.labels_a, batch.labels_b, counts,
      kappa=kappa, tau=tau,
  ))


def mixed_targets(
    labels_a: jax.Array,
    labels_b: jax.Array,
    label_lam: jax.Array,
    num_classes: int,
) -> jax.Array:
  """Soft targets ``λ_y e_{y_a} + (1 - λ_y) e_{y_b}``, ``[B, C]``.

  Args:
    labels_a: ``[B]`` labels.
    labels_b: ``[B]`` partner labels.
    label_lam: scalar or ``[B]`` weight of ``labels_a``.
    num_classes: ``C``.

  Returns:
    float32 ``[B, C]`` rows summing to 1.

  Examples:
    >>> mixed_targets(jnp.array([0]), jnp.array([2]), 0.25, 3).tolist()
    [[0.25, 0.0, 0.75]]
  """
  label_lam = jnp.asarray(label_lam, jnp.float32)
  if label_lam.ndim:
    label_lam = label_lam[:, None]
  return (label_lam * jax.nn.one_hot(labels_a, num_classes)
          + (1 - label_lam) * jax.nn.one_hot(labels_b, num_classes))


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example ``-Σ_c t_c log softmax(z)_c`` for soft targets ``[B, C]``."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets * log_p, axis=-1)


def mixed_loss(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    logits: jax.Array,
    batch: MixupBatch,
) -> jax.Array:
  """``λ_y ℓ(z, y_a) + (1 - λ_y) ℓ(z, y_b)`` per example.

  The mixup objective (Zhang et al., 2018) for any per-example loss
  ``ℓ(logits, labels) -> [B]`` (e.g. from `losses.make_loss`); for
  cross-entropy it equals `soft_cross_entropy` on `mixed_targets`.

  Args:
    loss_fn: per-example loss of ``(logits [B, C], labels [B])``.
    logits: ``[B, C]`` scores of the mixed inputs.
    batch: the `MixupBatch` they came from.

  Returns:
    float32 ``[B]`` losses.
  """
  return (batch.label_lam * loss_fn(logits, batch.labels_a)
          + (1 - batch.label_lam) * loss_fn(logits, batch.labels_b))
