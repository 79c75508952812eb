"""Tiny fake Fashion-MNIST IDX files in the release's layout.

Train image ``i`` has label ``i % 10`` and every pixel of row ``r`` equal to
``(10 · label + r + i) % 256``; test image ``i`` the same with ``i + 7``. The
label is thus readable from the image (a model learns it in a few steps) and
every stored image can be traced to its row.
"""

import gzip
import os

import numpy as np

from gblend_jax.datasets.fashion_mnist import (
  fashion_mnist_dataset_builder as fmnist,
)


def fake_split(num_images: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
  """``(images uint8 [n, 28, 28], labels uint8 [n])`` of a fake split."""
  rows = np.arange(num_images)
  labels = (rows % 10).astype(np.uint8)
  values = (10 * labels[:, None] + np.arange(28)[None, :] + rows[:, None]
            + offset) % 256
  images = np.repeat(values[:, :, None], 28, axis=2).astype(np.uint8)
  return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
  """An IDX file's content: magic ``0x08 0x0D``-style header, then data."""
  header = bytes([0, 0, 8, array.ndim]) + b''.join(
      int(n).to_bytes(4, 'big') for n in array.shape)
  return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_fake_copy(
    folder, num_train: int = 300, num_test: int = 50
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes the four ``.gz`` IDX files into ``folder``; returns the data."""
  os.makedirs(folder, exist_ok=True)
  written = {}
  for split, count, offset in (('train', num_train, 0),
                               ('test', num_test, 7)):
    images, labels = fake_split(count, offset)
    images_file, labels_file, _ = fmnist.FILES[split]
    for name, array in ((images_file, images), (labels_file, labels)):
      with gzip.open(os.path.join(folder, name), 'wb') as f:
        f.write(idx_bytes(array))
    written[split] = images, labels
  return written
