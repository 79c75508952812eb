"""The compiled pieces of a run: optimiser, initial state, train and eval steps.

`build_program` composes a model, its heads and its methods into what the
trainer runs: the optimiser with every method's transform chained before it,
the jitted initialisation, one jitted train step per step variant, and the
jitted eval step. The trainer, the benchmark (`experiments/benchmark.py`) and
the tests build their steps here, so that what is timed and tested is exactly
what the trainer trains with.
"""

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import optax

from gblend_jax import models
from gblend_jax.training import methods as methods_lib
from gblend_jax.training import optim
from gblend_jax.training import steps


@dataclasses.dataclass
class Program:
  """The compiled pieces of one run (see `build_program`).

  Attributes:
    tx: the optimiser, with every method's transform chained before it.
    learning_rate: its schedule.
    hooks: the methods' composed `methods.StepHooks`.
    init: jitted ``rng -> TrainState``.
    eval_step: jitted ``(state, batch) -> metric sums``
      (`steps.make_eval_step`).
    make_step: ``(**variant) -> train step`` before jit (for tests and the
      benchmark's cost analysis); `train_step` jits and caches it.
  """

  tx: optax.GradientTransformation
  learning_rate: optax.Schedule
  hooks: methods_lib.StepHooks
  init: Callable[[jax.Array], steps.TrainState]
  eval_step: Callable[..., dict[str, jax.Array]]
  make_step: Callable[..., Callable[..., Any]]
  jit_kwargs: dict[str, Any]
  _compiled: dict[tuple, Callable[..., Any]] = dataclasses.field(
      default_factory=dict)

  def train_step(self, variant: tuple = ()) -> Callable[..., Any]:
    """The jitted ``train_step(state, batch, args) -> (state, metrics)`` of
    a step variant (`methods.step_variant`), compiled once per variant."""
    if variant not in self._compiled:
      self._compiled[variant] = jax.jit(
          self.make_step(**dict(variant)), donate_argnums=(0,),
          **self.jit_kwargs)
    return self._compiled[variant]

  def abstract_state(self, rng: jax.Array, sharding=None) -> Any:
    """The state's shapes and dtypes (with ``sharding``), for a restore."""
    shapes = jax.eval_shape(self.init, rng)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        shapes)


def build_program(
    run: methods_lib.RunInfo,
    methods: Sequence[methods_lib.Method],
    *,
    replicated: jax.sharding.Sharding | None = None,
    skip_nonfinite_steps: bool = False,
) -> Program:
  """Composes the model, its heads and its methods into a `Program`.

  Args:
    run: the run's facts (config, model, modalities, heads, length).
    methods: the enabled methods (`methods.enabled_methods`).
    replicated: the sharding of the state and of the step's metrics; None
      leaves placement to JAX (one device).
    skip_nonfinite_steps: `steps.guard_nonfinite`'s ``skip``.

  Returns:
    The program; train steps compile on first use.
  """
  config = run.config
  schedule_args = {'total_steps': run.total_steps,
                   'steps_per_epoch': run.steps_per_epoch}
  optimizer = optim.build_optimizer(config.optimizer, **schedule_args)
  learning_rate = optim.learning_rate_schedule(config.optimizer,
                                               **schedule_args)
  tx = methods_lib.chain_transforms(methods, optimizer)
  hooks = methods_lib.compose_hooks(methods)
  heads = run.heads
  out = {} if replicated is None else {
      'out_shardings': (replicated, replicated)}

  def make_step(**variant):
    return steps.guard_nonfinite(
        steps.make_train_step(run.model, tx, learning_rate, heads, hooks,
                              **variant),
        heads, skip=skip_nonfinite_steps)

  modalities = tuple(run.modalities)
  late_fusion = models.has_unimodal_shares(config.model)
  eval_step = steps.make_eval_step(
      run.model, modalities if late_fusion and len(modalities) > 1 else ())
  init = functools.partial(steps.TrainState.create, run.model, tx,
                           input_shapes=dict(run.modalities))
  placed = {} if replicated is None else {'out_shardings': replicated}
  return Program(
      tx=tx, learning_rate=learning_rate, hooks=hooks,
      init=jax.jit(init, **placed),
      eval_step=jax.jit(eval_step, **placed),
      make_step=make_step, jit_kwargs=out,
  )


def plain_train_step(
    run: methods_lib.RunInfo,
    tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    *,
    replicated: jax.sharding.Sharding | None = None,
    head: str | None = None,
) -> Callable[..., Any] | None:
  """A jitted train step with no method hooks and no donation (Algorithm
  1's head copies): ``(state, batch, {'head_weights': w})``.

  With ``head``, the step of that head's model alone
  (`gblend_jax.training.steps.head_train_step`; ``head_weights`` of shape
  [1]), or None if the model has no such restriction for ``head``.
  """
  out = {} if replicated is None else {
      'out_shardings': (replicated, replicated)}
  if head is None:
    step = steps.make_train_step(run.model, tx, learning_rate, run.heads)
  else:
    step = steps.head_train_step(run.model, tx, learning_rate, head)
  return None if step is None else jax.jit(step, **out)
