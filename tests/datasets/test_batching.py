"""Batch positions: grain's order, a whole batch at a time."""

import grain
import numpy as np
import pytest

from gblend_jax.data import batching
from gblend_jax.longtail import sampling


def _grain_batches(indices: grain.MapDataset, batch: int, process: int,
                   count: int, num: int) -> list[np.ndarray]:
  """Grain's per-element composition: the order batching must keep."""
  dataset = indices[process::count].batch(batch // count, drop_remainder=True)
  return [np.asarray(dataset[k]) for k in range(num)]


@pytest.mark.parametrize(
    'num_examples,batch,process,count,seed',
    [(10, 4, 0, 1, 0), (10, 4, 1, 2, 3), (7, 6, 2, 3, 5),
     (5, 5, 0, 1, 2**32 - 1),
     (3, 8, 1, 4, 11)])
def test_shuffled_batches_equal_grains_shuffle_repeat_slice_batch(
    num_examples, batch, process, count, seed):
  # Enough batches to cross several epoch boundaries, mid-batch included.
  num = 4 * num_examples + 3
  want = _grain_batches(
      grain.MapDataset.range(num_examples).shuffle(seed=seed).repeat(),
      batch, process, count, num)
  positions = batching.BatchPositions(
      batching.ShuffledEpochs(num_examples, seed), global_batch_size=batch,
      process_index=process, process_count=count)
  for k in range(num):
    np.testing.assert_array_equal(positions[k], want[k])


def test_each_epoch_is_a_new_permutation():
  epochs = batching.ShuffledEpochs(50, seed=4)
  first, second = epochs.epoch_indices(0), epochs.epoch_indices(1)
  np.testing.assert_array_equal(np.sort(first), np.arange(50))
  np.testing.assert_array_equal(np.sort(second), np.arange(50))
  assert not np.array_equal(first, second)
  assert not first.flags.writeable


def test_sampler_batches_equal_grains_composition():
  labels = np.repeat(np.arange(4), [20, 10, 5, 2])
  counts = np.bincount(labels)
  sampler = sampling.EpochSampler(
      labels, sampling.class_probabilities(counts, 0.0), seed=7)
  want = _grain_batches(sampler.to_map_dataset(), 6, 1, 2, 30)
  positions = batching.BatchPositions(sampler, global_batch_size=6,
                                      process_index=1, process_count=2)
  for k in range(30):
    np.testing.assert_array_equal(positions[k], want[k])


def test_bad_arguments_name_the_value():
  with pytest.raises(ValueError, match='num_examples=0'):
    batching.ShuffledEpochs(0, 0)
  with pytest.raises(ValueError, match='seed=-1'):
    batching.ShuffledEpochs(3, -1)
  with pytest.raises(ValueError, match='process_count=2'):
    batching.BatchPositions(batching.ShuffledEpochs(3, 0),
                            global_batch_size=5, process_count=2)
  with pytest.raises(ValueError, match='process_index=2'):
    batching.BatchPositions(batching.ShuffledEpochs(3, 0),
                            global_batch_size=4, process_index=2,
                            process_count=2)
  with pytest.raises(IndexError, match='batch -1'):
    batching.BatchPositions(batching.ShuffledEpochs(3, 0),
                            global_batch_size=2)[-1]


@pytest.mark.parametrize('num_examples', [1, 2, 17, 256, 1600, 65536, 65537,
                                          2**24 + 3])
@pytest.mark.parametrize('seed', [0, 9, 2**32 - 1])
def test_index_shuffle_equals_grains_cpp_function(num_examples, seed):
  from grain._src.python.experimental.index_shuffle.python import (  # pylint: disable=g-import-not-at-top
      index_shuffle_module,
  )
  rng = np.random.default_rng(seed % 1000)
  indices = np.unique(np.r_[np.arange(min(num_examples, 64)),
                            rng.integers(0, num_examples, 64)])
  want = [index_shuffle_module.index_shuffle(
      int(i), max_index=num_examples - 1, seed=seed, rounds=4)
          for i in indices]
  np.testing.assert_array_equal(
      batching.index_shuffle(indices, num_examples - 1, seed), want)


@pytest.mark.parametrize('seed,words', [
    (0, [1207502517]),
    (0, [2963817213, 69796629, 1973464570, 532167439]),
    (7, [3058802511, 457619115, 2864960031, 537765756]),
    (2**32 - 1, [430145308, 2797324639, 1290077591, 3162004185, 4202657598,
                 3275963129, 1006707735, 593906588]),
])
def test_seed_seq_generate_matches_the_cpp_standard_library(seed, words):
  # Printed by `std::seed_seq q{seed}; q.generate(v, v + n);` (g++, libstdc++).
  assert batching.seed_seq_generate(seed, len(words)) == words
