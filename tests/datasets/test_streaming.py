"""Tests of the streaming source: same examples as in memory, images
decoded and cropped as the papers do, bad files named before training."""

import glob
import io
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from gblend_jax.data import augment
from gblend_jax.data import pipeline
from gblend_jax.data import registry
from gblend_jax.data import streaming
from gblend_jax.longtail import sampling
from tests.datasets import lt_image_fakes as fakes


def _synthetic_config(data_dir, mode):
  config = pipeline.default_data_config()
  config.name = 'synthetic_multimodal'
  config.builder_config = 'tiny'
  config.data_dir = data_dir
  config.streaming = mode
  config.standardize = True
  config.mismatched_modalities = ml_collections.ConfigDict({'weak': 0.4})
  config.train_examples_per_class = 20
  return config


def _all(source):
  return source.take(np.arange(len(source)))


def _assert_same_batches(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_streamed_splits_equal_the_in_memory_splits(data_dir):
  memory = pipeline.load_dataset(_synthetic_config(data_dir, 'never'))
  streamed = pipeline.load_dataset(_synthetic_config(data_dir, 'always'))
  assert isinstance(memory.train, pipeline.ArraySource)
  assert isinstance(streamed.train, streaming.StreamedSource)
  np.testing.assert_array_equal(memory.train_class_counts,
                                streamed.train_class_counts)
  for split in ('train', 'holdout', 'test'):
    # Held-out split, per-class subset, re-pairing and standardisation:
    # equal to the last bit.
    _assert_same_batches(_all(getattr(memory, split)),
                         _all(getattr(streamed, split)))
  standardized = _all(streamed.train)['strong']
  np.testing.assert_allclose(standardized.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(standardized.std(0), 1, atol=1e-5)


def test_streamed_training_batches_equal_in_memory_ones(data_dir):
  memory = pipeline.load_dataset(_synthetic_config(data_dir, 'never'))
  streamed = pipeline.load_dataset(_synthetic_config(data_dir, 'always'))
  labels = pipeline.source_labels(memory.train)
  np.testing.assert_array_equal(labels,
                                pipeline.source_labels(streamed.train))
  # A ROS multiset and a class-balanced sampler work on indices alike.
  ros = sampling.random_over_sampling(labels, seed=3)

  def batches(source, workers, count=7):
    sampler = sampling.EpochSampler(
        labels[ros], sampling.class_probabilities(np.bincount(labels), 0.0),
        seed=1)
    it = pipeline.train_iterator(
        pipeline.IndexSubset(source, ros), global_batch_size=8, seed=5,
        sampler=sampler, workers=workers)
    out = [next(it) for _ in range(count)]
    state = it.get_state()
    it.close()
    return out, state

  expected, state = batches(memory.train, workers=0)
  assert state == {'next_index': 7}
  for workers in (0, 2):  # In this process, and in two grain processes.
    got, got_state = batches(streamed.train, workers)
    assert got_state == state
    for a, b in zip(expected, got, strict=True):
      _assert_same_batches(a, b)


def test_streamed_iterator_resumes_from_its_state(data_dir):
  streamed = pipeline.load_dataset(_synthetic_config(data_dir, 'always'))
  straight = pipeline.train_iterator(streamed.train, global_batch_size=4,
                                     seed=2, workers=0)
  expected = [next(straight) for _ in range(6)]
  resumed = pipeline.train_iterator(streamed.train, global_batch_size=4,
                                    seed=2, workers=0)
  resumed.set_state({'next_index': 4})
  for k in (4, 5):
    _assert_same_batches(next(resumed), expected[k])


def test_auto_streams_above_the_threshold(data_dir):
  config = _synthetic_config(data_dir, 'auto')
  builder = registry.get_builder('synthetic_multimodal', data_dir=data_dir,
                                 builder_config='tiny')
  registry.prepare(builder)
  shapes = {'strong': (5,), 'weak': (3,)}
  examples = (builder.info.splits['train'].num_examples
              + builder.info.splits['test'].num_examples)
  megabytes = examples * 8 * 4 / 2**20
  assert streaming.float32_megabytes(builder, shapes) == pytest.approx(
      megabytes)
  config.in_memory_limit_mb = megabytes  # At the limit: in memory.
  assert not streaming.use_streaming(config, builder, shapes)
  config.in_memory_limit_mb = megabytes * 0.99
  assert streaming.use_streaming(config, builder, shapes)


@pytest.mark.parametrize('key, value, message', [
    ('streaming', 'yes', "data.streaming='yes'"),
    ('in_memory_limit_mb', -1.0, 'data.in_memory_limit_mb=-1.0'),
    ('workers', -2, 'data.workers=-2'),
])
def test_bad_streaming_keys_are_refused(key, value, message):
  config = pipeline.default_data_config()
  config[key] = value
  with pytest.raises(ValueError, match=message):
    streaming.check_streaming_config(config)


# Image transforms.


def _halves(width, height):
  """White left half, black right half (exact in PNG)."""
  pixels = np.zeros((height, width, 3), np.uint8)
  pixels[:, :width // 2] = 255
  return Image.fromarray(pixels)


def test_test_transform_resizes_to_256_and_crops_the_centre_224():
  # 400 x 200 -> 512 x 256; crop columns [144, 368): the edge at column
  # 256 of the resized image is column 112 of the crop.
  crop = streaming.test_transform(_halves(400, 200), 224)
  assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
  assert (crop[:, :111] == 255).all() and (crop[:, 113:] == 0).all()
  # Portrait: 100 x 300 -> 256 x 768, crop rows [272, 496): all of the
  # width, so the edge stays in the middle.
  crop = streaming.test_transform(_halves(100, 300), 224)
  assert (crop[:, :111] == 255).all() and (crop[:, 113:] == 0).all()


def test_train_transform_crops_the_drawn_box_and_flips():
  image = _halves(400, 300)
  for seed in range(6):
    rng = np.random.default_rng(seed)
    top, left, box_h, box_w = augment.random_resized_crop_boxes(
        rng, 1, 300, 400)[0]
    flipped = rng.random() < 0.5
    crop = streaming.train_transform(image, 224,
                                     np.random.default_rng(seed))
    assert crop.shape == (224, 224, 3)
    # The edge at x = 200 lies at (200 - left) / box_w of the crop.
    edge = (200 - left) / box_w * 224
    white = crop[:, ::-1] if flipped else crop
    columns = np.arange(224) + 0.5
    assert (white[:, columns < edge - 1.5] == 255).all(), seed
    assert (white[:, columns > edge + 1.5] == 0).all(), seed
    assert 0 < top + box_h <= 300


# ImageNet-LT's full config: the files' bytes, streamed.


def _imagenet_lt_config(tmp_path):
  config = pipeline.default_data_config()
  config.name = 'imagenet_lt'
  config.builder_config = 'full'
  config.data_dir = str(tmp_path / 'tfds')
  config.manual_dir = str(tmp_path / 'manual')
  config.holdout_fraction = 0.2
  return config


def test_imagenet_lt_full_stores_the_jpeg_bytes_and_streams(tmp_path):
  listed = fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  splits = pipeline.load_dataset(_imagenet_lt_config(tmp_path))
  assert isinstance(splits.train, streaming.StreamedSource)
  assert splits.modalities == {'image': (224, 224, 3)}
  builder = registry.get_builder('imagenet_lt', data_dir=str(
      tmp_path / 'tfds'), builder_config='full')
  record = builder.as_data_source(split='test')[0]
  path = tmp_path / 'manual' / record['id'].decode()
  assert bytes(np.asarray(record['image']).item()) == path.read_bytes()
  test = _all(splits.test)
  assert len(test['id']) == len(listed['test'])
  labels = {p.encode(): label for p, label in listed['test']}
  for example_id, label, image in zip(test['id'], test['label'],
                                      test['image'], strict=True):
    assert label == labels[example_id]
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0),
                               fakes.CLASS_COLOURS[label], atol=6)
  # Random resized crops of one-colour images keep the colour.
  it = pipeline.train_iterator(splits.train, global_batch_size=3, seed=0,
                               augmentation='random_resized_crop_flip',
                               workers=0)
  batch = next(it)
  for label, image in zip(batch['label'], batch['image'], strict=True):
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0),
                               fakes.CLASS_COLOURS[label], atol=6)
  # The labels and ids are cached next to the prepared files.
  assert glob.glob(os.path.join(builder.data_dir,
                                'gblend_cache-index-train-*.npz'))


def test_imagenet_lt_full_refuses_the_in_memory_path(tmp_path):
  fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  config = _imagenet_lt_config(tmp_path)
  config.streaming = 'never'
  with pytest.raises(ValueError, match=r"data.streaming='never'.*\['image'\]"):
    pipeline.load_dataset(config)


def test_truncated_jpeg_stops_the_build_naming_the_file(tmp_path):
  listed = fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  path = tmp_path / 'manual' / listed['train'][2][0]
  Image.new('RGB', (64, 48), (10, 20, 30)).save(path, quality=95)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=(
      rf'ImageNet_LT_train.txt:3: cannot read {path}: Truncated')):
    pipeline.load_dataset(_imagenet_lt_config(tmp_path))


def test_corrupt_shard_is_named_before_training(tmp_path):
  fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  config = _imagenet_lt_config(tmp_path)
  builder = registry.get_builder('imagenet_lt', data_dir=config.data_dir,
                                 builder_config='full')
  registry.prepare(builder, manual_dir=config.manual_dir)
  (shard,) = glob.glob(os.path.join(builder.data_dir, '*-train.array_record*'))
  data = bytearray(open(shard, 'rb').read())
  data[500:564] = b'\x00' * 64  # Inside the first record's chunk.
  with open(shard, 'wb') as f:
    f.write(bytes(data))
  with pytest.raises(OSError, match=r'a prepared file is damaged.*-train\.'):
    pipeline.load_dataset(config)


def test_undecodable_stored_image_names_the_example(tmp_path):
  fakes.write_fake_imagenet_lt(tmp_path / 'manual')
  splits = pipeline.load_dataset(_imagenet_lt_config(tmp_path))
  source = splits.test

  class Broken:  # Records whose image bytes are cut short.
    def __len__(self):
      return len(source.records)

    def __getitem__(self, index):
      record = dict(source.records[index])
      buffer = io.BytesIO(bytes(np.asarray(record['image']).item()))
      record['image'] = np.asarray(buffer.getvalue()[:100], object)
      return record

  broken = streaming.StreamedSource(
      Broken(), positions=source.positions, labels=source.labels,
      ids=source.ids, modalities=source.modalities, images=source.images,
      where='Data set imagenet_lt_local/full, split test')
  with pytest.raises(ValueError, match=(
      r'split test, example 1 \(id val/n0.*\): the stored image does not '
      'decode')):
    broken.take(np.array([1]))


def test_inaturalist_full_streams_the_listed_images(tmp_path):
  listed = fakes.write_fake_inaturalist(tmp_path / 'manual')
  config = _imagenet_lt_config(tmp_path)
  config.name = 'inaturalist2018'
  splits = pipeline.load_dataset(config)
  assert isinstance(splits.test, streaming.StreamedSource)
  test = _all(splits.test)
  # The 18 x 30 portrait images, resized to 256 x 427 and centre-cropped.
  assert test['image'].shape == (len(listed['val']), 224, 224, 3)
  expected = {image_id: category for image_id, _, category in listed['val']}
  for example_id, label, image in zip(test['id'], test['label'],
                                      test['image'], strict=True):
    assert label == expected[int(example_id)]
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0),
                               fakes.CLASS_COLOURS[label], atol=6)
