"""CIFAR-100: 60000 colour 32x32 images, 100 classes, from the python archive.

CIFAR-100 (Krizhevsky, 2009, https://www.cs.toronto.edu/~kriz/cifar.html) as
``cifar-100-python.tar.gz`` in the manual dir, read without extracting (see
``data.cifar10.cifar_archive``). Splits: ``train`` (member ``train``, 50000,
500 a class) and ``test`` (member ``test``, 10000, 100 a class). Features:
``id`` (row in ``train``, or 50000 + row in ``test``), ``label`` (the fine
label, 0 apple .. 99 worm, in the order of ``fine_label_names`` in ``meta``)
and ``image`` uint8 [32, 32, 3]. The 20 coarse labels are not stored.

CIFAR-100-LT (Cui et al., 2019; Cao et al., 2019; Zhang et al., 2021) is
this ``train`` split with the pipeline's ``data.longtail`` profile. Named
``cifar100_local``: TFDS ships a ``cifar100`` builder. The registry key is
``cifar100``.
"""

from gblend_jax.datasets.cifar10 import cifar_archive

_FOLDER = 'cifar-100-python'


class Builder(cifar_archive.CifarBuilder):
  """CIFAR-100 (fine labels) from ``cifar-100-python.tar.gz``."""

  name = 'cifar100_local'
  ARCHIVE = 'cifar-100-python.tar.gz'
  URL = 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'
  SPLIT_MEMBERS = {'train': (f'{_FOLDER}/train',),
                   'test': (f'{_FOLDER}/test',)}
  LABEL_KEY = 'fine_labels'
  META_MEMBER = f'{_FOLDER}/meta'
  META_KEY = 'fine_label_names'
  CLASS_NAMES = (
      'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee',
      'beetle', 'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus',
      'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
      'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab',
      'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish',
      'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
      'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man',
      'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom',
      'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear',
      'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine',
      'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea',
      'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake',
      'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper',
      'table', 'tank', 'telephone', 'television', 'tiger', 'tractor',
      'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree',
      'wolf',
      'woman', 'worm',
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = cifar_archive.how_to_get(ARCHIVE, URL)
