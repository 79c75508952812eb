"""AGM in the trainer: the ``config.agm`` block as a `Method`.

Adaptive gradient modulation (Li et al., ICCV 2023) as the authors run it:
inside the loss graph. The step's training-mode forward pass is the full
set's ``f(𝓜)``; a flax method interceptor around the classifier's call adds
the ``2^M - 2`` zero-padded passes in evaluation mode (BatchNorm on its
running statistics, no dropout, gradients tracked), forms the mono-modal
responses and replaces the fused logits by ``Σ_k GS_{κ_k}(m_k)``
(`gblend_jax.agm.agm`), so the fused head's cross-entropy back-propagates
``κ_k`` times through everything upstream of ``m_k``. The running scores and
the last coefficients live in the optimiser state (`agm.agm_statistics`,
checkpointed with it); the authors' conditional clipping is chained after
it.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import config_dict

from gblend_jax.agm import agm
from gblend_jax.training import methods
from gblend_jax.training import steps


def default_agm_config() -> ml_collections.ConfigDict:
  """The ``config.agm`` block.

  Keys:
    enabled: train with AGM (needs two or more modalities).
    alpha: α of ``κ_k = exp(α min(η_k - r_k, cap))`` (the authors'
      default 1.0).
    cap: the cap on ``η_k - r_k`` (10, the authors' CREMA-D code; 7 for
      UR-Funny); None for none (their AV-MNIST, AVE and MOSEI code).
    start_epoch, end_epoch: the window ``[start_epoch, end_epoch)`` in
      epochs (half-open, from 0; ``end_epoch < 0``: to the end) in which κ
      is recomputed each step; outside it the last κ stays in force (1
      before the window), as in the authors' code, whose inclusive
      ``modulation_starts <= epoch <= modulation_ends`` counts epochs from
      1 (their defaults 0 and 20 of 10 epochs: the whole run). The running
      scores are updated every step.
    clip_threshold: when an element of the fused head's output-kernel
      gradient leaves ``[-clip_threshold, clip_threshold]``, the global
      gradient norm is clipped to ``clip_norm`` (1 and 1 in the authors'
      CREMA-D code); None: no clipping.
    clip_norm: see ``clip_threshold``.
  """
  return ml_collections.ConfigDict({
      'enabled': False,
      'alpha': 1.0,
      'cap': config_dict.placeholder(float, required=False),
      'start_epoch': 0.0,
      'end_epoch': -1.0,
      'clip_threshold': config_dict.placeholder(float, required=False),
      'clip_norm': 1.0,
  })


def check_agm_config(config: ml_collections.ConfigDict) -> None:
  """Rejects a bad ``config.agm`` before any training.

  Raises:
    ValueError: naming the key and its value.
  """
  block = config.agm
  if not block.enabled:
    return
  if not block.alpha >= 0:
    raise ValueError(f'config.agm.alpha={block.alpha} must be >= 0.')
  if block.cap is not None and not block.cap > 0:
    raise ValueError(
        f'config.agm.cap={block.cap} must be > 0 (None: no cap).')
  if not block.start_epoch >= 0 or (
      block.end_epoch >= 0 and block.end_epoch <= block.start_epoch):
    raise ValueError(
        'config.agm window [start_epoch, end_epoch) = '
        f'[{block.start_epoch}, {block.end_epoch}) is empty or reversed; '
        'need 0 <= start_epoch < end_epoch (end_epoch < 0: to the end).'
    )
  if block.clip_threshold is not None and not block.clip_threshold > 0:
    raise ValueError(
        f'config.agm.clip_threshold={block.clip_threshold} must be > 0 '
        '(None: no clipping).')
  if not block.clip_norm > 0:
    raise ValueError(f'config.agm.clip_norm={block.clip_norm} must be > 0.')


def agm_interceptor(
    modalities: Sequence[str],
    labels: jax.Array,
    loss_args: dict[str, jax.Array],
    *,
    alpha: float,
    cap: float | None,
):
  """A flax interceptor that turns the classifier's fused logits into AGM's.

  Around the root module's training-mode ``__call__`` it runs the padded
  passes (the same module, ``train=False``), computes the responses, the
  scores and κ, and returns the outputs with ``logits['fused']`` replaced by
  `agm.modulated_logits` and an ``'agm'`` entry: ``{'scores', 'ratios',
  'targets', 'coefficients'}`` (each ``[M]``, no gradient).

  Args:
    modalities: the modalities, in the order of the state's vectors.
    labels: ``[B]`` the batch's labels.
    loss_args: ``running_scores`` ``[M]``, ``coefficients`` ``[M]`` (the
      last κ) and ``active`` (whether κ is recomputed at this step).
    alpha: α.
    cap: the cap, or None.

  Returns:
    ``interceptor(next_fun, args, kwargs, context)``.
  """
  modalities = tuple(modalities)

  def interceptor(next_fun, args, kwargs, context):
    if (context.method_name != '__call__' or context.module.path
        or not kwargs.get('train')):
      return next_fun(*args, **kwargs)
    out = next_fun(*args, **kwargs)
    # The padded passes apply an unbound copy to the same (traced)
    # variables: flax cannot re-enter the compact call being intercepted.
    # Batch statistics are the ones this call just updated, as in the
    # authors' code (eval-mode passes after the training-mode one), and
    # constants there (PyTorch's running statistics are buffers; flax's
    # update would carry the batch mean's gradient).
    module, variables = context.module.unbind()
    variables = dict(variables)
    if 'batch_stats' in variables:
      variables['batch_stats'] = jax.lax.stop_gradient(
          variables['batch_stats'])

    def padded_logits(inputs):
      return module.apply(variables, inputs, train=False)['logits'][
          steps.FUSED]

    responses = agm.mono_modal_responses(
        padded_logits, args[0], modalities,
        full_logits=out['logits'][steps.FUSED])
    scores = jax.lax.stop_gradient(
        agm.agm_scores(responses, labels, modalities))
    running = loss_args['running_scores']
    fresh = agm.agm_coefficients(scores, running, alpha=alpha, cap=cap)
    coefficients = jnp.where(loss_args['active'], fresh,
                             loss_args['coefficients'])
    logits = dict(out['logits'])
    logits[steps.FUSED] = agm.modulated_logits(
        responses, coefficients, modalities)
    return {**out, 'logits': logits, 'agm': {
        'scores': scores,
        'ratios': agm.strength_ratios(scores),
        'targets': agm.strength_ratios(running),
        'coefficients': coefficients,
    }}

  return interceptor


def find_agm_state(opt_state: optax.OptState) -> agm.AGMState:
  """The `agm.AGMState` inside a chained optimiser state."""
  found = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, agm.AGMState))
           if isinstance(s, agm.AGMState)]
  if len(found) != 1:
    raise ValueError(
        f'expected one AGMState in the optimiser state; found {len(found)}.')
  return found[0]


def _fused_output_kernel(params: Any) -> Any:
  """True on the fused head's output kernel (the authors' ``fc_out``)."""

  def watched(path, leaf):
    del leaf
    names = [getattr(k, 'key', str(k)) for k in path]
    return (bool(names) and names[0] == 'fused_head'
            and names[-1] == 'kernel' and len(names) > 1
            and names[-2].startswith('output'))

  return jax.tree_util.tree_map_with_path(watched, params)


class AGM(methods.Method):
  """AGM (``config.agm``) in the trainer."""

  block = 'agm'
  metric_prefix = 'agm/'
  default_config = staticmethod(default_agm_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    check_agm_config(config)

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return bool(config.agm.enabled)

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    del config
    return frozenset({'shapley_modulation'})

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.modalities = tuple(run.modalities)
    if len(self.modalities) < 2:
      raise ValueError(
          'config.agm.enabled=True balances several modalities; the data '
          f'have {list(self.modalities)}.')
    block = self.config.agm
    self.start_step = int(round(block.start_epoch * run.steps_per_epoch))
    self.end_step = (None if block.end_epoch < 0
                     else int(round(block.end_epoch * run.steps_per_epoch)))
    self._active = {}

  def transform(self) -> optax.GradientTransformation:
    block = self.config.agm
    statistics = agm.agm_statistics(len(self.modalities))
    if block.clip_threshold is None:
      return statistics
    return optax.chain(statistics, agm.clip_by_global_norm_if_exceeds(
        block.clip_norm, threshold=block.clip_threshold,
        watched=_fused_output_kernel))

  def active(self, step: int) -> bool:
    """Whether κ is recomputed at ``step``."""
    return self.start_step <= step and (self.end_step is None
                                        or step < self.end_step)

  def step_args(self, step: int, state: Any) -> dict[str, Any]:
    active = self.active(step)
    if active not in self._active:
      # The trainer's replicated placement; the benchmark calls this
      # without starting the method.
      services = getattr(self, 'services', None)
      put = services.put if services is not None else jnp.asarray
      self._active[active] = put(np.asarray(active))
    statistics = find_agm_state(state.opt_state)
    # Copies: the step donates the state, so its buffers cannot also be
    # passed as arguments.
    return {'loss_args': {
        'running_scores': jnp.copy(statistics.running_scores),
        'coefficients': jnp.copy(statistics.coefficients),
        'active': self._active[active],
    }}

  def step_hooks(self) -> methods.StepHooks:
    modalities, heads = self.modalities, self.run.heads
    block = self.config.agm

    def objective(key, batch, loss_args):
      del key
      labels = batch['label']

      def head_losses(logits):
        return steps.stacked_head_losses(logits, labels, heads)

      interceptor = agm_interceptor(modalities, labels, loss_args,
                                    alpha=block.alpha, cap=block.cap)
      return steps.model_inputs(batch), head_losses, {}, interceptor

    def update_args(params, batch_stats, outputs, batch):
      del params, batch_stats, batch
      stats = outputs['agm']
      metrics = {}
      for name in ('scores', 'ratios', 'targets', 'coefficients'):
        for i, m in enumerate(modalities):
          metrics[f'agm/{name[:-1]}/{m}'] = stats[name][i]
      return {'agm_scores': stats['scores'],
              'agm_coefficients': stats['coefficients']}, metrics

    def state_metrics(opt_state):
      running = find_agm_state(opt_state).running_scores
      out = {f'agm/running_score/{m}': running[i]
             for i, m in enumerate(modalities)}
      if block.clip_threshold is not None:
        out['agm/clipped'] = optax.tree.get(opt_state, 'clipped').astype(
            jnp.float32)
      return out

    return methods.StepHooks(objective=objective, update_args=update_args,
                             opt_state_metrics=state_metrics)


METHOD = AGM
