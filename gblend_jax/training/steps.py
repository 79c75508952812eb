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
from gblend_jax.blending import per_loss
from gblend_jax.modulation import unimodal

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
# params -> ([H] head losses, (outputs, new batch_stats, objective metrics)):
# the training forward pass of one step (`training_losses`).
LossVector = Callable[[Any], tuple[jax.Array, tuple[Any, Any, dict]]]


@flax.struct.dataclass
class Gradients:
  """What an `UpdateRule` hands the optimiser, and what the step logs.

  Attributes:
    grads: the gradients ``tx.update`` receives (params-shaped, or with a
      leading loss axis for `gblend_jax.gradient_blend`).
    per_head: ``[H]`` training losses of the step's forward pass.
    outputs: the model's outputs of that pass.
    batch_stats: the updated batch statistics.
    objective_metrics: metrics of the objective (mixup's λ, ...).
    update_kwargs: extra keyword arguments of ``tx.update``.
  """

  grads: Any
  per_head: jax.Array
  outputs: Any
  batch_stats: Any
  objective_metrics: Any
  update_kwargs: Any


# (loss_vector, state, args, **variant) -> (Gradients, report), where args
# are the step's arrays with the batch's labels under 'label', and
# report(opt_state) -> (total loss, gradient) gives what the step logs as
# 'loss' and 'grad_norm' after the update (the blend of the updated weights
# for gradient-space G-Blend).
UpdateRule = Callable[..., tuple[Gradients, Callable[..., tuple[Any, Any]]]]
# (tx, loss_vector, state, args, **variant) -> (params, opt_state, Gradients,
# report): an update rule that also applies ``tx`` itself, as often as it
# needs (MLA's one optimiser step per modality, `gblend_jax.mla.method`);
# it replaces the update rule and the step's one ``tx.update``.
UpdateSteps = Callable[..., tuple[Any, Any, Gradients, Callable[..., Any]]]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree."""

  step: jax.Array  # shape=(), dtype=int32
  params: Any
  batch_stats: Any  # {} for models without BatchNorm.
  opt_state: optax.OptState
  rng: jax.Array  # shape=(2,), dtype=uint32; folded with the step.

  @classmethod
  def create(
      cls,
      model: nn.Module,
      tx: optax.GradientTransformation,
      rng: jax.Array,
      input_shapes: Mapping[str, Sequence[int]],
  ) -> 'TrainState':
    """A freshly initialised state (step 0).

    Args:
      model: the classifier; initialised in evaluation mode on a batch of
        one zero example.
      tx: the optimiser (with every method's transform chained before it).
      rng: the run's key; split into the parameter, dropout and state keys.
      input_shapes: ``{modality: per-example shape}``.

    Returns:
      The state; jit this (the trainer does, with ``out_shardings``) so that
      every leaf has a buffer of its own, as donation needs.
    """
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    dummy = {m: jnp.zeros((1, *shape), jnp.float32)
             for m, shape in input_shapes.items()}
    variables = model.init(
        {'params': params_rng, 'dropout': dropout_rng}, dummy, train=False
    )
    params = variables['params']
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(params),
        rng=state_rng,
    )


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


def training_losses(
    model: nn.Module, state: TrainState, batch, heads,
    objective: Objective | None = None, loss_args: Any = None,
) -> LossVector:
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


def weighted_sum_rule(
    loss_vector: LossVector, state: TrainState, args: Mapping[str, Any]
) -> tuple[Gradients, Callable[..., tuple[Any, Any]]]:
  """The default `UpdateRule`: one backward pass of ``Σ_i w_i L_i``
  (G-Blend, Eq. 3) with ``w = args['head_weights']``.

  One compiled step serves naive training (``w`` one-hot on the fused
  head), fixed weights, and weights an estimator replaces between steps.
  """
  head_weights = args['head_weights']

  def weighted_sum(params):
    per_head, aux = loss_vector(params)
    return jnp.dot(head_weights, per_head), (per_head, *aux)

  (total, (per_head, out, batch_stats, objective_metrics)), grads = (
      jax.value_and_grad(weighted_sum, has_aux=True)(state.params)
  )
  gradients = Gradients(
      grads=grads, per_head=per_head, outputs=out, batch_stats=batch_stats,
      objective_metrics=objective_metrics, update_kwargs={},
  )
  return gradients, lambda opt_state: (total, grads)


def make_per_loss_rule(
    own_params: per_loss.OwnParams | None = None,
) -> UpdateRule:
  """An `UpdateRule` that hands the optimiser every head's gradient.

  One forward pass and the vector-Jacobian products of
  `gblend_jax.blending.per_loss.per_loss_grads` give the per-loss
  gradients, stacked on a leading loss axis in head order, for a transform
  that combines them (MMPareto): H products (``jax.jacrev``), or two when
  ``own_params`` confines the unimodal losses to disjoint encoders. The
  step logs ``Σ_i L_i`` and the gradient of that sum.

  Args:
    own_params: for each head, the top-level parameter keys its loss
      reaches, or None (``per_loss.model_own_params(model, heads)``); None:
      ``jax.jacrev``.

  Returns:
    ``rule(loss_vector, state, args)``.
  """

  def rule(loss_vector, state, args):
    del args
    grads, per_head, (out, batch_stats, metrics) = per_loss.per_loss_grads(
        loss_vector, state.params, own_params=own_params, has_aux=True)
    gradients = Gradients(
        grads=grads, per_head=per_head, outputs=out,
        batch_stats=batch_stats, objective_metrics=metrics,
        update_kwargs={},
    )
    summed = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
    return gradients, lambda opt_state: (jnp.sum(per_head), summed)

  return rule


# H vector-Jacobian products (``jax.jacrev``), whatever the model.
per_loss_rule = make_per_loss_rule()


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    heads: Sequence[str],
    hooks: Any = None,
    **variant: Any,
) -> Callable[..., tuple[TrainState, dict]]:
  """The train step: per-head losses, an update rule, the optimiser.

  Args:
    model: the classifier.
    tx: the optimiser, with every method's transform chained before it.
    learning_rate: its schedule, for logging.
    heads: head names in blend order; ``head_weights[i]`` weights
      ``heads[i]``.
    hooks: a `gblend_jax.training.methods.StepHooks` (None: plain
      per-head cross-entropy, `weighted_sum_rule`, nothing else):
      ``objective`` replaces per-head cross-entropy and receives
      ``args['loss_args']``; ``update_rule`` replaces `weighted_sum_rule`;
      ``update_args(params, batch_stats, outputs, batch)`` gives extra
      ``tx.update`` arguments from this step's forward pass (OGM-GE's
      scores) and metrics; ``opt_state_metrics(opt_state)`` is read after
      the update; ``update_steps`` replaces the update rule and the one
      ``tx.update`` (`UpdateSteps`: several optimiser steps per batch).
    **variant: static keyword arguments of the update rule (e.g.
      ``estimate=True``), fixed at compile time.

  Returns:
    ``train_step(state, batch, args) -> (state, metrics)``, where ``args``
    holds the step's arrays (``head_weights`` ``[H]``, and whatever the
    methods' `step_args` add).
  """
  objective = getattr(hooks, 'objective', None)
  rule = getattr(hooks, 'update_rule', None) or weighted_sum_rule
  update_args = getattr(hooks, 'update_args', None)
  opt_state_metrics = getattr(hooks, 'opt_state_metrics', None)
  update_steps = getattr(hooks, 'update_steps', None)

  def train_step(state: TrainState, batch, args: Mapping[str, Any]):
    loss_vector = training_losses(
        model, state, batch, heads, objective, args.get('loss_args')
    )
    extra_args, extra_metrics = {}, {}
    if update_steps is not None:
      params, opt_state, gradients, report = update_steps(
          tx, loss_vector, state, args, **variant)
    else:
      # The rule also sees the batch's labels (PMR's prototypical loss).
      gradients, report = rule(loss_vector, state,
                               {**args, 'label': batch['label']}, **variant)
      if update_args is not None:
        extra_args, extra_metrics = update_args(
            state.params, state.batch_stats, gradients.outputs, batch
        )
      updates, opt_state = tx.update(
          gradients.grads, state.opt_state, state.params,
          **gradients.update_kwargs, **extra_args,
      )
      params = optax.apply_updates(state.params, updates)
    total, logged_grads = report(opt_state)
    step_metrics = _step_metrics(
        total, gradients.per_head, gradients.outputs['logits'],
        batch['label'], heads, logged_grads, params,
        learning_rate(state.step),
    )
    step_metrics.update(extra_metrics)
    step_metrics.update(gradients.objective_metrics)
    if opt_state_metrics is not None:
      step_metrics.update(opt_state_metrics(opt_state))
    new_state = state.replace(
        step=state.step + 1, params=params,
        batch_stats=gradients.batch_stats, opt_state=opt_state,
    )
    return new_state, step_metrics

  return train_step


def head_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    head: str,
) -> Callable[..., tuple[TrainState, dict]] | None:
  """The train step of one head's model alone, or None (not jitted).

  The model's ``head_model(head)`` (e.g.
  `gblend_jax.models.MultiModalClassifier`'s ``encoder_<m>`` and
  ``head_<m>`` under late fusion) trained on ``head``'s loss: what
  Algorithm 1 of G-Blend trains as that head's copy, with ``head_weights``
  of shape [1].

  Args:
    model: the classifier; one without ``head_model`` has no such step.
    tx: the optimiser.
    learning_rate: its schedule, for logging.
    head: a head name.

  Returns:
    `make_train_step` of the restricted model, or None where the head's
    loss may reach any parameter (the fused head, mid fusion, a shared
    head).
  """
  own = getattr(model, 'head_model', lambda _: None)(head)
  if own is None:
    return None
  return make_train_step(own, tx, learning_rate, (head,))


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
      `make_train_step`.
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
      of the fused logits (`gblend_jax.modulation.unimodal`) is measured as
      the extra heads ``unimodal_<m>``: how well each encoder is trained
      inside the fused model, without a linear probe (OGM-GE's diagnostic).

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
      shares = unimodal.classifier_unimodal_logits(
          model, variables, out['features'], unimodal_modalities
      )
      logits.update({f'{UNIMODAL_PREFIX}{m}': v for m, v in shares.items()})
    return metrics_lib.head_metric_sums(logits, batch['label'], batch['mask'])

  return eval_step
