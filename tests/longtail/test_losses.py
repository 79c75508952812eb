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


# The official forms (BagofTricks-LT, class-balanced-loss, LDAM-DRW).


def _sigmoid(z):
  return 1 / (1 + math.exp(-z))


def test_sigmoid_focal_hand_values():
  # z = (2, -1), y = 0, γ = 2. Class 0 (t = 1): p_t = σ(2) = 0.880797,
  # (1 - p_t)^2 = 0.0142094, -ln p_t = 0.126928: 0.00180357. Class 1
  # (t = 0): p_t = 1 - σ(-1) = 0.731059, (1 - p_t)^2 = 0.0723295,
  # -ln p_t = 0.313262: 0.0226581. Sum 0.0244617.
  p0, p1 = _sigmoid(2.0), 1 - _sigmoid(-1.0)
  expected = (1 - p0) ** 2 * -math.log(p0) + (1 - p1) ** 2 * -math.log(p1)
  assert expected == pytest.approx(0.0244617, abs=1e-6)
  logits = jnp.array([[2.0, -1.0]])
  got = losses.focal_loss(logits, jnp.array([0]), gamma=2.0, form='sigmoid')
  np.testing.assert_allclose(got, [expected], rtol=1e-5)
  np.testing.assert_allclose(
      losses.sigmoid_focal_loss(logits, jnp.array([0]), gamma=2.0), got)
  # The class weight of the label multiplies the whole row: w_0 = 3.
  np.testing.assert_allclose(
      losses.sigmoid_focal_loss(logits, jnp.array([0]), gamma=2.0,
                                weights=[3.0, 0.5]), [3 * expected],
      rtol=1e-5)


def test_sigmoid_focal_gamma_zero_is_summed_binary_cross_entropy():
  # z = 0 for C = 3 classes: each BCE is ln 2.
  np.testing.assert_allclose(
      losses.sigmoid_focal_loss(jnp.zeros((2, 3)), jnp.array([0, 2]),
                                gamma=0.0), [3 * math.log(2.0)] * 2,
      rtol=1e-6)
  # γ = 1 at z = 0: each term is (1/2) ln 2.
  np.testing.assert_allclose(
      losses.sigmoid_focal_loss(jnp.zeros((1, 3)), jnp.array([1]),
                                gamma=1.0), [1.5 * math.log(2.0)],
      rtol=1e-6)


def test_sigmoid_focal_is_stable_for_large_logits():
  logits = jnp.array([[80.0, -80.0, 0.0]])
  value, grad = jax.value_and_grad(lambda z: losses.sigmoid_focal_loss(
      z, jnp.array([1]), gamma=0.5).sum())(logits)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  # Class 0 (t = 0, z = 80): BCE ≈ 80, modulator σ(80)^0.5 ≈ 1; class 1
  # (t = 1, z = -80): ≈ 80; class 2: (1/2)^0.5 ln 2.
  np.testing.assert_allclose(value, 160 + math.sqrt(0.5) * math.log(2.0),
                             rtol=1e-5)


def test_class_balanced_focal_sigmoid_form():
  counts = np.array([100, 10])
  logits = jnp.array([[0.5, -0.5], [1.0, 2.0]])
  labels = jnp.array([1, 0])
  weights = losses.class_balanced_weights(counts, 0.99)
  expected = np.asarray(weights)[[1, 0]] * np.asarray(
      losses.sigmoid_focal_loss(logits, labels, gamma=1.0))
  np.testing.assert_allclose(
      losses.class_balanced_focal_loss(logits, labels, counts, beta=0.99,
                                       gamma=1.0, form='sigmoid'),
      expected, rtol=1e-6)
  with pytest.raises(ValueError, match=r"form 'logistic'.*'sigmoid'"):
    losses.focal_loss(logits, labels, form='logistic')


def test_cost_sensitive_square_root_weights():
  # n_min = 4: (4/100)^(1/2) = 0.2, (4/25)^(1/2) = 0.4, 1.
  counts = np.array([100, 25, 4])
  np.testing.assert_allclose(losses.cost_sensitive_weights(counts, 0.5),
                             [0.2, 0.4, 1.0], rtol=1e-6)
  logits = jnp.array([[math.log(3.0), 0.0, 0.0]])  # p_0 = 3/5.
  expected = [0.2 * math.log(5 / 3)]
  np.testing.assert_allclose(
      losses.make_loss('cs_ce_sqrt', counts)(logits, jnp.array([0])),
      expected, rtol=1e-5)
  np.testing.assert_allclose(
      losses.make_loss('cs_ce', counts, power=0.5)(logits, jnp.array([0])),
      expected, rtol=1e-5)
  with pytest.raises(ValueError, match='power=2'):
    losses.cost_sensitive_weights(counts, 2)


def test_loss_class_weights_are_the_weights_inside_each_loss():
  counts = np.array([100, 25, 4])
  np.testing.assert_allclose(losses.loss_class_weights('cs_ce', counts),
                             [0.04, 0.16, 1.0], rtol=1e-6)
  np.testing.assert_allclose(
      losses.loss_class_weights('cs_ce_sqrt', counts), [0.2, 0.4, 1.0],
      rtol=1e-6)
  np.testing.assert_allclose(
      losses.loss_class_weights('cb_focal', counts, beta=0.9),
      losses.class_balanced_weights(counts, 0.9), rtol=1e-6)
  np.testing.assert_array_equal(
      losses.loss_class_weights('ldam', counts), [1.0, 1.0, 1.0])


def test_reduce_losses_mean_and_weighted_mean():
  # ℓ' = (1, 2, 3) with weights (0.5, 1, 0.5): w ℓ' = (0.5, 2, 1.5).
  weighted = jnp.array([0.5, 2.0, 1.5])
  weights = jnp.array([0.5, 1.0, 0.5])
  assert float(losses.reduce_losses(weighted, weights, 'mean')) == (
      pytest.approx(4.0 / 3))
  assert float(losses.reduce_losses(weighted, weights, 'weighted_mean')) == (
      pytest.approx(4.0 / 2.0))
  with pytest.raises(ValueError, match=r"'mean', 'weighted_mean'"):
    losses.reduce_losses(weighted, weights, 'sum')


def test_logit_adjusted_loss_matches_the_spec_example():
  # SPEC_METHODS §6(h): f = (2, 1, 0.5), y = 2, π = (0.7, 0.2, 0.1).
  logits, labels = jnp.array([[2.0, 1.0, 0.5]]), jnp.array([2])
  counts = np.array([7, 2, 1])
  assert float(losses.logit_adjusted_loss(logits, labels, counts)) == (
      pytest.approx(3.574289, rel=1e-6))
  assert float(losses.logit_adjusted_loss(logits, labels, counts,
                                          tau=0.5)) == pytest.approx(
                                              2.720577, rel=1e-6)
  # τ = 0 is plain cross-entropy; τ = 1 is the balanced softmax.
  assert float(losses.logit_adjusted_loss(logits, labels, counts,
                                          tau=0.0)) == pytest.approx(
                                              1.964369, rel=1e-5)
  np.testing.assert_allclose(
      losses.make_loss('logit_adjusted', counts)(logits, labels),
      losses.balanced_softmax_loss(logits, labels, counts), rtol=1e-6)


def test_posthoc_adjustment_moves_the_prediction_to_the_rare_class():
  adjusted = losses.posthoc_adjusted_logits(jnp.array([2.0, 1.0, 0.5]),
                                            np.array([7, 2, 1]))
  np.testing.assert_allclose(adjusted, [2.356675, 2.609438, 2.802585],
                             rtol=1e-6)
  assert int(jnp.argmax(adjusted)) == 2
