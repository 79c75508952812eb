r"""Fashion-MNIST-LT: the bag of tricks for long-tailed recognition.

Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition with
Deep Convolutional Neural Networks" (AAAI 2021) on real offline data:
Fashion-MNIST (Debian package `dataset-fashion-mnist`, `make fashion-mnist`)
made long-tailed by the exponential profile ``n_c = int(n_max ·
IF^{-c/(C-1)})`` after a balanced held-out split (10 % of each class) is carved
out; the test split stays balanced. Single modality ``image`` (28 x 28, one
channel, each pixel standardised on the training split) into a CIFAR-style
ResNet with a linear classifier.

  python -m experiments.main \
      --config experiments/configs/fashion_mnist_lt.py:recipe=drw \
      --workdir /tmp/fmnist_lt_drw

Arguments (comma-separated):
  imbalance=100|50   the imbalance factor IF (default 100).
  profile=exponential|step   the long-tail profile (default exponential).
  recipe=R           one of RECIPES (default ce):
    ce                 cross-entropy, instance-balanced sampling (baseline)
    cs_ce | focal | cb_focal | cb_ce | balanced_softmax   re-weighting
    ldam_drw           LDAM, class-balanced re-weighting from the switch
    drw                CE, then class-balanced weights (deferred re-weighting)
    cb_sampling | sqrt_sampling | progressive   re-sampling from the start
    drs                CE, instance-balanced, then class-balanced sampling
    cs_ce_cb_sampling  the paper's known-bad pair: CS-CE with class-balanced
                       sampling
    mixup | remix      input mixup / Remix (alpha = 1) to the end
    mixup_ft           input mixup, then the last epochs without mixup
    best_bag           input mixup, DRS with class-balanced sampling,
                       fine-tuning without mixup (the paper's best bag uses
                       CAM-based balanced sampling in the DRS stage; here
                       plain class-balanced sampling)
  budget=paper|cpu   paper: ResNet-32, n_max = 5400 (all of a class after
                     the held-out split), 200 epochs, batch 128, SGD
                     momentum 0.9, wd 2e-4, lr 0.1, 5 warm-up epochs, lr x
                     0.01 at 160 and 180, switches at 160, no mixup for the
                     last 20 epochs.
                     cpu (default): the reduced recipe that fits 2 CPU
                     cores: ResNet-8 (depth 8: one block per stage, widths
                     16/32/64 as ResNet-32), n_max = 1000 (IF 100: 1000 ..
                     10 images, 2478 in all; IF 50: 1000 .. 20, 2795; so
                     there are few-shot classes, which n_max = 5400 at
                     IF 100 (5400 .. 54) lacks), 30 epochs, 1 warm-up
                     epoch, lr x 0.01 at 24 and 27, switches at 24, no
                     mixup for the last 3 epochs.
  runlocal           a few steps on the cpu budget, for a quick check.

No data augmentation (the paper's CIFAR pad-crop-flip is not applied).
Results report overall, many- (> 100 training images), medium- (20 to 100)
and few-shot (< 20) test accuracy (``results.json``) and
``per_class_accuracy.png``.
"""

import ml_collections

from experiments.configs import common
from gblend_jax import config as config_lib

RECIPES = ('ce', 'cs_ce', 'focal', 'cb_focal', 'cb_ce', 'balanced_softmax',
           'ldam_drw', 'drw', 'cb_sampling', 'sqrt_sampling', 'progressive',
           'drs', 'cs_ce_cb_sampling', 'mixup', 'remix', 'mixup_ft',
           'best_bag')
IMBALANCES = ('100', '50')
# epochs, warm-up, lr boundaries, switch epoch, no-mixup epochs, depth, n_max.
BUDGETS = {
    'paper': dict(epochs=200, warmup=5, boundaries=(160, 180), switch=160,
                  no_mixup=20, depth=32, max_count=0),
    'cpu': dict(epochs=30, warmup=1, boundaries=(24, 27), switch=24,
                no_mixup=3, depth=8, max_count=1000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, imbalance='100', profile='exponential',
                          recipe='ce', budget='cpu', runlocal=False)
  for key, valid in (('imbalance', IMBALANCES), ('recipe', RECIPES),
                     ('budget', tuple(BUDGETS)),
                     ('profile', ('exponential', 'step'))):
    if args[key] not in valid:
      raise ValueError(f'Unknown {key}={args[key]!r}; valid: {list(valid)}.')
  budget = BUDGETS[args['budget']]

  config = config_lib.default_config()
  config.data.name = 'fashion_mnist'
  config.data.modalities = ('image',)
  config.data.holdout_fraction = 0.1
  config.data.standardize = True
  config.data.batch_size = 128
  config.data.eval_batch_size = 1000
  config.data.longtail.profile = args['profile']
  config.data.longtail.imbalance_factor = float(args['imbalance'])
  config.data.longtail.max_count = budget['max_count']

  config.model.encoder.name = 'cifar_resnet'
  config.model.encoder.cifar_resnet.depth = budget['depth']
  config.model.fused_head.hidden_sizes = ()  # A linear classifier.
  config.model.modality_heads = False

  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 2e-4
  config.optimizer.schedule = 'step'
  config.optimizer.warmup_epochs = float(budget['warmup'])
  config.optimizer.boundaries_epochs = tuple(
      float(b) for b in budget['boundaries'])
  config.optimizer.decay_factor = 0.1  # x 0.1 twice: x 0.01 at the second.
  config.num_epochs = budget['epochs']
  config.eval_every_epochs = max(budget['epochs'] // 10, 1)
  config.log_every_steps = 50

  longtail = config.longtail
  longtail.shot_metrics = True
  recipe, switch = args['recipe'], budget['switch']
  if recipe in ('cs_ce', 'focal', 'cb_focal', 'cb_ce', 'balanced_softmax'):
    longtail.loss = recipe
    longtail.focal_gamma = 1.0
  elif recipe == 'ldam_drw':
    longtail.loss = 'ldam'
    # The classifier is not cosine-normalised as in Cao et al. (s = 30).
    longtail.ldam_scale = 1.0
    longtail.drw_epoch = switch
  elif recipe == 'drw':
    longtail.drw_epoch = switch
  elif recipe in ('cb_sampling', 'sqrt_sampling'):
    longtail.sampler = recipe.replace('_sampling', '').replace(
        'cb', 'class_balanced')
  elif recipe == 'progressive':
    longtail.sampler = 'progressive'
  elif recipe == 'drs':
    longtail.sampler = 'class_balanced'
    longtail.drs_epoch = switch
  elif recipe == 'cs_ce_cb_sampling':
    longtail.loss = 'cs_ce'
    longtail.sampler = 'class_balanced'
  elif recipe in ('mixup', 'remix', 'mixup_ft'):
    longtail.mixup = 'remix' if recipe == 'remix' else 'input'
    if recipe == 'mixup_ft':
      longtail.mixup_off_last_epochs = budget['no_mixup']
  elif recipe == 'best_bag':
    longtail.mixup = 'input'
    longtail.sampler = 'class_balanced'
    longtail.drs_epoch = switch
    longtail.mixup_off_last_epochs = budget['no_mixup']

  if args['runlocal']:
    config.num_epochs = 2
    config.eval_every_epochs = 1
    config.log_every_steps = 5
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.boundaries_epochs = ()
    if longtail.drw_epoch > 0:
      longtail.drw_epoch = 1
    if longtail.drs_epoch > 0:
      longtail.drs_epoch = 1
    if longtail.mixup_off_last_epochs:
      longtail.mixup_off_last_epochs = 1
  return config
