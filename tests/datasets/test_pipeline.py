"""Tests of load_dataset, the training iterator and the eval batches."""

import glob
import os

import numpy as np
import pytest

from gblend_jax import data
from gblend_jax.data import pipeline
from gblend_jax.data import registry


def _toy_source(size: int) -> list[dict[str, np.ndarray]]:
  return [
      {'id': np.int32(i), 'label': np.int32(i % 3),
       'x': np.full((2,), i, np.float32)}
      for i in range(size)
  ]


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
  config = data.default_data_config()
  config.name = 'synthetic_multimodal'
  config.builder_config = 'tiny'
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  return config


def _ids(source) -> np.ndarray:
  return np.array([source[i]['id'] for i in range(len(source))])


def test_default_data_config_keys():
  assert set(data.default_data_config()) == {
      'name', 'builder_config', 'data_dir', 'manual_dir', 'modalities',
      'holdout_fraction', 'holdout_seed', 'train_examples_per_class',
      'mismatched_modalities', 'longtail',
      'standardize', 'augmentation', 'augment_pad', 'augment_modalities',
      'streaming', 'in_memory_limit_mb', 'workers',
      'read_threads', 'prefetch_batches',
      'batch_size', 'eval_batch_size', 'shuffle_seed'}


def test_load_dataset_splits_and_describes_tiny(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.modalities = ('weak', 'strong')
  splits = data.load_dataset(config)
  assert splits.name == 'synthetic_multimodal/tiny'
  assert splits.num_classes == 3
  assert list(splits.modalities.items()) == [('weak', (3,)), ('strong', (5,))]
  # 32 of each class in `train`: round(0.1 * 32) = 3 of each held out.
  assert (len(splits.train), len(splits.holdout), len(splits.test)) == (
      87, 9, 48)
  np.testing.assert_array_equal(splits.train_class_counts, [29, 29, 29])
  example = splits.train[0]
  assert set(example) == {'id', 'label', 'weak', 'strong'}
  assert example['label'].dtype == np.int32
  assert example['weak'].dtype == np.float32


def test_holdout_is_disjoint_from_test_and_complements_train(tiny_config):
  splits = data.load_dataset(tiny_config)
  assert tuple(splits.modalities) == ('strong', 'weak')
  train, holdout, test = (
      _ids(splits.train), _ids(splits.holdout), _ids(splits.test))
  assert not set(holdout) & set(test)
  assert not set(holdout) & set(train)
  builder = data.get_builder('synthetic_multimodal', builder_config='tiny',
                             data_dir=tiny_config.data_dir)
  original = _ids(builder.as_data_source(split='train'))
  np.testing.assert_array_equal(
      np.sort(np.concatenate([train, holdout])), np.sort(original))


def test_unknown_names_list_the_valid_ones(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.modalities = ('strong', 'audio')
  with pytest.raises(ValueError, match=r"\['audio'\].*'strong', 'weak'"):
    data.load_dataset(config)
  with pytest.raises(ValueError, match="'mfeat', 'synthetic_multimodal'"):
    data.get_builder('imagenet21k')
  config.holdout_fraction = 0.0
  with pytest.raises(ValueError, match='holdout_fraction=0.0'):
    data.load_dataset(config)


def test_check_examples_names_the_bad_example():
  source = _toy_source(6)
  source[4]['label'] = np.int32(7)
  with pytest.raises(
      ValueError, match=r'Data set toy, split train, example 4: label 7'):
    data.check_examples(source, dataset='toy', split='train', num_classes=3,
                        modalities={'x': (2,)})
  source = _toy_source(6)
  source[2]['x'] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError, match=r'split test, example 2: .*\(3,\)'):
    data.check_examples(source, dataset='toy', split='test', num_classes=3,
                        modalities={'x': (2,)})
  with pytest.raises(ValueError, match="example 0: no modality 'y'"):
    data.check_examples(_toy_source(2), dataset='toy', split='test',
                        num_classes=3, modalities={'y': (2,)})
  source = _toy_source(6)
  source[3]['x'] = np.array(['a', 'b'])
  with pytest.raises(ValueError,
                     match=r"example 3: modality 'x' has dtype <U1"):
    data.check_examples(source, dataset='toy', split='train', num_classes=3,
                        modalities={'x': (2,)})


def test_train_iterator_reshuffles_each_epoch_and_covers_it_once():
  iterator = data.train_iterator(_toy_source(10), global_batch_size=5, seed=1)
  batches = [next(iterator) for _ in range(6)]
  assert batches[0]['x'].shape == (5, 2)
  assert batches[0]['label'].dtype == np.int32
  epochs = [np.concatenate([b['id'] for b in batches[i:i + 2]])
            for i in (0, 2, 4)]
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(10))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_process_shares_partition_each_global_batch():
  source = _toy_source(10)
  whole = data.train_iterator(source, global_batch_size=4, seed=2)
  shares = [
      data.train_iterator(source, global_batch_size=4, seed=2,
                          process_index=p, process_count=2)
      for p in range(2)
  ]
  for _ in range(7):
    global_ids = next(whole)['id']
    first, second = (next(share)['id'] for share in shares)
    assert len(first) == len(second) == 2
    assert not set(first) & set(second)
    assert sorted([*first, *second]) == sorted(global_ids)
  with pytest.raises(ValueError, match='not divisible'):
    data.train_iterator(source, global_batch_size=5, seed=0, process_count=2)


def test_read_threads_do_not_change_the_batches():
  source = _toy_source(10)
  iterators = [data.train_iterator(source, global_batch_size=3, seed=4,
                                   read_threads=threads, prefetch_batches=8)
               for threads in (0, 1, 4)]
  for _ in range(9):
    first, *others = (next(iterator)['id'] for iterator in iterators)
    for other in others:
      np.testing.assert_array_equal(other, first)
  with pytest.raises(ValueError, match='read_threads=-1'):
    data.train_iterator(source, global_batch_size=3, seed=0, read_threads=-1)
  with pytest.raises(ValueError, match='prefetch_batches=2'):
    data.train_iterator(source, global_batch_size=3, seed=0, read_threads=3,
                        prefetch_batches=2)


def test_train_iterator_state_restores_the_position():
  source = _toy_source(10)
  iterator = data.train_iterator(source, global_batch_size=3, seed=0)
  for _ in range(5):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  restored = data.train_iterator(source, global_batch_size=3, seed=0)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_batches_cover_every_example_once(process_count):
  source = _toy_source(10)
  shares = [
      list(data.eval_batches(source, batch_size=4, process_index=p,
                             process_count=process_count))
      for p in range(process_count)
  ]
  ids, masks = [], []
  for batches in zip(*shares, strict=True):
    for batch in batches:
      assert batch['x'].shape == (4 // process_count, 2)
      assert batch['mask'].dtype == np.float32
      ids.append(batch['id'])
      masks.append(batch['mask'])
  ids, masks = np.concatenate(ids), np.concatenate(masks)
  assert len(ids) == 12 and masks.sum() == 10
  np.testing.assert_array_equal(ids[masks == 1], np.arange(10))


def test_index_subset_and_steps_per_epoch():
  subset = data.IndexSubset(_toy_source(10), [7, 2])
  assert len(subset) == 2 and subset[1]['id'] == 2
  assert data.steps_per_epoch(10, 4) == 2
  assert data.steps_per_epoch(3, 4) == 1


def test_check_examples_returns_the_split_in_memory():
  source = data.check_examples(_toy_source(4), dataset='toy', split='train',
                               num_classes=3, modalities={'x': (2,)})
  assert isinstance(source, data.ArraySource)
  np.testing.assert_array_equal(source.arrays['label'], [0, 1, 2, 0])
  np.testing.assert_array_equal(source.arrays['x'][:, 0], [0, 1, 2, 3])
  batch = data.gather(source, np.array([3, 1]))
  np.testing.assert_array_equal(batch['id'], [3, 1])
  # A generic source is gathered example by example, with the same result.
  generic = data.gather(_toy_source(4), np.array([3, 1]))
  for key in batch:
    np.testing.assert_array_equal(batch[key], generic[key])


def test_standardize_uses_reference_statistics_only():
  train = data.ArraySource({'x': np.array([[1.0, 5.0], [3.0, 5.0]],
                                          np.float32),
                            'label': np.array([0, 1], np.int32)})
  test = data.ArraySource({'x': np.array([[4.0, 6.0]], np.float32),
                           'label': np.array([1], np.int32)})
  new_train, new_test = data.standardize(train, (train, test), ('x',))
  # Column 0: mean 2, std 1. Column 1 is constant: mean 5, scale kept at 1.
  np.testing.assert_allclose(new_train.arrays['x'], [[-1, 0], [1, 0]])
  np.testing.assert_allclose(new_test.arrays['x'], [[2, 1]])
  np.testing.assert_array_equal(new_test.arrays['label'], [1])


def test_load_dataset_standardizes_with_train_statistics(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.standardize = True
  splits = data.load_dataset(config)
  for name in splits.modalities:
    train = splits.train.arrays[name]
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)
    assert abs(splits.test.arrays[name].mean()) > 1e-4  # Not refitted.


def test_train_examples_per_class_keeps_holdout_fixed(tiny_config):
  full = data.load_dataset(tiny_config)
  config = tiny_config.copy_and_resolve_references()
  config.train_examples_per_class = 4
  small = data.load_dataset(config)
  labels = small.train.arrays['label']
  np.testing.assert_array_equal(np.bincount(labels), [4, 4, 4])
  np.testing.assert_array_equal(small.train_class_counts, [4, 4, 4])
  # The smaller training set is a subset of the full one; the held-out split
  # does not change.
  assert set(small.train.arrays['id']) <= set(full.train.arrays['id'])
  np.testing.assert_array_equal(small.holdout.arrays['id'],
                                full.holdout.arrays['id'])


def test_mismatch_modalities_repairs_at_the_given_rate():
  count = 4000
  source = data.ArraySource({
      'id': np.arange(count, dtype=np.int32),
      'label': np.zeros(count, np.int32),
      'x': np.arange(count, dtype=np.float32)[:, None],
      'y': np.arange(count, dtype=np.float32)[:, None]})
  mixed = data.mismatch_modalities(source, {'x': 0.3}, seed=0)
  changed = mixed.arrays['x'][:, 0] != np.arange(count)
  # About 30% re-paired (minus the 1/count chance of drawing oneself).
  assert abs(changed.mean() - 0.3) < 0.03
  # Replacements come from the same split; other features are untouched.
  assert set(mixed.arrays['x'][:, 0]) <= set(range(count))
  np.testing.assert_array_equal(mixed.arrays['y'], source.arrays['y'])
  with pytest.raises(ValueError, match="'z'"):
    data.mismatch_modalities(source, {'z': 0.5}, seed=0)
  with pytest.raises(ValueError, match='not in'):
    data.mismatch_modalities(source, {'x': 1.5}, seed=0)


def test_damaged_prepared_file_names_the_folder_to_delete(tmp_path):
  config = pipeline.default_data_config()
  config.name = 'synthetic_multimodal'
  config.builder_config = 'tiny'
  config.data_dir = str(tmp_path)
  builder = registry.get_builder('synthetic_multimodal', data_dir=str(tmp_path),
                                 builder_config='tiny')
  registry.prepare(builder)
  (shard,) = glob.glob(os.path.join(builder.data_dir, '*-train.array_record*'))
  raw = bytearray(open(shard, 'rb').read())
  for i in range(100, len(raw) - 100, 50):  # Flipped bytes: bad hashes.
    raw[i] ^= 0xFF
  with open(shard, 'wb') as f:
    f.write(raw)
  with pytest.raises(OSError) as error:
    pipeline.load_dataset(config)
  message = str(error.value)
  assert 'split train: a prepared file is damaged' in message
  assert shard in message
  assert f'Delete the folder {builder.data_dir}' in message
