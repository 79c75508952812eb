"""Long-tail losses against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.longtail import losses

LN_4_3 = math.log(4 / 3)
# Logits with p = 3/4 on the class named by the label.
P34_CLASS1 = jnp.array([[0.0, math.log(3.0)]])
P34_CLASS0 = jnp.array([[math.log(3.0), 0.0]])


def test_cross_entropy_and_class_weights():
  np.testing.assert_allclose(
      losses.cross_entropy(P34_CLASS1, jnp.array([1])), [LN_4_3], rtol=1e-6)
  # Class 0 has p = 1/4 there: ln 4, weighted by 2.
  np.testing.assert_allclose(
      losses.cross_entropy(P34_CLASS1, jnp.array([0]), weights=[2.0, 1.0]),
      [2 * math.log(4.0)], rtol=1e-6)


def test_cost_sensitive_weights_and_loss():
  counts = np.array([100, 10, 50])
  np.testing.assert_allclose(losses.cost_sensitive_weights(counts),
                             [0.1, 1.0, 0.2], rtol=1e-6)
  logits = jnp.array([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
  np.testing.assert_allclose(
      losses.cost_sensitive_cross_entropy(logits, jnp.array([0, 1]),
                                          np.array([100, 10])),
      [0.1 * LN_4_3, LN_4_3], rtol=1e-6)


@pytest.mark.parametrize('gamma, factor', [(0.0, 1.0), (1.0, 0.25),
                                           (2.0, 1 / 16), (0.5, 0.5)])
def test_focal_term(gamma, factor):
  # p = 3/4: (1 - p)^gamma = (1/4)^gamma.
  np.testing.assert_allclose(
      losses.focal_loss(P34_CLASS1, jnp.array([1]), gamma=gamma),
      [factor * LN_4_3], rtol=1e-5)


def test_focal_gradient_is_finite_when_saturated():
  grad = jax.grad(lambda z: losses.focal_loss(
      z, jnp.array([0]), gamma=0.5).sum())(jnp.array([[100.0, 0.0]]))
  assert np.all(np.isfinite(grad))


def test_class_balanced_weights_hand_values():
  # beta = 1/2: 1 - beta^n = 1/2 and 3/4; weights 2 and 4/3, sum to C = 2.
  np.testing.assert_allclose(losses.class_balanced_weights([1, 2], 0.5),
                             [1.2, 0.8], rtol=1e-6)
  # beta = 0.9, n = 1, 10, 100: (1 - b) / (1 - b^n).
  raw = [0.1 / (1 - 0.9 ** n) for n in (1, 10, 100)]
  expected = [3 * r / sum(raw) for r in raw]
  np.testing.assert_allclose(
      losses.class_balanced_weights([1, 10, 100], 0.9), expected, rtol=1e-5)
  assert sum(expected) == pytest.approx(3.0)


def test_class_balanced_weights_limits():
  # beta = 0: all equal; beta -> 1: inverse frequency (1, 1/4 -> 1.6, 0.4).
  np.testing.assert_allclose(losses.class_balanced_weights([5, 500], 0.0),
                             [1.0, 1.0])
  np.testing.assert_allclose(
      losses.class_balanced_weights([1, 4], 1 - 1e-7), [1.6, 0.4], rtol=1e-5)
  with pytest.raises(ValueError, match=r'\[0, 1\)'):
    losses.class_balanced_weights([1, 4], 1.0)


def test_class_balanced_cross_entropy_and_focal():
  counts = np.array([1, 2])  # beta = 1/2: weights 1.2, 0.8.
  np.testing.assert_allclose(
      losses.class_balanced_cross_entropy(P34_CLASS1, jnp.array([1]), counts,
                                          beta=0.5),
      [0.8 * LN_4_3], rtol=1e-5)
  np.testing.assert_allclose(
      losses.class_balanced_focal_loss(P34_CLASS0, jnp.array([0]), counts,
                                       beta=0.5, gamma=2.0),
      [1.2 * LN_4_3 / 16], rtol=1e-5)


def test_ldam_margins():
  # n^(-1/4) = 1, 1/2, 1/3, scaled so that the largest is max_margin.
  np.testing.assert_allclose(losses.ldam_margins([1, 16, 81]),
                             [0.5, 0.25, 1 / 6], rtol=1e-6)
  np.testing.assert_allclose(losses.ldam_margins([81, 16, 1], 1.0),
                             [1 / 3, 0.5, 1.0], rtol=1e-6)


def test_ldam_subtracts_margin_from_true_logit_then_scales():
  counts = np.array([1, 16, 81])
  logits = jnp.ones((2, 3))
  labels = jnp.array([1, 0])
  # Label 1, margin 1/4, s = 30: logits 30, 22.5, 30.
  # Label 0, margin 1/2, s = 30: logits 15, 30, 30.
  expected = [math.log1p(2 * math.exp(7.5)), math.log1p(2 * math.exp(15.0))]
  np.testing.assert_allclose(losses.ldam_loss(logits, labels, counts),
                             expected, rtol=1e-5)
  # s = 1 and class weights: 0.5 * log(1 + 2 e^{1/4}) for label 1.
  np.testing.assert_allclose(
      losses.ldam_loss(logits[:1], labels[:1], counts, scale=1.0,
                       weights=[1.0, 0.5, 1.0]),
      [0.5 * math.log1p(2 * math.exp(0.25))], rtol=1e-5)


def test_balanced_softmax_adds_log_counts():
  # Equal logits and counts 1, 2, 1: p_1 = 2/4.
  loss = losses.balanced_softmax_loss(jnp.zeros((1, 3)), jnp.array([1]),
                                      np.array([1, 2, 1]))
  np.testing.assert_allclose(loss, [math.log(2.0)], rtol=1e-6)
  logits = jnp.array([[0.3, -1.0, 2.0]])
  shifted = losses.cross_entropy(logits + jnp.log(jnp.array([3.0, 1, 7])),
                                 jnp.array([2]))
  # The prior or the counts: the same loss.
  np.testing.assert_allclose(
      losses.balanced_softmax_loss(logits, jnp.array([2]),
                                   np.array([30, 10, 70])),
      shifted, rtol=1e-6)


@pytest.mark.parametrize(
    'name, kwargs, direct',
    [
        ('ce', {}, lambda z, y, n: losses.cross_entropy(z, y)),
        ('cs_ce', {}, losses.cost_sensitive_cross_entropy),
        ('focal', {'gamma': 1.0},
         lambda z, y, n: losses.focal_loss(z, y, gamma=1.0)),
        ('cb_ce', {'beta': 0.99},
         lambda z, y, n: losses.class_balanced_cross_entropy(
             z, y, n, beta=0.99)),
        ('cb_focal', {'beta': 0.99, 'gamma': 0.5},
         lambda z, y, n: losses.class_balanced_focal_loss(
             z, y, n, beta=0.99, gamma=0.5)),
        ('ldam', {'max_margin': 0.3, 'scale': 10.0},
         lambda z, y, n: losses.ldam_loss(z, y, n, max_margin=0.3,
                                          scale=10.0)),
        ('balanced_softmax', {}, losses.balanced_softmax_loss),
    ],
)
def test_make_loss_matches_the_functions_under_jit(name, kwargs, direct):
  counts = np.array([50, 10, 3])
  logits = jnp.array([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]])
  labels = jnp.array([2, 0])
  loss_fn = losses.make_loss(name, counts, **kwargs)
  np.testing.assert_allclose(jax.jit(loss_fn)(logits, labels),
                             direct(logits, labels, counts), rtol=1e-5)


def test_make_loss_errors_list_valid_choices():
  with pytest.raises(ValueError, match=r"'balanced_softmax', 'cb_ce'"):
    losses.make_loss('lade', np.array([2, 1]))
  with pytest.raises(ValueError, match=r"takes no \['gamma'\].*\['beta'\]"):
    losses.make_loss('cb_ce', np.array([2, 1]), gamma=2.0)


def test_shape_errors():
  with pytest.raises(ValueError, match='logits'):
    losses.cross_entropy(jnp.zeros((3,)), jnp.zeros((3,), jnp.int32))
