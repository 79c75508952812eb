"""ReconBoost's stages, membership, fresh optimiser states and phase L2."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import reconboost
from gblend_jax.reconboost import schedule


def test_phases_alternate_the_modalities_then_rectify():
  stages = reconboost.StageSchedule(('audio', 'visual'), learner_steps=3,
                                    rectify_steps=2)
  names = [stages.phase(t).name for t in range(12)]
  assert names == (['audio'] * 3 + ['rectify'] * 2 + ['visual'] * 3
                   + ['rectify'] * 2 + ['audio'] * 2)
  starts = [t for t in range(12) if stages.phase(t).starts]
  assert starts == [0, 3, 5, 8, 10]
  assert [stages.phase(t).stage for t in (0, 4, 5, 9, 10)] == [0, 0, 1, 1, 2]


def test_learners_join_the_ensemble_at_their_first_stage():
  stages = reconboost.StageSchedule(('a', 'b', 'c'), learner_steps=1,
                                    rectify_steps=1)
  assert [stages.members(t) for t in (0, 1, 2, 3, 4, 6, 9)] == [
      (1., 0., 0.), (1., 0., 0.), (1., 1., 0.), (1., 1., 0.),
      (1., 1., 1.), (1., 1., 1.), (1., 1., 1.)]
  pretrained = reconboost.StageSchedule(
      ('a', 'b'), learner_steps=1, rectify_steps=1,
      pretrained=frozenset({'a', 'b'}))
  assert pretrained.members(0) == (1., 1.)


def test_a_phase_of_no_steps_is_refused():
  with pytest.raises(ValueError, match='rectify_steps=0'):
    reconboost.StageSchedule(('a', 'b'), learner_steps=2, rectify_steps=0)


def _stepped(tx, params, steps=3):
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state,
                               params)
  return state


def test_fresh_state_restarts_moments_but_keeps_the_schedule_count():
  params = {'w': jnp.ones((2,))}
  tx = optax.chain(optax.add_decayed_weights(1e-4),
                   optax.sgd(optax.piecewise_constant_schedule(
                       0.1, {2: 0.1}), momentum=0.9))
  old = _stepped(tx, params)
  fresh = reconboost.fresh_opt_state(tx, params, old)
  trace = optax.tree.get(fresh, 'trace')
  np.testing.assert_array_equal(trace['w'], 0.0)
  assert optax.tree.get(old, 'trace')['w'][0] > 0
  # The learning rate stays on the run's schedule: step 3, past the
  # boundary at 2 (a reset count would give 0.1 again).
  assert int(optax.tree.get(fresh, 'count')) == 3


def test_fresh_adam_state_restarts_its_bias_correction():
  params = {'w': jnp.ones((2,))}
  tx = optax.adam(optax.constant_schedule(1e-3))
  fresh = reconboost.fresh_opt_state(tx, params, _stepped(tx, params))
  adam = fresh[0]
  assert int(adam.count) == 0
  np.testing.assert_array_equal(adam.mu['w'], 0.0)
  np.testing.assert_array_equal(adam.nu['w'], 0.0)
  assert int(fresh[1].count) == 3  # The schedule's count.


def test_fresh_state_of_another_optimiser_is_refused():
  params = {'w': jnp.ones((2,))}
  old = optax.adam(1e-3).init(params)
  with pytest.raises(ValueError, match='does not match'):
    reconboost.fresh_opt_state(optax.sgd(0.1, momentum=0.9), params, old)


def test_phase_sq_norm_covers_the_phase_parameters_only():
  params = {'encoder_a': {'k': jnp.full((2,), 1.0)},
            'encoder_b': {'k': jnp.full((3,), 2.0)},
            'shared_head': {'k': jnp.full((1,), 3.0)},
            'beta': jnp.array(4.0)}
  # By hand, 1/2 sum of squares: a 1, b 6, head 4.5, beta 8.
  order = ('a', 'b')
  members = jnp.array([1.0, 0.0])
  assert schedule.phase_sq_norm(params, order, 'a', members) == 5.5
  assert schedule.phase_sq_norm(params, order, 'b', members) == 10.5
  assert schedule.phase_sq_norm(params, order, 'rectify', members) == 13.5
  assert schedule.phase_sq_norm(params, order, 'rectify',
                                jnp.ones(2)) == 19.5
