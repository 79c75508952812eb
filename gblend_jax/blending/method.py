"""Gradient Blending in the trainer: the ``config.blend`` block as a `Method`.

Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
Networks Hard?", CVPR 2020. The trainer minimises ``Σ_i w_i L_i`` over the
heads (each modality's head, then the fused head; Eq. 3). The modes:

  none      naive training: the fused head's loss only (the baseline; the
            method is off and the trainer's default weights apply);
  fixed     ``blend.weights``;
  offline   Algorithm 2: Algorithm 1 once, from the initial model;
  online    Algorithm 3: Algorithm 1 at the start of every super-epoch;
  gradient  Proposition 1 estimated in gradient space inside the step
            (`gblend_jax.gradient_blend` over per-loss gradients).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gblend_jax import data
from gblend_jax import losses
from gblend_jax import plots
from gblend_jax.blending import blend
from gblend_jax.blending import cheap_path
from gblend_jax.blending import estimation
from gblend_jax.blending import per_loss
from gblend_jax.training import config_checks
from gblend_jax.training import methods
from gblend_jax.training import optim
from gblend_jax.training import steps

BLEND_MODES = ('none', 'fixed', 'offline', 'online', 'gradient')
MEASURES = ('loss', 'accuracy')
OVERFIT_RULES = ('clip', 'square')
PER_LOSS_GRADS = ('auto', 'jacrev')


def default_blend_config() -> ml_collections.ConfigDict:
  """The ``config.blend`` block.

  Keys:
    mode: One of ``BLEND_MODES``.
    weights: One weight per head in head order (modalities, then fused):
      the weights of 'fixed'; the starting weights of the other modes
      (default uniform).
    estimate_epochs: Algorithm 1: epochs of training each head's model
      (offline: N; online: n, the super-epoch length).
    warmup_epochs: Online: epochs of training with the starting weights
      before the first estimate.
    measure: Algorithm 1 measures 'loss' or 'accuracy' (the paper allows
      both).
    train_subset_size: Size of the fixed training subset on which ``L^T``
      is measured; 0: as many examples as the held-out split.
    eps: Lower clip of ``O_i`` (Algorithm 1, ``overfit_rule='clip'``; with
      'square', ``eps²`` is the last-resort floor of ``O_i²``) and of
      ``σ_k²`` (gradient mode).
    overfit_rule: Algorithm 1's denominator for ``O_i = ΔO``: 'clip'
      (``max(O_i, eps)²``, the old rule: a head with ``ΔO <= 0`` takes all
      the weight) or 'square' (the paper's ``O_i²`` of the signed ``ΔO``,
      floored by the two keys below); see
      `gblend_jax.blending.blend.blend_weights_with_status`.
    overfit_floor: 'square': absolute floor of ``O_i²``.
    overfit_floor_relative: 'square': floor of ``O_i²`` as a fraction of
      the largest ``O_j²`` of the heads that generalised.
    min_fused_weight: Algorithm 1: least weight of the fused head (the one
      that predicts), the other heads rescaled to share the rest.
    estimate_every_steps: Gradient mode: re-estimate every this many steps
      (between them one backward pass of the weighted loss). On the mfeat
      MLP every 10 steps costs 1.13 x naive training, every step 2.0 x
      (1.23 x and 2.44 x with ``per_loss_grads='jacrev'``, timed side by
      side; experiments/results/benchmark_cpu.md); on the mfeat grid both
      reach
      the same accuracy (experiments/results/gblend_mfeat.md, rows gradient
      and gradient_every_step).
    decay: Gradient mode: EMA decay of the statistics.
    per_loss_grads: Gradient mode: how the estimating step computes the
      per-loss gradients. 'auto': two backward passes (the fused loss, and
      the sum of the unimodal losses split by encoder) when the model
      states that each modality's loss reaches only its own encoder and
      head (`MultiModalClassifier.head_parameters`: late fusion), else
      ``jax.jacrev``; 'jacrev': always ``jax.jacrev`` (H backward passes).
      Both give the same gradients to float rounding.
    stack_copies: Offline/online: train Algorithm 1's H head copies
      together in one compiled step and measure them together: where the
      model has a model of its own for a head (late fusion: modality m's
      copy runs ``encoder_<m>`` and ``head_<m>`` only), one step of every
      copy on its own model; otherwise their states stacked and the step
      ``jax.vmap``-ed over the copies. False: one after another on the
      whole model, as before (H times less memory for the copies). The
      same losses either way, to float rounding.
  """
  return ml_collections.ConfigDict({
      'mode': 'none',
      'weights': (),
      'estimate_epochs': 5.0,
      'warmup_epochs': 0.0,
      'measure': 'loss',
      'train_subset_size': 0,
      'eps': 1e-6,
      'overfit_rule': 'square',
      'overfit_floor': 0.0,
      'overfit_floor_relative': 0.1,
      'min_fused_weight': 0.1,
      'estimate_every_steps': 10,
      'decay': 0.9,
      'per_loss_grads': 'auto',
      'stack_copies': True,
  })


def check_blend_block(block: ml_collections.ConfigDict) -> None:
  """Checks ``config.blend``'s numbers and names (G-Blend).

  Args:
    block: ``config.blend``.

  Raises:
    ValueError: naming the key, the value and what is allowed.
  """
  require, at_least = config_checks.require, config_checks.finite_at_least
  require(at_least(block.decay, 0) and block.decay < 1,
          'blend.decay', block.decay, 'in [0, 1)')
  require(at_least(block.estimate_epochs, 0) and block.estimate_epochs > 0,
          'blend.estimate_epochs', block.estimate_epochs, '> 0')
  require(at_least(block.warmup_epochs, 0), 'blend.warmup_epochs',
          block.warmup_epochs, 'a number >= 0')
  require(block.measure in MEASURES, 'blend.measure', block.measure,
          f'one of {list(MEASURES)}')
  require(at_least(block.eps, 0) and block.eps > 0, 'blend.eps', block.eps,
          '> 0')
  require(isinstance(block.estimate_every_steps, int)
          and block.estimate_every_steps >= 0,
          'blend.estimate_every_steps', block.estimate_every_steps,
          'an integer >= 0')
  require(block.per_loss_grads in PER_LOSS_GRADS, 'blend.per_loss_grads',
          block.per_loss_grads, f'one of {list(PER_LOSS_GRADS)}')
  require(isinstance(block.stack_copies, bool), 'blend.stack_copies',
          block.stack_copies, 'True or False')


def head_loss_weights(
    config: ml_collections.ConfigDict, heads: tuple[str, ...]
) -> np.ndarray:
  """The starting weight of each head's loss, in head order.

  Args:
    config: the run config.
    heads: the model's heads in blend order (modalities, then ``'fused'``).

  Returns:
    ``[H]`` float32 weights: one-hot on the fused head for naive training
    (``blend.mode='none'``); ``blend.weights`` if given; else uniform.

  Raises:
    ValueError: for blend weights of the wrong length, negative, not finite
      or not summing to 1, and for a blend mode on a model with one head.
  """
  mode = config.blend.mode
  if mode == 'none':
    return naive_weights(heads)
  if len(heads) < 3:
    raise ValueError(
        f'config.blend.mode={mode!r} blends one loss per head and needs '
        'several modalities with config.model.modality_heads=True; this '
        f'model has the heads {list(heads)}.'
    )
  weights = np.asarray(config.blend.weights, np.float64)
  if weights.size == 0:
    if mode == 'fixed':
      raise ValueError(
          "config.blend.mode='fixed' needs config.blend.weights, one per "
          f'head in the order {list(heads)}.'
      )
    return np.full(len(heads), 1.0 / len(heads), np.float32)
  if weights.shape != (len(heads),):
    raise ValueError(
        f'config.blend.weights={tuple(config.blend.weights)} has '
        f'{weights.size} entries; the heads are {list(heads)}.'
    )
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise ValueError(
        f'config.blend.weights={tuple(config.blend.weights)} must be finite '
        'and non-negative.'
    )
  if abs(weights.sum() - 1.0) > 1e-6:
    raise ValueError(
        f'config.blend.weights={tuple(config.blend.weights)} sum to '
        f'{weights.sum():.6g}, not 1.'
    )
  return weights.astype(np.float32)


def naive_weights(heads: tuple[str, ...]) -> np.ndarray:
  """``[H]`` weights one-hot on the fused head: naive training."""
  return np.array([h == steps.FUSED for h in heads], np.float32)


def per_loss_gradient_rule(model, heads, *, shortcut: bool = True):
  """The `steps.UpdateRule` of gradient-space G-Blend.

  The gradients come from `gblend_jax.gradient_blend_grads`, the cheap path
  users call in their own loops. ``estimate`` (static) picks one of two
  compiled steps. With ``estimate`` None or True the per-loss gradients
  ``v_k`` come from one forward pass and two vector-Jacobian products
  when each modality's loss reaches only its own encoder and head (the
  fused loss, and the sum of the unimodal losses split by encoder;
  `gblend_jax.blending.per_loss`), else H (``jax.jacrev`` of the ``[H]``
  loss vector), and the gradient of the
  fused loss on ``args['holdout_batch']`` estimates ``∇L*`` (Proposition
  1); `gblend_jax.gradient_blend` re-estimates its weights from them on the
  steps its count says (None) or on this step (True). With
  ``estimate=False`` the weights stay as they are, so one backward pass of
  ``Σ_k w_k L_k`` gives the same update: its gradient ``g`` goes to
  `gradient_blend` as the per-loss gradient ``g / Σ_k w_k`` of every head
  (whose blend is ``g``), and no held-out batch is needed. The trainer runs
  the estimating step every ``blend.estimate_every_steps`` steps and the
  other one in between. The optimiser must start with `gradient_blend`.

  Args:
    model: the classifier.
    heads: head names in blend order.
    shortcut: whether the per-loss gradients take two backward passes
      where the model allows it (`per_loss.model_own_params`); False:
      ``jax.jacrev`` (``blend.per_loss_grads='jacrev'``).

  Returns:
    ``rule(loss_vector, state, args, *, estimate=None)``; the step logs the
    loss and the gradient of the weights after the update.
  """
  own_params = per_loss.model_own_params(model, heads) if shortcut else None

  def rule(loss_vector, state, args, *, estimate: bool | None = None):
    def holdout_loss(params, aux):
      _, batch_stats, _ = aux
      holdout_batch = args['holdout_batch']
      holdout_out, _ = steps.forward(
          model, params, batch_stats, steps.model_inputs(holdout_batch),
          train=False,
      )
      return losses.cross_entropy(
          holdout_out['logits'][steps.FUSED], holdout_batch['label']
      )

    result = cheap_path.gradient_blend_grads(
        loss_vector, state.params,
        optax.tree.get(state.opt_state, 'weights'), estimate=estimate,
        holdout_loss=None if estimate is False else holdout_loss,
        has_aux=True, own_params=own_params,
    )
    per_loss, per_head = result.grads, result.losses
    out, batch_stats, metrics = result.aux
    gradients = steps.Gradients(
        grads=per_loss, per_head=per_head, outputs=out,
        batch_stats=batch_stats, objective_metrics=metrics,
        update_kwargs=result.update_kwargs,
    )

    def report(opt_state):
      weights = optax.tree.get(opt_state, 'weights')
      blended = jax.tree.map(
          lambda g: jnp.einsum('i,i...->...', weights, g), per_loss)
      return jnp.dot(weights, per_head), blended

    return gradients, report

  return rule


def measure_step(model):
  """``(params, batch_stats, batch) -> metric sums`` of every head in
  evaluation mode: what Algorithm 1 measures on each stacked copy."""
  eval_step = steps.make_eval_step(model)

  def measure(params, batch_stats, batch):
    return eval_step(steps.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats=batch_stats, opt_state=(), rng=None), batch)

  return measure


def gradient_state_metrics(opt_state, heads) -> dict[str, jax.Array]:
  """``blend/{weight,gain,sigma_sq}/<head>`` after the update."""
  out = {}
  for name, key in (('weight', 'weights'), ('gain', 'gain'),
                    ('sigma_sq', 'sigma_sq')):
    values = optax.tree.get(opt_state, key)
    for i, head in enumerate(heads):
      out[f'blend/{name}/{head}'] = values[i]
  return out


@dataclasses.dataclass
class _Bookkeeping:
  """What a resumed run needs: the weights in use and the last estimate."""

  blend_weights: list[float] | None = None
  last_estimate_step: int | None = None


class Blending(methods.Method):
  """G-Blend (``config.blend``) in the trainer; see the module docstring."""

  block = 'blend'
  metric_prefix = 'blend/'
  default_config = staticmethod(default_blend_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    block = config.blend
    if block.mode not in BLEND_MODES:
      raise ValueError(
          f'Unknown config.blend.mode={block.mode!r}; valid: '
          f'{list(BLEND_MODES)}.'
      )
    check_blend_block(block)
    if block.overfit_rule not in OVERFIT_RULES:
      raise ValueError(
          f'Unknown config.blend.overfit_rule={block.overfit_rule!r}; '
          f'valid: {list(OVERFIT_RULES)}.'
      )
    if block.overfit_floor < 0 or block.overfit_floor_relative < 0:
      raise ValueError(
          'config.blend.overfit_floor and overfit_floor_relative must be '
          f'non-negative; got {block.overfit_floor} and '
          f'{block.overfit_floor_relative}.'
      )
    if not 0.0 <= block.min_fused_weight <= 1.0:
      raise ValueError(
          f'config.blend.min_fused_weight={block.min_fused_weight} must be '
          'in [0, 1].'
      )

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return config.blend.mode != 'none'

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    return frozenset({
        'fixed': {'head_weights'},
        'gradient': {'per_loss_gradients'},
        'offline': {'model_copies'},
        'online': {'model_copies'},
    }.get(config.blend.mode, set()))

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.mode = self.config.blend.mode
    self.heads = run.heads
    self.initial_weights = head_loss_weights(self.config, run.heads)
    self.book = _Bookkeeping()
    self.head_weights = None  # Device array, placed in `start`.
    self.estimator = None
    self.holdout_iter = None
    self._holdout_state = None  # A resumed run's held-out stream position.

  # ---- The step.

  def transform(self) -> optax.GradientTransformation | None:
    if self.mode != 'gradient':
      return None
    block = self.config.blend
    return blend.gradient_blend(
        self.initial_weights,
        estimate_every=block.estimate_every_steps,
        decay=block.decay,
        eps=block.eps,
    )

  def step_hooks(self) -> methods.StepHooks:
    if self.mode != 'gradient':
      return methods.StepHooks()
    heads = self.heads
    return methods.StepHooks(
        update_rule=per_loss_gradient_rule(
            self.run.model, heads,
            shortcut=self.config.blend.per_loss_grads == 'auto'),
        opt_state_metrics=lambda s: gradient_state_metrics(s, heads),
    )

  def _estimates_at(self, step: int) -> bool:
    return cheap_path.is_estimate_step(
        step, self.config.blend.estimate_every_steps)

  def step_variant(self, step: int) -> dict[str, Any]:
    if self.mode != 'gradient':
      return {}
    return {'estimate': self._estimates_at(step)}

  def step_args(self, step: int, state: Any) -> dict[str, Any]:
    if self.mode != 'gradient':
      return {'head_weights': self.head_weights}
    # The held-out stream advances every step, estimating or not, so that
    # it does not depend on the period or on resumes.
    holdout_batch = next(self.holdout_iter)
    if not self._estimates_at(step):
      return {}
    return {'holdout_batch': self.services.to_global(holdout_batch)}

  # ---- Host side.

  def start(self, services: methods.Services) -> None:
    super().start(services)
    self.head_weights = services.put(np.asarray(
        self.book.blend_weights or self.initial_weights, np.float32))
    config, splits = self.config, self.run.splits
    if self.mode == 'gradient':
      self.holdout_iter = services.train_iterator(
          splits.holdout, seed=config.data.shuffle_seed + 1)
      if self._holdout_state is not None:
        self.holdout_iter.set_state(self._holdout_state)
    elif self.mode in ('offline', 'online'):
      self.estimator = self._make_estimator(services)

  def _make_estimator(self, services) -> estimation.ScheduledEstimator:
    config, splits = self.config, self.run.splits
    constant = config.optimizer.copy_and_resolve_references()
    constant.schedule, constant.warmup_epochs = 'constant', 0.0
    estimate_tx = optim.build_optimizer(
        constant, total_steps=self.run.total_steps,
        steps_per_epoch=self.run.steps_per_epoch,
    )
    learning_rate = optax.constant_schedule(constant.learning_rate)
    estimate_step = services.build_train_step(estimate_tx, learning_rate)
    # Each head's own model where it has one (late fusion: a modality's
    # encoder and head), so that its copy skips the other encoders.
    head_steps = [services.build_train_step(estimate_tx, learning_rate,
                                            head=head)
                  for head in self.heads]
    subset_size = min(
        config.blend.train_subset_size or len(splits.holdout),
        len(splits.train),
    )
    train_subset = data.IndexSubset(splits.train, np.sort(
        np.random.default_rng(config.data.holdout_seed).choice(
            len(splits.train), subset_size, replace=False)))

    def make_batches(seed: int):
      batches = services.train_iterator(splits.train, seed=seed)
      return (services.to_global(b) for b in batches)

    return estimation.ScheduledEstimator(
        config, train_step=estimate_step, tx=estimate_tx,
        make_batches=make_batches, evaluate=services.evaluate,
        sources={'train': train_subset, 'holdout': splits.holdout},
        heads=self.heads, steps_per_epoch=self.run.steps_per_epoch,
        put=services.put, measure_step=measure_step(self.run.model),
        eval_batches=services.eval_batches, head_steps=head_steps,
    )

  def before_step(self, step: int, state: Any) -> None:
    if self.estimator is None or not self.estimator.due(
        step, self.book.last_estimate_step):
      return
    result = self.estimator(
        state, step, self.book.blend_weights or self.initial_weights)
    self.book.blend_weights = result.weights.tolist()
    self.book.last_estimate_step = step
    self.head_weights = self.services.put(result.weights)
    self.services.write_metrics(step, {
        **result.as_metrics(self.heads),
        'blend/epoch': step / self.run.steps_per_epoch,
    })

  def host_state(self) -> dict[str, Any]:
    state = dataclasses.asdict(self.book)
    if self.holdout_iter is not None:
      state['holdout_iterator'] = self.holdout_iter.get_state()
    return state

  def restore(self, host_state) -> None:
    host_state = dict(host_state)
    self._holdout_state = host_state.pop('holdout_iterator', None)
    self.book = _Bookkeeping(**host_state)

  # ---- The end.

  def results(self, state: Any) -> dict[str, Any]:
    weights = (optax.tree.get(state.opt_state, 'weights')
               if self.mode == 'gradient' else self.head_weights)
    return {'blend_weights': dict(zip(
        self.heads, np.asarray(jax.device_get(weights)).tolist(),
        strict=True))}

  def draw_figures(self, workdir: str) -> list[str]:
    if self.mode == 'fixed':
      return []
    path = plots.plot_blend(workdir, self.heads)
    return [path] if path else []


METHOD = Blending
