"""Many-, medium- and few-shot accuracy on a hand example."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.longtail import shot_metrics

TRAIN_COUNTS = np.array([500, 150, 100, 50, 20, 19, 5])


def test_shot_groups_boundaries():
  groups = shot_metrics.shot_groups(TRAIN_COUNTS)
  assert groups['many_shot'].tolist() == [1, 1, 0, 0, 0, 0, 0]
  assert groups['medium_shot'].tolist() == [0, 0, 1, 1, 1, 0, 0]
  assert groups['few_shot'].tolist() == [0, 0, 0, 0, 0, 1, 1]


def test_shot_accuracies_hand_example():
  correct = np.array([9, 8, 7, 6, 5, 4, 1])
  total = np.full(7, 10)
  result = shot_metrics.shot_accuracies(correct, total, TRAIN_COUNTS)
  assert result['many_shot_accuracy'] == pytest.approx((0.9 + 0.8) / 2)
  assert result['medium_shot_accuracy'] == pytest.approx(
      (0.7 + 0.6 + 0.5) / 3)
  assert result['few_shot_accuracy'] == pytest.approx((0.4 + 0.1) / 2)
  assert result['accuracy'] == pytest.approx(40 / 70)
  assert result['top1_error'] == pytest.approx(30 / 70)


def test_group_accuracy_is_a_mean_over_classes():
  # Many-shot classes: 1/1 and 0/3 correct: mean of 1 and 0, not 1/4.
  result = shot_metrics.shot_accuracies(
      np.array([1, 0, 2]), np.array([1, 3, 2]), np.array([200, 300, 10]))
  assert result['many_shot_accuracy'] == 0.5
  assert result['few_shot_accuracy'] == 1.0
  assert math.isnan(result['medium_shot_accuracy'])  # No medium class.
  assert result['accuracy'] == 0.5


def test_per_class_correct_with_mask_under_jit():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0],
                      [0.0, 0.0, 2.0]])
  labels = jnp.array([0, 1, 1, 1])
  mask = jnp.array([1.0, 1.0, 1.0, 0.0])  # The last example is padding.
  correct, total = jax.jit(shot_metrics.per_class_correct,
                           static_argnums=2)(logits, labels, 3, mask)
  assert correct.tolist() == [1.0, 1.0, 0.0]
  assert total.tolist() == [1.0, 2.0, 0.0]
  assert shot_metrics.top1_error(correct, total) == pytest.approx(1 / 3)
