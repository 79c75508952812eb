"""Long-tailed training in the trainer: ``config.longtail`` as a `Method`.

The tricks of Zhang et al. (AAAI 2021) as configuration of
`gblend_jax.training.trainer.train_and_evaluate`'s one loop (`LongTail`):

* re-weighting: ``loss`` names a loss of `gblend_jax.longtail.losses`
  (ce, cs_ce, cs_ce_sqrt, focal, cb_ce, cb_focal, ldam, balanced_softmax),
  built with the training split's class counts; it replaces every head's
  cross-entropy, and ``reduction`` says how a batch's weighted losses are
  averaged (``(1/B) Σ w_y ℓ`` or ``Σ w_y ℓ / Σ w_y``);
* deferred re-weighting (DRW, Cao et al., NeurIPS 2019, Algorithm 1): from
  epoch ``drw_epoch`` each example's loss is multiplied by the
  class-balanced weight ``w_y`` (Cui et al., CVPR 2019; β = ``drw_beta``).
  The weights reach the jitted step as an array (``loss_args``), so the
  switch recompiles nothing;
* re-sampling: ``sampler`` (instance, class_balanced, sqrt, progressive) is
  a `sampling.EpochSampler` in place of the shuffle of
  `gblend_jax.data.train_iterator`; deferred re-sampling (DRS) starts it
  at epoch ``drs_epoch`` (instance-balanced epochs before). A sampler epoch
  is exactly a trainer epoch (``steps_per_epoch · G`` indices), so the
  switch happens at step ``drs_epoch · steps_per_epoch``. ``ros`` and
  ``rus`` (random over- and under-sampling) instead train on one fixed
  balanced multiset of the examples (`training_source`), shuffled each
  epoch;
* CAM-based balanced sampling (``cam_sampling``, with DRS): in the
  re-sampling stage each sampled image is replaced, with the probability of
  `cam_sampling.cam_replacement_probabilities`, by a CAM-based image made
  with the model of the switch step (`gblend_jax.longtail.cam_sampling`).
  That model's variables are snapshotted at the switch into
  ``cam_model.msgpack`` in the work directory, so a run resumed after the
  switch uses the same model;
* mixup: ``mixup`` (input mixup, manifold mixup at ``manifold_layer``, or
  Remix, `gblend_jax.longtail.mixup`, `gblend_jax.longtail.manifold`) in
  the jitted step with the key ``fold_in(fold_in(state.rng, step),
  MIXUP_STREAM)``; ``mixup_off_last_epochs`` fine-tunes without mixup for
  the last epochs (an on/off flag in ``loss_args``: no recompilation);
* decoupled classifier learning (Kang et al., ICLR 2020,
  `gblend_jax.longtail.decoupling`): ``decoupling='crt'`` or ``'lws'``
  makes the last ``decoupling_epochs`` epochs a classifier stage after the
  plain-CE representation stage: at its first step (`LongTail.before_step`)
  cRT re-initialises the fused head's prediction layer, the optimiser
  switches to the stage's own (`decoupling.decoupled_stages`: SGD/Adam as
  configured, a cosine schedule over the stage from
  ``decoupling_learning_rate``, fresh state), the backbone gets zero updates
  and the sampler turns class-balanced. BatchNorm statistics of the frozen
  backbone keep being re-estimated in the stage (training mode, now under
  class-balanced batches), as the authors' code does (``train()`` on every
  network, ``run_networks.py``). ``decoupling='tau_norm'`` measures the
  final and best states also with the τ-normalised classifier, τ =
  ``decoupling_tau`` or, when None, the τ of ``linspace(0, 2, 21)`` with
  the best held-out accuracy;
* shot metrics: test accuracy on the many- (> 100 training images),
  medium- (20 to 100) and few-shot (< 20) classes in ``results.json`` and
  ``per_class_accuracy.png`` (per-class test accuracy against class size).

Everything that changes during a run is a function of the step (the loss
weights, mixup on or off) or of the input iterator's position (the sampler
epoch), so a run resumed from a checkpoint equals an uninterrupted one.

References:
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
  Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019,
  https://arxiv.org/abs/1906.07413.
"""

import functools
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_dict

from gblend_jax import plots
from gblend_jax.data import pipeline
from gblend_jax.longtail import cam_sampling
from gblend_jax.longtail import decoupling as lt_decoupling
from gblend_jax.longtail import losses as lt_losses
from gblend_jax.longtail import manifold
from gblend_jax.longtail import mixup as lt_mixup
from gblend_jax.longtail import sampling
from gblend_jax.longtail import shot_metrics
from gblend_jax.models import builder
from gblend_jax.training import methods
from gblend_jax.training import optim
from gblend_jax.training import steps
from gblend_jax.training import workdir as workdir_lib

# Sampler name -> q of p_j ∝ n_j^q (None: progressively balanced, or a
# fixed balanced multiset: random over- and under-sampling).
SAMPLERS = {'instance': 1.0, 'class_balanced': 0.0, 'sqrt': 0.5,
            'progressive': None, 'ros': None, 'rus': None}
FIXED_RESAMPLING = {'ros': sampling.random_over_sampling,
                    'rus': sampling.random_under_sampling}
MIXUPS = ('none', 'input', 'manifold', 'remix')
# Decoupled classifier learning (Kang et al.): '' off; cRT and LWS train a
# classifier stage; τ-norm only measures.
DECOUPLINGS = ('', 'crt', 'lws', 'tau_norm')
CLASSIFIER_STAGES = ('crt', 'lws')
# Losses that take class weights, so that DRW can re-weight them.
DRW_LOSSES = ('ce', 'focal', 'ldam')
# LDAM's scale s when ``ldam_scale`` is None: Cao et al.'s s = 30 on the
# cosine logits of normalised heads, 1 on raw logits.
LDAM_COSINE_SCALE = 30.0
LDAM_RAW_SCALE = 1.0
# Folded into the step's key for the mixup draws (the dropout key is the
# step's key itself).
MIXUP_STREAM = 0x6D6978
# Folded into the step's key for the CAM-based images.
CAM_STREAM = 0x63616D
CAM_MODEL_FILE = 'cam_model.msgpack'


def default_longtail_config() -> ml_collections.ConfigDict:
  """The ``config.longtail`` block.

  Keys:
    loss: A key of `gblend_jax.longtail.losses.LOSSES`; ``cs_ce`` weighs
      by ``n_min / n_c``, ``cs_ce_sqrt`` by ``(n_min / n_c)^{1/2}`` (the
      bag of tricks' "smooth CS-CE" with γ = 1/2).
    focal_gamma: γ of focal and cb_focal.
    focal_form: ``'softmax'`` (the default: the softmax probability of the
      true class, as in Cao et al.'s LDAM-DRW code) or ``'sigmoid'`` (one
      binary focal term per class, summed: the form of the bag of tricks'
      and Cui et al.'s code) for focal and cb_focal.
    cb_beta: β of cb_ce and cb_focal.
    reduction: How a batch of weighted per-example losses
      ``w_{y_b} ℓ_b`` becomes one loss: ``'mean'`` (the default),
      ``(1/B) Σ_b w_{y_b} ℓ_b``, or ``'weighted_mean'``,
      ``Σ_b w_{y_b} ℓ_b / Σ_b w_{y_b}``, PyTorch's weighted
      cross-entropy, which the official code uses for CS-CE, CB-CE, LDAM
      and DRW (its focal losses use ``'mean'``). ``w`` is the loss's own
      class weight times the DRW weight. With mixup the two label terms
      are normalised by their own weights, ``Σ λ w_a ℓ_a / Σ w_a + Σ (1 -
      λ) w_b ℓ_b / Σ w_b`` (the official ``λ·criterion(y_a) + (1 -
      λ)·criterion(y_b)``).
    ldam_max_margin: the largest margin of LDAM (0.5).
    ldam_scale: the scale ``s`` of LDAM; None (the default) chooses by the
      model: 30 (Cao et al.) when ``model.normalized_heads`` makes every
      head a cosine classifier, as the official code does, and 1 on the
      raw logits of linear heads, where s = 30 multiplies unbounded logits
      (on mfeat with DRW, input mixup and Adam at 1e-3: losses near 20 and
      gradient norms near 60, against below 3 and 2 with s = 1; a NaN at
      step 9 was reported). The old default was 30 on any head.
    drw_epoch: Deferred re-weighting: from this epoch on, each example's
      loss is multiplied by the class-balanced weight of its class (β =
      ``drw_beta``); -1: never. Only with ce, focal, ldam.
    drw_beta: β of the DRW weights (0.9999 in Cao et al.).
    sampler: One of ``SAMPLERS``: instance-balanced (the shuffled epoch),
      class-balanced (q = 0), square-root (q = 1/2), progressively
      balanced (from q = 1 to q = 0 over the run), random over-sampling
      (ros: every class repeated up to n_max) or random under-sampling
      (rus: n_min of every class); ros and rus fix their multiset once
      (seed ``data.shuffle_seed``) and shuffle it every epoch.
    drs_epoch: Deferred re-sampling: instance-balanced epochs before this
      one, ``sampler`` from it; -1: ``sampler`` from the start.
    cam_sampling: CAM-based balanced sampling in the DRS stage (needs
      ``drs_epoch >= 0`` and ``sampler='class_balanced'``).
    cam_move_foreground: False: the foreground stays on a transformed
      background (the paper); True: the authors' code's variant.
    mixup: One of ``MIXUPS``: none, input mixup, manifold mixup, Remix.
    manifold_layer: Where manifold mixup mixes: ``'pooled'`` (every
      encoder's output, after global pooling) or a module path such as
      ``'encoder_image/_CifarBlock_1'``.
    mixup_alpha: α of ``λ ~ Beta(α, α)`` (> 0).
    remix_kappa, remix_tau: κ and τ of Remix.
    mixup_off_last_epochs: Fine-tune without mixup for this many last
      epochs (0: mixup to the end).
    shot_metrics: Measure many/medium/few-shot test accuracy at the end and
      plot per-class accuracy against class size.
    logit_adjustment_tau: τ of ``loss='logit_adjusted'`` (Menon et al.,
      ICLR 2021; 1.0 in the official code).
    posthoc_tau: Post-hoc logit adjustment (Menon et al.): when > 0, the
      final and best states are also measured with the fused logits
      shifted by ``-τ log π`` (``test/fused/posthoc_accuracy``, and the
      shot accuracies with ``posthoc_`` names under ``shot_metrics``);
      0: off.
    decoupling: One of ``DECOUPLINGS`` (Kang et al., ICLR 2020): ``''``
      (off); ``'crt'``, classifier re-training: the last
      ``decoupling_epochs`` epochs re-initialise the fused head's
      prediction layer and train it alone with class-balanced sampling;
      ``'lws'``, learnable weight scaling: those epochs train per-class
      scales ``s`` of the frozen classifier, ``z = s ⊙ (W x + b)``;
      ``'tau_norm'``: the final and best states are also measured with the
      τ-normalised classifier, bias dropped (``<split>/fused/
      tau_norm_accuracy`` for the held-out and test splits, the shot
      accuracies with ``tau_norm_`` names under ``shot_metrics``, the τ
      as ``tau_norm/tau``). The first stage is plain cross-entropy with
      instance-balanced sampling (the paper's), so decoupling needs
      ``loss='ce'``, ``sampler='instance'`` and no DRW, DRS, mixup or CAM
      sampling; and a linear classifier (``model.normalized_heads=False``).
    decoupling_epochs: cRT and LWS: epochs of the classifier stage, the
      last of ``num_epochs`` (a recipe adds them to the representation
      stage's epochs); whole, >= 1, and the stage must start at a whole
      epoch. 0 for the other values of ``decoupling``.
    decoupling_learning_rate: cRT and LWS: the peak learning rate of the
      stage's cosine schedule (to 0 over the stage, no warm-up; the
      authors' cRT and LWS configs); None: ``optimizer.learning_rate``.
      The stage uses ``config.optimizer``'s optimiser, momentum and weight
      decay, with a fresh state.
    decoupling_tau: τ-norm's τ (>= 0); None (the default) chooses it on
      the held-out split from ``linspace(0, 2, 21)`` (the authors' sweep;
      the paper selects τ on validation data).
  """
  return ml_collections.ConfigDict({
      'loss': 'ce',
      'focal_gamma': 2.0,
      'focal_form': 'softmax',
      'cb_beta': 0.9999,
      'reduction': 'mean',
      'ldam_max_margin': 0.5,
      'ldam_scale': config_dict.placeholder(float),
      'drw_epoch': -1,
      'drw_beta': 0.9999,
      'sampler': 'instance',
      'drs_epoch': -1,
      'cam_sampling': False,
      'cam_move_foreground': False,
      'mixup': 'none',
      'manifold_layer': manifold.POOLED,
      'mixup_alpha': 1.0,
      'remix_kappa': 3.0,
      'remix_tau': 0.5,
      'mixup_off_last_epochs': 0,
      'shot_metrics': False,
      'logit_adjustment_tau': 1.0,
      'posthoc_tau': 0.0,
      'decoupling': '',
      'decoupling_epochs': 0,
      'decoupling_learning_rate': config_dict.placeholder(float),
      'decoupling_tau': config_dict.placeholder(float),
  })


def _is_epoch(value: Any) -> bool:
  return float(value) == int(value)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects bad ``config.longtail`` and ``data.longtail`` values early.

  Checks what needs no data; `LongTailTraining` checks the switch epochs
  against the run's length.

  Args:
    config: the run config.

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  pipeline.check_longtail_config(config.data.longtail)
  block = config.longtail
  if block.loss not in lt_losses.LOSSES:
    raise ValueError(
        f'Unknown config.longtail.loss={block.loss!r}; valid: '
        f'{list(lt_losses.LOSSES)}.'
    )
  choices = (('focal_form', lt_losses.FOCAL_FORMS),
             ('reduction', lt_losses.REDUCTIONS))
  for key, valid in choices:
    if block[key] not in valid:
      raise ValueError(
          f'Unknown config.longtail.{key}={block[key]!r}; valid: '
          f'{list(valid)}.'
      )
  if block.ldam_scale is not None and not block.ldam_scale > 0:
    raise ValueError(
        f'config.longtail.ldam_scale={block.ldam_scale} must be > 0, or None '
        f'(the default: {LDAM_COSINE_SCALE:g} with model.normalized_heads, '
        f'{LDAM_RAW_SCALE:g} without).'
    )
  if block.sampler not in SAMPLERS:
    raise ValueError(
        f'Unknown config.longtail.sampler={block.sampler!r}; valid: '
        f'{list(SAMPLERS)}.'
    )
  if block.mixup not in MIXUPS:
    raise ValueError(
        f'Unknown config.longtail.mixup={block.mixup!r}; valid: '
        f'{list(MIXUPS)}.'
    )
  for key in ('drw_epoch', 'drs_epoch'):
    value = block[key]
    if not _is_epoch(value) or value < -1:
      raise ValueError(
          f'config.longtail.{key}={value} must be -1 (off) or a whole '
          'epoch >= 0.'
      )
  if block.drw_epoch >= 0 and block.loss not in DRW_LOSSES:
    raise ValueError(
        f'config.longtail.drw_epoch={block.drw_epoch} re-weights the loss, '
        f'but config.longtail.loss={block.loss!r} is already re-weighted; '
        f'DRW works with {list(DRW_LOSSES)}.'
    )
  if block.drs_epoch >= 0 and block.sampler not in ('class_balanced',
                                                     'sqrt'):
    raise ValueError(
        f'config.longtail.drs_epoch={block.drs_epoch} defers '
        f'config.longtail.sampler={block.sampler!r}; choose class_balanced '
        'or sqrt.'
    )
  if block.cam_sampling and (block.drs_epoch < 0
                             or block.sampler != 'class_balanced'):
    raise ValueError(
        'config.longtail.cam_sampling=True makes the images of the deferred '
        'class-balanced stage; it needs drs_epoch >= 0 and '
        f"sampler='class_balanced' (got drs_epoch={block.drs_epoch}, "
        f'sampler={block.sampler!r}).'
    )
  for key in ('cb_beta', 'drw_beta'):
    if not 0.0 <= block[key] < 1.0:
      raise ValueError(
          f'config.longtail.{key}={block[key]} must be in [0, 1).'
      )
  for key in ('logit_adjustment_tau', 'posthoc_tau'):
    if not block[key] >= 0:
      raise ValueError(
          f'config.longtail.{key}={block[key]} must be >= 0.'
      )
  if block.focal_gamma < 0:
    raise ValueError(
        f'config.longtail.focal_gamma={block.focal_gamma} must be >= 0.'
    )
  if block.mixup != 'none' and not block.mixup_alpha > 0:
    raise ValueError(
        f'config.longtail.mixup_alpha={block.mixup_alpha} must be > 0 '
        f'with config.longtail.mixup={block.mixup!r}.'
    )
  if not _is_epoch(block.mixup_off_last_epochs) or (
      block.mixup_off_last_epochs < 0):
    raise ValueError(
        'config.longtail.mixup_off_last_epochs='
        f'{block.mixup_off_last_epochs} must be a whole number >= 0.'
    )
  check_decoupling_config(config)


def check_decoupling_config(config: ml_collections.ConfigDict) -> None:
  """Rejects bad ``config.longtail.decoupling*`` values (no data needed).

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  block = config.longtail
  name = block.decoupling
  if name not in DECOUPLINGS:
    raise ValueError(
        f'Unknown config.longtail.decoupling={name!r}; valid: '
        f'{list(DECOUPLINGS)}.'
    )
  epochs = block.decoupling_epochs
  if name in CLASSIFIER_STAGES:
    if not _is_epoch(epochs) or epochs < 1:
      raise ValueError(
          f'config.longtail.decoupling_epochs={epochs} must be a whole '
          f'number >= 1 with config.longtail.decoupling={name!r}.'
      )
  elif epochs != 0:
    raise ValueError(
        f'config.longtail.decoupling_epochs={epochs} must be 0 with '
        f'config.longtail.decoupling={name!r} (only crt and lws train a '
        'classifier stage).'
    )
  rate = block.decoupling_learning_rate
  if rate is not None and not rate > 0:
    raise ValueError(
        f'config.longtail.decoupling_learning_rate={rate} must be > 0, or '
        'None (config.optimizer.learning_rate).'
    )
  tau = block.decoupling_tau
  if tau is not None and not tau >= 0:
    raise ValueError(
        f'config.longtail.decoupling_tau={tau} must be >= 0, or None (chosen '
        'on the held-out split).'
    )
  if not name:
    return
  if config.model.get('normalized_heads', False):
    raise ValueError(
        f'config.longtail.decoupling={name!r} needs a linear classifier with '
        'a bias; config.model.normalized_heads=True makes it a cosine one.'
    )
  # cRT and LWS retrain, and tau-norm re-normalises, the fused head's
  # classifier (`lt_decoupling.FUSED_CLASSIFIER`): MLA's shared head and
  # ReconBoost's ensemble of several learners have none.
  model = config.model
  if model.get('shared_head', False):
    raise ValueError(
        f'config.longtail.decoupling={name!r} works on the fused head\'s '
        'classifier, and config.model.shared_head=True (MLA) has no fused '
        'head: its one head classifies each modality.'
    )
  if (model.get('fusion') in builder.ENSEMBLE_FUSIONS
      and len(config.data.get('modalities') or ()) > 1):
    raise ValueError(
        f'config.longtail.decoupling={name!r} works on the fused head\'s '
        "classifier, and config.model.fusion='ensemble' (ReconBoost) has "
        'none: its prediction is the sum of the learners\' logits.'
    )
  if name not in CLASSIFIER_STAGES:
    return
  # The representation stage is the paper's: plain CE, instance-balanced.
  stage_one = (('loss', 'ce'), ('sampler', 'instance'), ('drw_epoch', -1),
               ('drs_epoch', -1), ('mixup', 'none'), ('cam_sampling', False))
  for key, plain in stage_one:
    if block[key] != plain:
      raise ValueError(
          f'config.longtail.decoupling={name!r} trains the classifier stage '
          'after a plain cross-entropy, instance-balanced representation '
          f'stage; config.longtail.{key}={block[key]!r} must be {plain!r}.'
      )


def uses_objective(config: ml_collections.ConfigDict) -> bool:
  """Whether the step needs the long-tail objective (else plain CE)."""
  block = config.longtail
  return (block.loss != 'ce' or block.drw_epoch >= 0
          or block.mixup != 'none' or bool(block.cam_sampling))


def ldam_scale(block: ml_collections.ConfigDict,
               normalized_heads: bool) -> float:
  """LDAM's ``s``: ``block.ldam_scale``, or by the heads when it is None.

  Args:
    block: ``config.longtail``.
    normalized_heads: whether the heads are cosine classifiers
      (``config.model.normalized_heads``).

  Returns:
    ``block.ldam_scale`` if set, else 30 (Cao et al.'s s on cosine logits)
    with normalised heads and 1 on raw logits.
  """
  if block.ldam_scale is not None:
    return float(block.ldam_scale)
  return LDAM_COSINE_SCALE if normalized_heads else LDAM_RAW_SCALE


def _loss_kwargs(block: ml_collections.ConfigDict,
                 normalized_heads: bool) -> dict[str, Any]:
  name = block.loss
  kwargs = {}
  if name in ('focal', 'cb_focal'):
    kwargs['gamma'] = float(block.focal_gamma)
    kwargs['form'] = str(block.focal_form)
  if name in ('cb_ce', 'cb_focal'):
    kwargs['beta'] = float(block.cb_beta)
  if name == 'logit_adjusted':
    kwargs['tau'] = float(block.logit_adjustment_tau)
  if name == 'ldam':
    kwargs['max_margin'] = float(block.ldam_max_margin)
    kwargs['scale'] = ldam_scale(block, normalized_heads)
  return kwargs


def make_objective(
    block: ml_collections.ConfigDict,
    counts: np.ndarray,
    heads: Sequence[str],
    *,
    model: nn.Module | None = None,
    modality: str | None = None,
    normalized_heads: bool = False,
) -> steps.Objective:
  """The long-tail objective of `steps.make_train_step`.

  Args:
    block: ``config.longtail``.
    counts: ``[C]`` training examples per class.
    heads: head names in blend order.
    model: the model (needed for ``cam_sampling``).
    modality: the image modality (needed for ``cam_sampling``).
    normalized_heads: ``config.model.normalized_heads`` (LDAM's default
      scale).

  Returns:
    ``objective(key, batch, loss_args) -> (inputs, head_losses, metrics,
    interceptor)``: the model inputs (CAM-based images swapped in, inputs
    mixed), ``logits -> [H]`` per-head mean losses, step metrics, and None
    or the flax method interceptor of manifold mixup for the forward pass.
    ``loss_args`` holds ``class_weights`` ``[C]`` (multiplied into every
    example's loss: ones, or DRW's weights), ``mixup_on`` and, with
    ``cam_sampling``, ``cam_on`` (scalars, 0 or 1) and ``cam_variables``
    (the stage-one model's variables).
  """
  counts = np.asarray(counts)
  loss_kwargs = _loss_kwargs(block, normalized_heads)
  base = lt_losses.make_loss(block.loss, counts, **loss_kwargs)
  # The class weights inside ``base`` (cs_ce, cb_*), for 'weighted_mean'.
  loss_weights = jnp.asarray(
      lt_losses.loss_class_weights(block.loss, counts, **loss_kwargs))
  reduction = block.reduction
  mode, alpha = block.mixup, float(block.mixup_alpha)
  kappa, tau = float(block.remix_kappa), float(block.remix_tau)
  if block.cam_sampling:
    if model is None or modality is None:
      raise ValueError('cam_sampling needs the model and the image modality.')
    replace_probs = jnp.asarray(
        cam_sampling.cam_replacement_probabilities(counts))
    move_foreground = bool(block.cam_move_foreground)

  def with_cam_images(key, inputs, labels, loss_args):
    """Swaps in CAM-based images in the DRS stage (a no-op before)."""

    def generate(inputs):
      return cam_sampling.cam_sampled_images(
          jax.random.fold_in(key, CAM_STREAM), model,
          loss_args['cam_variables'], inputs, labels, replace_probs,
          modality, move_foreground=move_foreground)

    def keep(inputs):
      return inputs, jnp.zeros(labels.shape, jnp.float32)

    return jax.lax.cond(loss_args['cam_on'] > 0, generate, keep, inputs)

  def objective(key, batch, loss_args):
    inputs = steps.model_inputs(batch)
    labels = batch['label']
    class_weights = loss_args['class_weights']

    def weighted(logits, y):
      return base(logits, y) * class_weights[y]

    def weight_of(y):
      return loss_weights[y] * class_weights[y]

    def reduced(logits, y):
      return lt_losses.reduce_losses(weighted(logits, y), weight_of(y),
                                     reduction)

    metrics = {'longtail/reweighted': loss_args['reweighted']}
    if block.cam_sampling:
      inputs, replaced = with_cam_images(key, inputs, labels, loss_args)
      metrics['longtail/cam_replaced_fraction'] = jnp.mean(replaced)
    if mode == 'none':
      def head_losses(logits):
        return jnp.stack([reduced(logits[h], labels) for h in heads])
      return inputs, head_losses, metrics, None
    mix_key = jax.random.fold_in(key, MIXUP_STREAM)
    on = loss_args['mixup_on'] > 0
    interceptor = None
    if mode == 'manifold':
      lam, permutation = lt_mixup.sample_mixup(
          mix_key, labels.shape[0], alpha)
      lam = jnp.where(on, lam, 1.0)
      mixed = lt_mixup.MixupBatch(
          inputs=inputs, labels_a=labels, labels_b=labels[permutation],
          lam=lam, label_lam=jnp.full(labels.shape, lam, jnp.float32),
          permutation=permutation)
      interceptor = manifold.manifold_mixup_interceptor(
          block.manifold_layer, lam, permutation)
    else:
      if mode == 'input':
        mixed = lt_mixup.mixup(mix_key, inputs, labels, alpha=alpha)
      else:
        mixed = lt_mixup.remix(mix_key, inputs, labels, counts, alpha=alpha,
                               kappa=kappa, tau=tau)
      mixed = mixed._replace(
          inputs=jax.tree.map(lambda m, x: jnp.where(on, m, x),
                              mixed.inputs, inputs),
          lam=jnp.where(on, mixed.lam, 1.0),
          label_lam=jnp.where(on, mixed.label_lam, 1.0),
      )
    metrics.update({'longtail/mixup_on': loss_args['mixup_on'],
                    'longtail/mixup_lam': mixed.lam})

    def mixed_reduced(logits):
      if reduction == 'mean':
        return jnp.mean(lt_mixup.mixed_loss(weighted, logits, mixed))
      # Σ λ w_a ℓ_a / Σ w_a + Σ (1 - λ) w_b ℓ_b / Σ w_b: for one λ per
      # batch the official ``λ criterion(y_a) + (1 - λ) criterion(y_b)``.
      total = 0.0
      for share, y in ((mixed.label_lam, mixed.labels_a),
                       (1 - mixed.label_lam, mixed.labels_b)):
        total += (jnp.sum(share * weighted(logits, y))
                  / jnp.sum(weight_of(y)))
      return total

    def mixed_head_losses(logits):
      return jnp.stack([mixed_reduced(logits[h]) for h in heads])
    return mixed.inputs, mixed_head_losses, metrics, interceptor

  return objective


def training_source(
    config: ml_collections.ConfigDict, source: pipeline.Source
) -> pipeline.Source:
  """The examples training draws from: all, or ROS's / RUS's multiset.

  Random over-sampling repeats each class up to ``n_max`` and random
  under-sampling keeps ``n_min`` of each (Zhang et al., 2021, §"Re-sampling
  methods"; `sampling.random_over_sampling`, `random_under_sampling`), fixed
  once with ``data.shuffle_seed``; an epoch is then one pass over that
  multiset.

  Args:
    config: the run config.
    source: the training split.

  Returns:
    ``source`` itself, or a `pipeline.IndexSubset` of it.
  """
  resample = FIXED_RESAMPLING.get(config.longtail.sampler)
  if resample is None:
    return source
  indices = resample(pipeline.source_labels(source),
                     seed=config.data.shuffle_seed)
  return pipeline.IndexSubset(source, indices)


class LongTail(methods.Method):
  """The long-tail parts of one run (``config.longtail``).

  Built from the run's `methods.RunInfo` (``splits.train_class_counts`` are
  the ``n_c``).

  Raises:
    ValueError: for a switch epoch beyond the run, a class with no
      training example where the loss or sampler needs every class, a
      manifold-mixup layer the model lacks, or a model CAMs cannot use.
  """

  block = 'longtail'
  default_config = staticmethod(default_longtail_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    check_config(config)

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    block = config.longtail
    return (uses_objective(config) or block.sampler != 'instance'
            or bool(block.shot_metrics) or block.posthoc_tau > 0
            or bool(block.decoupling))

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    block = config.longtail
    used = set()
    if uses_objective(config):
      used.add('objective')
    if block.mixup != 'none':
      used.add('mixup')
    if block.sampler != 'instance':
      used.add('resampling')
    if block.decoupling in CLASSIFIER_STAGES:
      used.update(('resampling', 'classifier_stage'))
    return frozenset(used)

  @classmethod
  def training_source(cls, config: ml_collections.ConfigDict,
                      source: pipeline.Source) -> pipeline.Source:
    return training_source(config, source)

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    config, splits = run.config, run.splits
    steps_per_epoch, total_steps = run.steps_per_epoch, run.total_steps
    self.settings = config.longtail
    self.splits = splits
    self.counts = np.asarray(splits.train_class_counts, np.int64)
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = total_steps
    self.heads = tuple(run.heads)
    self.model = run.model
    self.total_epochs = total_steps / steps_per_epoch
    block = self.settings
    for key in ('drw_epoch', 'drs_epoch'):
      if block[key] >= 0 and not block[key] < self.total_epochs:
        raise ValueError(
            f'config.longtail.{key}={block[key]} is beyond the run '
            f'({self.total_epochs:g} epochs); allowed: -1 (off) or '
            f'0 <= epoch < {self.total_epochs:g}.'
        )
    if block.mixup != 'none' and not (
        block.mixup_off_last_epochs < self.total_epochs):
      raise ValueError(
          'config.longtail.mixup_off_last_epochs='
          f'{block.mixup_off_last_epochs} leaves no epoch with mixup in a '
          f'run of {self.total_epochs:g} epochs; allowed: 0 <= N < '
          f'{self.total_epochs:g}.'
      )
    needs_all = (block.loss not in ('ce', 'focal') or block.drw_epoch >= 0
                 or block.mixup == 'remix' or block.sampler != 'instance'
                 or block.posthoc_tau > 0
                 or block.decoupling in CLASSIFIER_STAGES)
    empty = np.flatnonzero(self.counts == 0)
    if needs_all and empty.size:
      raise ValueError(
          f'Classes {empty.tolist()} have no training example (counts '
          f'{self.counts.tolist()}); config.longtail (loss={block.loss!r}, '
          f'sampler={block.sampler!r}, drw_epoch={block.drw_epoch}, '
          f'mixup={block.mixup!r}) needs every class.'
      )
    self.mixup_off_step = total_steps - int(
        block.mixup_off_last_epochs * steps_per_epoch)
    self.drw_step = (int(block.drw_epoch * steps_per_epoch)
                     if block.drw_epoch >= 0 else None)
    self.cam_step = (int(block.drs_epoch * steps_per_epoch)
                     if block.cam_sampling else None)
    self.modality = next(iter(splits.modalities))
    if block.mixup == 'manifold' or block.cam_sampling:
      self._check_model()
    self.classifier_step = self._classifier_stage_start()
    self._classifier_tx = None
    self._classifier_schedule = None
    self._tau_norm = None
    self._loss_args = {}
    self._cam_variables = None
    self._final_per_class = None
    self._per_class_eval = {}

  def _check_model(self) -> None:
    if self.model is None:
      raise ValueError('Manifold mixup and CAM-based sampling need the model.')
    inputs = {m: jax.ShapeDtypeStruct((1, *shape), jnp.float32)
              for m, shape in self.splits.modalities.items()}
    variables = jax.eval_shape(
        functools.partial(self.model.init, train=False),
        {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, inputs)
    if self.settings.mixup == 'manifold':
      manifold.check_layer(self.model, variables, inputs,
                           self.settings.manifold_layer)
    if self.settings.cam_sampling:
      cam_sampling.check_cam_model(self.model, variables, inputs,
                                   self.modality)

  def _classifier_stage_start(self) -> int | None:
    """The first step of cRT's or LWS's classifier stage (None: none)."""
    block = self.settings
    if block.decoupling not in CLASSIFIER_STAGES:
      return None
    start = self.total_steps - int(block.decoupling_epochs
                                   * self.steps_per_epoch)
    if start <= 0:
      raise ValueError(
          f'config.longtail.decoupling_epochs={block.decoupling_epochs} '
          f'leaves no representation epoch in a run of '
          f'{self.total_epochs:g} epochs; allowed: 1 <= N < '
          f'{self.total_epochs:g}.'
      )
    if start % self.steps_per_epoch:
      raise ValueError(
          f'config.longtail.decoupling_epochs={block.decoupling_epochs} '
          f'starts the classifier stage at step {start}, inside an epoch of '
          f'{self.steps_per_epoch} steps (a run of {self.total_steps} '
          'steps); make the run a whole number of epochs.'
      )
    return start

  # Decoupled classifier learning: the stage's optimiser and its start.

  def wrap_optimizer(self, optimizer):
    """cRT / LWS: ``optimizer`` for the representation stage, then the
    classifier stage's own (`decoupling.decoupled_stages`).

    Args:
      optimizer: the run's optimiser (`optim.build_optimizer`).

    Returns:
      ``optimizer`` itself without a classifier stage; else
      ``decoupled_stages(optimizer, crt_classifier(stage) |
      lws_classifier(stage))`` with ``stage`` = ``config.optimizer``'s
      optimiser, momentum and weight decay on a cosine schedule over the
      stage from ``decoupling_learning_rate``, no warm-up.
    """
    if self.classifier_step is None:
      return optimizer
    block = self.settings
    stage = self.config.optimizer.copy_and_resolve_references()
    stage.unlock()
    stage.update(schedule='cosine', warmup_epochs=0.0, boundaries_epochs=())
    if block.decoupling_learning_rate is not None:
      stage.learning_rate = float(block.decoupling_learning_rate)
    lengths = {'total_steps': self.total_steps - self.classifier_step,
               'steps_per_epoch': self.steps_per_epoch}
    inner = optim.build_optimizer(stage, **lengths)
    self._classifier_schedule = optim.learning_rate_schedule(stage,
                                                             **lengths)
    self._classifier_tx = (lt_decoupling.crt_classifier(inner)
                           if block.decoupling == 'crt'
                           else lt_decoupling.lws_classifier(inner))
    return lt_decoupling.decoupled_stages(optimizer, self._classifier_tx)

  def before_step(self, step: int, state: Any) -> Any | None:
    """At the classifier stage's first step: cRT's new classifier, and the
    stage's fresh optimiser state (LWS: ``s = 1`` on the classifier of this
    step).

    A run resumed at this step makes the same change (the kernel's key is
    ``fold_in(state.rng, step)``); one resumed later restores it.

    Args:
      step: the step about to run.
      state: the train state before it.

    Returns:
      None, or at the stage's first step the changed state (replicated).
    """
    if step != self.classifier_step:
      return None
    params = state.params
    if self.settings.decoupling == 'crt':
      params = lt_decoupling.reinitialized_classifier(
          params, jax.random.fold_in(state.rng, step))
    opt_state = lt_decoupling.start_classifier_stage(
        state.opt_state, params, self._classifier_tx)
    return self.services.put(state.replace(params=params,
                                           opt_state=opt_state))

  # The objective and its per-step arguments.

  def objective(self) -> steps.Objective | None:
    """The step's objective, or None for plain cross-entropy."""
    if not uses_objective(self.config):
      return None
    return make_objective(
        self.settings, self.counts, self.heads, model=self.model,
        modality=self.modality,
        normalized_heads=bool(self.config.model.get('normalized_heads',
                                                    False)))

  def step_hooks(self) -> methods.StepHooks:
    return methods.StepHooks(
        objective=self.objective(),
        opt_state_metrics=(self._stage_metrics
                           if self.classifier_step is not None else None))

  def _stage_metrics(self, opt_state: Any) -> dict[str, jax.Array]:
    """``longtail/classifier_stage`` (0 or 1), the classifier stage's
    learning rate of the step (0 before the stage; ``learning_rate`` stays
    the representation schedule's), and LWS's smallest and largest scale."""
    state = lt_decoupling.decoupled_state(opt_state)
    on = state.stage > 0
    metrics = {
        'longtail/classifier_stage': on.astype(jnp.float32),
        'longtail/classifier_learning_rate': jnp.where(
            on, self._classifier_schedule(
                jnp.maximum(state.classifier_count - 1, 0)), 0.0),
    }
    lws = [s for s in jax.tree.leaves(
        state.classifier, is_leaf=lambda n: isinstance(
            n, lt_decoupling.LwsState))
           if isinstance(s, lt_decoupling.LwsState)]
    if lws:
      metrics['longtail/lws_scale_min'] = jnp.min(lws[0].scales)
      metrics['longtail/lws_scale_max'] = jnp.max(lws[0].scales)
    return metrics

  def step_args(self, step: int, state: Any) -> dict[str, Any]:
    """The loss weights (DRW) and mixup's on/off flag of this step."""
    if not uses_objective(self.config):
      return {}
    return {'loss_args': self.loss_args(
        step, self.services.put, state, self.services.workdir)}

  def stage(self, step: int) -> tuple[bool, bool, bool]:
    """``(reweighted, mixup_on, cam_on)`` of the step about to run."""
    reweighted = self.drw_step is not None and step >= self.drw_step
    mixup_on = self.settings.mixup != 'none' and step < self.mixup_off_step
    cam_on = self.cam_step is not None and step >= self.cam_step
    return reweighted, mixup_on, cam_on

  def loss_args(
      self,
      step: int,
      put: Callable[[Any], Any] | None = None,
      state: Any = None,
      workdir: str | None = None,
  ) -> dict[str, Any]:
    """The ``loss_args`` of step ``step`` (device arrays, cached).

    Args:
      step: the step about to run.
      put: puts a host pytree on the devices (e.g. replicated); None:
        ``jnp.asarray`` of every leaf.
      state: the train state before the step (CAM-based sampling: at the
        switch step its variables become the CAM model).
      workdir: where the CAM model is saved at the switch and read back
        by a run resumed after it.

    Returns:
      ``{'class_weights': [C], 'reweighted': (), 'mixup_on': ()}``, plus
      ``'cam_on'`` and ``'cam_variables'`` with CAM-based sampling.
    """
    stage = self.stage(step)
    if stage not in self._loss_args:
      reweighted, mixup_on, cam_on = stage
      weights = (np.asarray(lt_losses.class_balanced_weights(
          self.counts, self.settings.drw_beta)) if reweighted
                 else np.ones(len(self.counts)))
      put = put or functools.partial(jax.tree.map, jnp.asarray)
      args = {
          'class_weights': weights.astype(np.float32),
          'reweighted': np.float32(reweighted),
          'mixup_on': np.float32(mixup_on),
      }
      if self.cam_step is not None:
        args['cam_on'] = np.float32(cam_on)
        args['cam_variables'] = self._cam_model(step, state, workdir)
      self._loss_args[stage] = put(args)
    return self._loss_args[stage]

  def _cam_model(self, step: int, state: Any, workdir: str | None) -> Any:
    """The CAM model's variables (host arrays): zeros before the switch.

    At the switch step they are the state's, saved to ``cam_model.msgpack``
    (by process 0); after it (a resumed run) they are read from that file.
    """
    if state is None:
      raise ValueError('CAM-based sampling needs the train state.')
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    if step < self.cam_step:
      return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), variables)
    if self._cam_variables is None:
      path = os.path.join(workdir, CAM_MODEL_FILE) if workdir else None
      if step == self.cam_step:
        self._cam_variables = jax.tree.map(np.asarray,
                                           jax.device_get(variables))
        if path and jax.process_index() == 0:
          workdir_lib.write_bytes(path, flax.serialization.to_bytes(
              self._cam_variables))
      else:
        if not path or not os.path.exists(path):
          raise FileNotFoundError(
              f'Resumed at step {step}, after the CAM-based sampling switch '
              f'(step {self.cam_step}), but the switch-time model '
              f'{path!r} is missing.'
          )
        with open(path, 'rb') as f:
          template = jax.tree.map(np.asarray, jax.device_get(variables))
          self._cam_variables = flax.serialization.from_bytes(
              template, f.read())
    return self._cam_variables

  # Re-sampling.

  def sampler(self) -> sampling.EpochSampler | None:
    """The training split's sampler, or None for the plain shuffle.

    A sampler epoch holds ``steps_per_epoch · G`` indices: one trainer
    epoch, so that DRS and the progressive schedule switch at epoch
    boundaries of the loop.
    """
    block = self.settings
    if self.classifier_step is not None:
      # Class-balanced in the classifier stage (Kang et al., §3).
      schedule = sampling.deferred_schedule(
          sampling.class_probabilities(self.counts, 0.0),
          self.classifier_step // self.steps_per_epoch)
    elif block.sampler == 'instance' or block.sampler in FIXED_RESAMPLING:
      return None  # The shuffle (of `training_source` for ros and rus).
    elif block.sampler == 'progressive':
      schedule = sampling.progressive_schedule(self.counts, self.total_epochs)
    else:
      probabilities = sampling.class_probabilities(
          self.counts, SAMPLERS[block.sampler])
      schedule = sampling.deferred_schedule(
          probabilities, max(int(block.drs_epoch), 0))
    return sampling.EpochSampler(
        pipeline.source_labels(self.splits.train), schedule,
        seed=self.config.data.shuffle_seed,
        num_samples=self.steps_per_epoch * self.run.global_batch_size,
    )

  # Shot metrics.

  def _per_class_sums(self, state: Any, posthoc: bool = False,
                      tau_norm: float | None = None, source: Any = None):
    """``(correct [C], total [C])`` of the fused head on every batch of
    ``source`` (default: test): of its logits, its post-hoc adjusted logits
    (``posthoc``), or its τ-normalised classifier's (``tau_norm``: τ)."""
    variant = 'tau_norm' if tau_norm is not None else posthoc
    if variant not in self._per_class_eval:
      adjust = None
      if posthoc:
        adjust = functools.partial(
            _posthoc_adjusted, counts=self.counts,
            tau=float(self.settings.posthoc_tau))
      elif variant == 'tau_norm':
        adjust = _tau_normalized
      self._per_class_eval[variant] = jax.jit(make_per_class_eval(
          self.model, self.splits.num_classes, adjust))
    # Not ``tau``: the post-hoc closure above reads that name when traced.
    value = jnp.float32(tau_norm if tau_norm is not None else 0.0)
    source = self.splits.test if source is None else source
    for batch in self.services.eval_batches(source):
      yield jax.device_get(self._per_class_eval[variant](state, batch, value))

  def _tau_norm_metrics(self, state: Any) -> dict[str, float]:
    """Held-out and test accuracy of the τ-normalised classifier (Kang et
    al., §4), τ chosen on the held-out split unless configured."""
    tau = self.settings.decoupling_tau
    if tau is None:
      if self._tau_norm is None:
        self._tau_norm = jax.jit(make_tau_grid_eval(
            self.model, lt_decoupling.TAU_GRID))
      correct = np.zeros(len(lt_decoupling.TAU_GRID))
      total = 0.0
      for batch in self.services.eval_batches(self.splits.holdout):
        batch_correct, count = jax.device_get(self._tau_norm(state, batch))
        correct += np.asarray(batch_correct)
        total += float(count)
      tau = lt_decoupling.TAU_GRID[int(np.argmax(correct))]
    metrics = {'tau_norm/tau': float(tau)}
    for split, source in (('holdout', self.splits.holdout),
                          ('test', self.splits.test)):
      sums = list(self._per_class_sums(state, tau_norm=tau, source=source))
      correct = np.sum([np.asarray(c) for c, _ in sums], axis=0)
      count = np.sum([np.asarray(t) for _, t in sums], axis=0)
      metrics[f'{split}/fused/tau_norm_accuracy'] = float(
          correct.sum() / max(count.sum(), 1))
      if split == 'test' and self.settings.shot_metrics:
        shots, _ = self.shot_results(sums)
        metrics.update({k.replace('/fused/', '/fused/tau_norm_'): v
                        for k, v in shots.items()})
    return metrics

  def final_metrics(self, state: Any) -> dict[str, float]:
    """Many/medium/few-shot test accuracy (Zhang et al., AAAI 2021), and
    the post-hoc logit-adjusted accuracy (Menon et al., ICLR 2021)."""
    metrics = {}
    if self.settings.shot_metrics:
      shots, per_class = self.shot_results(self._per_class_sums(state))
      if self._final_per_class is None:  # The first state measured: final.
        self._final_per_class = per_class
      metrics.update(shots)
    if self.settings.posthoc_tau > 0:
      sums = list(self._per_class_sums(state, posthoc=True))
      correct = np.sum([np.asarray(c) for c, _ in sums], axis=0)
      total = np.sum([np.asarray(t) for _, t in sums], axis=0)
      metrics['test/fused/posthoc_accuracy'] = float(
          correct.sum() / max(total.sum(), 1))
      if self.settings.shot_metrics:
        shots, _ = self.shot_results(sums)
        metrics.update({k.replace('/fused/', '/fused/posthoc_'): v
                        for k, v in shots.items()})
    if self.settings.decoupling == 'tau_norm':
      metrics.update(self._tau_norm_metrics(state))
    return metrics

  def results(self, state: Any) -> dict[str, Any]:
    if self._final_per_class is None:
      return {}
    # The final model's test accuracy per class (NaN: no test example).
    return {'test_per_class_accuracy': [float(a)
                                        for a in self._final_per_class]}

  def draw_figures(self, workdir: str) -> list[str]:
    if self._final_per_class is None:
      return []
    path = plots.plot_per_class_accuracy(
        workdir, self.splits.train_class_counts, self._final_per_class)
    return [path] if path else []

  def shot_results(
      self, per_class_sums: Iterable[tuple[Any, Any]], split: str = 'test'
  ) -> tuple[dict[str, float], np.ndarray]:
    """Shot accuracies from per-batch ``(correct, total)`` sums.

    Args:
      per_class_sums: ``(correct [C], total [C])`` of every batch.
      split: the split measured, for the metric names.

    Returns:
      ``({'<split>/fused/<group>_accuracy': ..., '<split>/fused/top1_error':
      ...}, per-class accuracy [C])``.
    """
    correct = np.zeros(self.splits.num_classes)
    total = np.zeros(self.splits.num_classes)
    for batch_correct, batch_total in per_class_sums:
      correct += np.asarray(batch_correct)
      total += np.asarray(batch_total)
    measured = shot_metrics.shot_accuracies(correct, total, self.counts)
    results = {f'{split}/{steps.FUSED}/{name}': value
               for name, value in measured.items() if name != 'accuracy'}
    per_class = np.divide(correct, total, out=np.full_like(correct, np.nan),
                          where=total > 0)
    return results, per_class



def make_per_class_eval(
    model: nn.Module, num_classes: int,
    adjust: Callable[..., jax.Array] | None = None,
) -> Callable[..., Any]:
  """``(state, batch, value=0) -> (correct [C], total [C])`` of the fused
  head (its logits passed through ``adjust(logits, params, value)`` first,
  if given)."""

  def per_class(state, batch, value=0.0):
    out, _ = steps.forward(
        model, state.params, state.batch_stats, steps.model_inputs(batch),
        train=False,
    )
    logits = out['logits'][steps.FUSED]
    if adjust is not None:
      logits = adjust(logits, state.params, value)
    return shot_metrics.per_class_correct(
        logits, batch['label'], num_classes, batch['mask'],
    )

  return per_class


def _posthoc_adjusted(logits: jax.Array, params: Any, value: Any, *,
                      counts: np.ndarray, tau: float) -> jax.Array:
  """The fused logits adjusted post hoc, ``z - τ log π`` (Menon et al.)."""
  del params, value
  return lt_losses.posthoc_adjusted_logits(logits, counts, tau=tau)


def _tau_normalized(logits: jax.Array, params: Any, tau: jax.Array):
  """The fused logits of the τ-normalised classifier (bias dropped)."""
  layer = lt_decoupling.classifier_params(params)
  return lt_decoupling.tau_normalized_logits(logits, layer['kernel'],
                                             layer['bias'], tau)


def make_tau_grid_eval(
    model: nn.Module, taus: Sequence[float]
) -> Callable[..., Any]:
  """``(state, batch) -> (correct [T], count)``: the fused head's correct
  predictions with the τ-normalised classifier of each τ (one forward
  pass, `decoupling.tau_normalized_logits`)."""
  taus = jnp.asarray(taus, jnp.float32)

  def tau_grid(state, batch):
    out, _ = steps.forward(
        model, state.params, state.batch_stats, steps.model_inputs(batch),
        train=False,
    )
    logits = out['logits'][steps.FUSED]
    normalized = jax.vmap(lambda t: _tau_normalized(logits, state.params,
                                                    t))(taus)
    hits = jnp.argmax(normalized, axis=-1) == batch['label']
    mask = batch['mask'].astype(jnp.float32)
    return jnp.sum(hits * mask, axis=-1), jnp.sum(mask)

  return tau_grid


METHOD = LongTail
