"""Sampling probabilities, index sets and the resumable epoch sampler."""

import functools
import pickle

import numpy as np
import pytest

from gblend_jax.data import pipeline
from gblend_jax.longtail import sampling

# 100 examples: 60, 25, 10 and 5 of classes 0..3, shuffled.
COUNTS = np.array([60, 25, 10, 5])
LABELS = np.repeat(np.arange(4), COUNTS)[
    np.random.default_rng(7).permutation(100)]


@pytest.mark.parametrize(
    'q, expected',
    [(1.0, [0.9, 0.1, 0.0]), (0.0, [0.5, 0.5, 0.0]), (0.5, [0.75, 0.25, 0.0])],
)
def test_class_probabilities(q, expected):
  np.testing.assert_allclose(sampling.class_probabilities([9, 1, 0], q),
                             expected)


def test_progressive_schedule_ends():
  counts = [6, 3, 1]
  ib, cb = [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]
  p = sampling.progressively_balanced_probabilities
  np.testing.assert_allclose(p(counts, 0, 200), ib)
  np.testing.assert_allclose(p(counts, 200, 200), cb)
  np.testing.assert_allclose(p(counts, 50, 200),
                             0.75 * np.array(ib) + 0.25 * np.array(cb))
  np.testing.assert_allclose(p(counts, 300, 200), cb)  # Clipped past T.
  schedule = sampling.progressive_schedule(counts, 200)
  np.testing.assert_allclose(schedule(200), cb)


def test_example_probabilities():
  probs = sampling.example_probabilities([0, 0, 1, 0], [0.5, 0.5])
  np.testing.assert_allclose(probs, [1 / 6, 1 / 6, 1 / 2, 1 / 6])
  with pytest.raises(ValueError, match=r'Classes \[2\]'):
    sampling.example_probabilities([0, 1], [0.4, 0.4, 0.2])


def _within_binomial_tolerance(observed, probabilities, draws, sigmas=5.0):
  expected = draws * probabilities
  sigma = np.sqrt(draws * probabilities * (1 - probabilities))
  return np.abs(observed - expected) <= sigmas * sigma + 1e-9


@pytest.mark.parametrize('q', [0.0, 0.5, 1.0])
def test_sampler_frequencies_follow_the_class_probabilities(q):
  probs = sampling.class_probabilities(COUNTS, q)
  sampler = sampling.EpochSampler(LABELS, probs, seed=int(q * 10),
                                  num_samples=1000)
  drawn = sampler.next_indices(40_000)  # 40 epochs.
  draws = len(drawn)
  class_counts = np.bincount(LABELS[drawn], minlength=4)
  assert np.all(_within_binomial_tolerance(class_counts, probs, draws))
  # Each example: its class's probability shared equally in the class.
  per_example = np.bincount(drawn, minlength=100)
  assert np.all(_within_binomial_tolerance(
      per_example, sampling.example_probabilities(LABELS, probs), draws))


def test_sampler_without_probabilities_permutes_each_epoch():
  sampler = sampling.EpochSampler(LABELS, seed=0)
  first, second = sampler.epoch_indices(0), sampler.epoch_indices(1)
  np.testing.assert_array_equal(np.sort(first), np.arange(100))
  np.testing.assert_array_equal(np.sort(second), np.arange(100))
  assert not np.array_equal(first, second)


def test_epochs_are_a_function_of_seed_and_epoch():
  probs = sampling.class_probabilities(COUNTS, 0.0)
  one = sampling.EpochSampler(LABELS, probs, seed=1)
  other = sampling.EpochSampler(LABELS, probs, seed=1)
  for epoch in (5, 0, 3):  # Any order, no history.
    np.testing.assert_array_equal(one.epoch_indices(epoch),
                                  other.epoch_indices(epoch))
  assert not np.array_equal(one.epoch_indices(0), one.epoch_indices(1))
  assert not np.array_equal(
      one.epoch_indices(0),
      sampling.EpochSampler(LABELS, probs, seed=2).epoch_indices(0))


@pytest.mark.parametrize('probabilities', [
    None,
    sampling.class_probabilities(COUNTS, 0.0),
    sampling.progressive_schedule(COUNTS, 4),
])
def test_resume_mid_epoch_gives_the_same_remaining_indices(probabilities):
  sampler = sampling.EpochSampler(LABELS, probabilities, seed=3)
  sampler.next_indices(130)
  state = sampler.get_state()
  assert state == {'epoch': 1, 'position': 30}
  remaining = sampler.next_indices(250)
  resumed = sampling.EpochSampler(LABELS, probabilities, seed=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(resumed.next_indices(250), remaining)
  # The stream is the epochs, concatenated.
  stream = np.concatenate([sampler.epoch_indices(e) for e in range(4)])
  np.testing.assert_array_equal(remaining, stream[130:380])
  assert next(iter(resumed)) == stream[380]


def test_set_state_rejects_positions_outside_the_epoch():
  sampler = sampling.EpochSampler(LABELS, seed=0)
  with pytest.raises(ValueError, match='positions'):
    sampler.set_state({'epoch': 0, 'position': 100})


def test_deferred_schedule_switches_at_the_start_epoch():
  probs = sampling.class_probabilities(COUNTS, 0.0)
  sampler = sampling.EpochSampler(
      LABELS, sampling.deferred_schedule(probs, 2), seed=0)
  for epoch in (0, 1):  # Plain permutations.
    np.testing.assert_array_equal(np.sort(sampler.epoch_indices(epoch)),
                                  np.arange(100))
  assert sampler.probabilities(1) is None
  np.testing.assert_allclose(sampler.probabilities(2), probs)
  # Class-balanced with replacement: repeats.
  assert len(np.unique(sampler.epoch_indices(2))) < 100


def test_sampler_pickles_with_its_schedule():
  sampler = sampling.EpochSampler(
      LABELS, sampling.progressive_schedule(COUNTS, 10), seed=5)
  copy = pickle.loads(pickle.dumps(sampler))
  np.testing.assert_array_equal(copy.epoch_indices(4), sampler.epoch_indices(4))


def test_positive_probability_for_an_absent_class_is_an_error():
  sampler = sampling.EpochSampler(LABELS, [0.2, 0.2, 0.2, 0.2, 0.2], seed=0)
  with pytest.raises(ValueError, match=r'classes \[4\]'):
    sampler.epoch_indices(0)


def test_grain_pipeline_reads_the_sampler_and_resumes():
  source = pipeline.ArraySource({
      'label': LABELS.astype(np.int32),
      'x': np.arange(100, dtype=np.float32)[:, None],
  })
  sampler = sampling.EpochSampler(
      LABELS, sampling.class_probabilities(COUNTS, 0.5), seed=11)

  def batches():
    dataset = sampler.to_map_dataset(num_epochs=50)[0::1]
    dataset = dataset.batch(32, drop_remainder=True)
    dataset = dataset.map(functools.partial(pipeline.gather, source))
    return iter(dataset.to_iter_dataset())

  iterator = batches()
  seen = [next(iterator) for _ in range(4)]  # 128 = epoch 1, position 28.
  state = iterator.get_state()
  rest = [next(iterator) for _ in range(3)]
  resumed = batches()
  resumed.set_state(state)
  for expected in rest:
    np.testing.assert_array_equal(next(resumed)['x'], expected['x'])
  stream = np.concatenate([sampler.epoch_indices(e) for e in range(3)])
  got = np.concatenate([b['x'][:, 0] for b in seen + rest]).astype(int)
  np.testing.assert_array_equal(got, stream[:224])
  assert len(sampler.index_source(50)) == 5000


def test_random_over_sampling():
  labels = np.array([0, 1, 0, 2, 0, 0, 1])  # Counts 4, 2, 1.
  indices = sampling.random_over_sampling(labels, seed=0)
  assert np.bincount(labels[indices]).tolist() == [4, 4, 4]
  assert set(range(7)) <= set(indices.tolist())  # Every original kept.
  assert indices.tolist().count(3) == 4  # The lone class-2 example, 4 times.
  np.testing.assert_array_equal(
      indices, sampling.random_over_sampling(labels, seed=0))


def test_random_under_sampling():
  labels = np.array([0, 1, 0, 2, 0, 0, 1, 2])  # Counts 4, 2, 2.
  indices = sampling.random_under_sampling(labels, seed=0)
  assert np.bincount(labels[indices]).tolist() == [2, 2, 2]
  assert len(set(indices.tolist())) == 6  # No repeats.
  assert {1, 6, 3, 7} <= set(indices.tolist())  # Small classes kept whole.
