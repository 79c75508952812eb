"""Top-k accuracy and the combination of batch sums."""

import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax import metrics


def test_topk_correct_by_hand():
  logits = jnp.array([[0.1, 0.5, 0.4],   # order 1, 2, 0
                      [0.9, 0.05, 0.05],  # order 0, ...
                      [0.2, 0.3, 0.5]])  # order 2, 1, 0
  labels = jnp.array([2, 0, 0])
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 1),
                                [0, 1, 0])
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 2),
                                [1, 1, 0])
  # k larger than the number of classes counts everything.
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 5),
                                [1, 1, 1])


def test_finalize_weights_batches_by_real_examples():
  # Batch 1: 3 real examples, 2 correct; batch 2: 1 real (1 padded), 1 correct.
  logits = {'fused': jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
  first = metrics.head_metric_sums(logits, jnp.array([0, 0, 0]))
  logits2 = {'fused': jnp.array([[0.0, 1.0], [0.0, 1.0]])}
  second = metrics.head_metric_sums(logits2, jnp.array([1, 0]),
                                    jnp.array([1.0, 0.0]))
  result = metrics.finalize([first, second])
  assert result['count'] == 4
  assert result['fused/accuracy'] == pytest.approx(3 / 4)
  # Loss: ln(1 + e^-1) for the three confident-correct, ln(1 + e) for the
  # wrong one.
  expected = (3 * np.log1p(np.exp(-1.0)) + np.log1p(np.e)) / 4
  assert result['fused/loss'] == pytest.approx(expected, rel=1e-5)
