"""Augmentation of training batches: hand-worked crops, flips and resizes,
the offsets' distribution, and determinism across resumes."""

import numpy as np
import pytest

from gblend_jax.data import augment
from gblend_jax.data import pipeline


def test_pad_crop_at_fixed_offsets_shifts_by_hand():
  image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
  # Offset (0, 0) of a 1-pixel pad: one pixel down and right, zeros in.
  down_right = augment.pad_crop(image, np.array([[0, 0]]), pad=1)
  np.testing.assert_array_equal(
      down_right[0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
  # Offset (2, 1): one pixel up, columns as they were.
  up = augment.pad_crop(image, np.array([[2, 1]]), pad=1)
  np.testing.assert_array_equal(up[0], [[4, 5, 6], [7, 8, 9], [0, 0, 0]])
  # Offset (P, P) is the image itself, channels included.
  rgb = np.random.default_rng(0).random((2, 5, 4, 3)).astype(np.float32)
  np.testing.assert_array_equal(
      augment.pad_crop(rgb, np.full((2, 2), 4), pad=4), rgb)


def test_pad_crop_rejects_offsets_outside_the_pad():
  with pytest.raises(ValueError, match=r'\[0, 2\]'):
    augment.pad_crop(np.zeros((1, 3, 3)), np.array([[3, 0]]), pad=1)
  with pytest.raises(ValueError, match='augment_pad=-1'):
    augment.pad_crop(np.zeros((1, 3, 3)), np.array([[0, 0]]), pad=-1)


def test_flip_reverses_columns_of_flipped_images_only():
  images = np.arange(2 * 2 * 3 * 2).reshape(2, 2, 3, 2)
  flipped = augment.horizontal_flip(images, np.array([True, False]))
  np.testing.assert_array_equal(flipped[0], images[0][:, ::-1])
  np.testing.assert_array_equal(flipped[1], images[1])
  np.testing.assert_array_equal(flipped[0, 1, :, 0], [10, 8, 6])


def test_pad_crop_flip_offsets_and_flips_are_uniform():
  # Markers 1 at (10, 10) and 2 at (10, 11) of a 20 x 20 image show the
  # draws: after a crop at (y, x) marker 1 lies at row 10 + P - y, column
  # c = 10 + P - x, with marker 2 to its right; flipped, at column 19 - c
  # with marker 2 to its left.
  pad, count = 4, 4500
  images = np.zeros((count, 20, 20), np.float32)
  images[:, 10, 10], images[:, 10, 11] = 1.0, 2.0
  out = augment.pad_crop_flip(images, np.random.default_rng(0), pad)
  flat = out.reshape(count, -1)
  assert np.all(flat.sum(axis=1) == 3.0)  # Both markers stay inside.
  rows, cols = np.unravel_index(np.argmax(flat == 1.0, axis=1), (20, 20))
  cols_2 = np.argmax(flat == 2.0, axis=1) % 20
  flipped = cols_2 < cols
  y = 10 + pad - rows
  x = 10 + pad - np.where(flipped, 19 - cols, cols)
  expected = count / (2 * pad + 1)  # 500 for each of 0 .. 8.
  for offsets in (y, x):
    assert offsets.min() == 0 and offsets.max() == 2 * pad
    counts = np.bincount(offsets, minlength=2 * pad + 1)
    assert np.all(np.abs(counts - expected) < 0.2 * expected), counts
  assert abs(flipped.mean() - 0.5) < 0.05


def test_crop_and_resize_hand_worked_bilinear():
  ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))[None]  # x = col.
  # The whole image is the identity.
  np.testing.assert_allclose(
      augment.crop_and_resize(ramp, np.array([[0, 0, 4, 4]])), ramp)
  # Columns 0..1 stretched to 4: centres at -0.25 (clamped), 0.25, 0.75,
  # 1.25 (clamped) of the box.
  out = augment.crop_and_resize(ramp, np.array([[0, 0, 4, 2]]))
  np.testing.assert_allclose(out[0], np.tile([0, 0.25, 0.75, 1.0], (4, 1)))
  # A box with its own offset: columns 2..3.
  out = augment.crop_and_resize(ramp, np.array([[1, 2, 2, 2]]))
  np.testing.assert_allclose(out[0], np.tile([2, 2.25, 2.75, 3.0], (4, 1)))


def test_random_resized_crop_keeps_constants_and_monotone_ramps():
  rng = np.random.default_rng(1)
  constant = np.full((64, 12, 10, 3), 7.0, np.float32)
  np.testing.assert_allclose(
      augment.random_resized_crop_flip(constant, rng), constant, rtol=1e-6)
  ramp = np.tile(np.arange(10, dtype=np.float32) ** 2, (64, 12, 1))
  out = augment.random_resized_crop_flip(ramp, rng)
  steps = np.diff(out, axis=2)
  up = np.all(steps >= -1e-5, axis=(1, 2))
  down = np.all(steps <= 1e-5, axis=(1, 2))
  assert np.all(up | down)  # Monotone, increasing unless flipped.
  assert 0 < up.sum() < 64 and np.all(out >= 0) and np.all(out <= 81)
  # Every row of a horizontal ramp stays equal to the others.
  np.testing.assert_allclose(out, np.repeat(out[:, :1], 12, axis=1),
                             rtol=1e-6)


def test_random_resized_crop_boxes_fit_and_fall_back_to_centre():
  boxes = augment.random_resized_crop_boxes(
      np.random.default_rng(2), 500, 32, 32)
  top, left, h, w = boxes.T
  assert np.all((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32))
  fraction = h * w / 1024
  assert fraction.min() >= 0.06 and fraction.max() <= 1.0
  ratio = w / h
  assert ratio.min() >= 0.6 and ratio.max() <= 1.6
  # A 1 x 100 image fits no box of area >= 8 (h >= 2): the centre crop cut
  # to ratio 4/3, w = round(4/3) = 1, at column (100 - 1) // 2 = 49.
  boxes = augment.random_resized_crop_boxes(
      np.random.default_rng(3), 4, 1, 100)
  np.testing.assert_array_equal(boxes, np.tile([0, 49, 1, 1], (4, 1)))


def test_same_seed_and_position_give_the_same_batch():
  images = np.random.default_rng(4).random((8, 6, 6)).astype(np.float32)
  batch = {'image': images, 'label': np.arange(8)}
  for name in ('pad_crop_flip', 'random_resized_crop_flip'):
    first = augment.BatchAugmenter(name, ('image',), seed=3)(5, batch)
    again = augment.BatchAugmenter(name, ('image',), seed=3)(5, batch)
    other = augment.BatchAugmenter(name, ('image',), seed=3)(6, batch)
    np.testing.assert_array_equal(first['image'], again['image'])
    np.testing.assert_array_equal(first['label'], batch['label'])
    assert not np.array_equal(first['image'], other['image'])


def _source(count=40):
  rng = np.random.default_rng(5)
  return pipeline.ArraySource({
      'id': np.arange(count, dtype=np.int32),
      'label': (np.arange(count) % 4).astype(np.int32),
      'image': rng.random((count, 8, 8, 1)).astype(np.float32),
      'vec': rng.random((count, 3)).astype(np.float32),
  })


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_resumed_iterator_repeats_the_augmented_batches():
  # Process 1 of 2: its own share, augmented with its own draws.
  kwargs = dict(global_batch_size=8, seed=7, process_index=1,
                process_count=2, augmentation='pad_crop_flip', augment_pad=2)
  source = _source()
  whole = _take(pipeline.train_iterator(source, **kwargs), 7)
  first = pipeline.train_iterator(source, **kwargs)
  head = _take(first, 3)
  resumed = pipeline.train_iterator(source, **kwargs)
  resumed.set_state(first.get_state())
  for got, want in zip(head + _take(resumed, 4), whole, strict=True):
    assert set(got) == {'id', 'label', 'image', 'vec'}
    for key in got:
      np.testing.assert_array_equal(got[key], want[key])
  # The images were augmented; the 1-D modality and the labels were not.
  changed = 0
  for got in whole:
    plain = source.take(got['id'])
    np.testing.assert_array_equal(got['vec'], plain['vec'])
    np.testing.assert_array_equal(got['label'], plain['label'])
    changed += not np.array_equal(got['image'], plain['image'])
  assert changed == 7  # An image is unchanged with p = 1/50; a batch, 1/50^4.


def test_default_is_no_augmentation():
  assert pipeline.default_data_config().augmentation == 'none'
  source = _source()
  default = _take(pipeline.train_iterator(
      source, global_batch_size=8, seed=1), 3)
  for got in default:
    np.testing.assert_array_equal(
        got['image'], source.take(got['id'])['image'])


def test_bad_names_are_named():
  source = _source()
  with pytest.raises(ValueError, match="augmentation='crop'"):
    pipeline.train_iterator(source, global_batch_size=8, seed=0,
                            augmentation='crop')
  with pytest.raises(ValueError, match="'vec'.*shape \\(3,\\)"):
    pipeline.train_iterator(source, global_batch_size=8, seed=0,
                            augmentation='pad_crop_flip',
                            augment_modalities=('vec',))
  with pytest.raises(ValueError, match="'audio'"):
    pipeline.train_iterator(source, global_batch_size=8, seed=0,
                            augmentation='pad_crop_flip',
                            augment_modalities=('audio',))
  assert augment.image_modalities(
      {'image': (8, 8, 1), 'gray': (5, 5), 'vec': (3,)}) == ('image', 'gray')
