r"""ReconBoost in the trainer: the ``config.reconboost`` block as a `Method`.

ReconBoost (Hua et al., ICML 2024) trains one modality learner at a time,
boosting-style, on the model ``model.fusion='ensemble'``
(`gblend_jax.models.ensemble.SharedHeadEnsemble`: learners ``f_m =
H(φ_m(x_m))`` with one shared head ``H``, ensemble ``F = β Σ_m f_m``).
Stage ``s`` (official ``train.py``, ``schedule.py``):

  phase 1  learner ``m(s)`` (modalities in turn) for ``learner_epochs``,
           with the reconcilement-weighted loss
           ``ℓ = −((w_1 − w_2 q_y)/C) log p_y``, ``p = softmax(f_m)``,
           ``q = softmax(sg(F_{−m}))`` (`boosting.reconcilement_loss`);
           only ``φ_m`` and ``H`` are trained;
  phase 2  the global rectification for ``rectify_epochs``:
           ``CE(β Σ_m f_m, y)`` over every member's encoder, ``H`` and β.

Each phase starts from a fresh optimiser state (`schedule.fresh_opt_state`,
returned by `before_step` at the phase's first step; the learning rate
keeps the run's global schedule). A learner joins the ensemble when its
first stage begins (`schedule.StageSchedule.members`; a pre-trained
encoder, ``config.init_encoders``, joins from the start, as the authors'
``--use_pretrain``); membership lives in the
model's ``batch_stats`` (``members``), set by `before_step`. Both are in
the checkpointed train state, so a resumed run, mid-stage or at a phase
boundary, repeats the straight run.

The trainer's ``fused`` head is the ensemble ``F`` over its members, what
the authors test (``DynamicNet.forward``, eval mode); each modality head is
its learner ``f_m``. In ``train_step/<m>/loss`` the trainer logs learner
``m``'s reconcilement loss against the current ensemble (the loss phase 1
trains), and in ``train_step/fused/loss`` the ensemble's cross-entropy
(phase 2's loss); ``reconboost/stage``, ``reconboost/beta`` log the stage
and β.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gblend_jax.models import builder
from gblend_jax.models import ensemble
from gblend_jax.reconboost import boosting
from gblend_jax.reconboost import schedule as schedule_lib
from gblend_jax.training import methods
from gblend_jax.training import optim
from gblend_jax.training import steps

PHASE_ARG = 'reconboost_phase'  # The step variant's static argument.


def default_reconboost_config() -> ml_collections.ConfigDict:
  """The ``config.reconboost`` block.

  Keys:
    enabled: train with ReconBoost (needs ``model.fusion='ensemble'``,
      ``model.modality_heads=True`` and several modalities).
    learner_epochs: phase 1's length per stage (official 4).
    rectify_epochs: phase 2's length per stage (official 4).
    weight1: ``w_1`` of the reconcilement loss (official CREMA-D 5.0,
      AVE 4.0, MOSI/MOSEI/SIMS 1.0).
    weight2: ``w_2`` (official 1.0; MOSI/MOSEI/SIMS 0.25); must be below
      ``weight1`` so that every sample weight ``w_1 − w_2 q_y`` is
      positive.
    weight_decay: L2 added to the gradient of the parameters the phase
      trains, and of no other (torch SGD's ``weight_decay`` on the phase's
      optimiser, official 5e-4); ``optimizer.weight_decay`` must be 0, as
      it would decay the frozen learners too.
  """
  return ml_collections.ConfigDict({
      'enabled': False,
      'learner_epochs': 4.0,
      'rectify_epochs': 4.0,
      'weight1': 5.0,
      'weight2': 1.0,
      'weight_decay': 5e-4,
  })


def phase_steps(epochs: float, steps_per_epoch: int, key: str) -> int:
  """A phase's length in steps; ValueError naming ``key`` below one."""
  count = int(round(epochs * steps_per_epoch))
  if count < 1:
    raise ValueError(
        f'config.reconboost.{key}={epochs} is {count} steps of '
        f'{steps_per_epoch} per epoch; a phase needs at least one step.')
  return count


class ReconBoost(methods.Method):
  """ReconBoost (``config.reconboost``) in the trainer."""

  block = 'reconboost'
  metric_prefix = 'reconboost/'
  default_config = staticmethod(default_reconboost_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    block = config.reconboost
    if not block.enabled:
      return
    for key in ('learner_epochs', 'rectify_epochs'):
      if not block[key] > 0:
        raise ValueError(f'config.reconboost.{key}={block[key]} must be > 0.')
    if not block.weight2 >= 0:
      raise ValueError(
          f'config.reconboost.weight2={block.weight2} must be >= 0.')
    if not block.weight1 > block.weight2:
      raise ValueError(
          f'config.reconboost.weight1={block.weight1} must exceed '
          f'config.reconboost.weight2={block.weight2}: the sample weights '
          'w1 - w2 q_y must stay positive.')
    if not block.weight_decay >= 0:
      raise ValueError(
          f'config.reconboost.weight_decay={block.weight_decay} must be '
          '>= 0.')
    if config.model.fusion not in builder.ENSEMBLE_FUSIONS:
      raise ValueError(
          'config.reconboost.enabled=True trains the learners of a '
          "shared-head ensemble; set config.model.fusion='ensemble' (got "
          f'{config.model.fusion!r}).')
    if not config.model.modality_heads:
      raise ValueError(
          'config.reconboost.enabled=True trains each modality head as a '
          'learner; set config.model.modality_heads=True.')
    if config.optimizer.weight_decay:
      raise ValueError(
          f'config.optimizer.weight_decay={config.optimizer.weight_decay} '
          'would also decay the learners a ReconBoost phase freezes; set it '
          'to 0 and use config.reconboost.weight_decay.')
    if config.blend.mode == 'fixed':
      raise ValueError(
          "config.blend.mode='fixed' weights the heads' losses, but "
          'config.reconboost.enabled=True trains one loss per phase.')

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return bool(config.reconboost.enabled)

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    del config
    return frozenset({'staged_training'})

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.modalities = methods.modalities_with_heads(
        run, 'reconboost', 'its learner head')
    block = self.config.reconboost
    self.schedule = schedule_lib.StageSchedule(
        modalities=self.modalities,
        learner_steps=phase_steps(block.learner_epochs, run.steps_per_epoch,
                                  'learner_epochs'),
        rectify_steps=phase_steps(block.rectify_epochs, run.steps_per_epoch,
                                  'rectify_epochs'),
        pretrained=frozenset(self.config.init_encoders.keys()),
    )
    # The run's optimiser (ReconBoost combines with no method that chains
    # a transform before it: see `INCOMPATIBLE`).
    self.tx = optim.build_optimizer(
        self.config.optimizer, total_steps=run.total_steps,
        steps_per_epoch=run.steps_per_epoch)
    self._fresh = jax.jit(
        lambda params, opt_state: schedule_lib.fresh_opt_state(
            self.tx, params, opt_state))

  def step_variant(self, step: int) -> dict[str, Any]:
    return {PHASE_ARG: self.schedule.phase(step).name}

  def step_args(self, step: int, state: Any) -> dict[str, Any]:
    beta, members = ensemble.ensemble_variables(state.params,
                                                state.batch_stats)
    # Copies: the state's own buffers are donated to the step.
    return {'loss_args': {'beta': jnp.copy(beta),
                          'members': jnp.copy(members),
                          'stage': np.int32(self.schedule.phase(step).stage)}}

  def before_step(self, step: int, state: Any) -> Any | None:
    """At a phase's first step: the membership of this phase, and a fresh
    optimiser state (nothing changes within a phase, so a resumed run
    finds both in its checkpoint)."""
    if not self.schedule.phase(step).starts:
      return None
    members = np.asarray(self.schedule.members(step), np.float32)
    batch_stats = {**state.batch_stats, ensemble.MEMBERS: members}
    return state.replace(
        batch_stats=self.services.put(batch_stats),
        opt_state=self.services.put(self._fresh(state.params,
                                                state.opt_state)),
    )

  def step_hooks(self) -> methods.StepHooks:
    modalities = self.modalities
    block = self.config.reconboost
    weight1, weight2 = block.weight1, block.weight2
    weight_decay = block.weight_decay
    heads = self.run.heads

    def objective(key, batch, loss_args):
      del key
      labels = batch['label']
      beta, members = loss_args['beta'], loss_args['members']

      def head_losses(logits):
        out = []
        for m in modalities:
          others, empty = boosting.ensemble_logits(
              logits, modalities, beta, members, exclude=m)
          out.append(boosting.reconcilement_loss(
              logits[m], others, labels, weight1=weight1, weight2=weight2,
              empty_ensemble=empty))
        out.append(boosting.rectification_loss(logits[steps.FUSED], labels))
        return jnp.stack(out)

      metrics = {'reconboost/beta': beta,
                 'reconboost/stage': loss_args['stage'].astype(jnp.float32)}
      return steps.model_inputs(batch), head_losses, metrics, None

    def update_rule(loss_vector, state, args, **variant):
      del args
      phase = variant[PHASE_ARG]
      index = heads.index(
          steps.FUSED if phase == schedule_lib.RECTIFY else phase)
      members = state.batch_stats[ensemble.MEMBERS]

      def phase_loss(params):
        per_head, aux = loss_vector(params)
        decay = weight_decay * schedule_lib.phase_sq_norm(
            params, modalities, phase, members)
        return per_head[index] + decay, (per_head[index], per_head, *aux)

      (_, (total, per_head, out, batch_stats, metrics)), grads = (
          jax.value_and_grad(phase_loss, has_aux=True)(state.params))
      gradients = steps.Gradients(
          grads=grads, per_head=per_head, outputs=out,
          batch_stats=batch_stats, objective_metrics=metrics,
          update_kwargs={})
      return gradients, lambda opt_state: (total, grads)

    return methods.StepHooks(objective=objective, update_rule=update_rule)

  def results(self, state: Any) -> dict[str, Any]:
    beta, members = ensemble.ensemble_variables(state.params,
                                                state.batch_stats)
    members = jax.device_get(members)
    return {'reconboost': {
        'beta': float(jax.device_get(beta)),
        'members': [m for m, x in zip(self.modalities, members, strict=True)
                    if x],
        'stages_started': self.schedule.phase(
            int(jax.device_get(state.step)) - 1).stage + 1,
    }}


METHOD = ReconBoost
