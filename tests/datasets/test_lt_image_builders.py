"""Tests of the CIFAR, ImageNet-LT and iNaturalist 2018 builders on fakes."""

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from gblend_jax.data import pipeline
from gblend_jax.data import registry
from gblend_jax.datasets.cifar10 import cifar_archive
from gblend_jax.datasets.imagenet_lt import image_folder
from gblend_jax.datasets.imagenet_lt import (
  imagenet_lt_dataset_builder as imagenet_lt,
)
from gblend_jax.datasets.inaturalist2018 import (
  inaturalist2018_dataset_builder as inat,
)
from tests.datasets import lt_image_fakes as fakes


def _build(tmp_path, name, builder_config=None):
  builder = registry.get_builder(name, data_dir=str(tmp_path / 'tfds'),
                                 builder_config=builder_config)
  registry.prepare(builder, manual_dir=str(tmp_path / 'manual'))
  return builder


def _read(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _mean_colour(image):
  return image.reshape(-1, 3).astype(np.float64).mean(axis=0)


# CIFAR.


@pytest.mark.parametrize('name, tfds_name, num_classes', [
    ('cifar10', 'cifar10_local', 10), ('cifar100', 'cifar100_local', 100)])
def test_cifar_reads_every_pixel_from_the_archive(tmp_path, name, tfds_name,
                                                  num_classes):
  written = fakes.write_fake_cifar(tmp_path / 'manual', name,
                                   train_per_batch=4, num_test=6)
  builder = _build(tmp_path, name)
  assert builder.name == tfds_name
  assert builder.info.features['label'].num_classes == num_classes
  for split, first_id, size in (('train', 0, 20), ('test', 50_000, 6)):
    examples = _read(builder, split)
    assert len(examples) == size
    assert sorted(e['id'] for e in examples) == list(
        range(first_id, first_id + size))
    images, labels = written[split]
    for example in examples:
      row = example['id'] - first_id
      assert example['image'].dtype == np.uint8
      np.testing.assert_array_equal(example['image'], images[row])
      assert example['label'] == labels[row] == row % num_classes
  # Row 3 of the test batch, pixel (y=1, x=2, blue): 7·3 + 3 + 10 + 22 + 100.
  test_row_3 = next(e for e in _read(builder, 'test') if e['id'] == 50_003)
  assert test_row_3['image'][1, 2, 2] == 156


def test_cifar_batch_rows_are_channel_planes():
  row = np.concatenate([np.full(1024, 1), np.full(1024, 2),
                        np.full(1024, 3)]).astype(np.uint8)
  row[1024 + 32 * 5 + 7] = 9  # Green plane, y=5, x=7.
  images = cifar_archive.batch_images(row[None], 'batch')
  assert images.shape == (1, 32, 32, 3)
  np.testing.assert_array_equal(images[0, 0, 0], [1, 2, 3])
  np.testing.assert_array_equal(images[0, 5, 7], [1, 9, 3])
  with pytest.raises(ValueError, match=r'batch: data has shape \(1, 3071\)'):
    cifar_archive.batch_images(row[None, :-1], 'batch')


def test_missing_cifar_archive_names_the_path_and_the_download(tmp_path):
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'other.txt').write_text('not cifar')
  expected = os.path.join(tmp_path, 'manual', 'cifar-100-python.tar.gz')
  with pytest.raises(FileNotFoundError) as error:
    _build(tmp_path, 'cifar100')
  assert f'{expected} not found' in str(error.value)
  assert ('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'
          in str(error.value))


def test_cifar_archive_of_the_other_data_set_is_rejected(tmp_path):
  fakes.write_fake_cifar(tmp_path / 'manual', 'cifar10', 1, 1)
  os.rename(tmp_path / 'manual' / 'cifar-10-python.tar.gz',
            tmp_path / 'manual' / 'cifar-100-python.tar.gz')
  with pytest.raises(FileNotFoundError,
                     match="no member 'cifar-100-python/meta'"):
    _build(tmp_path, 'cifar100')


def test_cifar_unpickling_refuses_code(tmp_path):
  path = tmp_path / 'evil.tar.gz'
  content = pickle.dumps({b'data': os.getcwd}, protocol=2)
  with tarfile.open(path, 'w:gz') as archive:
    info = tarfile.TarInfo('batch')
    info.size = len(content)
    archive.addfile(info, io.BytesIO(content))
  with (tarfile.open(path) as archive,
        pytest.raises(pickle.UnpicklingError, match='getcwd is not allowed')):
    cifar_archive.read_member(archive, 'batch', str(path))


def test_load_dataset_makes_fake_cifar10_long_tailed(tmp_path):
  fakes.write_fake_cifar(tmp_path / 'manual', 'cifar10', train_per_batch=40,
                         num_test=20)
  config = pipeline.default_data_config()
  config.name = 'cifar10'
  config.data_dir = str(tmp_path / 'tfds')
  config.manual_dir = str(tmp_path / 'manual')
  config.holdout_fraction = 0.1  # 20 a class: 2 held out, 18 left.
  config.longtail.profile = 'exponential'
  config.longtail.imbalance_factor = 10.0
  data = pipeline.load_dataset(config)
  # n_c = int(18 · 10^(-c/9)): 18, 13.9, 10.8, 8.4, 6.5, 5.0, 3.9, 3.0,
  # 2.3, 1.8.
  expected = [18, 13, 10, 8, 6, 5, 3, 3, 2, 1]
  assert data.train_class_counts.tolist() == expected
  assert np.bincount(data.train.arrays['label']).tolist() == expected
  assert np.bincount(data.holdout.arrays['label']).tolist() == [2] * 10
  assert len(data.test) == 20
  assert data.modalities == {'image': (32, 32, 3)}
  assert data.num_classes == 10
  images = fakes.cifar_images(200, 0)
  ids = data.train.arrays['id']
  np.testing.assert_array_equal(data.train.arrays['image'],
                                images[ids].astype(np.float32))


# Resizing.


@pytest.mark.parametrize('size, axis', [((8, 4), 1), ((4, 8), 0)])
def test_resize_and_crop_keeps_the_centre(size, axis):
  # Shorter side already 4: no resizing; the centred 4 of 8 lines are 2..5.
  values = (10 * np.arange(8, dtype=np.uint8))
  grid = np.broadcast_to(values if axis == 1 else values[:, None],
                         (size[1], size[0]))
  image = Image.fromarray(np.ascontiguousarray(grid), mode='L')
  cropped = image_folder.resize_and_crop(image, 4)
  assert cropped.shape == (4, 4, 3)
  expected = np.broadcast_to(
      [20, 30, 40, 50] if axis == 1 else np.array([[20], [30], [40], [50]]),
      (4, 4))
  for channel in range(3):
    np.testing.assert_array_equal(cropped[..., channel], expected)


def test_resize_and_crop_scales_the_shorter_side():
  image = Image.new('RGB', (6, 3), (77, 5, 200))
  # Shorter side 3 -> 2: 4 x 2, then the centred 2 x 2.
  np.testing.assert_array_equal(image_folder.resize_and_crop(image, 2),
                                np.broadcast_to([77, 5, 200], (2, 2, 3)))


# ImageNet-LT.


@pytest.mark.parametrize('flat_val', [False, True])
def test_imagenet_lt_builds_the_listed_splits(tmp_path, flat_val):
  listed = fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  if flat_val:  # ImageNet's validation images as released: all in val/.
    for path, _ in listed['test']:
      os.rename(tmp_path / 'manual' / path,
                tmp_path / 'manual' / 'val' / os.path.basename(path))
  builder = _build(tmp_path, 'imagenet_lt')
  assert builder.name == 'imagenet_lt_local'
  assert builder.builder_config.name == 's64'
  assert builder.info.features['label'].num_classes == 1000
  for split, list_split in (('train', 'train'), ('validation', 'val'),
                            ('test', 'test')):
    examples = _read(builder, split)
    assert sorted((e['id'].decode(), int(e['label'])) for e in examples) == (
        sorted(listed[list_split]))
    for example in examples:
      assert example['image'].shape == (64, 64, 3)
      np.testing.assert_allclose(_mean_colour(example['image']),
                                 fakes.CLASS_COLOURS[example['label']],
                                 atol=3)
  assert [len(_read(builder, s)) for s in ('train', 'validation', 'test')] \
      == [7, 3, 6]


def test_imagenet_lt_missing_image_names_the_line(tmp_path):
  listed = fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  missing = listed['train'][2][0]
  os.remove(tmp_path / 'manual' / missing)
  list_file = tmp_path / 'manual' / 'ImageNet_LT_train.txt'
  with pytest.raises(FileNotFoundError,
                     match=f'{list_file}:3: image file .*{missing} not found'):
    _build(tmp_path, 'imagenet_lt')


@pytest.mark.parametrize('line, message', [
    ('train/n01440764/x.JPEG', 'expected `<relative image path> <label>`'),
    ('train/n01440764/x.JPEG zero', "label 'zero' is not an integer"),
    ('train/n01440764/x.JPEG 1000', r'label 1000 is not in \[0, 1000\)'),
    ('train/n01440764/n01440764_0.JPEG 0',
     r'train/\S+ is listed again .*line 1'),
])
def test_imagenet_lt_bad_list_line_names_the_line(tmp_path, line, message):
  path = tmp_path / 'list.txt'
  path.write_text(f'train/n01440764/n01440764_0.JPEG 0\n\n{line}\n')
  with pytest.raises(ValueError, match=f'{path}:3: {message}'):
    imagenet_lt.read_list_file(str(path), str(tmp_path))


# iNaturalist 2018.


def test_inaturalist_builds_train_and_val(tmp_path):
  listed = fakes.write_fake_inaturalist(tmp_path / 'manual')
  builder = _build(tmp_path, 'inaturalist2018', builder_config='s32')
  assert builder.info.features['label'].num_classes == 8142
  for split, json_split in (('train', 'train'), ('test', 'val')):
    examples = _read(builder, split)
    assert sorted((int(e['id']), int(e['label'])) for e in examples) == (
        sorted((i, c) for i, _, c in listed[json_split]))
    for example in examples:
      assert example['image'].shape == (32, 32, 3)
      np.testing.assert_allclose(_mean_colour(example['image']),
                                 fakes.CLASS_COLOURS[example['label']],
                                 atol=3)
  assert [len(_read(builder, s)) for s in ('train', 'test')] == [6, 4]


def test_inaturalist_missing_image_names_the_entry(tmp_path):
  listed = fakes.write_fake_inaturalist(tmp_path / 'manual')
  image_id, file_name, _ = listed['val'][1]
  os.remove(tmp_path / 'manual' / file_name)
  json_file = tmp_path / 'manual' / 'val2018.json'
  with pytest.raises(
      FileNotFoundError,
      match=f'{json_file}: images\\[1\\] \\(id {image_id}\\): image file '
            f'.*{file_name} not found'):
    _build(tmp_path, 'inaturalist2018', builder_config='s32')


@pytest.mark.parametrize('change, message', [
    (lambda c: c['annotations'][0].update(category_id=8142),
     r'annotations\[0\]: label 8142 is not in \[0, 8142\)'),
    (lambda c: c['annotations'].pop(1),
     r'images\[1\]: no annotation of image 1'),
    (lambda c: c['images'][2].pop('file_name'),
     r"images\[2\]: no \['file_name'\]"),
])
def test_inaturalist_bad_json_names_the_entry(tmp_path, change, message):
  fakes.write_fake_inaturalist(tmp_path)
  path = tmp_path / 'train2018.json'
  content = json.loads(path.read_text())
  change(content)
  path.write_text(json.dumps(content))
  with pytest.raises(ValueError, match=f'{path}: {message}'):
    inat.read_annotations(str(path), str(tmp_path))
