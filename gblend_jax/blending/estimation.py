"""Algorithm 1 of Gradient Blending: weights from training each head's model.

Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020, Algorithm 1. From the current checkpoint N, for every head
i (each modality's head, then the fused head): train head i's model (its
encoder(s) and its head, i.e. the parameters that its loss reaches) alone for
n epochs, and measure the training loss ``L^T`` (on a fixed training subset)
and the held-out loss ``L^V`` (on the held-out split, never the test split)
before and after. Then ``G_i = ΔG``, ``O_i = ΔO`` and ``w_i = G_i / O_i²``,
normalised (`gblend_jax.blending.blend.blend_weights_with_status`; the
``blend.overfit_*`` keys say how ``O_i <= 0`` is treated and
``blend.min_fused_weight`` keeps the predicting head training).

The trainer supplies how to train a head and how to measure, so this module
holds only the algorithm; Algorithm 2 (offline: once, from the initial model)
and Algorithm 3 (online: at the start of every super-epoch) call it.
"""

import dataclasses
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gblend_jax import metrics as metrics_lib
from gblend_jax.blending import blend
from gblend_jax.blending import ogr


@dataclasses.dataclass(frozen=True)
class BlendEstimate:
  """The outcome of one run of Algorithm 1.

  Attributes:
    weights: ``[H]`` weights that sum to 1 (the previous ones on fallback).
    report: per-head ``ΔG``, ``ΔO``, ``O`` before and after, and OGR.
    used_fallback: True when no head had ``G_i > 0``.
  """

  weights: np.ndarray
  report: ogr.OGRReport
  used_fallback: bool

  def as_metrics(self, heads: Sequence[str]) -> dict[str, float]:
    """Flat metrics ``blend/<quantity>/<head>`` for the metrics log."""
    values = {
        'weight': self.weights,
        'gain': self.report.gain,
        'overfit_delta': self.report.overfit_delta,
        'overfitting': self.report.overfitting_after,
        'ogr': self.report.ogr,
    }
    result = {'blend/used_fallback': float(self.used_fallback)}
    for quantity, per_head in values.items():
      for head, value in zip(heads, np.asarray(per_head), strict=True):
        result[f'blend/{quantity}/{head}'] = float(value)
    return result


def estimate_blend_weights(
    state: Any,
    *,
    num_heads: int,
    train_head: Callable[[Any, int], Any],
    measure: Callable[[Any], tuple[np.ndarray, np.ndarray]],
    previous_weights: np.ndarray,
    higher_is_better: bool = False,
    eps: float = 1e-6,
    **rule: Any,
) -> BlendEstimate:
  """Runs Algorithm 1 from `state`.

  Args:
    state: the current checkpoint (left unchanged).
    num_heads: H, the number of heads.
    train_head: ``train_head(state, i)`` returns the state after training
      head i's model alone for n epochs.
    measure: ``measure(state)`` returns ``(train, holdout)``, each ``[H]``:
      every head's loss (or accuracy) on the fixed training subset and on the
      held-out split.
    previous_weights: ``[H]`` weights kept when no head generalised.
    higher_is_better: True when `measure` returns accuracies.
    eps: lower clip of ``O_i`` (see `blend.blend_weights_with_status`).
    **rule: the weight rule's keyword arguments of
      `blend.blend_weights_with_status` (``overfit_rule``, ``overfit_floor``,
      ``overfit_floor_relative``, ``min_fused_weight``, ``fused_index``).

  Returns:
    The weights and the measurements behind them.
  """
  train_before, holdout_before = measure(state)
  train_after = np.empty(num_heads, np.float64)
  holdout_after = np.empty(num_heads, np.float64)
  for head in range(num_heads):
    train, holdout = measure(train_head(state, head))
    train_after[head], holdout_after[head] = train[head], holdout[head]
  return blend_estimate(
      (train_before, holdout_before), (train_after, holdout_after),
      previous_weights=previous_weights, higher_is_better=higher_is_better,
      eps=eps, **rule)


def blend_estimate(
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    *,
    previous_weights: np.ndarray,
    higher_is_better: bool = False,
    eps: float = 1e-6,
    **rule: Any,
) -> BlendEstimate:
  """Algorithm 1's weights from its measurements.

  Args:
    before: ``(train, holdout)``, each ``[H]``: every head's loss (or
      accuracy) on the fixed training subset and on the held-out split,
      measured on the starting checkpoint.
    after: the same, entry i measured on head i's trained model.
    previous_weights: ``[H]`` weights kept when no head generalised.
    higher_is_better: True for accuracies.
    eps: lower clip of ``O_i`` (see `blend.blend_weights_with_status`).
    **rule: the weight rule's keyword arguments (see
      `estimate_blend_weights`).

  Returns:
    The weights and the measurements behind them.
  """
  report = ogr.OGRReport.from_losses(
      *(np.asarray(x, np.float32) for x in (*before, *after)),
      higher_is_better=higher_is_better,
  )
  weights, used_fallback = blend.blend_weights_with_status(
      report.gain, report.overfit_delta, eps=eps, **rule,
      fallback=np.asarray(previous_weights, np.float32),
  )
  return BlendEstimate(
      weights=np.asarray(weights),
      report=ogr.OGRReport(*(np.asarray(x) for x in report)),
      used_fallback=bool(used_fallback),
  )


class ScheduledEstimator:
  """Algorithm 1 run by the trainer: when (Algorithms 2 and 3) and how.

  Offline (Algorithm 2): once, before the first step, from the initial
  model, training each head's model for N = ``blend.estimate_epochs``.
  Online (Algorithm 3): after ``blend.warmup_epochs``, at the start of every
  super-epoch of n = ``blend.estimate_epochs``, from the current checkpoint.

  Each head's model is trained with the trainer's own compiled step and the
  objective one-hot on that head (only the parameters its loss reaches move;
  the copy is discarded), with the configured optimiser at its peak learning
  rate (a fresh optimiser state; no schedule), on a training-data order
  seeded by the data seed, the step and the head. Losses are measured in
  evaluation mode on a fixed, seeded training subset (``L^T``) and on the
  held-out split (``L^V``); never on the test split.

  The copies are independent, so with ``blend.stack_copies`` (and
  ``measure_step`` and ``eval_batches`` given) they train together, in one
  compiled step that advances every copy on its own batch:

  * where ``head_steps`` gives a head a model of its own (late fusion:
    modality m's encoder and head, `MultiModalClassifier.head_model`),
    that copy runs only that model; the fused copy runs the whole model.
    The H copies then cost about two whole-model steps, not H, because
    the modality models together are one pass of the encoders;
  * otherwise (no head has a model of its own) the H copies' states are
    stacked on a leading axis and the step is ``jax.vmap`` of
    `train_step` over them, with one-hot weights.

  The starting state and the H trained copies are then measured together
  by ``jax.vmap`` of ``measure_step``. Either way each copy's head sees the
  computation it sees one after another: the same losses, to float
  rounding (tests/blending/test_stacked_copies.py). A restricted copy
  leaves the other encoders' batch statistics as they were, where the
  whole model's copy updates them; Algorithm 1 measures a copy on its own
  head only, which does not read them.

  Args:
    config: the run config.
    train_step: the jitted ``train_step(state, batch, args)`` of
      `gblend_jax.training.steps.make_train_step`, built with `tx` (``args``
      holds ``head_weights``).
    tx: the estimation optimiser (constant learning rate).
    make_batches: ``make_batches(seed)`` returns an iterator of global
      training batches.
    evaluate: ``evaluate(state, sources)`` returns metrics
      ``'<split>/<head>/<metric>'``.
    sources: ``{'train': fixed training subset, 'holdout': held-out split}``.
    heads: head names in blend order.
    steps_per_epoch: steps in one epoch of the training split.
    put: places a host array on the devices (replicated).
    measure_step: ``(params, batch_stats, batch) -> metric sums``
      (`gblend_jax.training.steps.make_eval_step`'s for one state), for
      measuring stacked copies; None: one `evaluate` per copy.
    eval_batches: ``source -> iterator`` of global evaluation batches (the
      trainer's); needed with ``measure_step``.
    head_steps: None, or per head (in ``heads`` order) the jitted step of
      that head's model alone (``head_weights`` of shape [1]), or None
      where the head needs the whole model: for stacked copies.
  """

  def __init__(self, config, *, train_step, tx, make_batches, evaluate,
               sources, heads, steps_per_epoch, put, measure_step=None,
               eval_batches=None, head_steps=None):
    self._mode = config.blend.mode
    self._train_step = train_step
    self._tx_init = tx.init
    self._make_batches = make_batches
    self._evaluate = evaluate
    self._sources = sources
    self._heads = tuple(heads)
    self._put = put
    self._metric = 'accuracy' if config.blend.measure == 'accuracy' else 'loss'
    self._eps = config.blend.eps
    self._rule = {
        'overfit_rule': config.blend.overfit_rule,
        'overfit_floor': config.blend.overfit_floor,
        'overfit_floor_relative': config.blend.overfit_floor_relative,
        'min_fused_weight': config.blend.min_fused_weight,
        'fused_index': self._heads.index('fused') if 'fused' in self._heads
                       else len(self._heads) - 1,
    }
    self._seed = config.data.shuffle_seed
    self.estimate_steps = max(
        int(round(config.blend.estimate_epochs * steps_per_epoch)), 1
    )
    self.warmup_steps = int(round(config.blend.warmup_epochs * steps_per_epoch))
    self.stacked = bool(config.blend.get('stack_copies', False)
                        and measure_step is not None
                        and eval_batches is not None)
    self._eval_batches = eval_batches
    self.own_models = self.stacked and bool(head_steps) and any(
        step is not None for step in head_steps)
    if self.own_models:
      if len(head_steps) != len(self._heads):
        raise ValueError(f'{len(head_steps)} head_steps for the heads '
                         f'{list(self._heads)}.')
      copy_steps = [train_step if step is None else step
                    for step in head_steps]
      num_heads = len(self._heads)
      # Each copy's step arguments: one-hot on its head for the whole
      # model, the one head's weight 1 for a head's own model.
      self.copy_args = [
          {'head_weights': put(
              np.eye(num_heads, dtype=np.float32)[head] if step is None
              else np.ones(1, np.float32))}
          for head, step in enumerate(head_steps)]
      self.copies_step = jax.jit(
          lambda states, batches, args: tuple(
              step(s, b, a)[0] for step, s, b, a in zip(
                  copy_steps, states, batches, args, strict=True)))
    elif self.stacked:
      self.stacked_step = jax.jit(
          lambda states, batches, args: jax.vmap(train_step)(
              states, _stack(batches), args))
    if self.stacked:
      self.stacked_measure = jax.jit(jax.vmap(measure_step,
                                               in_axes=(0, 0, None)))

  def due(self, step: int, last: int | None) -> bool:
    """Whether Algorithm 1 runs before training step `step`, given the step
    of the last estimate (None: none yet)."""
    if self._mode == 'offline':
      return last is None
    if step < self.warmup_steps:
      return False
    return last is None or step - last >= self.estimate_steps

  def _measure(self, state) -> tuple[np.ndarray, np.ndarray]:
    results = self._evaluate(state, self._sources)
    return tuple(
        np.array([results[f'{split}/{head}/{self._metric}']
                  for head in self._heads])
        for split in ('train', 'holdout')
    )

  def _train_head(self, state, head: int, step: int):
    one_hot = self._put(np.eye(len(self._heads), dtype=np.float32)[head])
    batches = self._make_batches(self._copy_seed(step, head))
    state = state.replace(opt_state=self._tx_init(state.params))
    for _ in range(self.estimate_steps):
      state, _ = self._train_step(state, next(batches),
                                  {'head_weights': one_hot})
    return state

  def _copy_seed(self, step: int, head: int) -> int:
    return int(np.random.SeedSequence([self._seed, step, head])
               .generate_state(1)[0])

  def train_copies(self, state, step: int):
    """The H head copies trained together from `state`, stacked.

    Copy i is head i's model of Algorithm 1: the objective one-hot on head
    i (or head i's own model, `head_steps`), a fresh optimiser state and
    the data order of head i's seed, as `_train_head` trains it alone.

    Returns:
      The copies' states, every leaf with a leading axis of size H.
    """
    num_heads = len(self._heads)
    batches = [self._make_batches(self._copy_seed(step, head))
               for head in range(num_heads)]
    copy = state.replace(opt_state=self._tx_init(state.params))
    if self.own_models:
      states = (copy,) * num_heads
      for _ in range(self.estimate_steps):
        states = self.copies_step(
            states, tuple(next(b) for b in batches), self.copy_args)
      return _stack(states)
    states = _stack([copy] * num_heads)
    args = {'head_weights': self._put(np.eye(num_heads, dtype=np.float32))}
    for _ in range(self.estimate_steps):
      states, _ = self.stacked_step(
          states, tuple(next(b) for b in batches), args)
    return states

  def measure_stacked(self, params, batch_stats) -> tuple[np.ndarray, ...]:
    """``(train, holdout)``, each ``[S, H]``: every head's measure for
    each of S stacked states (``params`` and ``batch_stats`` with a
    leading axis of size S)."""
    out = []
    for split in ('train', 'holdout'):
      sums = [jax.device_get(self.stacked_measure(params, batch_stats, b))
              for b in self._eval_batches(self._sources[split])]
      copies = jax.tree.leaves(params)[0].shape[0]
      means = [metrics_lib.finalize([{k: v[c] for k, v in s.items()}
                                     for s in sums]) for c in range(copies)]
      out.append(np.array([[m[f'{head}/{self._metric}']
                            for head in self._heads] for m in means]))
    return tuple(out)

  def _estimate_stacked(self, state, step: int, previous_weights):
    copies = self.train_copies(state, step)
    # The starting state and the H copies in one measurement.
    params = _prepend(state.params, copies.params)
    batch_stats = _prepend(state.batch_stats, copies.batch_stats)
    train, holdout = self.measure_stacked(params, batch_stats)
    diagonal = np.arange(len(self._heads))
    return blend_estimate(
        (train[0], holdout[0]),
        (train[1:][diagonal, diagonal], holdout[1:][diagonal, diagonal]),
        previous_weights=np.asarray(previous_weights, np.float32),
        higher_is_better=self._metric == 'accuracy',
        eps=self._eps, **self._rule)

  def __call__(self, state, step: int, previous_weights) -> BlendEstimate:
    """Runs Algorithm 1 from `state` (the checkpoint at `step`)."""
    logging.info('Estimating blend weights (Algorithm 1) at step %d: %d '
                 'steps for each of the heads %s%s.', step,
                 self.estimate_steps, list(self._heads),
                 ', each modality\'s copy on its own encoder and head'
                 if self.own_models else
                 ', the copies stacked' if self.stacked else '')
    if self.stacked:
      result = self._estimate_stacked(state, step, previous_weights)
    else:
      result = estimate_blend_weights(
          state,
          num_heads=len(self._heads),
          train_head=lambda s, head: self._train_head(s, head, step),
          measure=self._measure,
          previous_weights=np.asarray(previous_weights, np.float32),
          higher_is_better=self._metric == 'accuracy',
          eps=self._eps,
          **self._rule,
      )
    if result.used_fallback:
      logging.warning(
          'Blend estimate at step %d: no head improved its held-out %s '
          '(gains %s); keeping the previous weights %s.', step, self._metric,
          np.round(result.report.gain, 4).tolist(),
          np.round(result.weights, 4).tolist(),
      )
    logging.info('Blend weights at step %d: %s (OGR %s).', step,
                 dict(zip(self._heads, np.round(result.weights, 4).tolist(),
                          strict=True)),
                 np.round(result.report.ogr, 3).tolist())
    return result



def _stack(trees):
  """Stacks pytrees of one structure on a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _prepend(tree, stacked):
  """``tree`` in front of the stacked ``stacked`` (one more leading entry)."""
  return jax.tree.map(lambda x, y: jnp.concatenate([x[None], y]), tree,
                      stacked)
