"""Tests of the Fashion-MNIST builder on tiny fake IDX files."""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gblend_jax.data import registry
from gblend_jax.datasets.fashion_mnist import (
  fashion_mnist_dataset_builder as fmnist,
)
from tests.datasets import fashion_mnist_fakes as fakes


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch, tmp_path):
  # The tests never read the Debian package's files, installed or not.
  monkeypatch.setattr(fmnist, 'SYSTEM_DIR', str(tmp_path / 'no_system'))


def _build(tmp_path):
  builder = registry.get_builder('fashion_mnist',
                                 data_dir=str(tmp_path / 'tfds'))
  registry.prepare(builder, manual_dir=str(tmp_path / 'manual'))
  return builder


@pytest.mark.parametrize('subfolder', ['', 'fashion-mnist'])
def test_builds_from_idx_files(tmp_path, subfolder):
  written = fakes.write_fake_copy(tmp_path / 'manual' / subfolder,
                                  num_train=30, num_test=20)
  builder = _build(tmp_path)
  assert builder.name == 'fashion_mnist_local'
  assert list(builder.info.features.keys()) == ['id', 'label', 'image']
  for split, first_id in (('train', 0), ('test', 60_000)):
    source = builder.as_data_source(split=split)
    images, labels = written[split]
    assert len(source) == len(labels)
    for index in range(len(source)):
      example = source[index]
      row = example['id'] - first_id
      assert example['image'].dtype == np.uint8
      assert example['image'].shape == (28, 28)
      np.testing.assert_array_equal(example['image'], images[row])
      assert example['label'] == labels[row]


def test_reads_the_system_folder(tmp_path, monkeypatch):
  fakes.write_fake_copy(tmp_path / 'system', num_train=10, num_test=10)
  monkeypatch.setattr(fmnist, 'SYSTEM_DIR', str(tmp_path / 'system'))
  (tmp_path / 'manual').mkdir()
  builder = _build(tmp_path)
  assert len(builder.as_data_source(split='train')) == 10


def test_missing_files_say_how_to_get_them(tmp_path):
  (tmp_path / 'manual').mkdir()
  with pytest.raises(FileNotFoundError,
                     match='apt-get install -y dataset-fashion-mnist'):
    _build(tmp_path)


def test_wrong_magic_number_is_rejected(tmp_path):
  fakes.write_fake_copy(tmp_path / 'manual', num_train=10, num_test=10)
  images_file = fmnist.FILES['train'][0]
  with gzip.open(tmp_path / 'manual' / images_file, 'wb') as f:
    f.write(fakes.idx_bytes(np.zeros((10,), np.uint8)))  # A labels header.
  with pytest.raises(ValueError, match='magic number 0x00000801'):
    _build(tmp_path)


def test_read_idx_checks_the_size(tmp_path):
  path = os.path.join(tmp_path, 'short.gz')
  with gzip.open(path, 'wb') as f:
    f.write(fakes.idx_bytes(np.zeros((3,), np.uint8))[:-1])
  with pytest.raises(ValueError, match=r'2 bytes of data for .*\(3,\)'):
    fmnist.read_idx(path, 0x801)


def test_tfds_own_fashion_mnist_still_resolves():
  # Our builder is registered as fashion_mnist_local, not fashion_mnist.
  assert tfds.builder_cls('fashion_mnist').__name__ == 'FashionMNIST'
  assert fmnist.Builder.name == 'fashion_mnist_local'
