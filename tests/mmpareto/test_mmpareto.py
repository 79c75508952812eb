"""MMPareto against the spec's numpy-verified examples, as an optax
transform, and end to end through the trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import mmpareto_update
from gblend_jax.mmpareto import mmpareto
from gblend_jax.mmpareto import pareto_weights
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils

# SPEC_METHODS.md §1(h), example 1: a conflict (cos = -0.670820).
G_M = np.array([1.0, 1.0, 0.0])
G_U = np.array([-3.0, 0.0, 1.0])


def test_conflicting_pair_takes_the_min_norm_point_enlarged():
  alpha, cosine = pareto_weights(jnp.asarray(G_M), jnp.asarray(G_U))
  assert float(cosine) == pytest.approx(-3 / np.sqrt(20), rel=1e-6)
  # (⟨u,u⟩ - ⟨m,u⟩) / (⟨m,m⟩ + ⟨u,u⟩ - 2⟨m,u⟩) = 13 / 18.
  assert float(alpha) == pytest.approx(13 / 18, rel=1e-6)
  update = mmpareto_update(jnp.asarray(G_M), jnp.asarray(G_U))
  np.testing.assert_allclose(update, [-0.522233, 3.394514, 1.305582],
                             rtol=1e-5)
  # Norm γ·‖s‖ = 1.5·√6, and no conflict left with either gradient.
  assert float(jnp.linalg.norm(update)) == pytest.approx(1.5 * np.sqrt(6),
                                                         rel=1e-5)
  assert float(update @ G_M) > 0 and float(update @ G_U) > 0


def test_no_conflict_is_gamma_times_the_sum():
  update = mmpareto_update(jnp.array([1.0, 2.0, 0.0]),
                           jnp.array([0.0, 1.0, 1.0]))
  np.testing.assert_allclose(update, [1.5, 4.5, 1.5], rtol=1e-6)


def test_per_tensor_rule_can_bring_the_conflict_back():
  # Example 1 split into the tensors {x} and {y, z}: ρ = 9 on the first,
  # 0.913812 < 1 on the second.
  joint = {'x': jnp.array([1.0]), 'yz': jnp.array([1.0, 0.0])}
  unimodal = {'x': jnp.array([-3.0]), 'yz': jnp.array([0.0, 1.0])}
  update = mmpareto_update(joint, unimodal)
  np.testing.assert_allclose(update['x'], [-3.0], rtol=1e-5)
  np.testing.assert_allclose(update['yz'], [2.166667, 0.833333], rtol=1e-5)
  combined = np.concatenate([update['x'], update['yz']])
  assert combined @ G_M == pytest.approx(-0.833333, rel=1e-5)
  # Over the whole encoder the result is example 1's, split.
  whole = mmpareto_update(joint, unimodal, per_tensor=False)
  np.testing.assert_allclose(
      np.concatenate([whole['x'], whole['yz']]),
      [-0.522233, 3.394514, 1.305582], rtol=1e-5)


def test_transform_combines_encoders_and_sums_the_rest():
  params = {'encoder_a': {'w': jnp.zeros(3)}, 'encoder_b': {'w': jnp.zeros(2)},
            'fused_head': {'w': jnp.zeros(2)}}
  # Leading loss axis: (L_a, L_b, L_mm). L_a reaches only encoder_a and the
  # heads, L_b only encoder_b.
  per_loss = {
      'encoder_a': {'w': jnp.stack([G_U, np.zeros(3), G_M])},
      'encoder_b': {'w': jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 2.0]])},
      'fused_head': {'w': jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])},
  }
  tx = mmpareto(('a', 'b'))
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(per_loss, state, params)
  np.testing.assert_allclose(updates['encoder_a']['w'],
                             [-0.522233, 3.394514, 1.305582], rtol=1e-5)
  # encoder_b: g_m = (1, 2), g_u = (0, 1), no conflict: 1.5 (1, 3).
  np.testing.assert_allclose(updates['encoder_b']['w'], [1.5, 4.5], rtol=1e-6)
  np.testing.assert_allclose(updates['fused_head']['w'], [3.0, 3.0])
  np.testing.assert_allclose(optax.tree.get(state, 'joint_weight'),
                             [13 / 18, 0.5], rtol=1e-6)
  with pytest.raises(ValueError, match='leading axis of 3'):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match="no parameter is labelled 'c'"):
    mmpareto(('a', 'c')).update(per_loss, state, params)


@pytest.mark.slow
def test_trains_end_to_end_through_the_trainer(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=20)
  config.mmpareto.enabled = True
  results = train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metric_writer.read_metrics(str(tmp_path))
          if 'mmpareto/cosine/strong' in r]
  assert len(rows) == 10  # Every progress line (every 2 steps).
  for row in rows:
    assert -1.0 <= row['mmpareto/cosine/weak'] <= 1.0
    assert 0.0 < row['mmpareto/joint_weight/strong'] < 1.0
    # The logged loss is L_mm + Σ_k L_k.
    assert row['train_step/loss'] == pytest.approx(
        sum(row[f'train_step/{h}/loss'] for h in ('strong', 'weak', 'fused')),
        rel=1e-5)
  # The synthetic strong view carries the label: training learns it.
  assert results['final']['train/fused/accuracy'] > 0.8
