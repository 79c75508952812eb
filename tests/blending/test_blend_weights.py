"""Tests of `gblend_jax.blending.blend.blend_weights` (Algorithm 1's
weight rule)."""

import doctest

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gblend_jax.blending import blend
from gblend_jax.blending import estimation
from gblend_jax.blending import gradient_space
from gblend_jax.blending import method
from gblend_jax.blending import ogr


def test_hand_computed_values():
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.4]), jnp.array([0.1, 0.5, 0.2])
  )
  # raw = G / O² = [20, 0.4, 10], sum 30.4.
  np.testing.assert_allclose(weights, np.array([20, 0.4, 10]) / 30.4, rtol=1e-6)
  assert weights.dtype == jnp.float32
  np.testing.assert_allclose(jnp.sum(weights), 1.0, rtol=1e-6)


@pytest.mark.parametrize('bad_gain', [0.0, -0.3])
def test_non_positive_gain_gets_zero_weight_never_a_sign_flip(bad_gain):
  weights = blend.blend_weights(
      jnp.array([0.2, bad_gain, 0.4]), jnp.array([0.1, 0.5, 0.2])
  )
  np.testing.assert_allclose(weights, np.array([20, 0, 10]) / 30, rtol=1e-6)


@pytest.mark.parametrize('overfit', [0.0, -0.5])
def test_non_positive_overfit_is_clipped_at_eps(overfit):
  eps = 1e-3
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1]), jnp.array([0.1, overfit]), eps=eps,
      overfit_rule='clip',
  )
  raw = np.array([0.2 / 0.1**2, 0.1 / eps**2])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-5)


def test_default_eps_gives_a_finite_dominant_weight():
  weights = blend.blend_weights(jnp.array([0.2, 0.1]), jnp.array([0.1, 0.0]),
                                overfit_rule='clip')
  raw = np.array([0.2 / 0.1**2, 0.1 / 1e-6**2])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-5)
  assert np.all(np.isfinite(weights))


def test_all_heads_failing_uses_uniform_fallback_and_says_so():
  weights, used_fallback = blend.blend_weights_with_status(
      jnp.array([-0.1, 0.0, jnp.nan, 0.3]),
      jnp.array([0.1, 0.1, 0.1, jnp.inf]),
  )
  np.testing.assert_allclose(weights, np.full(4, 0.25))
  assert bool(used_fallback)


def test_given_fallback_is_returned():
  fallback = jnp.array([0.5, 0.3, 0.2])
  weights, used_fallback = blend.blend_weights_with_status(
      -jnp.ones(3), jnp.ones(3), fallback=fallback
  )
  np.testing.assert_allclose(weights, fallback)
  assert bool(used_fallback)
  np.testing.assert_allclose(
      blend.blend_weights(-jnp.ones(3), jnp.ones(3), fallback=fallback),
      fallback,
  )


def test_status_is_false_when_a_head_is_valid():
  _, used_fallback = blend.blend_weights_with_status(
      jnp.array([-0.1, 0.2]), jnp.array([0.1, 0.1])
  )
  assert not bool(used_fallback)


@pytest.mark.parametrize(
    'gains, overfits',
    [
        ([0.2, jnp.nan, 0.4], [0.1, 0.5, 0.2]),
        ([0.2, jnp.inf, 0.4], [0.1, 0.5, 0.2]),
        ([0.2, 0.1, 0.4], [0.1, jnp.nan, 0.2]),
        ([0.2, 0.1, 0.4], [0.1, jnp.inf, 0.2]),
        ([0.2, 0.1, 0.4], [0.1, -jnp.inf, 0.2]),
    ],
)
def test_non_finite_input_gets_zero_weight(gains, overfits):
  weights = blend.blend_weights(jnp.array(gains), jnp.array(overfits))
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights, np.array([20, 0, 10]) / 30, rtol=1e-6)


def test_huge_ratios_stay_finite_and_normalised():
  weights = blend.blend_weights(
      jnp.array([1e30, 1e30, 1.0]), jnp.array([0.0, 0.0, 1.0])
  )
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights, [0.5, 0.5, 0.0], atol=1e-6)


def test_under_jit():
  fn = jax.jit(blend.blend_weights_with_status)
  weights, used_fallback = fn(
      jnp.array([0.2, 0.1, 0.4]), jnp.array([0.1, 0.5, 0.2])
  )
  np.testing.assert_allclose(weights, np.array([20, 0.4, 10]) / 30.4, rtol=1e-6)
  assert not bool(used_fallback)
  weights, used_fallback = fn(-jnp.ones(3), jnp.ones(3))
  np.testing.assert_allclose(weights, np.full(3, 1 / 3))
  assert bool(used_fallback)


def test_shape_errors():
  with pytest.raises(ValueError, match='shape'):
    blend.blend_weights(jnp.ones(3), jnp.ones(2))
  with pytest.raises(ValueError, match='fallback'):
    blend.blend_weights(jnp.ones(3), jnp.ones(3), fallback=jnp.ones(2))


def test_weights_from_statistics_rules():
  weights, used_fallback = gradient_space.weights_from_statistics_with_status(
      jnp.array([2.0, -1.0, 1.0, 1.0]), jnp.array([4.0, 1.0, 0.0, jnp.nan]),
      eps=0.5,
  )
  raw = np.array([2.0 / 4.0, 0.0, 1.0 / 0.5, 0.0])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-6)
  assert not bool(used_fallback)


@pytest.mark.parametrize('module', [blend, ogr, gradient_space])
def test_doctests(module):
  result = doctest.testmod(module)
  assert result.attempted > 0, f'{module.__name__} has no doctest examples'
  assert result.failed == 0


# ---- The rule for ΔO near and below 0 (SPEC §1): 'square' (the default)
# vs the withdrawn 'clip'.

# A history with ΔO < 0 on the second head (the issue's measurement): losses
# (train, held-out) of each head before and after training it alone.
#   O before = [0.1, 0.2, 0.1]; O after = [0.3, 0.1, 0.4]:
#   ΔO = [0.2, -0.1, 0.3]; G = [0.0996, 0.0332, 0.3771];
#   G / ΔO² = [2.49, 3.32, 4.19], sum 10: the paper's [0.249, 0.332, 0.419].
_TRAIN_BEFORE = np.array([2.0, 2.0, 2.0])
_HOLDOUT_BEFORE = np.array([2.1, 2.2, 2.1])
_HOLDOUT_AFTER = _HOLDOUT_BEFORE - np.array([0.0996, 0.0332, 0.3771])
_TRAIN_AFTER = _HOLDOUT_AFTER - np.array([0.3, 0.1, 0.4])


def _issue_history():
  report = ogr.OGRReport.from_losses(
      _TRAIN_BEFORE, _HOLDOUT_BEFORE, _TRAIN_AFTER, _HOLDOUT_AFTER)
  np.testing.assert_allclose(report.overfit_delta, [0.2, -0.1, 0.3],
                             atol=1e-6)
  return report.gain, report.overfit_delta


def test_issue_history_clip_gives_one_hot_paper_rule_does_not():
  gains, overfits = _issue_history()
  np.testing.assert_allclose(
      blend.blend_weights(gains, overfits, overfit_rule='clip'),
      [0.0, 1.0, 0.0], atol=1e-6)
  for weights in (blend.blend_weights(gains, overfits),  # the default
                  blend.blend_weights(gains, overfits, overfit_rule='square')):
    np.testing.assert_allclose(weights, [0.249, 0.332, 0.419], atol=2e-4)


def test_square_hand_example():
  # G / ΔO² = [0.2/0.04, 0.1/0.01, 0.3/0.04] = [5, 10, 7.5], sum 22.5.
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.3]), jnp.array([0.2, -0.1, 0.2]),
      overfit_rule='square')
  np.testing.assert_allclose(weights, np.array([5, 10, 7.5]) / 22.5,
                             rtol=1e-5)


def test_square_without_floor_at_zero_overfit_uses_eps_squared():
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1]), jnp.array([0.1, 0.0]), overfit_rule='square',
      eps=1e-3)
  raw = np.array([0.2 / 0.1**2, 0.1 / 1e-6])
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-5)


def test_relative_floor_hand_example():
  # max ΔO² over the heads with G > 0 is 0.04; ρ = 0.5 floors at 0.02:
  # D = [0.04, max(0.01, 0.02), 0.04]; G / D = [5, 5, 7.5], sum 17.5.
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.3]), jnp.array([0.2, -0.1, 0.2]),
      overfit_rule='square', overfit_floor_relative=0.5)
  np.testing.assert_allclose(weights, np.array([5, 5, 7.5]) / 17.5,
                             rtol=1e-5)


def test_relative_floor_ignores_heads_that_did_not_generalise():
  # The last head (G < 0) has the largest ΔO²; it does not set the floor:
  # max over valid heads is 0.04, floor 0.02 as above.
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, -0.3]), jnp.array([0.2, -0.1, 3.0]),
      overfit_rule='square', overfit_floor_relative=0.5)
  np.testing.assert_allclose(weights, [0.5, 0.5, 0.0], rtol=1e-5)


def test_absolute_floor_hand_example():
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.3]), jnp.array([0.2, -0.1, 0.2]),
      overfit_rule='square', overfit_floor=0.02)
  np.testing.assert_allclose(weights, np.array([5, 5, 7.5]) / 17.5,
                             rtol=1e-5)


@pytest.mark.parametrize('floors', [{'overfit_floor': 0.01},
                                    {'overfit_floor_relative': 0.1}])
def test_floored_square_is_continuous_across_zero(floors):
  gains = jnp.array([0.2, 0.1, 0.3])

  def weights_at(o):
    return np.asarray(blend.blend_weights(
        gains, jnp.array([0.2, o, 0.3]), overfit_rule='square', **floors))

  at_zero = weights_at(0.0)
  for delta in (1e-2, 1e-4, 1e-7):
    np.testing.assert_allclose(weights_at(-delta), at_zero, atol=1e-6)
    np.testing.assert_allclose(weights_at(delta), at_zero, atol=1e-6)
  # The floor (0.01, or 0.1 · 0.3² = 0.009) is reached near |ΔO| = 0.1:
  # below it nothing changes, above it the weight falls.
  assert weights_at(0.2)[1] < at_zero[1]
  # No collapse onto the head with ΔO = 0: at most 10 / (5 + 10 + 3.33).
  assert at_zero[1] < 0.6


def test_clip_jumps_near_zero():
  # The old rule: a move of ΔO from 0.05 to 0 hands the head everything.
  gains = jnp.array([0.2, 0.1, 0.3])
  near = blend.blend_weights(gains, jnp.array([0.2, 0.05, 0.3]),
                             overfit_rule='clip')
  at = blend.blend_weights(gains, jnp.array([0.2, 0.0, 0.3]),
                           overfit_rule='clip')
  assert near[1] < 0.9  # 40 / (5 + 40 + 3.33)
  assert at[1] > 1 - 1e-6


@pytest.mark.parametrize('rule', [
    {'overfit_rule': 'square'},
    {'overfit_rule': 'square', 'overfit_floor_relative': 0.1},
    {'overfit_rule': 'square', 'overfit_floor': 0.01},
    {'overfit_rule': 'square', 'min_fused_weight': 0.2},
])
@pytest.mark.parametrize('bad_gain', [0.0, -0.3])
def test_non_positive_gain_still_gets_zero_weight(rule, bad_gain):
  weights = blend.blend_weights(
      jnp.array([0.2, bad_gain, 0.4]), jnp.array([0.1, -0.5, 0.2]), **rule)
  assert float(weights[1]) == 0.0
  np.testing.assert_allclose(jnp.sum(weights), 1.0, rtol=1e-6)


def test_min_fused_weight_hand_example():
  # [5, 10, 7.5] / 22.5 = [0.222, 0.444, 0.333]; the fused head is lifted to
  # 0.5 and the others share 0.5 as 1 : 2.
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.3]), jnp.array([0.2, -0.1, 0.2]),
      overfit_rule='square', min_fused_weight=0.5)
  np.testing.assert_allclose(weights, [0.5 / 3, 1 / 3, 0.5], rtol=1e-5)


def test_min_fused_weight_lifts_a_dropped_fused_head():
  # The clip's one-hot [0, 1, 0] becomes [0, 0.9, 0.1].
  gains, overfits = _issue_history()
  weights = blend.blend_weights(gains, overfits, overfit_rule='clip',
                                min_fused_weight=0.1)
  np.testing.assert_allclose(weights, [0.0, 0.9, 0.1], atol=1e-6)


def test_min_fused_weight_leaves_larger_weights_and_other_positions():
  weights = blend.blend_weights(
      jnp.array([0.2, 0.1, 0.3]), jnp.array([0.2, -0.1, 0.2]),
      overfit_rule='square', min_fused_weight=0.1)
  np.testing.assert_allclose(weights, np.array([5, 10, 7.5]) / 22.5,
                             rtol=1e-5)
  # Fused head first: [0.444 -> 0.6, 0.333, 0.222] rescaled to share 0.4.
  weights = blend.blend_weights(
      jnp.array([0.1, 0.3, 0.2]), jnp.array([-0.1, 0.2, 0.2]),
      overfit_rule='square', min_fused_weight=0.6, fused_index=0)
  np.testing.assert_allclose(weights, [0.6, 0.4 * 0.6, 0.4 * 0.4], rtol=1e-5)


def test_min_fused_weight_when_only_the_fused_head_is_valid():
  weights = blend.blend_weights(
      jnp.array([-0.2, -0.1, 0.3]), jnp.array([0.2, 0.1, 0.2]),
      min_fused_weight=0.3)
  np.testing.assert_allclose(weights, [0.0, 0.0, 1.0])


def test_min_fused_weight_does_not_touch_the_fallback():
  fallback = jnp.array([0.5, 0.4, 0.1])
  weights, used_fallback = blend.blend_weights_with_status(
      -jnp.ones(3), jnp.ones(3), min_fused_weight=0.3, fallback=fallback)
  assert bool(used_fallback)
  np.testing.assert_allclose(weights, fallback)


def test_rules_under_jit():
  fn = jax.jit(lambda g, o: blend.blend_weights_with_status(
      g, o, overfit_rule='square', overfit_floor_relative=0.5,
      min_fused_weight=0.5))
  weights, used_fallback = fn(jnp.array([0.2, 0.1, 0.3]),
                              jnp.array([0.2, -0.1, 0.2]))
  # [5, 5, 7.5] / 17.5 = [0.286, 0.286, 0.429] -> fused 0.5, others 0.25.
  np.testing.assert_allclose(weights, [0.25, 0.25, 0.5], rtol=1e-5)
  assert not bool(used_fallback)


@pytest.mark.parametrize('kwargs, match', [
    ({'overfit_rule': 'abs'}, 'overfit_rule'),
    ({'overfit_rule': 'square', 'overfit_floor': -1.0}, 'non-negative'),
    ({'overfit_rule': 'square', 'overfit_floor_relative': -0.1},
     'non-negative'),
    ({'min_fused_weight': 1.5}, 'min_fused_weight'),
])
def test_rule_argument_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    blend.blend_weights(jnp.ones(3), jnp.ones(3), **kwargs)


def test_estimation_passes_the_rule_through():
  # Algorithm 1 on the issue's history: head i trained alone moves only its
  # own losses to their 'after' values.
  def measure(state):
    if state is None:
      return _TRAIN_BEFORE, _HOLDOUT_BEFORE
    train_losses, holdout = _TRAIN_BEFORE.copy(), _HOLDOUT_BEFORE.copy()
    train_losses[state] = _TRAIN_AFTER[state]
    holdout[state] = _HOLDOUT_AFTER[state]
    return train_losses, holdout

  def run(**rule):
    return estimation.estimate_blend_weights(
        None, num_heads=3, train_head=lambda state, head: head,
        measure=measure, previous_weights=np.full(3, 1 / 3), **rule).weights

  np.testing.assert_allclose(run(overfit_rule='clip'), [0.0, 1.0, 0.0],
                             atol=1e-6)
  np.testing.assert_allclose(run(), [0.249, 0.332, 0.419], atol=2e-4)
  np.testing.assert_allclose(run(overfit_rule='square'),
                             [0.249, 0.332, 0.419], atol=2e-4)
  np.testing.assert_allclose(
      run(overfit_rule='square', min_fused_weight=0.5),
      [0.249 / 0.581 * 0.5, 0.332 / 0.581 * 0.5, 0.5], atol=2e-4)


def test_config_block_has_the_rule_and_checks_it():
  block = method.default_blend_config()
  for key in ('overfit_rule', 'overfit_floor', 'overfit_floor_relative',
              'min_fused_weight'):
    assert key in block
  assert block.overfit_rule in method.OVERFIT_RULES
  # The trainer's default (experiments/results/gblend_mfeat.md): the paper's
  # ΔO², floored at 0.1 of the largest, and the fused head at least 0.1.
  assert (block.overfit_rule, block.overfit_floor,
          block.overfit_floor_relative, block.min_fused_weight) == (
              'square', 0.0, 0.1, 0.1)
  config = ml_collections.ConfigDict({'blend': block})
  method.Blending.check_config(config)
  for key, value in (('overfit_rule', 'abs'), ('overfit_floor', -1.0),
                     ('min_fused_weight', 2.0)):
    bad = ml_collections.ConfigDict({'blend': method.default_blend_config()})
    bad.blend[key] = value
    with pytest.raises(ValueError, match=key):
      method.Blending.check_config(bad)
