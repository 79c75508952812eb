"""Tests of stratified held-out splits and id-disjointness checks."""

import numpy as np
import pytest

from gblend_jax.data import splits

# 10, 4, 2 and 1 examples of classes 0..3, interleaved.
LABELS = np.array([0, 1, 0, 2, 0, 1, 0, 0, 3, 0, 1, 0, 0, 2, 1, 0, 0])


def test_stratified_holdout_takes_round_fraction_of_each_class():
  kept, held_out = splits.stratified_holdout(LABELS, 0.3, seed=0)
  # round(3.0) = 3, round(1.2) = 1, round(0.6) = 1, a single example: 0.
  np.testing.assert_array_equal(np.bincount(LABELS[held_out]), [3, 1, 1])
  np.testing.assert_array_equal(np.bincount(LABELS[kept]), [7, 3, 1, 1])
  assert np.all(np.diff(kept) > 0) and np.all(np.diff(held_out) > 0)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([kept, held_out])), np.arange(len(LABELS))
  )


def test_stratified_holdout_keeps_one_of_each_class_of_two_or_more():
  _, held_out = splits.stratified_holdout(LABELS, 0.01, seed=0)
  np.testing.assert_array_equal(np.bincount(LABELS[held_out]), [1, 1, 1])


def test_stratified_holdout_is_seeded():
  first = splits.stratified_holdout(LABELS, 0.3, seed=3)
  again = splits.stratified_holdout(LABELS, 0.3, seed=3)
  other = splits.stratified_holdout(LABELS, 0.3, seed=4)
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize('fraction', [0.0, 1.0, -0.1, 1.5])
def test_stratified_holdout_rejects_fractions_outside_0_1(fraction):
  with pytest.raises(ValueError, match='fraction'):
    splits.stratified_holdout(LABELS, fraction, seed=0)


def test_check_disjoint_names_the_shared_ids():
  splits.check_disjoint([1, 2, 3], [4, 5], 'train', 'test')
  with pytest.raises(ValueError, match=r'holdout and test: \[3, 7\]'):
    splits.check_disjoint([1, 3, 7], [7, 3, 9], 'holdout', 'test')


def test_per_class_subset_by_hand():
  labels = np.array([0, 0, 0, 1, 1, 2])
  kept = splits.per_class_subset(labels, 2, seed=0)
  np.testing.assert_array_equal(np.bincount(labels[kept]), [2, 2, 1])
  assert np.all(np.diff(kept) > 0)
  np.testing.assert_array_equal(kept, splits.per_class_subset(labels, 2, 0))
  with pytest.raises(ValueError, match='count=0'):
    splits.per_class_subset(labels, 0, seed=0)
