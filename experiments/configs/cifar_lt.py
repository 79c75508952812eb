r"""CIFAR-10-LT / CIFAR-100-LT: the bag of tricks on its own benchmark.

Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition with
Deep Convolutional Neural Networks" (AAAI 2021), CIFAR recipe (SPEC §3):
CIFAR made long-tailed by the exponential profile ``n_c = int(n_max ·
IF^{-c/(C-1)})`` after a small balanced held-out split (2 % of each class:
100 images of CIFAR-10, 10 of CIFAR-100) is carved out; the test split stays
balanced. Single modality ``image`` (32 x 32 x 3, each pixel standardised on
the training split) into ResNet-32 with a linear classifier; training
batches are padded 4 pixels, randomly cropped to 32 x 32 and flipped
(``data.augmentation='pad_crop_flip'``; the padding is the training mean,
as the pixels are already standardised); test images are only normalised.

  python -m experiments.main \
      --config experiments/configs/cifar_lt.py:dataset=cifar100,recipe=drw \
      --workdir /tmp/cifar100_lt_drw

Arguments (comma-separated):
  dataset=cifar10|cifar100   the data set (default cifar10).
  imbalance=100|50   the imbalance factor IF (default 100).
  profile=exponential|step   the long-tail profile (default exponential).
  recipe=R           one of longtail_recipes.RECIPES (default ce), listed
                     in experiments/configs/longtail_recipes.py, which
                     also says which loss forms they use (softmax focal,
                     (1/B) reduction, linear heads with LDAM s = 1) where
                     the official code's differ.
  budget=paper|cpu   paper (default): ResNet-32, n_max = all of a class
                     after the held-out split (4900 / 490; the paper's 5000
                     / 500 less the held-out images), 200 epochs, batch
                     128, SGD momentum 0.9, wd 2e-4, lr 0.1, 5 warm-up
                     epochs, lr x 0.1 at 160 and again at 180 (x 0.01 in
                     all), two-stage recipes switch at 160, mixup off for
                     the last 20 epochs.
                     cpu: what fits 2 CPU cores: ResNet-8 (one block per
                     stage), n_max = 1000 (CIFAR-10) or all 490
                     (CIFAR-100), 30 epochs, 1 warm-up epoch, lr x 0.1 at
                     24 and 27, switches at 24, no mixup for the last 3.
  long_mixup         with a recipe of longtail_recipes.MIXUP_RECIPES, the
                     authors' longer schedule: 400 epochs, steps at 320
                     and 360, switch at 320, mixup off for the last 40
                     (the paper budget doubled); cpu: 60 epochs, steps at
                     48 and 54, switch at 48, the last 6 without mixup.
  runlocal           a few steps of ResNet-8 on n_max = 100, for a quick
                     check.

Results report overall, many- (> 100 training images), medium- (20 to 100)
and few-shot (< 20) test accuracy (``results.json``) and
``per_class_accuracy.png``. The data sets ``cifar10`` and ``cifar100`` are
built from the CIFAR python archives (``data/cifar10``, ``data/cifar100``).
"""

import ml_collections

from experiments.configs import common
from experiments.configs import longtail_recipes
from gblend_jax import config as config_lib

RECIPES = longtail_recipes.RECIPES
DATASETS = ('cifar10', 'cifar100')
IMBALANCES = ('100', '50')
BUDGETS = {
    'paper': longtail_recipes.CIFAR_PAPER_SCHEDULE,
    'cpu': longtail_recipes.Schedule(
        epochs=30, warmup_epochs=1, boundaries_epochs=(24, 27),
        switch_epoch=24, no_mixup_epochs=3),
}
DEPTHS = {'paper': 32, 'cpu': 8}
# n_max of each budget and data set (0: all of the smallest class).
MAX_COUNTS = {('paper', 'cifar10'): 0, ('paper', 'cifar100'): 0,
              ('cpu', 'cifar10'): 1000, ('cpu', 'cifar100'): 0}
HOLDOUT_FRACTION = 0.02


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dataset='cifar10', imbalance='100',
                          profile='exponential', recipe='ce',
                          budget='paper', long_mixup=False, runlocal=False)
  longtail_recipes.check_choices(args, {
      'dataset': DATASETS, 'imbalance': IMBALANCES, 'recipe': RECIPES,
      'budget': tuple(BUDGETS), 'profile': ('exponential', 'step')})
  schedule = BUDGETS[args['budget']]
  if args['long_mixup']:
    if args['recipe'] not in longtail_recipes.MIXUP_RECIPES:
      raise ValueError(
          f'long_mixup is for the mixup recipes '
          f'{list(longtail_recipes.MIXUP_RECIPES)}, not '
          f'recipe={args["recipe"]!r}.')
    schedule = longtail_recipes.long_mixup_schedule(schedule)

  config = config_lib.default_config()
  config.data.name = args['dataset']
  config.data.modalities = ('image',)
  config.data.holdout_fraction = HOLDOUT_FRACTION
  config.data.standardize = True
  config.data.augmentation = 'pad_crop_flip'
  config.data.augment_pad = 4
  config.data.batch_size = 128
  config.data.eval_batch_size = 1000
  config.data.longtail.profile = args['profile']
  config.data.longtail.imbalance_factor = float(args['imbalance'])
  config.data.longtail.max_count = MAX_COUNTS[args['budget'],
                                              args['dataset']]

  config.model.encoder.name = 'cifar_resnet'
  config.model.encoder.cifar_resnet.depth = DEPTHS[args['budget']]
  config.model.fused_head.hidden_sizes = ()  # A linear classifier.
  config.model.modality_heads = False

  longtail_recipes.apply_sgd_schedule(config, schedule, learning_rate=0.1,
                                      weight_decay=2e-4)
  config.log_every_steps = 50
  longtail_recipes.apply_recipe(
      config.longtail, args['recipe'], switch_epoch=schedule.switch_epoch,
      no_mixup_epochs=schedule.no_mixup_epochs,
      classifier_epochs=schedule.epochs - schedule.switch_epoch)
  if args['runlocal']:
    longtail_recipes.shrink_for_runlocal(config)
    config.model.encoder.cifar_resnet.depth = 8
    config.data.longtail.max_count = 100
    config.data.batch_size = 32
  return config
