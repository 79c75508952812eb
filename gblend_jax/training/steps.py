"""The pure step functions the trainer jit-compiles.

A model returns logits per head (``'fused'`` and one per modality). Heads are
ordered as G-Blend orders them: each modality's head, then the fused head.
The training objective is ``sum_i w_i L_i`` (G-Blend, Eq. 3) with the weights
``w`` passed to the step as an array, so one compiled step serves naive
training (``w`` one-hot on the fused head), fixed weights, and weights that an
estimator replaces during training.
"""

import contextlib
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gblend_jax import losses
from gblend_jax import metrics as metrics_lib
from gblend_jax.modulation import method as modulation

NON_INPUT_KEYS = ('label', 'id', 'mask')
FUSED = 'fused'

# Eval heads of each modality's share of the fused logits: 'unimodal_<m>'.
UNIMODAL_PREFIX = 'unimodal_'
# (params, batch_stats, model outputs, batch) -> (tx.update kwargs, metrics).
UpdateArgs = Callable[..., tuple[dict[str, Any], dict[str, jax.Array]]]
# (key, batch, loss_args) -> (model inputs, logits -> [H] head losses,
# metrics, interceptor): a training objective other than per-head
# cross-entropy (the long-tail losses and mixup,
# `gblend_jax.longtail.method`); interceptor is None or a
# `flax.linen.intercept_methods` interceptor active during the forward pass
# (manifold mixup).
Objective = Callable[..., tuple[Any, Callable[..., jax.Array], dict]]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree."""

  step: jax.Array  # shape=(), dtype=int32
  params: Any
  batch_stats: Any  # {} for models without BatchNorm.
  opt_state: optax.OptState
  rng: jax.Array  # shape=(2,), dtype=uint32; folded with the step.


def head_order(
    modalities: Sequence[str], modality_heads: bool
) -> tuple[str, ...]:
  """The heads of a model, in blend order: modalities, then ``'fused'``."""
  return (*modalities, FUSED) if modality_heads else (FUSED,)


def model_inputs(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The modalities of a batch (no label, id or mask)."""
  return {k: v for k, v in batch.items() if k not in NON_INPUT_KEYS}


def forward(
    model: nn.Module, params, batch_stats, inputs, *, train: bool, rng=None
):
  """Applies the model; in training mode also returns new batch statistics.

  Returns:
    ``(outputs, batch_stats)``: the model's output dict and the (updated in
    training mode) batch statistics.
  """
  variables = {'params': params}
  if batch_stats:
    variables['batch_stats'] = batch_stats
  if not train:
    return model.apply(variables, inputs, train=False), batch_stats
  out, updated = model.apply(
      variables, inputs, train=True, rngs={'dropout': rng},
      mutable=['batch_stats'],
  )
  return out, updated.get('batch_stats', batch_stats)


def stacked_head_losses(
    logits: Mapping[str, jax.Array], labels: jax.Array, heads: Sequence[str]
) -> jax.Array:
  """Per-head cross-entropy stacked in head order, shape ``[H]``."""
  return jnp.stack(
      [losses.cross_entropy(logits[head], labels) for head in heads]
  )


def _training_losses(
    model: nn.Module, state: TrainState, batch, heads,
    objective: Objective | None = None, loss_args: Any = None,
):
  """``params -> ([H] head losses, (outputs, new batch_stats, metrics))``
  in training mode, with the dropout key of this step.

  Without ``objective`` the head losses are cross-entropies of the batch's
  inputs; with it, ``objective(key, batch, loss_args)`` gives the inputs
  (e.g. mixed), the head losses of their logits, and an optional method
  interceptor for the forward pass (e.g. manifold mixup).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  interceptor = None
  if objective is None:
    inputs, metrics = model_inputs(batch), {}

    def head_losses(logits):
      return stacked_head_losses(logits, batch['label'], heads)
  else:
    inputs, head_losses, metrics, interceptor = objective(
        rng, batch, loss_args)

  def loss_vector(params):
    with (nn.intercept_methods(interceptor) if interceptor is not None
          else contextlib.nullcontext()):
      out, batch_stats = forward(
          model, params, state.batch_stats, inputs, train=True, rng=rng,
      )
    return head_losses(out['logits']), (out, batch_stats, metrics)

  return loss_vector


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    heads: Sequence[str],
    *,
    update_args: UpdateArgs | None = None,
    opt_state_metrics: Callable[[optax.OptState], dict] | None = None,
    objective: Objective | None = None,
) -> Callable[..., tuple[TrainState, dict]]:
  """A step on the objective ``sum_i w_i L_i`` with one backward pass.

  Args:
    model: the classifier.
    tx: the optimiser.
    learning_rate: its schedule, for logging.
    heads: head names in blend order; ``head_weights[i]`` weights ``heads[i]``.
    update_args: optional ``(params, batch_stats, outputs, batch) ->
      (extra_args, metrics)``: keyword arguments for ``tx.update`` computed
      from this step's forward pass (OGM-GE's scores) and metrics to log.
    opt_state_metrics: optional ``opt_state -> metrics`` read after the
      update (OGM-GE's ratios and coefficients).
    objective: optional `Objective` replacing per-head cross-entropy (the
      long-tail losses and mixup); it receives the step's ``loss_args``.

  Returns:
    ``train_step(state, batch, head_weights, loss_args=None) -> (state,
    metrics)``.
  """

  def train_step(
      state: TrainState, batch, head_weights: jax.Array, loss_args=None
  ):
    loss_vector = _training_losses(
        model, state, batch, heads, objective, loss_args
    )

    def weighted_sum(params):
      per_head, (out, batch_stats, metrics) = loss_vector(params)
      return jnp.dot(head_weights, per_head), (
          per_head, out, batch_stats, metrics)

    (total, (per_head, out, batch_stats, objective_metrics)), grads = (
        jax.value_and_grad(weighted_sum, has_aux=True)(state.params)
    )
    extra_args, extra_metrics = {}, {}
    if update_args is not None:
      extra_args, extra_metrics = update_args(
          state.params, state.batch_stats, out, batch
      )
    updates, opt_state = tx.update(
        grads, state.opt_state, state.params, **extra_args
    )
    params = optax.apply_updates(state.params, updates)
    step_metrics = _step_metrics(
        total, per_head, out['logits'], batch['label'], heads, grads, params,
        learning_rate(state.step),
    )
    step_metrics.update(extra_metrics)
    step_metrics.update(objective_metrics)
    if opt_state_metrics is not None:
      step_metrics.update(opt_state_metrics(opt_state))
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=opt_state,
    )
    return new_state, step_metrics

  return train_step


def _step_metrics(
    total, per_head, logits, labels, heads, grads, params, learning_rate
) -> dict[str, jax.Array]:
  step_metrics = {
      'loss': total,
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(params),
      'learning_rate': learning_rate,
  }
  for i, head in enumerate(heads):
    step_metrics[f'{head}/loss'] = per_head[i]
    step_metrics[f'{head}/accuracy'] = jnp.mean(
        metrics_lib.topk_correct(logits[head], labels, 1)
    )
  return step_metrics


NONFINITE = 'nonfinite'


def guard_nonfinite(
    train_step: Callable[..., tuple[TrainState, dict]],
    heads: Sequence[str],
    *,
    skip: bool = False,
) -> Callable[..., tuple[TrainState, dict]]:
  """Marks (and optionally undoes) steps with non-finite values.

  Args:
    train_step: ``(state, *args) -> (state, metrics)`` from
      `make_train_step` or `make_gradient_blend_train_step`.
    heads: head names; their ``<head>/loss`` metrics are checked.
    skip: when a step's values are not finite, return the old state (with
      the step counter advanced) instead of the updated one. A selection
      inside the compiled step: nothing recompiles.

  Returns:
    The same step, whose metrics also hold ``nonfinite``: 1.0 when the
    total loss, a head's loss, the gradient norm or the updated parameters'
    norm is NaN or infinite, else 0.0.
  """
  checked = ('loss', 'grad_norm', 'param_norm',
             *(f'{head}/loss' for head in heads))

  def guarded(state: TrainState, *args):
    new_state, step_metrics = train_step(state, *args)
    finite = jnp.all(jnp.isfinite(jnp.stack(
        [jnp.asarray(step_metrics[k], jnp.float32) for k in checked])))
    step_metrics = {**step_metrics,
                    NONFINITE: jnp.logical_not(finite).astype(jnp.float32)}
    if skip:
      kept = state.replace(step=new_state.step)
      # lax.cond, not jnp.where: the state may hold typed PRNG keys.
      new_state = jax.lax.cond(finite, lambda: new_state, lambda: kept)
    return new_state, step_metrics

  return guarded


def make_eval_step(
    model: nn.Module, unimodal_modalities: Sequence[str] = ()
) -> Callable[[TrainState, Any], dict]:
  """``eval_step(state, batch)``: per-head metric sums over a masked batch.

  Args:
    model: the classifier.
    unimodal_modalities: for a late-fusion model, the modalities whose share
      of the fused logits (`gblend_jax.modulation.unimodal`) is measured as the extra
      heads ``unimodal_<m>``: how well each encoder is trained inside the
      fused model, without a linear probe (OGM-GE's diagnostic).

  Returns:
    ``eval_step(state, batch) -> {'<head>/<metric>': sum, 'count': n}``.
  """

  def eval_step(state: TrainState, batch):
    out, _ = forward(
        model, state.params, state.batch_stats, model_inputs(batch),
        train=False,
    )
    logits = dict(out['logits'])
    if unimodal_modalities:
      variables = {'params': state.params}
      if state.batch_stats:
        variables['batch_stats'] = state.batch_stats
      shares = modulation.unimodal_logits_of(
          model, variables, out['features'], unimodal_modalities
      )
      logits.update({f'{UNIMODAL_PREFIX}{m}': v for m, v in shares.items()})
    return metrics_lib.head_metric_sums(logits, batch['label'], batch['mask'])

  return eval_step


def make_gradient_blend_train_step(
    model: nn.Module,
    tx: optax.GradientTransformationExtraArgs,
    learning_rate: optax.Schedule,
    heads: Sequence[str],
) -> Callable[..., tuple[TrainState, dict]]:
  """A step that blends per-loss gradients with `gblend_jax.gradient_blend`.

  ``train_step(state, batch, holdout_batch, estimate=None)``. With
  ``estimate`` None or True the per-loss gradients ``v_k`` come from one
  forward pass and H vector-Jacobian products (``jax.jacrev`` of the ``[H]``
  loss vector), and the gradient of the fused loss on a held-out batch
  estimates ``∇L*`` (Proposition 1); ``gradient_blend`` re-estimates its
  weights from them on the steps its count says (None) or on this step
  (True). With ``estimate=False`` the weights stay as they are, so one
  backward pass of ``Σ_k w_k L_k`` gives the same update: its gradient ``g``
  goes to ``gradient_blend`` as the per-loss gradient ``g / Σ_k w_k`` of
  every head (whose blend is ``g``), and the held-out batch is not used.
  ``estimate`` is static: bind it with ``functools.partial`` before
  ``jax.jit`` and call the estimating step every ``estimate_every`` steps
  (the trainer does), the other one in between. `tx` must start with
  ``gradient_blend``.

  Args:
    model: the classifier.
    tx: ``optax.chain(gradient_blend(...), optimiser)``.
    learning_rate: the optimiser's schedule, for logging.
    heads: head names in blend order.

  Returns:
    ``train_step(state, batch, holdout_batch, estimate=None) -> (state,
    metrics)``; the metrics include ``blend/weight/<head>`` (the weights
    after the step).
  """
  num_heads = len(heads)

  def per_loss_grads_of(state, batch, holdout_batch):
    loss_vector = _training_losses(model, state, batch, heads)

    def with_losses(params):
      per_head, aux = loss_vector(params)
      return per_head, (per_head, *aux)

    per_loss_grads, (per_head, out, batch_stats, _) = jax.jacrev(
        with_losses, has_aux=True
    )(state.params)

    def holdout_loss(params):
      holdout_out, _ = forward(
          model, params, batch_stats, model_inputs(holdout_batch), train=False
      )
      return losses.cross_entropy(
          holdout_out['logits'][FUSED], holdout_batch['label']
      )

    holdout_grads = jax.grad(holdout_loss)(state.params)
    return per_loss_grads, holdout_grads, per_head, out, batch_stats

  def weighted_grads_of(state, batch):
    loss_vector = _training_losses(model, state, batch, heads)
    weights = optax.tree.get(state.opt_state, 'weights')

    def total(params):
      per_head, aux = loss_vector(params)
      return jnp.dot(weights, per_head), (per_head, *aux)

    grads, (per_head, out, batch_stats, _) = jax.grad(
        total, has_aux=True)(state.params)
    share = jax.tree.map(
        lambda g: jnp.broadcast_to(g / jnp.sum(weights),
                                   (num_heads, *g.shape)), grads)
    return share, None, per_head, out, batch_stats

  def train_step(state: TrainState, batch, holdout_batch,
                 estimate: bool | None = None):
    if estimate is False:
      per_loss_grads, holdout_grads, per_head, out, batch_stats = (
          weighted_grads_of(state, batch))
      extra = {}
    else:
      per_loss_grads, holdout_grads, per_head, out, batch_stats = (
          per_loss_grads_of(state, batch, holdout_batch))
      extra = {} if estimate is None else {'estimate': True}
    updates, opt_state = tx.update(
        per_loss_grads, state.opt_state, state.params,
        holdout_grads=holdout_grads, **extra,
    )
    params = optax.apply_updates(state.params, updates)
    blend_state = optax.tree.get(opt_state, 'weights')
    blended = jax.tree.map(
        lambda g: jnp.einsum('i,i...->...', blend_state, g), per_loss_grads
    )
    step_metrics = _step_metrics(
        jnp.dot(blend_state, per_head), per_head, out['logits'],
        batch['label'], heads, blended, params, learning_rate(state.step),
    )
    for i, head in enumerate(heads):
      step_metrics[f'blend/weight/{head}'] = blend_state[i]
      step_metrics[f'blend/gain/{head}'] = optax.tree.get(opt_state,
                                                          'gain')[i]
      step_metrics[f'blend/sigma_sq/{head}'] = optax.tree.get(
          opt_state, 'sigma_sq')[i]
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=opt_state,
    )
    return new_state, step_metrics

  return train_step
