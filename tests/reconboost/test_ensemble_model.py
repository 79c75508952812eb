"""The shared-head ensemble (ReconBoost's model, model.fusion='ensemble')."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax import models
from gblend_jax.models import ensemble
from gblend_jax.modulation import unimodal


def _model(**overrides):
  config = models.default_model_config()
  config.fusion = 'ensemble'
  config.encoder.mlp.hidden_sizes = (6,)
  config.fused_head.hidden_sizes = (4,)
  config.update_from_flattened_dict(overrides)
  return models.build_model(config, modalities={'a': (5,), 'b': (3,)},
                            num_classes=3)


def _inputs():
  rng = np.random.default_rng(0)
  return {'a': jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}


def test_one_head_is_shared_and_the_fused_head_is_beta_times_the_members():
  model = _model(ensemble_beta=0.5)
  variables = model.init(jax.random.PRNGKey(0), _inputs(), train=False)
  params = variables['params']
  assert sorted(params) == ['beta', 'encoder_a', 'encoder_b', 'shared_head']
  assert float(params['beta']) == 0.5
  np.testing.assert_array_equal(variables['batch_stats']['members'], [1, 1])
  out = model.apply(variables, _inputs(), train=False)
  logits = out['logits']
  # The learners are H(z_m) with the one head H.
  head = models.ClassifierHead(3, hidden_sizes=(4,))
  for m in ('a', 'b'):
    np.testing.assert_allclose(
        logits[m], head.apply({'params': params['shared_head']},
                              out['features'][m], train=False), rtol=1e-6)
  np.testing.assert_allclose(logits['fused'],
                             0.5 * (logits['a'] + logits['b']), rtol=1e-6)
  # Only the members count: b out of the ensemble.
  variables = flax.core.unfreeze(variables)
  variables['batch_stats']['members'] = jnp.array([1.0, 0.0])
  out = model.apply(variables, _inputs(), train=False)
  np.testing.assert_allclose(out['logits']['fused'],
                             0.5 * out['logits']['a'], rtol=1e-6)
  # Each modality's share of the fused logits (the trainer's unimodal
  # heads) is its learner's part of the ensemble.
  shares = unimodal.classifier_unimodal_logits(
      model, variables, out['features'], ('a', 'b'))
  np.testing.assert_allclose(shares['a'] + shares['b'],
                             out['logits']['fused'], atol=1e-6)
  np.testing.assert_allclose(shares['b'], 0.0, atol=1e-7)


def test_without_modality_heads_only_the_ensemble_is_returned():
  model = _model(modality_heads=False)
  variables = model.init(jax.random.PRNGKey(0), _inputs(), train=False)
  assert sorted(model.apply(variables, _inputs(), train=False)['logits']) == [
      'fused']


def test_encoders_of_different_widths_are_refused():
  model = _model(encoders={'b': {'hidden_sizes': (7,)}})
  with pytest.raises(ValueError, match='one width'):
    model.init(jax.random.PRNGKey(0), _inputs(), train=False)


def test_ensemble_variables_read_beta_and_members():
  model = _model()
  variables = model.init(jax.random.PRNGKey(0), _inputs(), train=False)
  beta, members = ensemble.ensemble_variables(variables['params'],
                                              variables['batch_stats'])
  assert float(beta) == 1.0
  np.testing.assert_array_equal(members, [1.0, 1.0])
