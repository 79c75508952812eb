"""Tests for gblend_jax.models.mid_fusion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.models import MidConcatFusion
from gblend_jax.models import NLGateFusion
from gblend_jax.models import SEGateFusion

MODALITIES = ('audio', 'video')
UPPER = ((6,), (5,))


def _lower():
  """MLP features for audio ([B, C]) and a 2x3 conv map for video."""
  audio_key, video_key = jax.random.split(jax.random.key(0))
  return {
      'audio': jax.random.normal(audio_key, (4, 8)),
      'video': jax.random.normal(video_key, (4, 2, 3, 4)),
  }


def _dense(params, x):
  return x @ params['kernel'] + params['bias']


def _upper(params, tokens):
  """UpperLayers with one layer, by hand."""
  return jax.nn.relu(_dense(params['dense_0'], tokens)).mean(axis=1)


def _tokens(lower):
  return {
      'audio': lower['audio'][:, None, :],
      'video': lower['video'].reshape(4, 6, 4),
  }


def test_mid_concat_runs_a_shared_trunk_on_concatenated_channels():
  fusion = MidConcatFusion(MODALITIES, trunk_hidden_sizes=(7,))
  video = _lower()['video']
  lower = {'audio': jnp.arange(72.0).reshape(4, 2, 3, 3) / 72, 'video': video}
  variables = fusion.init(jax.random.key(1), lower, train=False)
  fused, features = fusion.apply(variables, lower, train=False)
  assert fused.shape == (4, 7)
  concat = jnp.concatenate(
      [lower['audio'].reshape(4, 6, 3), video.reshape(4, 6, 4)], axis=-1
  )
  np.testing.assert_allclose(
      fused, _upper(variables['params']['trunk'], concat), rtol=1e-5
  )
  np.testing.assert_allclose(
      features['video'], video.mean(axis=(1, 2)), rtol=1e-6
  )


def test_mid_concat_needs_equal_token_counts():
  fusion = MidConcatFusion(MODALITIES, trunk_hidden_sizes=(7,))
  with pytest.raises(ValueError, match='same number of tokens'):
    fusion.init(jax.random.key(1), _lower(), train=False)


@pytest.mark.parametrize('module', [SEGateFusion, NLGateFusion])
def test_gated_fusions_output_shapes(module):
  fusion = module(MODALITIES, upper_hidden_sizes=UPPER)
  lower = _lower()
  variables = fusion.init(jax.random.key(1), lower, train=False)
  fused, features = fusion.apply(variables, lower, train=False)
  assert fused.shape == (4, 11)
  assert {m: f.shape for m, f in features.items()} == {
      'audio': (4, 6),
      'video': (4, 5),
  }
  np.testing.assert_array_equal(
      fused, jnp.concatenate([features['audio'], features['video']], -1)
  )


def test_se_gate_is_computed_from_the_other_modality():
  fusion = SEGateFusion(MODALITIES, upper_hidden_sizes=UPPER, reduction=2)
  lower = _lower()
  variables = fusion.init(jax.random.key(1), lower, train=False)
  params = variables['params']
  (_, features), state = fusion.apply(
      variables, lower, train=False, mutable=['intermediates']
  )
  squeeze = lower['video'].mean(axis=(1, 2))  # Pooled video channels.
  hidden = jax.nn.relu(_dense(params['se_reduce_audio'], squeeze))
  gate = jax.nn.sigmoid(_dense(params['se_expand_audio'], hidden))
  assert params['se_reduce_audio']['kernel'].shape == (4, 8 // 2)
  np.testing.assert_allclose(
      state['intermediates']['gate_audio'][0], gate, rtol=1e-5
  )
  tokens = _tokens(lower)
  np.testing.assert_allclose(
      features['audio'],
      _upper(params['upper_audio'], tokens['audio'] * gate[:, None]),
      rtol=1e-5,
  )


@pytest.mark.parametrize('bias,scale', [(0.0, 0.5), (30.0, 1.0)])
def test_se_gate_with_constant_gate_scales_the_features(bias, scale):
  fusion = SEGateFusion(MODALITIES, upper_hidden_sizes=UPPER)
  lower = _lower()
  params = fusion.init(jax.random.key(1), lower, train=False)['params']
  params = dict(params)
  for m in MODALITIES:
    expand = params[f'se_expand_{m}']
    params[f'se_expand_{m}'] = {
        'kernel': jnp.zeros_like(expand['kernel']),
        'bias': jnp.full_like(expand['bias'], bias),
    }
  _, features = fusion.apply({'params': params}, lower, train=False)
  tokens = _tokens(lower)
  for m in MODALITIES:
    np.testing.assert_allclose(
        features[m],
        _upper(params[f'upper_{m}'], scale * tokens[m]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_nl_gate_starts_as_separate_branches():
  fusion = NLGateFusion(MODALITIES, upper_hidden_sizes=UPPER)
  lower = _lower()
  variables = fusion.init(jax.random.key(1), lower, train=False)
  _, features = fusion.apply(variables, lower, train=False)
  tokens = _tokens(lower)
  for m in MODALITIES:
    np.testing.assert_allclose(
        features[m],
        _upper(variables['params'][f'upper_{m}'], tokens[m]),
        rtol=1e-6,
    )


def test_nl_gate_attends_to_the_other_modality():
  fusion = NLGateFusion(MODALITIES, upper_hidden_sizes=UPPER)
  lower = _lower()
  params = fusion.init(jax.random.key(1), lower, train=False)['params']
  out = params['nl_video_out']
  params = {
      **params,
      'nl_video_out': {**out, 'kernel': jnp.ones_like(out['kernel'])},
  }
  (_, features), state = fusion.apply(
      {'params': params}, lower, train=False, mutable=['intermediates']
  )
  tokens = _tokens(lower)
  query = _dense(params['nl_video_query'], tokens['video'])  # [4, 6, 2]
  key = _dense(params['nl_video_key_audio'], tokens['audio'])  # [4, 1, 2]
  value = _dense(params['nl_video_value_audio'], tokens['audio'])
  attention = jax.nn.softmax(
      jnp.einsum('bqd,bkd->bqk', query, key) / jnp.sqrt(2.0), axis=-1
  )
  # One audio token: every video token attends to it with weight 1.
  np.testing.assert_allclose(attention, 1.0)
  np.testing.assert_allclose(
      state['intermediates']['attention_video'][0], attention
  )
  gated = tokens['video'] + _dense(params['nl_video_out'], attention @ value)
  np.testing.assert_allclose(
      features['video'], _upper(params['upper_video'], gated), rtol=1e-5
  )


@pytest.mark.parametrize('module', [SEGateFusion, NLGateFusion])
def test_gates_need_two_modalities(module):
  fusion = module(('audio',), upper_hidden_sizes=((6,),))
  with pytest.raises(ValueError, match='two or more'):
    fusion.init(jax.random.key(1), _lower(), train=False)
