"""The method interface: how a training method plugs into the one trainer.

A method (Gradient Blending, OGM-GE, the long-tail tricks, ...) is a
`Method` subclass in its family's ``method.py``. It owns one config block
(``config.<block>``) and implements only the entry points it needs; every
entry point of the base class does nothing. The trainer
(`gblend_jax.training.trainer`) builds the methods the config turns on
(`enabled_methods`), checks their combinations in one table
(`INCOMPATIBLE`), and calls the entry points of whichever methods it has,
without naming any:

  config      `default_config` (the block), `check_config` (before any work),
              `enabled` (whether the config turns the method on),
              `features` (what it uses, for the combination table)
  data        `training_source` (the examples an epoch draws from),
              `sampler` (the order they are drawn in)
  optimiser   `transform` (an optax transform chained before the optimiser),
              `wrap_optimizer` (the optimiser itself replaced, e.g. by
              stages with optimisers of their own)
  step        `step_hooks` (objective, update rule, extra ``tx.update``
              arguments, metrics from the optimiser state), `step_variant`
              (static arguments that pick a compiled step), `step_args`
              (the per-step arrays: head weights, loss arguments, a
              held-out batch)
  host        `start` (services of the running trainer), `before_step`
              (host-side work such as Algorithm 1's estimates; it may
              return a new train state, for a stage that re-initialises
              part of it),
              `host_state` / `restore` (checkpointed with the train state)
  end         `final_metrics` (extra metrics of an evaluated state),
              `results` (keys of ``results.json``), `draw_figures`
  logging     `metric_prefix`: step metrics under this prefix are logged
              as they are (``blend/...``); all others as ``train_step/...``

The registry lists the methods by module path (`METHOD_MODULES`), as
big_vision names its models: adding a method is one module with one
`Method` subclass plus its line here (see WORKSPACE.md, "How to add a
method").
"""

import dataclasses
import importlib
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import ClassVar

import ml_collections
import optax

from gblend_jax.training import steps

# Method modules, each defining exactly one `Method` subclass named in
# ``METHOD``. Their order is the order of the chained transforms and of the
# entry-point calls.
METHOD_MODULES = (
    'gblend_jax.blending.method',
    'gblend_jax.modulation.method',
    'gblend_jax.longtail.method',
    'gblend_jax.mmpareto.method',
    'gblend_jax.mla.method',
    'gblend_jax.agm.method',
    'gblend_jax.pmr.method',
    'gblend_jax.reconboost.method',
)

# Pairs of method features that cannot be combined, with the reason. Each
# method says which features a config uses (`Method.features`); the
# trainer refuses a config whose methods use two features of one pair.
INCOMPATIBLE: dict[frozenset[str], str] = {
    frozenset({'per_loss_gradients'}): (
        'both combine the per-loss gradients of the step in their own way '
        "(gradient-space G-Blend's weights, MMPareto's Pareto rule); one "
        "would receive the other's combined gradient"
    ),
    frozenset({'per_loss_gradients', 'gradient_transform'}): (
        'per-loss gradients are combined by one transform (gradient-space '
        'G-Blend, MMPareto), and OGM-GE transforms the gradient of the same '
        "step: one of the two would see the other's output, which neither "
        'paper defines'
    ),
    frozenset({'per_loss_gradients', 'objective'}): (
        'gradient-space G-Blend and MMPareto combine per-head '
        'cross-entropy gradients; a long-tail loss, DRW or mixup replaces '
        'that objective'
    ),
    frozenset({'model_copies', 'objective'}): (
        "Algorithm 1 (blend.mode='offline'/'online') trains each head's "
        'model copy with per-head cross-entropy on the plain shuffle; with a '
        'long-tail loss, DRW or mixup the estimates would measure another '
        'objective than the one trained'
    ),
    frozenset({'model_copies', 'resampling'}): (
        "Algorithm 1 (blend.mode='offline'/'online') trains each head's "
        'model copy on the instance-balanced shuffle; with a long-tail '
        'sampler the estimates would measure another data distribution than '
        'the one trained'
    ),
    frozenset({'modality_scores', 'mixup'}): (
        "OGM-GE's scores are the true-class probabilities of each "
        "modality's share of the logits; with mixup the inputs are mixed and "
        'no single true class exists'
    ),
    frozenset({'alternating_steps', 'per_loss_gradients'}): (
        "MLA takes one optimiser step per modality's own loss; "
        'gradient-space G-Blend and MMPareto combine the per-loss gradients '
        'of one step, which MLA never forms'
    ),
    frozenset({'alternating_steps', 'gradient_transform'}): (
        "OGM-GE scales each encoder's gradient of the fused loss by the "
        "modalities' scores of the same step; MLA trains no fused loss and "
        'updates one modality at a time'
    ),
    frozenset({'alternating_steps', 'model_copies'}): (
        "Algorithm 1 (blend.mode='offline'/'online') estimates weights of "
        'the per-head losses of one step; MLA trains each modality in turn '
        'and would ignore them'
    ),
    frozenset({'alternating_steps', 'head_weights'}): (
        "fixed G-Blend weights weight the per-head losses of one step; MLA "
        'trains each modality in turn and would ignore them'
    ),
    frozenset({'alternating_steps', 'objective'}): (
        "MLA's steps train each modality's cross-entropy through the shared "
        'head; a long-tail loss, DRW or mixup replaces that objective, a '
        'combination neither paper defines'
    ),
    frozenset({'alternating_steps', 'shapley_modulation'}): (
        "AGM modulates each modality's share of the fused loss; MLA trains "
        'no fused loss, one modality at a time through a shared head'
    ),
    frozenset({'shapley_modulation', 'gradient_transform'}): (
        'AGM scales each modality\'s gradient inside the loss graph and '
        'OGM-GE scales the encoders\' gradients after it: each modality '
        'would be modulated twice, by two rules neither paper combines'
    ),
    frozenset({'shapley_modulation', 'per_loss_gradients'}): (
        'gradient-space G-Blend and MMPareto combine per-head cross-entropy '
        "gradients; AGM's fused loss carries its own per-modality scale, "
        'which their rules would mix with the other heads'
    ),
    frozenset({'shapley_modulation', 'objective'}): (
        "AGM's objective is the cross-entropy of its modulated fused "
        'logits; a long-tail loss, DRW or mixup replaces the objective, and '
        'a step has one'
    ),
    frozenset({'shapley_modulation', 'model_copies'}): (
        "Algorithm 1 (blend.mode='offline'/'online') trains each head's "
        'model copy with plain cross-entropy; with AGM the estimates would '
        'measure another objective than the one trained'
    ),
    frozenset({'alternating_steps', 'prototype_loss'}): (
        "MLA replaces the step's update with one optimiser step per "
        "modality's loss; PMR adds its prototypical loss to the one backward "
        'pass of the fused loss, which MLA never forms'
    ),
    frozenset({'prototype_loss', 'per_loss_gradients'}): (
        "PMR adds its prototypical loss to one backward pass of the step's "
        'weighted loss; gradient-space G-Blend and MMPareto take one '
        'gradient per head loss, where that term has no place'
    ),
    frozenset({'prototype_loss', 'mixup'}): (
        "PMR's prototypes, ratio and prototypical loss need each example's "
        'true class; with mixup the inputs are mixed and no single true '
        'class exists'
    ),
    frozenset({'staged_training', 'alternating_steps'}): (
        'ReconBoost and MLA both train the modalities in turn, each by its '
        'own schedule and loss: one would undo the other'
    ),
    frozenset({'staged_training', 'shapley_modulation'}): (
        "ReconBoost's phases train a learner or the ensemble with their own "
        "losses; AGM's modulated fused loss has no place in them"
    ),
    frozenset({'staged_training', 'prototype_loss'}): (
        "ReconBoost's phases train a learner or the ensemble with their own "
        "losses; PMR's prototypical term has no place in them"
    ),
    frozenset({'staged_training', 'per_loss_gradients'}): (
        'ReconBoost trains one loss per phase (a learner, then the '
        'ensemble); gradient-space G-Blend and MMPareto combine every '
        "head's loss in each step"
    ),
    frozenset({'staged_training', 'gradient_transform'}): (
        'ReconBoost trains one learner at a time and re-initialises the '
        "optimiser's state per phase; OGM-GE modulates the encoders of a "
        'joint step against each other'
    ),
    frozenset({'staged_training', 'model_copies'}): (
        "Algorithm 1 (blend.mode='offline'/'online') estimates weights of a "
        "jointly trained model's heads; ReconBoost trains no head weights"
    ),
    frozenset({'staged_training', 'objective'}): (
        "ReconBoost's phases have their own losses (the reconcilement loss, "
        "the ensemble's cross-entropy); a long-tail loss, DRW or mixup "
        'replaces the objective'
    ),
}


@dataclasses.dataclass(frozen=True)
class StepHooks:
  """What a method changes inside the compiled train step.

  Attributes:
    objective: ``(key, batch, loss_args) -> (inputs, head_losses, metrics,
      interceptor)``: a training objective other than per-head
      cross-entropy (`gblend_jax.training.steps.Objective`). At most one
      method provides it.
    update_rule: how per-head losses become the gradients ``tx.update``
      receives (`gblend_jax.training.steps.UpdateRule`); default: the
      gradient of ``Σ_i w_i L_i`` with the step's head weights. At most one
      method provides it.
    update_args: ``(params, batch_stats, outputs, batch) -> (kwargs,
      metrics)``: keyword arguments for ``tx.update`` from this step's
      forward pass (OGM-GE's scores), and metrics to log.
    opt_state_metrics: ``opt_state -> metrics`` read after the update.
    update_steps: ``(tx, loss_vector, state, args, **variant) -> (params,
      opt_state, gradients, report)``: an update rule that applies the
      optimiser itself, several times per batch if it needs
      (`gblend_jax.training.steps.UpdateSteps`; MLA's alternating
      unimodal steps). It replaces the update rule, the update arguments
      and the step's one ``tx.update``. At most one method provides it.
  """

  objective: Callable[..., Any] | None = None
  update_rule: Callable[..., Any] | None = None
  update_args: Callable[..., Any] | None = None
  opt_state_metrics: Callable[[optax.OptState], dict] | None = None
  update_steps: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """The facts of a run that a method is built from (no device work).

  Attributes:
    config: the run config.
    model: the classifier (a flax module).
    modalities: ``{modality: per-example shape}`` in fusion order.
    heads: head names in blend order (modalities, then ``'fused'``).
    steps_per_epoch: optimiser steps per epoch of the training source.
    total_steps: length of the run.
    splits: the run's data (`gblend_jax.data.DatasetSplits`), or None when
      only the step is built (the benchmark).
    global_batch_size: examples per step over all processes.
  """

  config: ml_collections.ConfigDict
  model: Any
  modalities: Mapping[str, tuple[int, ...]]
  heads: tuple[str, ...]
  steps_per_epoch: int
  total_steps: int
  splits: Any = None
  global_batch_size: int = 0


@dataclasses.dataclass(frozen=True)
class Services:
  """What the running trainer lends a method's host-side entry points.

  Attributes:
    workdir: the run's work directory.
    put: places a host pytree on the devices, replicated.
    to_global: turns this process's share of a batch into global arrays.
    train_iterator: ``(source, seed) -> iterator`` of this process's
      batches of the global batch size, in the trainer's shuffle order and
      with its resumable state (``get_state``/``set_state``).
    evaluate: ``(state, {split: source}) -> metrics`` in evaluation mode.
    eval_batches: ``source -> iterator`` of global evaluation batches.
    build_train_step: ``(tx, learning_rate, head=None) -> jitted
      step(state, batch, args)`` with the trainer's shardings and no method
      hooks (Algorithm 1's head copies); with ``head``, the step of that
      head's model alone, or None where the model has none
      (`gblend_jax.training.program.plain_train_step`).
    write_metrics: ``(step, metrics) -> None``: a row of ``metrics.jsonl``.
  """

  workdir: str
  put: Callable[[Any], Any]
  to_global: Callable[[Any], Any]
  train_iterator: Callable[..., Iterator[Any]]
  evaluate: Callable[..., dict[str, float]]
  eval_batches: Callable[[Any], Iterator[Any]]
  build_train_step: Callable[..., Callable[..., Any]]
  write_metrics: Callable[[int, Mapping[str, float]], None]


class Method:
  """A training method; each entry point's default does nothing.

  Subclasses set ``block`` (their config block's name) and override what
  they need. An instance lives for one run, built from `RunInfo`.
  """

  block: ClassVar[str] = ''
  metric_prefix: ClassVar[str | None] = None

  # ---- Config (class-level: no instance exists yet).

  @staticmethod
  def default_config() -> ml_collections.ConfigDict:
    """The method's config block, ``config.<block>``, with defaults."""
    return ml_collections.ConfigDict()

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the key for a bad block (before any work);
    called whether or not the method is enabled."""
    del config

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    """Whether the config turns the method on."""
    del config
    return False

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    """What the enabled method uses, for the `INCOMPATIBLE` table."""
    del config
    return frozenset()

  @classmethod
  def training_source(cls, config: ml_collections.ConfigDict, source: Any):
    """The examples an epoch draws from (default: the training split)."""
    del config
    return source

  # ---- One run.

  def __init__(self, run: RunInfo):
    self.run = run
    self.config = run.config

  def sampler(self) -> Any:
    """The training order (a `gblend_jax.longtail.sampling.EpochSampler`),
    or None for the plain shuffle."""
    return None

  def transform(self) -> optax.GradientTransformation | None:
    """An optax transform chained before the optimiser, or None."""
    return None

  def wrap_optimizer(
      self, optimizer: optax.GradientTransformation
  ) -> optax.GradientTransformation:
    """The optimiser to train with in place of ``optimizer`` (the run's,
    before the methods' transforms are chained in front); default: itself."""
    return optimizer

  def step_hooks(self) -> StepHooks:
    """What the method changes inside the compiled train step."""
    return StepHooks()

  def step_variant(self, step: int) -> dict[str, Any]:
    """Static keyword arguments of the step about to run (each distinct
    value compiles its own step)."""
    del step
    return {}

  def step_args(self, step: int, state: Any) -> dict[str, Any]:
    """Device arrays of the step about to run: ``head_weights``,
    ``loss_args``, ``holdout_batch``, ..."""
    del step, state
    return {}

  def start(self, services: Services) -> None:
    """Called once before the loop (after a resume's `restore`)."""
    self.services = services

  def before_step(self, step: int, state: Any) -> Any | None:
    """Host-side work before training step ``step``.

    Returns:
      None to train on ``state`` as it is, or the train state to train on
      from this step (a method's stage that re-initialises the optimiser
      state or a classifier, as decoupled classifier learning does); the
      trainer checkpoints what it trains on, so a resumed run must see
      the same change again or find it already made.
    """
    del step, state
    return None

  def host_state(self) -> dict[str, Any]:
    """JSON-serialisable state that a resumed run needs."""
    return {}

  def restore(self, host_state: Mapping[str, Any]) -> None:
    """Restores what `host_state` returned."""
    del host_state

  def final_metrics(self, state: Any) -> dict[str, float]:
    """Extra metrics of a state evaluated at the end (final and best)."""
    del state
    return {}

  def results(self, state: Any) -> dict[str, Any]:
    """Extra keys of ``results.json`` from the final state."""
    del state
    return {}

  def draw_figures(self, workdir: str) -> list[str]:
    """Draws the method's figures into ``workdir``; returns their paths."""
    del workdir
    return []


def modalities_with_heads(run: RunInfo, block: str,
                          each_with: str) -> tuple[str, ...]:
  """The run's modalities, checked to be several, each with its head and
  then the fused head (``run.heads``), as per-modality methods need.

  Args:
    run: the run's facts.
    block: the method's config block, for the message.
    each_with: what each modality must have, for the message.

  Raises:
    ValueError: naming ``config.<block>.enabled`` and the heads.
  """
  modalities = tuple(run.modalities)
  if len(modalities) < 2 or run.heads != (*modalities, steps.FUSED):
    raise ValueError(
        f'config.{block}.enabled=True needs several modalities, each with '
        f'{each_with}, then the fused head; the heads are '
        f'{list(run.heads)}.')
  return modalities


def method_classes() -> tuple[type[Method], ...]:
  """Every registered method class, in `METHOD_MODULES` order."""
  return tuple(importlib.import_module(name).METHOD
               for name in METHOD_MODULES)


def default_blocks() -> dict[str, ml_collections.ConfigDict]:
  """``{block: default block}`` of every registered method."""
  return {cls.block: cls.default_config() for cls in method_classes()}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks every method's block, then the enabled methods' combination.

  Raises:
    ValueError: from a method's check, or naming the two features of an
      `INCOMPATIBLE` pair and the reason.
  """
  classes = method_classes()
  for cls in classes:
    cls.check_config(config)
  used = {cls.block: cls.features(config)
          for cls in classes if cls.enabled(config)}
  check_combination(used)


def check_combination(used: Mapping[str, frozenset[str]]) -> None:
  """Refuses two enabled methods whose features are `INCOMPATIBLE`.

  Args:
    used: ``{block: features}`` of each enabled method.

  Raises:
    ValueError: naming both config blocks, both features and the reason.
  """
  blocks = sorted(used)
  for i, first in enumerate(blocks):
    for second in blocks[i + 1:]:
      for a in sorted(used[first]):
        for b in sorted(used[second]):
          reason = INCOMPATIBLE.get(frozenset({a, b}))
          if reason:
            raise ValueError(
                f'config.{first} ({a}) cannot be combined with '
                f'config.{second} ({b}): {reason}.'
            )


def enabled_methods(run: RunInfo) -> list[Method]:
  """The methods ``run.config`` turns on, built for this run."""
  return [cls(run) for cls in method_classes() if cls.enabled(run.config)]


def training_source(config: ml_collections.ConfigDict, source: Any) -> Any:
  """The training source after every enabled method's `training_source`."""
  for cls in method_classes():
    if cls.enabled(config):
      source = cls.training_source(config, source)
  return source


def compose_hooks(methods: Sequence[Method]) -> StepHooks:
  """One `StepHooks` from every method's hooks.

  Update arguments and optimiser-state metrics of all methods are merged;
  the objective and the update rule come from at most one method each
  (the combination table keeps it so).

  Raises:
    ValueError: when two methods provide an objective or an update rule.
  """
  hooks = [(type(m).block, m.step_hooks()) for m in methods]
  single = {}
  for field in ('objective', 'update_rule', 'update_steps'):
    owners = [(b, getattr(h, field)) for b, h in hooks
              if getattr(h, field) is not None]
    if len(owners) > 1:
      raise ValueError(
          f'config.{owners[0][0]} and config.{owners[1][0]} both replace the '
          f'step\'s {field}; only one method may.'
      )
    single[field] = owners[0][1] if owners else None
  update_args = [h.update_args for _, h in hooks if h.update_args]
  state_metrics = [h.opt_state_metrics for _, h in hooks
                   if h.opt_state_metrics]

  def merged_update_args(*args):
    kwargs, metrics = {}, {}
    for fn in update_args:
      more_kwargs, more_metrics = fn(*args)
      kwargs.update(more_kwargs)
      metrics.update(more_metrics)
    return kwargs, metrics

  def merged_state_metrics(opt_state):
    metrics = {}
    for fn in state_metrics:
      metrics.update(fn(opt_state))
    return metrics

  return StepHooks(
      objective=single['objective'],
      update_rule=single['update_rule'],
      update_args=merged_update_args if update_args else None,
      opt_state_metrics=merged_state_metrics if state_metrics else None,
      update_steps=single['update_steps'],
  )


def chain_transforms(
    methods: Sequence[Method], optimizer: optax.GradientTransformation
) -> optax.GradientTransformation:
  """``optax.chain(*method transforms, optimizer)`` (just the optimiser
  when no method adds a transform), ``optimizer`` first passed through
  every method's `Method.wrap_optimizer`."""
  for method in methods:
    optimizer = method.wrap_optimizer(optimizer)
  transforms = [t for t in (m.transform() for m in methods) if t is not None]
  return optax.chain(*transforms, optimizer) if transforms else optimizer


def step_variant(methods: Sequence[Method], step: int) -> tuple:
  """The static arguments of step ``step`` as a hashable key."""
  variant = {}
  for method in methods:
    variant.update(method.step_variant(step))
  return tuple(sorted(variant.items()))


def logged_name(methods: Sequence[Method], name: str) -> str:
  """A step metric's name in ``metrics.jsonl``: as it is under a method's
  `metric_prefix`, else ``train_step/<name>``."""
  prefixes = tuple(p for p in (type(m).metric_prefix for m in methods) if p)
  return name if prefixes and name.startswith(prefixes) else (
      f'train_step/{name}')

