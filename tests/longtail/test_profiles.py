"""Long-tailed class counts and seeded per-class subsets."""

import numpy as np
import pytest

from gblend_jax.longtail import profiles


def test_cifar10_lt_counts_for_imbalance_100():
  counts = profiles.exponential_profile(10, 5000, 100)
  assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83,
                             50]


@pytest.mark.parametrize(
    'num_classes, max_count, imbalance, total, smallest',
    [
        (10, 5000, 50, 13996, 100),  # CIFAR-10-LT, IF 50.
        (100, 500, 100, 10847, 5),  # CIFAR-100-LT, IF 100.
        (100, 500, 50, 12608, 10),  # CIFAR-100-LT, IF 50.
    ],
)
def test_cifar_lt_sizes(num_classes, max_count, imbalance, total, smallest):
  counts = profiles.exponential_profile(num_classes, max_count, imbalance)
  assert counts.sum() == total
  assert counts[0] == max_count and counts[-1] == smallest
  assert np.all(np.diff(counts) <= 0)


def test_imbalance_one_is_uniform():
  assert profiles.exponential_profile(4, 7, 1).tolist() == [7, 7, 7, 7]


def test_step_profile_halves():
  assert profiles.step_profile(10, 5000, 10).tolist() == [5000] * 5 + [500] * 5
  # Odd C: the extra class is a majority class.
  assert profiles.step_profile(3, 100, 100).tolist() == [100, 100, 1]
  assert profiles.longtail_counts('step', 4, 10, 2).tolist() == [10, 10, 5, 5]


@pytest.mark.parametrize('profile', ['exponential', 'step'])
def test_imbalance_below_one_is_rejected(profile):
  with pytest.raises(ValueError, match='at least 1'):
    profiles.longtail_counts(profile, 10, 5000, 0.5)


def test_profile_that_empties_a_class_is_rejected():
  with pytest.raises(ValueError, match=r'classes \[2\] empty'):
    profiles.exponential_profile(3, 50, 100)  # 50, 5, int(0.5) = 0.


def test_unknown_profile_lists_valid_ones():
  with pytest.raises(ValueError, match=r"\['exponential', 'step'\]"):
    profiles.longtail_counts('pareto', 10, 5000, 100)


def _labels():
  # 20 examples of class 0, 10 of class 1, 5 of class 2, interleaved.
  return np.array([0] * 20 + [1] * 10 + [2] * 5)[
      np.random.default_rng(123).permutation(35)]


def test_longtail_indices_keep_the_asked_counts():
  labels = _labels()
  kept = profiles.longtail_indices(labels, [8, 4, 2], seed=0)
  assert np.bincount(labels[kept]).tolist() == [8, 4, 2]
  assert np.all(np.diff(kept) > 0)  # Sorted, no repeats.
  assert kept.dtype == np.int64


def test_longtail_indices_are_deterministic_and_nested():
  labels = _labels()
  first = profiles.longtail_indices(labels, [8, 4, 2], seed=3)
  again = profiles.longtail_indices(labels, [8, 4, 2], seed=3)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(
      first, profiles.longtail_indices(labels, [8, 4, 2], seed=4))
  # Smaller counts with the same seed: a subset.
  smaller = profiles.longtail_indices(labels, [5, 4, 1], seed=3)
  assert set(smaller) <= set(first)


def test_longtail_indices_errors():
  labels = _labels()
  with pytest.raises(ValueError, match='Class 2 has 5 examples but 6'):
    profiles.longtail_indices(labels, [8, 4, 6], seed=0)
  with pytest.raises(ValueError, match=r'classes \[1\] empty'):
    profiles.longtail_indices(labels, [8, 0, 2], seed=0)
  with pytest.raises(ValueError, match=r'Labels \[2\] are not in \[0, 2\)'):
    profiles.longtail_indices(labels, [8, 4], seed=0)
