"""Tests for gblend_jax.models.fusion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.models import ConcatFusion
from gblend_jax.models import FiLMFusion
from gblend_jax.models import GatedFusion
from gblend_jax.models import SumFusion

MODALITIES = ('audio', 'video', 'flow')


def _features():
  keys = jax.random.split(jax.random.key(0), 3)
  dims = {'audio': 3, 'video': 5, 'flow': 2}
  # Deliberately not in fusion order.
  order = ('flow', 'audio', 'video')
  return {
      m: jax.random.normal(k, (4, dims[m]))
      for k, m in zip(keys, order, strict=True)
  }


def _dense(params, x):
  return x @ params['kernel'] + params['bias']


def test_concat_fusion_is_concatenate_in_modality_order():
  features = _features()
  fused = ConcatFusion(MODALITIES).apply({}, features, train=False)
  np.testing.assert_array_equal(
      fused, jnp.concatenate([features[m] for m in MODALITIES], axis=-1)
  )


def test_concat_of_one_modality_is_identity():
  features = _features()
  fused = ConcatFusion(('video',)).apply({}, features, train=False)
  np.testing.assert_array_equal(fused, features['video'])


def test_sum_fusion_sums_projections():
  fusion = SumFusion(MODALITIES, fusion_dim=6)
  features = _features()
  params = fusion.init(jax.random.key(1), features, train=False)['params']
  expected = sum(_dense(params[f'proj_{m}'], features[m]) for m in MODALITIES)
  np.testing.assert_allclose(
      fusion.apply({'params': params}, features, train=False),
      expected,
      rtol=1e-5,
  )


def test_film_modulates_first_modality_by_the_rest():
  fusion = FiLMFusion(MODALITIES, fusion_dim=6)
  features = _features()
  params = fusion.init(jax.random.key(1), features, train=False)['params']
  assert params['film']['kernel'].shape == (5 + 2, 12)
  film = _dense(
      params['film'],
      jnp.concatenate([features['video'], features['flow']], axis=-1),
  )
  gamma, beta = film[:, :6], film[:, 6:]
  expected = gamma * _dense(params['proj'], features['audio']) + beta
  np.testing.assert_allclose(
      fusion.apply({'params': params}, features, train=False),
      expected,
      rtol=1e-5,
  )


def test_gated_fusion_gates_the_rest_by_the_first():
  fusion = GatedFusion(MODALITIES[:2], fusion_dim=6)
  features = _features()
  params = fusion.init(jax.random.key(1), features, train=False)['params']
  gate = jax.nn.sigmoid(_dense(params['proj_gate'], features['audio']))
  expected = gate * _dense(params['proj_gated'], features['video'])
  np.testing.assert_allclose(
      fusion.apply({'params': params}, features, train=False),
      expected,
      rtol=1e-5,
  )


@pytest.mark.parametrize('module', [FiLMFusion, GatedFusion])
def test_modulating_fusions_need_two_modalities(module):
  with pytest.raises(ValueError, match='at least two'):
    module(('audio',)).init(jax.random.key(0), _features(), train=False)


def test_missing_features_are_named():
  features = _features()
  del features['flow']
  with pytest.raises(KeyError, match='flow'):
    ConcatFusion(MODALITIES).apply({}, features, train=False)
