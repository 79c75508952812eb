"""Tests for gblend_jax.models.multimodal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.models import ClassifierHead
from gblend_jax.models import ConcatFusion
from gblend_jax.models import MLPEncoder
from gblend_jax.models import MultiModalClassifier
from gblend_jax.models import SumFusion

NUM_CLASSES = 3


def _inputs():
  audio_key, video_key = jax.random.split(jax.random.key(0))
  return {
      'audio': jax.random.normal(audio_key, (2, 5)),
      'video': jax.random.normal(video_key, (2, 2, 3)),
  }


def _model(modalities=('audio', 'video'), fusion=None, **kwargs):
  return MultiModalClassifier(
      modalities=modalities,
      encoders={
          'audio': MLPEncoder(hidden_sizes=(4,)),
          'video': MLPEncoder(hidden_sizes=(6,)),
      },
      fusion=fusion or ConcatFusion(modalities),
      fused_head=ClassifierHead(NUM_CLASSES, hidden_sizes=(7,), **kwargs),
      num_classes=NUM_CLASSES,
      modality_heads=True,
  )


def test_submodule_names_and_outputs():
  model = _model()
  inputs = _inputs()
  variables = model.init(jax.random.key(1), inputs, train=False)
  params = variables['params']
  assert set(params) == {
      'encoder_audio',
      'encoder_video',
      'fused_head',
      'head_audio',
      'head_video',
  }
  out = model.apply(variables, inputs, train=False)
  features = out['features']
  assert {k: v.shape for k, v in features.items()} == {
      'audio': (2, 4),
      'video': (2, 6),
      'fused': (2, 10),
  }
  audio = MLPEncoder(hidden_sizes=(4,)).apply(
      {'params': params['encoder_audio']}, inputs['audio'], train=False
  )
  np.testing.assert_allclose(features['audio'], audio, rtol=1e-6)
  np.testing.assert_array_equal(
      features['fused'],
      jnp.concatenate([features['audio'], features['video']], axis=-1),
  )
  fused_logits = ClassifierHead(NUM_CLASSES, hidden_sizes=(7,)).apply(
      {'params': params['fused_head']}, features['fused'], train=False
  )
  np.testing.assert_allclose(out['logits']['fused'], fused_logits, rtol=1e-6)
  head = params['head_video']['output']
  np.testing.assert_allclose(
      out['logits']['video'],
      features['video'] @ head['kernel'] + head['bias'],
      rtol=1e-6,
  )
  assert {k: v.shape for k, v in out['logits'].items()} == {
      'fused': (2, NUM_CLASSES),
      'audio': (2, NUM_CLASSES),
      'video': (2, NUM_CLASSES),
  }


def test_encoders_as_sequence_and_fusion_params_name():
  modalities = ('audio', 'video')
  model = MultiModalClassifier(
      modalities=modalities,
      encoders=(MLPEncoder(hidden_sizes=(4,)), MLPEncoder(hidden_sizes=(6,))),
      fusion=SumFusion(modalities, fusion_dim=8),
      fused_head=ClassifierHead(NUM_CLASSES),
      num_classes=NUM_CLASSES,
      modality_heads=False,
  )
  variables = model.init(jax.random.key(1), _inputs(), train=False)
  assert set(variables['params']) == {
      'encoder_audio',
      'encoder_video',
      'fusion',
      'fused_head',
  }
  assert variables['params']['encoder_video']['dense_0']['kernel'].shape == (
      6,
      6,
  )
  out = model.apply(variables, _inputs(), train=False)
  assert list(out['logits']) == ['fused']


def test_missing_modality_names_missing_and_present():
  inputs = _inputs()
  del inputs['video']
  inputs['depth'] = jnp.ones((2, 3))
  with pytest.raises(KeyError, match=r"\['video'\].*\['audio', 'depth'\]"):
    _model().init(jax.random.key(1), inputs, train=False)


def test_single_modality_network():
  model = MultiModalClassifier(
      modalities=('video',),
      encoders=(MLPEncoder(hidden_sizes=(6,)),),
      fusion=ConcatFusion(('video',)),
      fused_head=ClassifierHead(NUM_CLASSES),
      num_classes=NUM_CLASSES,
      modality_heads=False,
  )
  inputs = _inputs()
  variables = model.init(jax.random.key(1), inputs, train=False)
  assert set(variables['params']) == {'encoder_video', 'fused_head'}
  out = model.apply(variables, inputs, train=False)
  assert list(out['logits']) == ['fused']
  np.testing.assert_array_equal(
      out['features']['fused'], out['features']['video']
  )


def test_dropout_uses_the_dropout_rng_in_train_mode_only():
  model = _model(input_dropout_rate=0.5)
  inputs = _inputs()
  variables = model.init(jax.random.key(1), inputs, train=False)
  eval_logits = model.apply(variables, inputs, train=False)['logits']
  train_logits = model.apply(
      variables, inputs, train=True, rngs={'dropout': jax.random.key(2)}
  )['logits']
  # Only the fused head has dropout.
  np.testing.assert_array_equal(train_logits['audio'], eval_logits['audio'])
  assert not np.allclose(train_logits['fused'], eval_logits['fused'])


def test_fused_is_a_reserved_name():
  model = MultiModalClassifier(
      modalities=('fused',),
      encoders=(MLPEncoder(hidden_sizes=(6,)),),
      fusion=ConcatFusion(('fused',)),
      fused_head=ClassifierHead(NUM_CLASSES),
      num_classes=NUM_CLASSES,
  )
  with pytest.raises(ValueError, match='reserved'):
    model.init(jax.random.key(1), {'fused': jnp.ones((2, 3))}, train=False)


def test_head_model_runs_one_modality_and_gives_its_logits():
  model = _model()
  inputs = _inputs()
  variables = model.init(jax.random.key(1), inputs, train=False)
  whole = model.apply(variables, inputs, train=True,
                      rngs={'dropout': jax.random.key(2)})
  audio_model = model.head_model('audio')
  # The video input is not read: the restricted model runs without it.
  alone = audio_model.apply(variables, {'audio': inputs['audio']},
                            train=True, rngs={'dropout': jax.random.key(2)})
  assert list(alone['logits']) == ['audio']
  assert list(alone['features']) == ['audio']
  np.testing.assert_array_equal(alone['logits']['audio'],
                                whole['logits']['audio'])
  np.testing.assert_array_equal(alone['features']['audio'],
                                whole['features']['audio'])
  # Its gradient is the whole model's on the audio loss: zero off
  # encoder_audio and head_audio.
  def loss(params, net, feed):
    return jnp.sum(net.apply({'params': params}, feed,
                             train=False)['logits']['audio'] ** 2)
  grads_alone = jax.grad(loss)(variables['params'], audio_model,
                               {'audio': inputs['audio']})
  grads_whole = jax.grad(loss)(variables['params'], model, inputs)
  jax.tree.map(np.testing.assert_allclose, grads_alone, grads_whole)
  assert all(not np.any(leaf) for key in ('encoder_video', 'head_video',
                                          'fused_head')
             for leaf in jax.tree.leaves(grads_alone[key]))


def test_head_model_is_none_where_a_head_reaches_other_parameters():
  model = _model()
  assert model.head_model('fused') is None
  assert model.head_model('video').only_head == 'video'
  shared = MultiModalClassifier(
      modalities=('audio', 'video'),
      encoders={'audio': MLPEncoder(hidden_sizes=(4,)),
                'video': MLPEncoder(hidden_sizes=(4,))},
      fusion=ConcatFusion(('audio', 'video')),
      fused_head=ClassifierHead(NUM_CLASSES), num_classes=NUM_CLASSES,
      shared_head=True)
  assert shared.head_model('audio') is None
  no_heads = _model().clone(modality_heads=False)
  assert no_heads.head_model('audio') is None


def test_only_head_on_a_head_without_a_model_of_its_own_is_named():
  model = _model()
  inputs = _inputs()
  variables = model.init(jax.random.key(1), inputs, train=False)
  with pytest.raises(ValueError, match="only_head='fused'"):
    model.clone(only_head='fused').apply(variables, inputs, train=False)
  with pytest.raises(KeyError, match="missing modality 'video'"):
    model.head_model('video').apply(variables, {'audio': inputs['audio']},
                                    train=False)
