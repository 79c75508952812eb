"""MLA's gradient modification of the shared head (an optax transform).

Zhang, Yoon, Bansal, Yao, "Multimodal Representation Learning by
Alternating Unimodal Adaptation", CVPR 2024; the authors' code
`Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation`
(``utils/utils.py:GSPlugin``, an orthogonal weight modification, OWM, of
Zeng et al., 2019). The shared head ``h(z) = W z + b`` is trained by every
modality in turn; before each of its updates, with ``r`` the batch mean of
the features ``z_m`` of the modality being trained (``1 × d``), batch index
``i`` of ``N`` per epoch and ``P₀ = I``:

  α_i = 0.1^(1 + i/N)
  k = P rᵀ
  P ← P − k kᵀ / (α_i + r k)
  P ← P / ‖P‖_F
  ∇W ← ∇W Pᵀ

so that a modality's update of ``W`` moves little along the feature
directions of the modalities trained before it. The very first modality
step of a run is not modified (the code's ``exp_count != 0``); the bias is
never modified. A flax kernel is ``Wᵀ`` (``[d, C]``), so ``∇W Pᵀ`` is
``P @ ∇kernel`` here.

The released code computes this but never applies it: it looks for a
parameter named ``"module.weight"`` in the bare head layer, whose weight is
named ``"weight"``, so its runs have no gradient modification (and its
denominator ``torch.mm(k, r)`` is the d × d outer product, not the scalar
``r k`` of OWM and of the equation above). ``mode='paper'`` is the
equation above; ``mode='balance_benchmark'`` is BalanceBenchmark's
``∇W + ∇W Pᵀ``; the released behaviour is no transform at all.
"""

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

MODES = ('paper', 'balance_benchmark')


class ProjectionState(NamedTuple):
  """State of `head_gradient_projection`."""

  projection: jax.Array  # shape=(d, d), dtype=float32; P, starts as I.
  count: jax.Array  # shape=(), dtype=int32; modality steps so far (e).


def owm_alpha(batch_index: jax.Array, batches_per_epoch: int) -> jax.Array:
  """``α_i = 0.1^(1 + i/N)``: 0.1 at an epoch's first batch toward 0.01."""
  return 0.1 ** (1.0 + jnp.asarray(batch_index, jnp.float32)
                 / batches_per_epoch)


def update_projection(projection: jax.Array, feature_mean: jax.Array,
                      alpha: jax.Array) -> jax.Array:
  """One OWM update of ``P`` (MLA, the equation of the module docstring).

  Args:
    projection: ``P``, ``[d, d]``.
    feature_mean: ``r``, the batch mean of the trained modality's
      features, ``[d]``.
    alpha: ``α_i``.

  Returns:
    ``(P − k kᵀ / (α + r k)) / ‖·‖_F`` with ``k = P rᵀ``, ``[d, d]``.
  """
  r = jnp.asarray(feature_mean, jnp.float32)
  k = projection @ r
  updated = projection - jnp.outer(k, k) / (alpha + jnp.dot(r, k))
  return updated / jnp.linalg.norm(updated)


def project_kernel_gradient(kernel_grad: jax.Array, projection: jax.Array,
                            mode: str = 'paper') -> jax.Array:
  """The modified gradient of a flax head kernel ``[d, C]``.

  Args:
    kernel_grad: ``∇kernel = (∇W)ᵀ``, ``[d, C]``.
    projection: ``P``, ``[d, d]``.
    mode: ``'paper'``: ``∇W Pᵀ``; ``'balance_benchmark'``: ``∇W + ∇W Pᵀ``.

  Returns:
    The kernel's gradient, ``[d, C]``: ``P ∇kernel`` (or ``(I + P)
    ∇kernel``).
  """
  projected = projection @ kernel_grad
  if mode == 'balance_benchmark':
    return kernel_grad + projected
  return projected


def _kernel_projection(mode: str) -> optax.GradientTransformationExtraArgs:
  """The projection of the one leaf it sees (under `optax.masked`)."""

  def kernel_of(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if len(leaves) != 1 or jnp.ndim(leaves[0]) != 2:
      raise ValueError(
          'head_gradient_projection needs a mask that selects exactly one '
          f'[d, C] kernel; it selects {[jnp.shape(x) for x in leaves]}.')
    return leaves[0]

  def init_fn(params):
    d = kernel_of(params).shape[0]
    return ProjectionState(projection=jnp.eye(d, dtype=jnp.float32),
                           count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, feature_mean, batch_index,
                batches_per_epoch, **extra_args):
    del params, extra_args
    kernel_of(updates)
    alpha = owm_alpha(batch_index, batches_per_epoch)
    first = state.count == 0
    projection = jnp.where(
        first, state.projection,
        update_projection(state.projection, feature_mean, alpha))
    updates = jax.tree.map(
        lambda g: jnp.where(
            first, g,
            project_kernel_gradient(g, projection, mode).astype(g.dtype)),
        updates)
    return updates, ProjectionState(projection=projection,
                                    count=state.count + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def head_gradient_projection(
    mask: Any, *, mode: str = 'paper'
) -> optax.GradientTransformationExtraArgs:
  """MLA's gradient modification of the shared head's kernel.

  Chain it before the optimiser; each ``update`` is one modality step
  (MLA takes one per modality and batch, `alternating_updates`).

  Args:
    mask: a params-shaped pytree of bools (or a callable giving one) that
      is True at exactly one leaf: the shared head's ``[d, C]`` kernel.
    mode: one of `MODES`: ``'paper'`` (``∇W Pᵀ``, the paper's intent) or
      ``'balance_benchmark'`` (``∇W + ∇W Pᵀ``).

  Returns:
    A transform whose ``update`` takes the keyword arguments
    ``feature_mean`` (``r``, ``[d]``), ``batch_index`` (``i``) and
    ``batches_per_epoch`` (``N``); every other leaf passes unchanged. The
    state (`ProjectionState`) holds ``P`` and the step count.

  Raises:
    ValueError: for an unknown mode, or a mask that does not select one
      ``[d, C]`` leaf (at init or trace time).

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros(3)}
    >>> tx = head_gradient_projection({'kernel': True, 'bias': False})
    >>> state = tx.init(params)
    >>> extra = dict(feature_mean=jnp.ones(2), batch_index=0,
    ...              batches_per_epoch=10)
    >>> _, state = tx.update(params, state, **extra)  # First step: as is.
    >>> updates, state = tx.update(params, state, **extra)
    >>> [f'{v:.4f}' for v in updates['kernel'][0]]
    ['0.0476', '0.0476', '0.0476']
  """
  if mode not in MODES:
    raise ValueError(f'Unknown projection mode={mode!r}; valid: {MODES}.')
  return optax.masked(_kernel_projection(mode), mask)
