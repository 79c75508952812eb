"""Proposition 1 of Gradient Blending, estimated in gradient space.

Algorithm 1 of Wang, Tran and Feiszli (2020) estimates the blend weights by
training k+1 model copies for n epochs. Proposition 1 states the weights that
minimise the infinitesimal OGR² of a blended update directly::

  w_k = <∇L*, v_k> / (σ_k² Z),    σ_k² = E[<∇L^T - ∇L*, v_k>²],
  Z = Σ_k <∇L*, v_k> / (2 σ_k²),

where ``v_k`` is the gradient estimate of loss k, ``L^T`` the training loss and
``L*`` the true (population) loss of the objective we care about: the fused
head's loss, the one used at test time. For a step ``-η v_k`` a first-order
Taylor expansion gives the generalisation ``ΔG_k = η <∇L*, v_k>`` and the
overfitting ``ΔO_k = η <∇L^T - ∇L*, v_k>`` of that objective, so Proposition 1
is Algorithm 1's ``G / O²`` rule for infinitesimal steps.

The estimator (one training batch ``B`` and one held-out batch ``V``):

* ``v_k = ∇_θ L_k(B)`` for every head k (the per-loss gradients, leading
  axis H, each modality's head then the fused head);
* ``u = v_f = ∇_θ L_fused(B)``, the fused head's training gradient, estimates
  ``∇L^T`` (it is the entry ``fused_index`` of the per-loss gradients);
* ``h = ∇_θ L_fused(V)``, the fused loss on a held-out batch, estimates
  ``∇L*``;
* ``gain_k = <h, v_k>`` estimates ``<∇L*, v_k>``;
* ``sigma_sq_k = <u - h, v_k>²`` is a one-sample estimate of ``σ_k²``;
* ``w_k ∝ gain_k / max(sigma_sq_k, eps)`` on the smoothed statistics, with
  ``w_k = 0`` for ``gain_k <= 0`` (never a sign flip) or non-finite statistics,
  normalised to sum to 1 (the factor 2 in ``Z`` cancels in the normalisation).

``∇L^T - ∇L*`` is one vector shared by all heads, as in Proposition 1, and not
the per-head ``v_k - h``: a unimodal head's own classifier parameters do not
touch the fused loss, so a step on them neither generalises nor overfits the
fused model and must not count as overfitting. With ``u - h`` it does not:
``u`` and ``h`` are zero on those parameters.

Assumptions, and the biases that follow from them:

* the overfitting parts of the ``v_k`` are uncorrelated (Proposition 1's own
  assumption); with shared encoders they are not, and the weights are then
  those of the diagonal approximation;
* ``h`` is an unbiased estimate of ``∇L*``: the held-out batch is drawn from
  the held-out split, independent of ``B``; then ``E[gain_k] = <∇L*, E v_k>``;
* one-batch noise: ``u`` and ``v_k`` share the batch ``B``, so ``<u, v_k>``
  carries a covariance term of order ``1 / |B|`` (the batch's own noise that a
  step on it memorises), and the noise of ``h`` adds ``Var<h, v_k>`` (order
  ``1 / |V|``) to ``sigma_sq_k``. Both bias ``σ_k²`` upwards, more for noisier
  heads. The exponential moving average (EMA) of the gradient transform
  averages these one-sample estimates over steps; it does not remove the bias.

Across devices (``axis_name``, inside a user's ``jax.pmap``/``shard_map``) the
per-device statistics are averaged with ``jax.lax.pmean``: each device's batch
gives an independent sample of both expectations. Under ``jax.jit`` with
sharded global arrays no ``axis_name`` is needed; the statistics are then those
of the global batch.

Cost, every ``estimate_every`` steps: H backward passes on the training batch
(``jax.jacrev`` of the vector of H losses; two when each unimodal loss reaches
only its own encoder, `gblend_jax.blending.per_loss`) and one on a held-out
batch, plus 2·H inner products of parameter size. No model copies are
trained.

References:
  Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
  Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681 (Proposition 1,
  Algorithm 1).
"""

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = (
    'check_holdout_grads',
    'check_per_loss_grads',
    'gradient_statistics',
    'positive_ratio_weights',
    'weights_from_statistics_with_status',
)


def check_per_loss_grads(
    per_loss_grads: PyTree, num_heads: int | None = None
) -> int:
  """Checks that every leaf has the same leading (loss) axis; returns it.

  Runs at trace time on static shapes only.

  Args:
    per_loss_grads: a pytree whose leaves have a leading axis of size H.
    num_heads: the expected H, or None to take it from the first leaf.

  Returns:
    H, the size of the leading axis.

  Raises:
    ValueError: if there are no leaves, a leaf has no leading axis, or a
      leaf's leading axis differs from H.
  """
  leaves = jax.tree_util.tree_leaves_with_path(per_loss_grads)
  if not leaves:
    raise ValueError('per_loss_grads has no leaves.')
  if num_heads is None:
    first_shape = jnp.shape(leaves[0][1])
    num_heads = first_shape[0] if first_shape else None
  for path, leaf in leaves:
    shape = jnp.shape(leaf)
    if not shape or shape[0] != num_heads:
      raise ValueError(
          'Every leaf of per_loss_grads needs a leading axis of size '
          f'num_heads={num_heads} (one gradient per loss); leaf '
          f'{jax.tree_util.keystr(path)} has shape {shape}.'
      )
  return num_heads


def check_holdout_grads(per_loss_grads: PyTree, holdout_grads: PyTree):
  """Checks that holdout_grads is shaped like one per-loss gradient.

  Args:
    per_loss_grads: a pytree whose leaves have a leading axis of size H.
    holdout_grads: a params-shaped pytree.

  Raises:
    ValueError: at trace time, on a different structure or leaf shape.
  """
  expected = jax.tree.map(lambda g: jnp.shape(g)[1:], per_loss_grads)
  got = jax.tree.map(jnp.shape, holdout_grads)
  if jax.tree.structure(per_loss_grads) != jax.tree.structure(holdout_grads):
    raise ValueError(
        'holdout_grads must have the structure of the parameters; got '
        f'{jax.tree.structure(holdout_grads)}, expected '
        f'{jax.tree.structure(per_loss_grads)}.'
    )
  for (path, e), g in zip(
      jax.tree_util.tree_leaves_with_path(expected, is_leaf=_is_shape),
      jax.tree.leaves(got, is_leaf=_is_shape),
      strict=True,
  ):
    if tuple(e) != tuple(g):
      raise ValueError(
          f'holdout_grads leaf {jax.tree_util.keystr(path)} has shape {g}; '
          f'expected the parameter shape {e}.'
      )


def _is_shape(x) -> bool:
  return isinstance(x, tuple)


def _dots(per_loss_grads: PyTree, vector: PyTree) -> jax.Array:
  """Returns [<g_i, vector>]_i over all leaves, in float32.

  A product and a sum rather than a dot: exact float32 on every backend, and
  fine with parameters sharded explicitly over a mesh.
  """
  def leaf_dot(g, v):
    product = g.astype(jnp.float32) * v.astype(jnp.float32)
    return jnp.sum(product, axis=tuple(range(1, product.ndim)))

  return sum(
      jax.tree.leaves(jax.tree.map(leaf_dot, per_loss_grads, vector)),
      start=jnp.zeros((), jnp.float32),
  )


def gradient_statistics(
    per_loss_grads: PyTree,
    holdout_grads: PyTree,
    *,
    fused_index: int = -1,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
  """One-batch estimates of Proposition 1's ``<∇L*, v_k>`` and ``σ_k²``.

  ``gain_k = <h, v_k>`` and ``sigma_sq_k = <u - h, v_k>²`` with ``v_k`` the
  per-loss training gradients, ``u = v_{fused_index}`` and ``h`` the held-out
  fused gradient (see the module docstring for assumptions and biases).

  Args:
    per_loss_grads: per-loss training-batch gradients; every leaf has a
      leading axis of size H (each modality's head, then the fused head).
    holdout_grads: params-shaped gradient of the fused loss on a held-out
      batch.
    fused_index: position of the fused head on the leading axis; its training
      gradient estimates ``∇L^T``.
    axis_name: if given, the statistics are averaged over this mapped axis
      with ``jax.lax.pmean`` (call inside ``jax.pmap``/``shard_map``).

  Returns:
    ``(gain, sigma_sq)``, float32 arrays of shape [H].

  Raises:
    ValueError: at trace time, on inconsistent leading axes or shapes.
  """
  num_heads = check_per_loss_grads(per_loss_grads)
  if not -num_heads <= fused_index < num_heads:
    raise ValueError(
        f'fused_index={fused_index} is out of range for H={num_heads}.'
    )
  check_holdout_grads(per_loss_grads, holdout_grads)
  gain = _dots(per_loss_grads, holdout_grads)
  overfit_direction = jax.tree.map(
      lambda g, h: g[fused_index].astype(jnp.float32) - h.astype(jnp.float32),
      per_loss_grads,
      holdout_grads,
  )
  sigma_sq = jnp.square(_dots(per_loss_grads, overfit_direction))
  if axis_name is not None:
    gain, sigma_sq = jax.lax.pmean((gain, sigma_sq), axis_name)
  return gain, sigma_sq


def positive_ratio_weights(
    numerator: jax.Array,
    log_denominator: jax.Array,
    *,
    fallback: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Normalised ``numerator / exp(log_denominator)`` over valid heads.

  The shared rule of Algorithm 1 and Proposition 1: a head with a
  non-positive or non-finite numerator, or a non-finite denominator, gets
  weight 0; the rest are normalised to sum to 1, computed in log space so
  that huge ratios (a tiny clipped denominator) neither overflow nor lose the
  normalisation. If no head is valid, ``fallback`` (default uniform) is
  returned as given. Jit-compatible: no Python branching on values.

  Args:
    numerator: [H] gains.
    log_denominator: [H] log of the (already clipped, positive) denominators.
    fallback: [H] weights to return when no head is valid; None is uniform.

  Returns:
    ``(weights, used_fallback)``: float32 [H] and a boolean scalar array.
  """
  numerator = jnp.asarray(numerator, jnp.float32)
  log_denominator = jnp.asarray(log_denominator, jnp.float32)
  if numerator.ndim != 1 or numerator.shape != log_denominator.shape:
    raise ValueError(
        'Expected two arrays of shape [H]; got shapes '
        f'{numerator.shape} and {log_denominator.shape}.'
    )
  (num_heads,) = numerator.shape
  if fallback is None:
    fallback = jnp.full((num_heads,), 1.0 / num_heads, jnp.float32)
  fallback = jnp.asarray(fallback, jnp.float32)
  if fallback.shape != (num_heads,):
    raise ValueError(
        f'fallback has shape {fallback.shape}; expected ({num_heads},).'
    )
  valid = (
      jnp.isfinite(numerator) & jnp.isfinite(log_denominator) & (numerator > 0)
  )
  safe_numerator = jnp.where(valid, numerator, 1.0)
  log_w = jnp.where(valid, jnp.log(safe_numerator) - log_denominator, -jnp.inf)
  any_valid = jnp.any(valid)
  log_w_max = jnp.where(any_valid, jnp.max(log_w), 0.0)
  unnormalised = jnp.where(valid, jnp.exp(log_w - log_w_max), 0.0)
  # The largest valid entry is exp(0) = 1, so the sum is >= 1 when any_valid.
  weights = unnormalised / jnp.maximum(jnp.sum(unnormalised), 1.0)
  return jnp.where(any_valid, weights, fallback), jnp.logical_not(any_valid)


def weights_from_statistics_with_status(
    gain: jax.Array,
    sigma_sq: jax.Array,
    eps: float = 1e-8,
    *,
    fallback: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Proposition 1 weights and whether the fallback was used.

  ``w_k ∝ gain_k / max(sigma_sq_k, eps)``; ``gain_k <= 0`` or non-finite
  statistics give ``w_k = 0``; normalised to sum to 1. If no head has a valid
  positive gain, ``fallback`` (default uniform 1/H) is returned.

  Args:
    gain: [H] estimates of ``<∇L*, v_k>``.
    sigma_sq: [H] estimates of ``σ_k²``; clipped below at ``eps``.
    eps: the floor of ``sigma_sq``.
    fallback: [H] weights for the all-invalid case; None is uniform.

  Returns:
    ``(weights, used_fallback)``: float32 [H], boolean scalar array.

  Examples:
    Ratios ``gain / sigma_sq`` of 0.2 / 0.1 = 2 and 0.1 / 0.2 = 0.5,
    normalised: 2 / 2.5 and 0.5 / 2.5; the head with a negative gain gets 0.

    >>> import jax.numpy as jnp
    >>> from gblend_jax.blending import gradient_space
    >>> w, fell_back = gradient_space.weights_from_statistics_with_status(
    ...     jnp.array([0.2, 0.1, -0.3]), jnp.array([0.1, 0.2, 0.5]))
    >>> print(w.round(3), bool(fell_back))
    [0.8 0.2 0. ] False

    No head with a positive gain: the uniform fallback.

    >>> w, fell_back = gradient_space.weights_from_statistics_with_status(
    ...     jnp.array([-1.0, 0.0]), jnp.array([1.0, 1.0]))
    >>> print(w, bool(fell_back))
    [0.5 0.5] True
  """
  sigma_sq = jnp.asarray(sigma_sq, jnp.float32)
  log_denominator = jnp.log(jnp.maximum(sigma_sq, eps))
  # jnp.maximum propagates NaN, so a NaN sigma_sq stays invalid.
  return positive_ratio_weights(gain, log_denominator, fallback=fallback)
