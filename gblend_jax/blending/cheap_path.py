"""The cheap estimating path of `gradient_blend` for a user's own step.

`gradient_blend` re-estimates its weights from per-loss gradients ``v_k``
(``jax.jacrev``: H backward passes) and a held-out gradient, but it only
needs them on the steps where it estimates. In between, the weights are
fixed, so the blended update ``Σ_k w_k v_k`` is the gradient ``g`` of
``Σ_k w_k L_k``: one backward pass, which the transform receives as the
per-loss gradient ``g / Σ_k w_k`` of every head (their blend is ``g``) with
``estimate=False``. `gradient_blend_grads` returns the right one of the two
and the ``tx.update`` keyword arguments that tell the transform which it is;
the caller compiles two steps (``estimate`` is static) and picks one on the
host with `is_estimate_step`. The trainer's ``blend.mode='gradient'`` step
uses the same function.

Cost (two 2 x 1024 MLP encoders, batch 256, CPU;
experiments/results/cheap_path_cpu.md, measured with ``jax.jacrev``'s H
backward passes): estimating every 10 steps this way is 1.5 x a naive step;
per-loss gradients on every step are 4.5 x with the same period, 6 x when
estimating every step. With ``own_params`` the estimating step takes two
backward passes for the per-loss gradients, whatever H
(`gblend_jax.blending.per_loss`).

References:
  Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
  Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681
  (Proposition 1).
"""

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gblend_jax.blending import per_loss

__all__ = (
    'BlendGrads',
    'gradient_blend_grads',
    'is_estimate_step',
)


class BlendGrads(NamedTuple):
  """What `gradient_blend_grads` returns."""

  # Per-loss gradients for `gradient_blend`: every leaf [H, *param.shape].
  grads: Any
  # Keyword arguments of ``tx.update``: ``estimate`` (a Python bool) and,
  # when estimating, ``holdout_grads`` (params-shaped).
  update_kwargs: dict[str, Any]
  losses: jax.Array  # shape=(H,); the per-head losses of the batch.
  aux: Any  # What ``head_losses`` returned beside the losses (or None).


def is_estimate_step(step: int, estimate_every: int) -> bool:
  """Whether `gradient_blend` re-estimates on optimiser step ``step``.

  The host-side twin of the transform's own rule (``count % estimate_every
  == 0``), for picking the compiled step: steps 0, k, 2k, ...

  Args:
    step: the optimiser step (a Python int).
    estimate_every: the period k (0: never).

  Returns:
    A Python bool.
  """
  return estimate_every > 0 and step % estimate_every == 0


def gradient_blend_grads(
    head_losses: Callable[..., Any],
    params: Any,
    weights: jax.Array,
    *,
    estimate: bool | None,
    holdout_loss: Callable[..., jax.Array] | None = None,
    has_aux: bool = False,
    own_params: per_loss.OwnParams | None = None,
) -> BlendGrads:
  """The gradients `gradient_blend` needs on this step, and no more.

  * ``estimate=True``: per-loss gradients ``v_k = ∇L_k`` (``jax.jacrev`` of
    the ``[H]`` loss vector: one forward pass, H vector-Jacobian products;
    two with ``own_params``, `gblend_jax.blending.per_loss.per_loss_grads`)
    and ``holdout_grads = ∇ holdout_loss`` (the fused loss on a held-out
    batch, Proposition 1's ``∇L*``); the transform re-estimates its weights
    from them.
  * ``estimate=False``: one backward pass of ``Σ_k w_k L_k`` with the
    weights in use; its gradient ``g`` is returned as ``g / Σ_k w_k`` for
    each of the H heads, whose blend ``Σ_k w_k g / Σ_k w_k`` is ``g``, the
    same update as from the true per-loss gradients. No held-out pass.
  * ``estimate=None``: as True, but ``update_kwargs`` leaves it to the
    transform's count (``count % estimate_every == 0``) whether to estimate;
    every step then pays the per-loss and held-out passes.

  Use it inside a jitted step with ``estimate`` static::

    tx = optax.chain(gradient_blend(num_heads=3, estimate_every=10), adam)

    @functools.partial(jax.jit, static_argnames='estimate')
    def step(params, opt_state, batch, holdout, estimate):
      out = gradient_blend_grads(
          lambda p: head_losses(p, batch), params,
          optax.tree.get(opt_state, 'weights'), estimate=estimate,
          holdout_loss=lambda p: fused_loss(p, holdout))
      updates, opt_state = tx.update(out.grads, opt_state, params,
                                     **out.update_kwargs)
      return optax.apply_updates(params, updates), opt_state

    for i in range(num_steps):
      params, opt_state = step(..., estimate=is_estimate_step(i, 10))

  The step count that `is_estimate_step` is given must be the transform's
  (one update per step; under ``optax.MultiSteps`` after the blend it is
  still one per micro-step).

  Args:
    head_losses: ``params -> [H]`` losses (each modality's head, then the
      fused head), or ``params -> ([H], aux)`` with ``has_aux``.
    params: the parameters to differentiate.
    weights: [H] the blend weights in use,
      ``optax.tree.get(opt_state, 'weights')``; read only when
      ``estimate=False``. They must not sum to 0.
    estimate: a Python bool or None (static; see above).
    holdout_loss: ``params -> scalar`` (``(params, aux) -> scalar`` with
      ``has_aux``, e.g. to use the batch statistics ``head_losses`` just
      updated); required unless ``estimate=False``.
    has_aux: whether ``head_losses`` returns ``(losses, aux)``.
    own_params: None (``jax.jacrev``), or for each head the top-level
      parameter keys its loss reaches, None for one that may reach any
      (``per_loss.model_own_params(model, heads)``): the unimodal losses'
      gradients then come from one backward pass of their sum
      (`gblend_jax.blending.per_loss.per_loss_grads`).

  Returns:
    A `BlendGrads`: ``grads`` (leaves [H, ...]) and ``update_kwargs`` for
    ``tx.update(grads, opt_state, params, **update_kwargs)``, the losses
    and the aux of ``head_losses``.

  Raises:
    TypeError: if ``estimate`` is not a Python bool or None.
    ValueError: if ``holdout_loss`` is missing on an estimating step, or
      ``weights`` is not [H].

  References:
    Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
    Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681
    (Proposition 1).
  """
  if estimate is not None and not isinstance(estimate, bool):
    raise TypeError(
        'estimate must be a Python bool or None (static: jit the step with '
        f'static_argnames=("estimate",)); got {estimate!r}.'
    )

  def with_losses(params):
    if has_aux:
      losses, aux = head_losses(params)
    else:
      losses, aux = head_losses(params), None
    return losses, (losses, aux)

  if estimate is False:
    weights = jnp.asarray(weights)
    if weights.ndim != 1:
      raise ValueError(f'weights must have shape [H]; got {weights.shape}.')
    num_heads = weights.shape[0]

    def total(params):
      losses, aux = with_losses(params)
      return jnp.dot(weights, losses), aux

    grads, (losses, aux) = jax.grad(total, has_aux=True)(params)
    share = jax.tree.map(
        lambda g: jnp.broadcast_to(
            g / jnp.sum(weights), (num_heads, *g.shape)
        ),
        grads,
    )
    return BlendGrads(share, {'estimate': False}, losses, aux)

  if holdout_loss is None:
    raise ValueError(
        f'gradient_blend_grads(estimate={estimate}) needs holdout_loss: '
        'the fused loss on a held-out batch, whose gradient estimates the '
        "generalisation direction (Proposition 1). Pass estimate=False on "
        'steps that do not re-estimate.'
    )
  per_loss_grads, losses, aux = per_loss.per_loss_grads(
      head_losses, params, own_params=own_params, has_aux=has_aux)
  if has_aux:
    holdout_grads = jax.grad(lambda p: holdout_loss(p, aux))(params)
  else:
    holdout_grads = jax.grad(holdout_loss)(params)
  update_kwargs = {'holdout_grads': holdout_grads}
  if estimate:
    update_kwargs['estimate'] = True
  return BlendGrads(per_loss_grads, update_kwargs, losses, aux)
