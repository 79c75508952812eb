"""CIFAR-10: 60000 colour 32x32 images, 10 classes, from the python archive.

CIFAR-10 (Krizhevsky, 2009, https://www.cs.toronto.edu/~kriz/cifar.html) as
``cifar-10-python.tar.gz`` in the manual dir, read without extracting (see
``cifar_archive``). Splits: ``train`` (``data_batch_1`` .. ``data_batch_5``,
50000, 5000 a class) and ``test`` (``test_batch``, 10000, 1000 a class).
Features: ``id`` (row in the five train batches in order, or 50000 + row in
the test batch), ``label`` (0 airplane .. 9 truck) and ``image`` uint8
[32, 32, 3].

CIFAR-10-LT (Cui et al., 2019; Cao et al., 2019; Zhang et al., 2021) is this
``train`` split with the pipeline's ``data.longtail`` profile; nothing in the
builder changes. Named ``cifar10_local``: TFDS ships a ``cifar10`` builder.
The registry key is ``cifar10``.
"""

from gblend_jax.datasets.cifar10 import cifar_archive

_FOLDER = 'cifar-10-batches-py'


class Builder(cifar_archive.CifarBuilder):
  """CIFAR-10 from ``cifar-10-python.tar.gz`` in the manual dir."""

  name = 'cifar10_local'
  ARCHIVE = 'cifar-10-python.tar.gz'
  URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
  SPLIT_MEMBERS = {
      'train': tuple(f'{_FOLDER}/data_batch_{i}' for i in range(1, 6)),
      'test': (f'{_FOLDER}/test_batch',),
  }
  LABEL_KEY = 'labels'
  META_MEMBER = f'{_FOLDER}/batches.meta'
  META_KEY = 'label_names'
  CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                 'frog', 'horse', 'ship', 'truck')
  MANUAL_DOWNLOAD_INSTRUCTIONS = cifar_archive.how_to_get(ARCHIVE, URL)
