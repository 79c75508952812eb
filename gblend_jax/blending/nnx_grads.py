"""Per-loss gradients of a stateful ``flax.nnx`` module, for `gradient_blend`.

`gradient_blend` needs one gradient per loss. For a linen model that is
``jax.jacrev`` of the ``[H]`` loss vector over the params; for an nnx module
the obvious routes fail once it has state besides its parameters:
``jax.jacrev`` on the module differentiates the dropout RNG keys (a
``TypeError`` on uint32), and ``nnx.split``/``merge`` around ``jacrev`` that
updates the outer module from inside the trace raises ``TraceContextError``
with BatchNorm. The helpers here split the module into the differentiated
variables (``wrt``, default ``nnx.Param``) and the rest, rebuild it inside the
differentiated function, return the rest's new values (batch statistics,
RNG counts) as aux and write them back with ``nnx.update``, as ``nnx.grad``
does. The gradients are an ``nnx.State`` shaped like
``nnx.state(model, wrt)`` with a leading loss axis, ready for
``nnx.Optimizer.update(model, grads, **update_kwargs)``.

References:
  Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
  Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681
  (Proposition 1).
"""

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from gblend_jax.blending import cheap_path

__all__ = (
    'nnx_gradient_blend_grads',
    'nnx_per_loss_grads',
    'opt_state_value',
)


def nnx_gradient_blend_grads(
    head_losses: Callable[..., Any],
    model: nnx.Module,
    weights: jax.Array,
    *,
    estimate: bool | None,
    holdout_loss: Callable[[nnx.Module], jax.Array] | None = None,
    wrt: Any = nnx.Param,
    has_aux: bool = False,
) -> cheap_path.BlendGrads:
  """`gblend_jax.gradient_blend_grads` for an ``nnx`` module.

  On estimating steps (``estimate`` True or None) the per-loss gradients by
  ``jax.jacrev`` (one forward pass) and the held-out gradient; otherwise
  one gradient of ``Σ_k w_k L_k`` broadcast as ``g / Σ_k w_k`` to the H
  heads (see `gblend_jax.gradient_blend_grads`). The module's other state
  (BatchNorm statistics, RNG counts of Dropout) is updated in place by the
  training forward pass, once; whatever ``holdout_loss`` changes is dropped.

  Use inside ``nnx.jit`` with ``estimate`` static::

    optimizer = nnx.Optimizer(model, optax.chain(
        gradient_blend(num_heads=3, estimate_every=10), optax.adam(1e-3)),
        wrt=nnx.Param)

    @nnx.jit(static_argnames='estimate')
    def step(model, optimizer, batch, holdout, estimate):
      out = nnx_gradient_blend_grads(
          lambda m: head_losses(m, batch), model,
          opt_state_value(optimizer, 'weights'), estimate=estimate,
          holdout_loss=lambda m: fused_loss(m, holdout))
      optimizer.update(model, out.grads, **out.update_kwargs)

  Args:
    head_losses: ``model -> [H]`` losses (modality heads, then the fused
      head), or ``model -> ([H], aux)`` with ``has_aux``; called on a copy of
      ``model`` in training mode, as the caller set it.
    model: the module; its non-``wrt`` state is updated in place.
    weights: [H] the blend weights in use (`opt_state_value`), read only
      when ``estimate=False``.
    estimate: a Python bool or None (static).
    holdout_loss: ``model -> scalar``: the fused loss on a held-out batch,
      called on a copy with the state after the training pass (switch it to
      evaluation mode inside, e.g. ``m.eval()``); required unless
      ``estimate=False``.
    wrt: the filter of the differentiated variables (as ``nnx.Optimizer``'s
      ``wrt``).
    has_aux: whether ``head_losses`` returns ``(losses, aux)``.

  Returns:
    A `gblend_jax.BlendGrads`: ``grads`` an ``nnx.State`` like
    ``nnx.state(model, wrt)`` with leaves ``[H, ...]``, ``update_kwargs``
    for ``optimizer.update``, the losses and the aux.
  """
  graphdef, params, rest = nnx.split(model, wrt, ...)

  def losses_of(params):
    # copy: fresh Variables, so that the traced pass does not mutate the
    # outer module's (a TraceContextError with BatchNorm).
    copy = nnx.merge(graphdef, params, rest, copy=True)
    out = head_losses(copy)
    losses, aux = out if has_aux else (out, None)
    return losses, (aux, nnx.state(copy, nnx.Not(wrt)))

  def holdout_of(params, aux):
    _, new_rest = aux
    return holdout_loss(nnx.merge(graphdef, params, new_rest, copy=True))

  result = cheap_path.gradient_blend_grads(
      losses_of, params, weights, estimate=estimate,
      holdout_loss=None if holdout_loss is None else holdout_of,
      has_aux=True,
  )
  aux, new_rest = result.aux
  nnx.update(model, new_rest)
  return result._replace(aux=aux)


def nnx_per_loss_grads(
    head_losses: Callable[..., Any],
    model: nnx.Module,
    *,
    wrt: Any = nnx.Param,
    has_aux: bool = False,
) -> tuple[nnx.State, jax.Array, Any]:
  """Per-loss gradients ``∇_θ L_k`` of an ``nnx`` module, by ``jax.jacrev``.

  One forward pass and H vector-Jacobian products; the module's other
  state is updated in place once (as by that forward pass).

  Args:
    head_losses: ``model -> [H]`` losses, or ``model -> ([H], aux)`` with
      ``has_aux``.
    model: the module.
    wrt: the filter of the differentiated variables.
    has_aux: whether ``head_losses`` returns ``(losses, aux)``.

  Returns:
    ``(grads, losses, aux)``: an ``nnx.State`` like ``nnx.state(model,
    wrt)`` with leaves ``[H, ...]``, the [H] losses, and the aux (None
    without ``has_aux``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((4, 2))
    >>> grads, losses, _ = nnx_per_loss_grads(
    ...     lambda m: jnp.stack([m(x).mean(), (m(x) ** 2).mean()]), model)
    >>> print(grads['kernel'][...].shape)
    (2, 2, 1)
  """
  result = nnx_gradient_blend_grads(
      head_losses, model, None, estimate=True, wrt=wrt, has_aux=has_aux,
      holdout_loss=lambda m: 0.0,
  )
  return result.grads, result.losses, result.aux


def opt_state_value(optimizer_or_state: Any, name: str) -> Any:
  """``optax.tree.get`` of an ``nnx.Optimizer``'s state, as plain arrays.

  ``optax.tree.get(optimizer.opt_state, 'weights')`` returns the value in
  the optimizer's ``nnx.OptArray`` wrapper; this unwraps it.

  Args:
    optimizer_or_state: an ``nnx.Optimizer``, its ``opt_state``, or a plain
      optax state.
    name: the state field, e.g. ``'weights'`` of `gradient_blend` or
      ``'coefficients'`` of `ogm_ge`.

  Returns:
    The field's value (``jax.Array``, or a pytree of them).
  """
  state = getattr(optimizer_or_state, 'opt_state', optimizer_or_state)
  return optax.tree.get(nnx.as_pure(state), name)
