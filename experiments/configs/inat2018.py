r"""iNaturalist 2018 with ResNet-50: the bag of tricks on natural long tails.

Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition with
Deep Convolutional Neural Networks" (AAAI 2021) on iNaturalist 2018 (8142
species, 1000 to 2 training images a species; the validation images, 3 a
species, are the test split), built from a user's copy by
``data/inaturalist2018`` (``image`` uint8 [S, S, 3]: shorter side resized
to S, centre S x S crop). Long-tailed already
(``data.longtail.profile='none'``); 2 % of each species (at least one
image) is held out for model selection.

  python -m experiments.main \
      --config experiments/configs/inat2018.py:recipe=best_bag,size=64 \
      --workdir /tmp/inat2018_best_bag

Schedule (SPEC §3): ResNet-50, batch 512, 90 epochs, lr x 0.1 at epochs
30, 60 and 80, SGD momentum 0.9; lr 0.2, weight decay 1e-4 and no warm-up
from the authors' public configs (BagofTricks-LT,
``configs/iNat18/iNat18_baseline.yaml``). Two-stage recipes switch at 60,
mixup stops for the last 10 epochs (our choices). The same schedule, data
handling and arguments as ``imagenet_lt.py`` (``imagenet_size_config``),
whose docstring says what differs from the paper's 224 x 224 crops.

Arguments (comma-separated):
  recipe=R          one of longtail_recipes.RECIPES (default ce), listed in
                    experiments/configs/longtail_recipes.py (with the loss
                    forms each uses where the official code's differ).
  size=32|64|128|256|full  the stored image size S (default 64), or
                    ``full``: the JPEG files themselves, 224 x 224 crops
                    (the paper's). As float32 the training split is about
                    5.4 GB at 32, 21 GB at 64, 86 GB at 128, 344 GB at
                    256: every size is streamed from the
                    prepared files (``data.in_memory_limit_mb``).
  runlocal          a few steps of an 8-filter ResNet-50 at S = 32 (224
                    crops of the files with ``size=full``).
"""

import ml_collections

from experiments.configs import imagenet_lt


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return imagenet_lt.imagenet_size_config(
      arg, dataset='inaturalist2018', encoder='resnet50')
