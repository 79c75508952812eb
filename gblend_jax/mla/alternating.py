"""MLA's alternating unimodal steps: one optimiser step per modality.

Zhang, Yoon, Bansal, Yao, CVPR 2024; the authors' ``main.py`` (the
``gs_flag`` branch of ``train_epoch``). For each batch and each modality m
in turn (audio, then visual, ...), with one head ``h`` shared by all
modalities:

  L_m = CE(h(z_m), y),   (θ_m, h) ← optimiser step on ∇L_m

with the head's kernel gradient modified first
(`gblend_jax.mla.head_gradient_projection`). Modality m's logits use the
head as the previous modalities' steps left it. Each step updates only
its encoder and the shared head, and leaves the optimiser state of every
other parameter as it was; the optimiser's step counts (Adam's bias
correction, the learning-rate schedule) advance once per batch, so a
schedule in epochs reads as it does for one step per batch. (The authors'
PyTorch 1.8.1 ``zero_grad`` leaves zero gradients, so there SGD's momentum
and weight decay also move the audio encoder during the visual step;
BalanceBenchmark runs the same loop. That is a side effect of the
framework, not part of the method, and is not reproduced.)
"""

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gblend_jax.mla import projection as projection_lib

# (params, modality) -> (loss, (features [B, d], aux)).
ModalityLoss = Callable[[Any, str], tuple[jax.Array, tuple[jax.Array, Any]]]


def merge_optimizer_state(new: Any, old: Any, trained: Any, *,
                          params_structure: Any, advance_counts: bool) -> Any:
  """The optimiser state after a step that updates only ``trained``.

  Args:
    new: the state ``tx.update`` returned.
    old: the state before it.
    trained: a params-shaped pytree of Python bools: the parameters the
      step updates.
    params_structure: ``jax.tree.structure(params)``.
    advance_counts: whether the state's other leaves (step counts) take
      their new values; MLA's `ProjectionState` always does (each modality
      step updates ``P``).

  Returns:
    ``new`` where ``trained`` is True in every params-shaped part of the
    state (moments, traces), ``old`` elsewhere in those parts; the other
    leaves from ``new`` if ``advance_counts``, else from ``old``.
  """

  def is_part(x):
    return isinstance(x, projection_lib.ProjectionState) or (
        jax.tree.structure(x) == params_structure)

  def pick(n, o):
    if isinstance(n, projection_lib.ProjectionState):
      return n
    if jax.tree.structure(n) == params_structure:
      return jax.tree.map(lambda t, a, b: a if t else b, trained, n, o)
    return n if advance_counts else o

  return jax.tree.map(pick, new, old, is_leaf=is_part)


def alternating_updates(
    tx: optax.GradientTransformation,
    modality_loss: ModalityLoss,
    params: Any,
    opt_state: optax.OptState,
    *,
    modalities: Sequence[str],
    trained: Mapping[str, Any],
    batch_index: jax.Array,
    batches_per_epoch: int,
) -> tuple[Any, optax.OptState, jax.Array, list[Any], list[Any]]:
  """One batch of MLA: an optimiser step per modality, in turn.

  Args:
    tx: the optimiser, with `head_gradient_projection` chained before it
      (or not: the released code's behaviour). An
      ``optax.GradientTransformationExtraArgs`` (e.g. an ``optax.chain``)
      receives ``feature_mean``, ``batch_index`` and ``batches_per_epoch``.
    modality_loss: ``(params, m) -> (L_m, (z_m, aux))``: modality m's
      loss through the shared head, its ``[B, d]`` features and anything
      else the caller wants back.
    params: the parameters before the batch.
    opt_state: ``tx``'s state.
    modalities: the order of the steps (the authors': audio, visual,
      text).
    trained: ``{m: params-shaped pytree of bools}``: what m's step updates
      (its encoder and the shared head).
    batch_index: ``i``, the batch's index in its epoch.
    batches_per_epoch: ``N``.

  Returns:
    ``(params, opt_state, losses, grads, auxes)``: the state after the
    last step, ``[M]`` losses (each at its step), and each step's raw
    gradients and ``aux``.
  """
  structure = jax.tree.structure(params)
  extra = isinstance(tx, optax.GradientTransformationExtraArgs)
  losses, all_grads, auxes = [], [], []
  for k, m in enumerate(modalities):
    (loss, (features, aux)), grads = jax.value_and_grad(
        lambda p, m=m: modality_loss(p, m), has_aux=True)(params)
    kwargs = {}
    if extra:
      kwargs = dict(feature_mean=jnp.mean(features, axis=0),
                    batch_index=batch_index,
                    batches_per_epoch=batches_per_epoch)
    updates, new_state = tx.update(grads, opt_state, params, **kwargs)
    updates = jax.tree.map(lambda t, u: u if t else jnp.zeros_like(u),
                           trained[m], updates)
    params = optax.apply_updates(params, updates)
    opt_state = merge_optimizer_state(
        new_state, opt_state, trained[m], params_structure=structure,
        advance_counts=k == len(modalities) - 1)
    losses.append(loss)
    all_grads.append(grads)
    auxes.append(aux)
  return params, opt_state, jnp.stack(losses), all_grads, auxes
