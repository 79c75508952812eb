"""Gradient Blending: blend weights and the optax transform that applies them.

A late-fusion network with k modalities gets one classification head per
modality plus the fused head, so H = k + 1 losses. Gradient Blending trains on
``L_blend = Σ_i w_i L_i`` with weights chosen to minimise the
Overfitting-to-Generalisation Ratio (OGR).

* `blend_weights` turns per-head measurements of Algorithm 1 (``G_i = ΔG`` and
  ``O_i = ΔO`` from `gblend_jax.blending.ogr`) into weights
  ``w_i ∝ G_i / O_i²``.
* `gradient_blend` is an optax transform that blends per-loss gradients with
  the weights in its state; it can re-estimate them in gradient space
  (Proposition 1, see `gblend_jax.blending.gradient_space`) inside the jitted
  step.

References:
  Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
  Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681 (Algorithm 1,
  Proposition 1).
"""

import difflib
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gblend_jax import _mapped
from gblend_jax.blending import gradient_space

__all__ = (
    'GradientBlendState',
    'blend_weights',
    'blend_weights_with_status',
    'gradient_blend',
)


def blend_weights_with_status(
    gains: jax.Array,
    overfits: jax.Array,
    *,
    eps: float = 1e-6,
    overfit_rule: str = 'square',
    overfit_floor: float = 0.0,
    overfit_floor_relative: float = 0.0,
    min_fused_weight: float = 0.0,
    fused_index: int = -1,
    fallback: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Algorithm 1's blend weights, and whether the fallback was used.

  ``w_i ∝ G_i / D_i``, normalised so that ``Σ_i w_i = 1``, where the
  denominator ``D_i`` stands for the paper's ``O_i²`` and depends on
  ``overfit_rule``:

  * ``'clip'`` (the old rule of this library, withdrawn, not the paper's):
    ``D_i = max(O_i, eps)²``. A head with ``O_i <= 0`` (its train/held-out
    gap shrank) gets ``G_i / eps²`` and takes practically all the weight,
    and ``D_i`` jumps at ``O_i = 0`` (from ``eps²`` to ``O_i²`` as ``O_i``
    crosses ``eps``);
  * ``'square'`` (the default; the paper's ``O_i²`` of the signed ``ΔO``,
    floored):
    ``D_i = max(O_i², overfit_floor, overfit_floor_relative · max_j O_j²,
    eps²)``, the max over the valid heads ``j`` (below). A negative
    ``O_i`` is treated as the positive one of the same size. ``D_i`` is
    continuous in every ``O``, also across ``O_i = 0``; the relative floor
    caps any head's ratio at ``1 / overfit_floor_relative`` times what it
    would get with the largest measured overfitting. With both floors 0 the
    rule is the paper's ``G / O²`` (``eps²`` only avoids a division by
    zero).

  Then, for either rule:

  * ``G_i <= 0`` (the held-out loss did not improve), or a non-finite ``G_i``
    or ``O_i``: ``w_i = 0``. The gain is never wrapped in ``abs()``, so a head
    that got worse never gets a positive weight;
  * ``min_fused_weight = m > 0``: if the fused head (``fused_index``, the
    head used for prediction) got less than ``m`` it gets ``m`` and the other
    heads share ``1 - m`` in their proportions, so the predicting head keeps
    training. If only the fused head is valid it keeps weight 1;
  * if no head is valid, ``fallback`` (default uniform ``1/H``) is returned
    as given and ``used_fallback`` is True, so the caller can say so in its
    log.

  The normalisation is done in log space: finite weights summing to 1 even for
  huge ratios. Jit-compatible (no Python branching on values).

  Args:
    gains: [H] generalisation gains ``G_i = ΔG`` (one per head: each
      modality's head, then the fused head).
    overfits: [H] overfitting deltas ``O_i = ΔO``.
    eps: ``'clip'``: lower clip of ``O_i``; ``'square'``: ``eps²`` is the
      last-resort floor of ``D_i``.
    overfit_rule: ``'square'`` (default) or ``'clip'`` (see above).
    overfit_floor: ``'square'``: absolute floor of ``D_i`` (units of ``O²``).
    overfit_floor_relative: ``'square'``: floor of ``D_i`` as a fraction
      ``ρ`` of the largest ``O_j²`` among the valid heads.
    min_fused_weight: least weight of the fused head, in ``[0, 1]``.
    fused_index: position of the fused head among the H heads.
    fallback: [H] weights returned when no head is valid; None is uniform.

  Returns:
    ``(weights, used_fallback)``: float32 [H] and a boolean scalar array.

  Raises:
    ValueError: if the shapes are not both [H] (or fallback is not [H]), for
      an unknown ``overfit_rule``, negative floors, or ``min_fused_weight``
      outside ``[0, 1]``.
  """
  if overfit_rule not in ('clip', 'square'):
    raise ValueError(f'Unknown overfit_rule={overfit_rule!r}; valid: '
                     "['clip', 'square'].")
  if overfit_floor < 0 or overfit_floor_relative < 0:
    raise ValueError(
        f'overfit_floor={overfit_floor} and overfit_floor_relative='
        f'{overfit_floor_relative} must be non-negative.')
  if not 0.0 <= min_fused_weight <= 1.0:
    raise ValueError(
        f'min_fused_weight={min_fused_weight} must be in [0, 1].')
  gains = jnp.asarray(gains, jnp.float32)
  overfits = jnp.asarray(overfits, jnp.float32)
  if gains.ndim != 1 or gains.shape != overfits.shape:
    raise ValueError('Expected two arrays of shape [H]; got shapes '
                     f'{gains.shape} and {overfits.shape}.')
  finite = jnp.isfinite(overfits)
  if overfit_rule == 'clip':
    denominator = jnp.square(jnp.maximum(overfits, eps))
  else:
    square = jnp.square(jnp.where(finite, overfits, 0.0))
    valid = finite & jnp.isfinite(gains) & (gains > 0)
    largest = jnp.max(jnp.where(valid, square, 0.0), initial=0.0)
    floor = jnp.maximum(
        jnp.maximum(overfit_floor, overfit_floor_relative * largest),
        eps * eps,
    )
    denominator = jnp.maximum(square, floor)
  log_denominator = jnp.where(finite, jnp.log(denominator), jnp.nan)
  weights, used_fallback = gradient_space.positive_ratio_weights(
      gains, log_denominator, fallback=fallback
  )
  if min_fused_weight > 0:
    fused = weights[fused_index]
    others = 1.0 - fused
    lifted = jnp.maximum(fused, min_fused_weight)
    # Other heads share 1 - lifted in their proportions; others == 0 means
    # the fused head already has everything.
    scale = jnp.where(others > 0, (1.0 - lifted) / jnp.where(
        others > 0, others, 1.0), 1.0)
    adjusted = (weights * scale).at[fused_index].set(
        jnp.where(others > 0, lifted, fused))
    weights = jnp.where(used_fallback, weights, adjusted)
  return weights, used_fallback


def blend_weights(
    gains: jax.Array,
    overfits: jax.Array,
    *,
    eps: float = 1e-6,
    overfit_rule: str = 'square',
    overfit_floor: float = 0.0,
    overfit_floor_relative: float = 0.0,
    min_fused_weight: float = 0.0,
    fused_index: int = -1,
    fallback: jax.Array | None = None,
) -> jax.Array:
  """Algorithm 1's blend weights ``w_i ∝ G_i / O_i²``, normalised to sum to 1.

  See `blend_weights_with_status` for the rules (how ``O_i <= 0`` is treated
  by ``overfit_rule`` and its floors, ``G_i <= 0`` or non-finite input gives
  0, the fused head's least weight, fallback when no head is valid) and for
  the flag that says whether the fallback was used.

  Args:
    gains: [H] generalisation gains ``G_i = ΔG``.
    overfits: [H] overfitting deltas ``O_i = ΔO``.
    eps: ``'clip'``: lower clip of ``O_i``; ``'square'``: ``eps²`` floors
      ``O_i²``.
    overfit_rule: ``'square'`` (default: the paper's ``O_i²`` of the signed
      ``O_i``, with floors) or ``'clip'`` (``max(O_i, eps)²``, withdrawn).
    overfit_floor: ``'square'``: absolute floor of ``O_i²``.
    overfit_floor_relative: ``'square'``: floor of ``O_i²`` as a fraction of
      the largest ``O_j²`` among the valid heads.
    min_fused_weight: least weight of the fused head.
    fused_index: position of the fused head.
    fallback: [H] weights returned when no head is valid; None is uniform.

  Returns:
    float32 [H] weights.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax.blending.blend import blend_weights
    >>> w = blend_weights(jnp.array([0.2, 0.1, -0.4]),
    ...                   jnp.array([0.1, 0.5, 0.2]))
    >>> print(w.round(3))  # [20, 0.4, 0] / 20.4; the third head got worse.
    [0.98 0.02 0.  ]

    A head whose overfitting shrank (``O < 0``): the paper's ``O²`` of the
    signed ``O`` (the default) weighs it as ``|O|``; the withdrawn clip
    hands it ``G / eps²``, i.e. everything.

    >>> gains = jnp.array([0.2, 0.1, 0.3])
    >>> overfits = jnp.array([0.2, -0.1, 0.2])
    >>> w = blend_weights(gains, overfits)
    >>> [round(float(x), 3) for x in w]  # [5, 10, 7.5] / 22.5
    [0.222, 0.444, 0.333]
    >>> print(blend_weights(gains, overfits, overfit_rule='clip').round(3))
    [0. 1. 0.]
    >>> w = blend_weights(gains, overfits, min_fused_weight=0.5)
    >>> [round(float(x), 3) for x in w]  # The others share 0.5 as 2 : 1.
    [0.167, 0.333, 0.5]
  """
  weights, _ = blend_weights_with_status(
      gains, overfits, eps=eps, overfit_rule=overfit_rule,
      overfit_floor=overfit_floor,
      overfit_floor_relative=overfit_floor_relative,
      min_fused_weight=min_fused_weight, fused_index=fused_index,
      fallback=fallback,
  )
  return weights


class GradientBlendState(NamedTuple):
  """State of `gradient_blend`."""

  weights: jax.Array  # shape=(H,), dtype=float32; the blend weights in use.
  count: jax.Array  # shape=(), dtype=int32; update calls so far.
  gain: jax.Array  # shape=(H,), dtype=float32; EMA of <h, v_k>.
  sigma_sq: jax.Array  # shape=(H,), dtype=float32; EMA of <u - h, v_k>².
  estimate_count: jax.Array  # shape=(), dtype=int32; EMA updates so far.
  used_fallback: jax.Array  # shape=(), dtype=bool; last estimate fell back.


def gradient_blend(
    weights: jax.Array | None = None,
    *,
    num_heads: int | None = None,
    axis_name: str | None = None,
    estimate_every: int = 0,
    decay: float = 0.9,
    eps: float = 1e-8,
    fused_index: int = -1,
) -> optax.GradientTransformationExtraArgs:
  """Blends per-loss gradients: ``Σ_i w_i g_i``.

  The update takes per-loss gradients, every leaf with a leading axis of size
  H (one gradient per loss, in head order: each modality's head, then the
  fused head), and returns one params-shaped update ``Σ_i w_i g_i``, the
  gradient of ``L_blend = Σ_i w_i L_i``. The weights live in the state
  (``optax.tree.get(state, 'weights')``) and are used as given (not
  renormalised). They change in two ways:

  * the ``weights`` extra arg: weights estimated outside (Algorithm 1 with
    `blend_weights`) replace the state's weights, from this step on;
  * ``estimate_every > 0`` and the ``holdout_grads`` extra arg (the
    params-shaped gradient of the fused loss on a held-out batch): on every
    step where ``count % estimate_every == 0`` the Proposition 1 statistics of
    `gradient_space.gradient_statistics` update an EMA with ``decay``,
    Adam-style bias-corrected by ``1 - decay^n``, and the weights become
    `gradient_space.weights_from_statistics_with_status` of it. (As ``w ∝ gain /
    sigma_sq`` and both share the correction, it matters only against the
    ``eps`` floor.) If no head has a positive gain, or the batch statistics
    are not finite, the previous weights are kept and ``used_fallback`` in the
    state is set. As the count is traced, ``holdout_grads`` is then required
    on every update (ignored on the other steps).
  * The cheap path: a caller that decides on the host when to estimate passes
    the static ``estimate`` extra arg: True re-estimates on this step (from
    ``holdout_grads``, required), False does not (no ``holdout_grads``
    needed), whatever the count. `gblend_jax.gradient_blend_grads` computes
    the per-loss gradients only when ``estimate`` is True and one gradient
    of ``Σ w L`` otherwise, and returns these extra args.

  Misuse fails at trace time: an estimating update without
  ``holdout_grads``, a misspelt extra arg (``holdout_gradients=``), per-loss
  gradients whose leaves are not ``[H, *param.shape]`` for the ``params``
  given, an ``init`` with the per-loss gradients instead of the parameters
  (as ``optax.MultiSteps(chain(gradient_blend(w), adam)).init(grads)`` does:
  adam's state would get the loss axis and ``apply_updates`` would
  broadcast the parameters to it), and negative or non-finite concrete
  weights. No check is possible for a transform placed *before* it (e.g.
  ``optax.clip_by_global_norm``): it sees the stacked per-loss tree, so its
  norm is over all H gradients. Put it after the blend.

  Must come first in an ``optax.chain``. Under ``optax.MultiSteps`` put the
  accumulation after the blend: ``chain(gradient_blend(w), MultiSteps(opt,
  k))`` (params-shaped; it then blends and estimates on every micro-step).
  Under ``optax.inject_hyperparams`` pass ``num_heads``, ``estimate_every``
  and ``fused_index`` as ``static_args`` (``decay`` and ``eps`` may be
  injected); do not inject ``weights``: the state's weights win, so change
  them with the ``weights`` extra arg.

  Multiple devices. Inside a user's ``jax.pmap`` with ``axis_name``, the
  statistics (inner products) are averaged across devices with
  ``jax.lax.pmean``, so all devices compute the same weights; the blended
  gradients are *not* reduced: pmean the per-loss gradients (or the blended
  update) as usual. Under ``jax.shard_map`` the gradients of replicated
  parameters are already summed over the mesh axis by autodiff: take the
  gradients of the global mean loss (``jax.lax.pmean`` of each per-device
  mean loss, before differentiating) and do *not* pmean them (a ``pmean``
  of an already-summed gradient leaves the sum: updates ``n_devices`` times
  too large); the statistics are then the same on every device and no
  ``axis_name`` is needed (a per-device statistic raises). Under
  ``jax.jit`` with sharded arrays no ``axis_name`` is needed.

  Args:
    weights: [H] initial blend weights; None gives uniform ``1/H``.
    num_heads: H, required when ``weights`` is None.
    axis_name: mapped axis over which to average the statistics.
    estimate_every: re-estimate the weights every this many steps from
      ``holdout_grads`` (0: only when the ``estimate`` extra arg is True).
    decay: EMA decay of the statistics.
    eps: floor of ``sigma_sq`` in the weights.
    fused_index: position of the fused head among the H losses.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose update is
    ``update(per_loss_grads, state, params=None, *, weights=None,
    holdout_grads=None, estimate=None, **extra_args)``.

  Raises:
    ValueError: if H is unknown or inconsistent, or concrete weights are
      negative or not finite (at construction or as the extra arg); at
      trace time, if a leaf's leading axis is not H (naming the leaf's
      shape), for the misuses above.
    TypeError: for a misspelt extra arg or a non-bool ``estimate``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from gblend_jax.blending.blend import gradient_blend
    >>> params = {'w': jnp.zeros(2)}
    >>> opt = optax.chain(gradient_blend(jnp.array([0.25, 0.75])),
    ...                   optax.sgd(learning_rate=1.0))
    >>> state = opt.init(params)
    >>> per_loss_grads = {'w': jnp.array([[1.0, 0.0], [0.0, 1.0]])}
    >>> updates, state = opt.update(per_loss_grads, state, params)
    >>> print(updates['w'])
    [-0.25 -0.75]
    >>> print(optax.tree.get(state, 'weights'))
    [0.25 0.75]

  References:
    Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
    Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681
    (Algorithm 1, Proposition 1).
  """
  if weights is not None:
    weight_shape = jnp.shape(weights)
    if len(weight_shape) != 1:
      raise ValueError(f'weights must have shape [H]; got {weight_shape}.')
    if num_heads is not None and num_heads != weight_shape[0]:
      raise ValueError(
          f'num_heads={num_heads} disagrees with weights of shape '
          f'{weight_shape}.'
      )
    num_heads = weight_shape[0]
  if num_heads is None:
    raise ValueError('gradient_blend needs `weights` or `num_heads`.')
  if num_heads < 1:
    raise ValueError(f'num_heads must be positive; got {num_heads}.')
  if estimate_every < 0:
    raise ValueError(f'estimate_every must be >= 0; got {estimate_every}.')

  def as_weights(w):
    w = jnp.asarray(w, jnp.float32)
    if w.shape != (num_heads,):
      raise ValueError(
          f'weights has shape {w.shape}; expected ({num_heads},).'
      )
    try:
      values = np.asarray(w)
    except jax.errors.TracerArrayConversionError:
      return w  # Traced (inside jit): not checked.
    if not np.all(np.isfinite(values)) or np.any(values < 0):
      raise ValueError(
          f'blend weights must be finite and >= 0; got {values}.'
      )
    return w

  if weights is not None:
    as_weights(weights)
  # Leaf shapes of the trees `init` was called with, per tree structure: an
  # update whose per-loss gradients have these shapes was initialised with
  # gradients, not parameters (checked at trace time; static shapes only).
  init_shapes = {}

  def init_fn(params):
    if params is not None:
      leaves, treedef = jax.tree.flatten(params)
      init_shapes.setdefault(treedef, set()).add(
          tuple(jnp.shape(x) for x in leaves)
      )
    if weights is None:
      initial = jnp.full((num_heads,), 1.0 / num_heads, jnp.float32)
    else:
      initial = as_weights(weights)
    zeros = jnp.zeros((num_heads,), jnp.float32)
    return GradientBlendState(
        weights=initial,
        count=jnp.zeros([], jnp.int32),
        gain=zeros,
        sigma_sq=zeros,
        estimate_count=jnp.zeros([], jnp.int32),
        used_fallback=jnp.zeros([], jnp.bool_),
    )

  def update_fn(
      per_loss_grads: Any,
      state: GradientBlendState,
      params: Any = None,
      *,
      weights: jax.Array | None = None,
      holdout_grads: Any = None,
      estimate: bool | None = None,
      **extra_args: Any,
  ):
    _check_extra_args(extra_args)
    del extra_args
    gradient_space.check_per_loss_grads(per_loss_grads, num_heads)
    _check_against_params(per_loss_grads, params, init_shapes)
    current = state.weights if weights is None else as_weights(weights)
    statistics = (current, state.gain, state.sigma_sq, state.estimate_count,
                  state.used_fallback)

    if estimate is not None and not isinstance(estimate, bool):
      raise TypeError(
          f'estimate must be a Python bool (static) or None; got {estimate!r}.'
      )
    estimating = estimate or (estimate is None and estimate_every > 0)
    if estimating and holdout_grads is None:
      raise ValueError(
          'gradient_blend would re-estimate its weights on this update '
          f'(estimate={estimate}, estimate_every={estimate_every}) but got '
          'no holdout_grads, the gradient of the fused loss on a held-out '
          'batch; without it the weights would never change. Pass '
          'holdout_grads=..., or estimate=False on steps that do not '
          're-estimate (gblend_jax.gradient_blend_grads returns both).'
      )
    if estimating:
      gradient_space.check_holdout_grads(per_loss_grads, holdout_grads)

      def reestimate(operand):
        current, gain, sigma_sq, estimate_count, _ = operand
        batch_gain, batch_sigma_sq = gradient_space.gradient_statistics(
            per_loss_grads,
            holdout_grads,
            fused_index=fused_index,
            axis_name=axis_name,
        )
        if axis_name is None and _mapped.unreduced_axes(batch_gain):
          raise ValueError(
              'gradient_blend: the gradient statistics differ across the '
              f'mapped axes {_mapped.unreduced_axes(batch_gain)}, so each '
              'device would get its own weights. Pass axis_name=..., or '
              'give every device the same (reduced) gradients.'
          )
        finite = jnp.all(jnp.isfinite(batch_gain)) & jnp.all(
            jnp.isfinite(batch_sigma_sq)
        )
        new_gain = decay * gain + (1.0 - decay) * batch_gain
        new_sigma_sq = decay * sigma_sq + (1.0 - decay) * batch_sigma_sq
        new_count = optax.safe_increment(estimate_count)
        correction = 1.0 - jnp.power(
            jnp.asarray(decay, jnp.float32), new_count.astype(jnp.float32)
        )
        new_weights, used_fallback = (
            gradient_space.weights_from_statistics_with_status(
                new_gain / correction,
                new_sigma_sq / correction,
                eps,
                fallback=current,
            )
        )
        keep = lambda new, old: jnp.where(finite, new, old)
        return (
            keep(new_weights, current),
            keep(new_gain, gain),
            keep(new_sigma_sq, sigma_sq),
            keep(new_count, estimate_count),
            used_fallback | ~finite,
        )

      if estimate:
        statistics = reestimate(statistics)
      else:
        statistics = jax.lax.cond(
            state.count % estimate_every == 0,
            reestimate,
            lambda operand: operand,
            statistics,
        )

    current, gain, sigma_sq, estimate_count, used_fallback = statistics
    blended = jax.tree.map(
        lambda g: jnp.einsum(
            'i,i...->...', current, g, precision=jax.lax.Precision.HIGHEST
        ).astype(g.dtype),
        per_loss_grads,
    )
    new_state = GradientBlendState(
        weights=current,
        count=optax.safe_increment(state.count),
        gain=gain,
        sigma_sq=sigma_sq,
        estimate_count=estimate_count,
        used_fallback=used_fallback,
    )
    return blended, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_EXTRA_ARGS = ('weights', 'holdout_grads', 'estimate')


def _check_extra_args(extra_args):
  """Raises on extra args that look like misspelt ones of `gradient_blend`.

  Other extra args pass silently: in an ``optax.chain`` every transform
  receives the extra args of all of them (e.g. ``ogm_ge``'s ``scores``).
  """
  for name in extra_args:
    close = difflib.get_close_matches(name, _EXTRA_ARGS, n=1, cutoff=0.75)
    if close or 'holdout' in name:
      raise TypeError(
          f'gradient_blend got the extra arg {name!r}; did you mean '
          f'{(close or ["holdout_grads"])[0]!r}? (Its extra args are '
          f'{", ".join(_EXTRA_ARGS)}.)'
      )


def _check_against_params(per_loss_grads, params, init_shapes):
  """Checks that per-loss leaves are ``[H, *param.shape]``; trace time."""
  grad_leaves, treedef = jax.tree.flatten(per_loss_grads)
  grad_shapes = tuple(jnp.shape(g) for g in grad_leaves)
  if grad_shapes in init_shapes.get(treedef, ()):
    raise ValueError(
        'gradient_blend was initialised with a tree shaped like the '
        'per-loss gradients (leading loss axis), not like the parameters: '
        'the transforms after it were initialised with that shape too, so '
        'their updates would keep the loss axis and optax.apply_updates '
        'would broadcast the parameters to it. Call init with the '
        'parameters; under optax.MultiSteps put it after the blend: '
        'chain(gradient_blend(w), optax.MultiSteps(opt, k)).'
    )
  if params is None:
    return
  param_leaves, param_treedef = jax.tree.flatten(params)
  if param_treedef != treedef:
    return  # E.g. nnx states with other leaf wrappers: nothing to compare.
  for (path, g), p in zip(
      jax.tree_util.tree_leaves_with_path(per_loss_grads), param_leaves,
      strict=True,
  ):
    if tuple(jnp.shape(g)[1:]) != tuple(jnp.shape(p)):
      raise ValueError(
          f'per-loss gradient {jax.tree_util.keystr(path)} has shape '
          f'{jnp.shape(g)}; expected (H, *{jnp.shape(p)}) for the parameter '
          'of that name: gradient_blend takes per-loss gradients with a '
          'leading loss axis (jax.jacrev of the [H] losses, or '
          'gblend_jax.gradient_blend_grads).'
      )
