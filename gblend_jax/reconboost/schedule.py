"""ReconBoost's stages (Hua et al., ICML 2024): which phase a step is in,
who is in the ensemble, and the optimiser state each phase starts from.

Stage ``s = 0, 1, ...`` trains the learner of modality ``m(s) =
modalities[s mod M]`` (official ``schedule.py:L50-L55``: audio on even
stages, visual on odd ones) for ``learner_steps`` (phase 1), then the
whole ensemble for ``rectify_steps`` (phase 2, the global rectification).
Each phase starts a fresh optimiser (``train.py:L296``, ``L371``).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

RECTIFY = 'rectify'  # The phase name of the global rectification.


@dataclasses.dataclass(frozen=True)
class Phase:
  """Where a step lies in the staged schedule.

  Attributes:
    stage: the stage ``s``.
    name: the trained learner's modality (phase 1) or `RECTIFY` (phase 2).
    starts: whether the step is the first of its phase (the optimiser
      state is re-initialised before it).
  """

  stage: int
  name: str
  starts: bool


@dataclasses.dataclass(frozen=True)
class StageSchedule:
  """The alternating stages of ReconBoost, in optimiser steps.

  Attributes:
    modalities: the learners, in the order their stages come.
    learner_steps: steps of phase 1 per stage (the authors' 4 epochs).
    rectify_steps: steps of phase 2 per stage (4 epochs).
    pretrained: modalities in the ensemble from the first stage (the
      authors' ``--use_pretrain``: both pre-trained learners are added
      before stage 0, ``train.py:L243-L249``).
  """

  modalities: tuple[str, ...]
  learner_steps: int
  rectify_steps: int
  pretrained: frozenset[str] = frozenset()

  def __post_init__(self):
    if self.learner_steps < 1 or self.rectify_steps < 1:
      raise ValueError(
          f'Each phase needs at least one step; got learner_steps='
          f'{self.learner_steps}, rectify_steps={self.rectify_steps}.')

  @property
  def stage_steps(self) -> int:
    return self.learner_steps + self.rectify_steps

  def phase(self, step: int) -> Phase:
    """The phase of optimiser step ``step`` (0-based)."""
    stage, offset = divmod(step, self.stage_steps)
    if offset < self.learner_steps:
      name = self.modalities[stage % len(self.modalities)]
      return Phase(stage, name, offset == 0)
    return Phase(stage, RECTIFY, offset == self.learner_steps)

  def members(self, step: int) -> tuple[float, ...]:
    """Which learners the ensemble holds at step ``step`` (0/1 per
    modality): the pre-trained ones, and every one whose stage has begun.

    The authors add a learner after its first phase 1
    (``DynamicNet.add``, ``train.py:L366``); phase 1 never reads the
    ensemble's entry of its own learner (``F_{−m}`` leaves it out), so
    counting it from the start of that phase changes no update, and the
    ensemble evaluated at the end of phase 1 is the authors' ensemble of
    that moment.
    """
    stage = self.phase(step).stage
    trained = set(self.modalities[:min(stage + 1, len(self.modalities))])
    return tuple(float(m in trained or m in self.pretrained)
                 for m in self.modalities)


def fresh_opt_state(
    tx: optax.GradientTransformation, params: Any, opt_state: Any
) -> Any:
  """A new optimiser's state for ``params``, on the same schedule.

  ``tx.init(params)`` (moments and Adam's bias-correction count start
  again, as a new torch optimiser's do), except that every learning-rate
  schedule's step count (`optax.ScaleByScheduleState`) is kept from
  ``opt_state``: the learning rate follows the run's global schedule (the
  authors set each new optimiser's rate from the stage, ``train.py:L446-
  L451``).

  Args:
    tx: the optimiser ``opt_state`` belongs to.
    params: the parameters it updates.
    opt_state: its current state.

  Returns:
    The fresh state, of ``opt_state``'s structure.

  Raises:
    ValueError: when ``tx.init`` gives another structure than
      ``opt_state`` (``tx`` is not the optimiser of that state).
  """
  fresh = tx.init(params)
  if jax.tree.structure(fresh) != jax.tree.structure(opt_state):
    raise ValueError(
        'The optimiser to re-initialise does not match the train state\'s '
        f'optimiser state: {jax.tree.structure(fresh)} vs '
        f'{jax.tree.structure(opt_state)}.')
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(
      lambda new, old: old if is_schedule(new) else new, fresh, opt_state,
      is_leaf=is_schedule)


def phase_sq_norm(
    params: Any, modalities: Sequence[str], phase: str, members: jax.Array
) -> jax.Array:
  r"""``½‖θ‖²`` over the parameters the phase's optimiser holds.

  Phase 1 of learner ``m`` holds ``encoder_m`` and the shared head
  (``model.parameters()`` with ``model.fc = head``, ``train.py:L296``);
  phase 2 holds the ensemble members' encoders, the shared head and β
  (``DynamicNet.parameters``). ``weight_decay · phase_sq_norm`` added to
  the loss adds ``weight_decay · θ`` to those parameters' gradients: torch
  SGD's ``weight_decay``, on no other parameter.

  Args:
    params: a `gblend_jax.models.ensemble.SharedHeadEnsemble`'s parameters.
    modalities: the modalities in fusion order.
    phase: a modality (phase 1) or `RECTIFY`.
    members: ``[M]`` 0/1 membership (phase 2).

  Returns:
    The scalar ``½ Σ θ²`` over those parameters.
  """
  def half_sq(tree):
    return 0.5 * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))

  total = half_sq(params['shared_head'])
  if phase == RECTIFY:
    total += half_sq(params['beta'])
    for i, m in enumerate(modalities):
      total += members[i] * half_sq(params[f'encoder_{m}'])
  else:
    total += half_sq(params[f'encoder_{phase}'])
  return total
