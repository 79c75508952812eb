"""ReconBoost's losses against SPEC_METHODS.md §5(h) and hand-worked cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax import reconboost

# §5(h): C = 3, y = 0, learner logits (2, 1, 0), other-ensemble logits
# (0, 1, 0), w1 = 5, w2 = 1.
LEARNER = jnp.array([[2.0, 1.0, 0.0]])
OTHERS = jnp.array([[0.0, 1.0, 0.0]])
LABEL = jnp.array([0])


def test_spec_worked_example_loss_and_gradient():
  loss, grad = jax.value_and_grad(
      lambda z: reconboost.reconcilement_loss(z, OTHERS, LABEL, weight1=5.0,
                                              weight2=1.0))(LEARNER)
  np.testing.assert_allclose(loss, 0.650547, atol=1e-6)
  np.testing.assert_allclose(grad[0], [-0.534282, 0.390591, 0.143691],
                             atol=1e-6)


def test_spec_worked_example_phase_two():
  np.testing.assert_allclose(
      reconboost.rectification_loss(LEARNER + OTHERS, LABEL), 0.758624,
      atol=1e-6)


def test_no_gradient_reaches_the_other_learners():
  grad = jax.grad(lambda o: reconboost.reconcilement_loss(
      LEARNER, o, LABEL, weight1=5.0, weight2=1.0))(OTHERS)
  np.testing.assert_array_equal(grad, 0.0)


def test_empty_ensemble_gives_q_one():
  # The authors' c0 broadcast to [B, 1]: softmax over one column is 1, so
  # l = -((5 - 1) / 3) log p_y. By hand: log p_0 = 2 - log(e^2 + e + 1)
  # = -0.407606; l = 4/3 * 0.407606 = 0.543475.
  expected = 4.0 / 3.0 * 0.40760596
  for loss in (
      reconboost.reconcilement_loss(LEARNER, None, LABEL),
      reconboost.reconcilement_loss(LEARNER, OTHERS, LABEL,
                                    empty_ensemble=jnp.array(True))):
    np.testing.assert_allclose(loss, expected, atol=1e-6)


def test_sample_weights_and_batch_mean_by_hand():
  # Two samples, C = 2, learner logits 0 (p_y = 1/2): l_i = (w1 - w2 q_i)
  # / 2 * log 2. Sample 1's others put all mass on its label (q -> 1 with
  # logits (50, 0)), sample 2's none (q -> 0): weights 4/2 and 5/2.
  logits = jnp.zeros((2, 2))
  others = jnp.array([[50.0, 0.0], [50.0, 0.0]])
  labels = jnp.array([0, 1])
  loss = reconboost.reconcilement_loss(logits, others, labels)
  np.testing.assert_allclose(loss, (2.0 + 2.5) / 2 * np.log(2.0), rtol=1e-6)


def test_ensemble_logits_leave_out_one_learner_and_skip_non_members():
  learners = {'a': jnp.array([[1.0, 0.0]]), 'b': jnp.array([[0.0, 2.0]]),
              'c': jnp.array([[3.0, 3.0]])}
  order = ('a', 'b', 'c')
  beta = jnp.array(0.5)
  logits, empty = reconboost.ensemble_logits(
      learners, order, beta, jnp.array([1.0, 1.0, 0.0]), exclude='a')
  np.testing.assert_allclose(logits, [[0.0, 1.0]])  # 0.5 * f_b; c is out.
  assert not empty
  logits, empty = reconboost.ensemble_logits(
      learners, order, beta, jnp.array([0.0, 1.0, 1.0]))
  np.testing.assert_allclose(logits, [[1.5, 2.5]])
  _, empty = reconboost.ensemble_logits(
      learners, order, beta, jnp.array([1.0, 0.0, 0.0]), exclude='a')
  assert empty


@pytest.mark.parametrize('q_y', [0.0, 0.3, 1.0])
def test_gradient_is_weighted_cross_entropy_gradient(q_y):
  # d l / d z = ((w1 - w2 q_y) / C) (p - e_y), for a q_y set by the others.
  c = 4
  logits = jnp.array([[0.3, -1.0, 2.0, 0.5]])
  label = jnp.array([2])
  if q_y in (0.0, 1.0):
    others = jnp.zeros((1, c)).at[0, 2].set(100.0 if q_y else -100.0)
  else:
    # softmax(others)_2 = 0.3 with the other three equal.
    others = jnp.zeros((1, c)).at[0, 2].set(np.log(0.3 * 3 / 0.7))
  grad = jax.grad(lambda z: reconboost.reconcilement_loss(
      z, others, label, weight1=5.0, weight2=1.0))(logits)
  p = jax.nn.softmax(logits)[0]
  expected = (5.0 - q_y) / c * (p - jax.nn.one_hot(2, c))
  np.testing.assert_allclose(grad[0], expected, atol=1e-5)
