r"""The long-tail recipes shared by the long-tailed configs.

Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition with
Deep Convolutional Neural Networks" (AAAI 2021). Each recipe sets
``config.longtail`` (see `gblend_jax.config`); a config file chooses the data,
the model and the schedule, and passes the schedule's switch epoch (the
start of the second stage of two-stage recipes) and the number of final
epochs without mixup. The configs that use this table:
``fashion_mnist_lt.py``, ``cifar_lt.py``, ``imagenet_lt.py``,
``inat2018.py``.

Recipes (``recipe=R``; keep this list and ``RECIPES`` together):
  ce                 cross-entropy, instance-balanced sampling (baseline)
  cs_ce | focal | cb_focal | cb_ce | balanced_softmax   re-weighting
  ldam_drw           LDAM, class-balanced re-weighting from the switch
  drw                CE, then class-balanced weights (deferred re-weighting)
  cb_sampling | sqrt_sampling | progressive   re-sampling from the start
  ros | rus          random over- / under-sampling (a fixed balanced set)
  drs                CE, instance-balanced, then class-balanced sampling
  drs_cam            DRS whose second stage samples CAM-based images
                     (CAM-based balanced sampling)
  cs_ce_cb_sampling  the paper's known-bad pair: CS-CE with class-balanced
                     sampling
  mixup | remix      input mixup / Remix (alpha = 1) to the end
  manifold_mixup     manifold mixup after global pooling (alpha = 1)
  mixup_ft           input mixup, then the last epochs without mixup
  best_bag           the paper's best bag: input mixup, DRS with CAM-based
                     balanced sampling, fine-tuning without mixup
  logit_adjusted     the logit-adjusted loss, τ = 1 (Menon et al., ICLR
                     2021)
  ce_posthoc         CE, measured also with post-hoc logit adjustment (τ =
                     1, Menon et al.) and with the τ-normalised classifier
                     (τ chosen on the held-out split, Kang et al., ICLR
                     2020): two post-hoc rows of one run
  crt | lws          CE, instance-balanced, then from the switch epoch the
                     classifier stage of Kang et al. (ICLR 2020): cRT
                     (re-initialised classifier) or LWS (per-class scales)
                     on the frozen backbone, class-balanced sampling, its
                     own cosine schedule from the base learning rate; the
                     same epochs in all as the other recipes

Loss forms (``config.longtail``; see `gblend_jax.longtail.method`). The
recipes keep the forms their committed results were measured with and set
them explicitly where the official code (BagofTricks-LT, LDAM-DRW,
class-balanced-loss) differs:
  focal, cb_focal    focal_form='softmax'; the official code: 'sigmoid'
  cs_ce, cb_ce, drw, ldam_drw, cs_ce_cb_sampling
                     reduction='mean', (1/B) Σ w_y ℓ; the official code:
                     'weighted_mean', Σ w_y ℓ / Σ w_y (PyTorch's weighted
                     CE)
  ldam_drw           linear heads with ldam_scale=1.0; the official code:
                     the cosine classifier (model.normalized_heads=True)
                     with s = 30 (ldam_scale None chooses 30 there)
"""

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence

import ml_collections

RECIPES = ('ce', 'cs_ce', 'focal', 'cb_focal', 'cb_ce', 'balanced_softmax',
           'ldam_drw', 'drw', 'cb_sampling', 'sqrt_sampling', 'progressive',
           'ros', 'rus', 'drs', 'drs_cam', 'cs_ce_cb_sampling', 'mixup',
           'remix', 'manifold_mixup', 'mixup_ft', 'best_bag',
           'logit_adjusted', 'ce_posthoc', 'crt', 'lws')
# Recipes that train with mixup (the paper advises a longer schedule).
MIXUP_RECIPES = ('mixup', 'remix', 'manifold_mixup', 'mixup_ft', 'best_bag')
REWEIGHTING_LOSSES = ('cs_ce', 'focal', 'cb_focal', 'cb_ce',
                      'balanced_softmax')


@dataclasses.dataclass(frozen=True)
class Schedule:
  """An SGD step schedule and the epochs at which the recipes switch.

  Attributes:
    epochs: Training epochs.
    warmup_epochs: Linear warm-up epochs.
    boundaries_epochs: Epochs at which the learning rate is multiplied by
      0.1 (x 0.01 after the second).
    switch_epoch: Start of the second stage (DRW, DRS).
    no_mixup_epochs: Final epochs without mixup (``mixup_ft``,
      ``best_bag``).
  """

  epochs: int
  warmup_epochs: float
  boundaries_epochs: tuple[float, ...]
  switch_epoch: int
  no_mixup_epochs: int


# The paper's CIFAR-LT schedule (Zhang et al., 2021; SPEC §3): 200 epochs, 5
# warm-up, x 0.1 at 160 and 180, the second stage from 160, no mixup for the
# last 20.
CIFAR_PAPER_SCHEDULE = Schedule(
    epochs=200, warmup_epochs=5, boundaries_epochs=(160, 180),
    switch_epoch=160, no_mixup_epochs=20)


def long_mixup_schedule(schedule: Schedule) -> Schedule:
  """The schedule twice as long: the authors' 400 epochs for mixup.

  Zhang et al. (2021) advise 400 epochs with mixup on CIFAR-LT, lr steps at
  320 and 360 (SPEC §3): every epoch count but the warm-up doubled, so the
  second stage starts at 320 and the last 40 epochs go without mixup.

  Args:
    schedule: The recipe's schedule without mixup.

  Returns:
    The same schedule with ``epochs``, ``boundaries_epochs``,
    ``switch_epoch`` and ``no_mixup_epochs`` doubled.
  """
  return dataclasses.replace(
      schedule, epochs=2 * schedule.epochs,
      boundaries_epochs=tuple(2 * b for b in schedule.boundaries_epochs),
      switch_epoch=2 * schedule.switch_epoch,
      no_mixup_epochs=2 * schedule.no_mixup_epochs)


def check_choices(
    args: Mapping[str, object], choices: Mapping[str, Sequence[str]]
) -> None:
  """Rejects a config argument that is not among its choices.

  Args:
    args: Parsed config arguments (``common.parse_arg``).
    choices: Argument name to its valid values.

  Raises:
    ValueError: naming the argument, its value and the valid values.
  """
  for key, valid in choices.items():
    if args[key] not in valid:
      raise ValueError(f'Unknown {key}={args[key]!r}; valid: {list(valid)}.')


def apply_sgd_schedule(
    config: ml_collections.ConfigDict,
    schedule: Schedule,
    *,
    learning_rate: float,
    weight_decay: float,
) -> None:
  """Sets SGD (momentum 0.9) with a warmed-up step schedule and the epochs.

  Args:
    config: The run's config, changed in place.
    schedule: Epochs, warm-up and the x 0.1 boundaries.
    learning_rate: Base learning rate.
    weight_decay: Weight decay.
  """
  optimizer = config.optimizer
  optimizer.name = 'sgd'
  optimizer.learning_rate = learning_rate
  optimizer.momentum = 0.9
  optimizer.weight_decay = weight_decay
  optimizer.schedule = 'step'
  optimizer.warmup_epochs = float(schedule.warmup_epochs)
  optimizer.boundaries_epochs = tuple(
      float(b) for b in schedule.boundaries_epochs)
  optimizer.decay_factor = 0.1  # x 0.1 at each boundary.
  config.num_epochs = schedule.epochs
  config.eval_every_epochs = max(schedule.epochs // 10, 1)


def apply_recipe(
    longtail: ml_collections.ConfigDict,
    recipe: str,
    *,
    switch_epoch: int,
    no_mixup_epochs: int,
    classifier_epochs: int | None = None,
) -> None:
  """Sets ``config.longtail`` for one recipe of ``RECIPES``.

  Args:
    longtail: The ``config.longtail`` block, changed in place.
    recipe: A name of ``RECIPES``.
    switch_epoch: Start of the second stage (DRW, DRS).
    no_mixup_epochs: Final epochs without mixup.
    classifier_epochs: The epochs of cRT's and LWS's classifier stage (the
      run's epochs after the switch epoch); needed by ``crt`` and ``lws``.

  Raises:
    ValueError: for a recipe not in ``RECIPES``, or ``crt`` / ``lws``
      without ``classifier_epochs``.
  """
  check_choices({'recipe': recipe}, {'recipe': RECIPES})
  longtail.shot_metrics = True
  if recipe in REWEIGHTING_LOSSES:
    longtail.loss = recipe
    longtail.focal_gamma = 1.0
    if recipe in ('focal', 'cb_focal'):
      longtail.focal_form = 'softmax'  # The official code: 'sigmoid'.
    if recipe in ('cs_ce', 'cb_ce'):
      longtail.reduction = 'mean'  # The official code: 'weighted_mean'.
  elif recipe == 'ldam_drw':
    longtail.loss = 'ldam'
    # Linear heads, so s = 1 on raw logits; the official code uses the
    # cosine classifier (model.normalized_heads=True) with s = 30.
    longtail.ldam_scale = 1.0
    longtail.drw_epoch = switch_epoch
    longtail.reduction = 'mean'  # The official code: 'weighted_mean'.
  elif recipe == 'drw':
    longtail.drw_epoch = switch_epoch
    longtail.reduction = 'mean'  # The official code: 'weighted_mean'.
  elif recipe == 'cb_sampling':
    longtail.sampler = 'class_balanced'
  elif recipe == 'sqrt_sampling':
    longtail.sampler = 'sqrt'
  elif recipe in ('progressive', 'ros', 'rus'):
    longtail.sampler = recipe
  elif recipe in ('drs', 'drs_cam'):
    longtail.sampler = 'class_balanced'
    longtail.drs_epoch = switch_epoch
    longtail.cam_sampling = recipe == 'drs_cam'
  elif recipe == 'cs_ce_cb_sampling':
    longtail.loss = 'cs_ce'
    longtail.sampler = 'class_balanced'
    longtail.reduction = 'mean'  # The official code: 'weighted_mean'.
  elif recipe in ('mixup', 'remix', 'mixup_ft'):
    longtail.mixup = 'remix' if recipe == 'remix' else 'input'
    if recipe == 'mixup_ft':
      longtail.mixup_off_last_epochs = no_mixup_epochs
  elif recipe == 'manifold_mixup':
    longtail.mixup = 'manifold'  # At 'pooled': after global pooling.
  elif recipe == 'logit_adjusted':
    longtail.loss = 'logit_adjusted'
    longtail.logit_adjustment_tau = 1.0
  elif recipe == 'ce_posthoc':
    longtail.posthoc_tau = 1.0
    longtail.decoupling = 'tau_norm'  # τ chosen on the held-out split.
  elif recipe in ('crt', 'lws'):
    if not classifier_epochs:
      raise ValueError(
          f'recipe={recipe!r} needs classifier_epochs (the epochs after the '
          f'switch epoch), got {classifier_epochs!r}.'
      )
    longtail.decoupling = recipe
    longtail.decoupling_epochs = int(classifier_epochs)
  elif recipe == 'best_bag':
    longtail.mixup = 'input'
    longtail.sampler = 'class_balanced'
    longtail.drs_epoch = switch_epoch
    longtail.cam_sampling = True
    longtail.mixup_off_last_epochs = no_mixup_epochs


def shrink_for_runlocal(config: ml_collections.ConfigDict) -> None:
  """Two epochs, no warm-up or steps, stages switching after epoch 1.

  Args:
    config: The run's config, changed in place.
  """
  config.num_epochs = 2
  config.eval_every_epochs = 1
  config.log_every_steps = 5
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.boundaries_epochs = ()
  longtail = config.longtail
  if longtail.drw_epoch > 0:
    longtail.drw_epoch = 1
  if longtail.drs_epoch > 0:
    longtail.drs_epoch = 1
  if longtail.mixup_off_last_epochs:
    longtail.mixup_off_last_epochs = 1
  if longtail.decoupling_epochs:
    longtail.decoupling_epochs = 1
