"""Tests for gblend_jax.models.builder."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from gblend_jax.models import FUSIONS
from gblend_jax.models import build_model
from gblend_jax.models import default_model_config

NUM_CLASSES = 4
SHAPES = {'audio': (5,), 'video': (2, 3)}


def _config(**overrides) -> ml_collections.ConfigDict:
  config = default_model_config()
  config.encoder.mlp.hidden_sizes = (8, 6)
  config.fusion_dim = 7
  config.fused_head.hidden_sizes = (9, 9)
  config.update(overrides)
  return config


def _batch(shapes, batch_size=2):
  return {m: jnp.ones((batch_size,) + tuple(s)) for m, s in shapes.items()}


def _init_shapes(model, shapes):
  """Output and parameter shapes, without running the model."""
  return jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False),
      _batch(shapes),
  )


def test_default_config_has_every_key():
  config = default_model_config()
  assert set(config) == {
      'encoder',
      'encoders',
      'fusion',
      'fusion_dim',
      'mid_fusion_layer',
      'ensemble_beta',
      'fused_head',
      'modality_heads',
      'normalized_heads',
      'dtype',
      'shared_head',
      'shared_head_fusion_weights',
  }
  assert not config.normalized_heads
  assert config.dtype == 'float32'
  assert not config.shared_head and not config.shared_head_fusion_weights
  assert config.encoder.name == 'mlp'
  assert config.fusion == 'concat'
  assert tuple(config.fused_head.hidden_sizes) == (256, 256)
  assert config.ensemble_beta == 1.0  # ReconBoost's boost_rate.


@pytest.mark.parametrize(
    'fusion,fused_dim,audio_dim',
    [
        ('concat', 12, 6),
        ('sum', 7, 6),
        ('film', 7, 6),
        ('gated', 7, 6),
        # Modality heads see the pooled lower features (fusion after layer 1).
        ('mid_concat', 6, 8),
        ('se_gate', 12, 6),
        ('nl_gate', 12, 6),
    ],
)
def test_every_fusion_builds_logits_and_features(fusion, fused_dim, audio_dim):
  model = build_model(
      _config(fusion=fusion), modalities=SHAPES, num_classes=NUM_CLASSES
  )
  inputs = _batch(SHAPES)
  variables = model.init(jax.random.key(0), inputs, train=False)
  out = model.apply(variables, inputs, train=False)
  assert {k: v.shape for k, v in out['logits'].items()} == {
      'fused': (2, NUM_CLASSES),
      'audio': (2, NUM_CLASSES),
      'video': (2, NUM_CLASSES),
  }
  assert out['features']['fused'].shape == (2, fused_dim)
  assert out['features']['audio'].shape == (2, audio_dim)
  expected = {'encoder_audio', 'encoder_video', 'fused_head', 'head_audio'}
  assert expected <= set(variables['params'])
  assert ('fusion' in variables['params']) == (fusion != 'concat')


def test_fusion_names_are_all_tested():
  # 'ensemble' (ReconBoost's model): tests/reconboost/test_ensemble_model.py.
  assert set(FUSIONS) == {
      'concat', 'sum', 'film', 'gated', 'mid_concat', 'se_gate', 'nl_gate',
      'ensemble'
  }


def test_mid_fusion_splits_the_mlp_at_the_fusion_layer():
  model = build_model(
      _config(fusion='se_gate', mid_fusion_layer=1),
      modalities=SHAPES,
      num_classes=NUM_CLASSES,
  )
  _, variables = _init_shapes(model, SHAPES)
  params = variables['params']
  assert list(params['encoder_video']) == ['dense_0']
  assert params['encoder_video']['dense_0']['kernel'].shape == (6, 8)
  assert params['fusion']['upper_video']['dense_0']['kernel'].shape == (8, 6)


def test_mid_concat_trunk_takes_concatenated_lower_features():
  model = build_model(
      _config(fusion='mid_concat', mid_fusion_layer=1),
      modalities=SHAPES,
      num_classes=NUM_CLASSES,
  )
  _, variables = _init_shapes(model, SHAPES)
  trunk = variables['params']['fusion']['trunk']
  assert trunk['dense_0']['kernel'].shape == (16, 6)


def test_single_modality_ignores_fusion_and_splits_nothing():
  for fusion in FUSIONS:
    model = build_model(
        _config(fusion=fusion, modality_heads=False),
        modalities={'video': (2, 3)},
        num_classes=NUM_CLASSES,
    )
    out, variables = _init_shapes(model, {'video': (2, 3)})
    assert set(variables['params']) == {'encoder_video', 'fused_head'}
    assert list(out['logits']) == ['fused']
    assert out['features']['fused'].shape == (2, 6)


def test_per_modality_encoder_override():
  config = _config()
  config.encoders = {'pix': {'name': 'cifar_resnet', 'depth': 8}}
  config.encoders.fac = {'hidden_sizes': (3,)}
  shapes = {'pix': (8, 8, 3), 'fac': (10,)}
  model = build_model(config, modalities=shapes, num_classes=NUM_CLASSES)
  out, variables = _init_shapes(model, shapes)
  assert out['features']['pix'].shape == (2, 64)
  assert out['features']['fac'].shape == (2, 3)
  assert 'batch_stats' in variables
  assert 'encoder_pix' in variables['batch_stats']


def test_switching_the_default_encoder_needs_no_cleanup():
  config = _config()
  config.encoder.name = 'frame_resnet18'
  config.encoder.frame_resnet18.num_filters = 2
  shapes = {'rgb': (2, 8, 8, 3), 'flow': (2, 8, 8, 2)}
  model = build_model(config, modalities=shapes, num_classes=NUM_CLASSES)
  out, _ = _init_shapes(model, shapes)
  assert out['features']['fused'].shape == (2, 32)


def test_unknown_fusion_lists_valid_names():
  with pytest.raises(ValueError, match="'late'.*concat.*nl_gate"):
    build_model(_config(fusion='late'), modalities=SHAPES, num_classes=2)


def test_unknown_encoder_lists_valid_names():
  config = _config()
  config.encoders = {'video': {'name': 'vit'}}
  with pytest.raises(ValueError, match="'vit'.*'video'.*cifar_resnet"):
    build_model(config, modalities=SHAPES, num_classes=2)


def test_unknown_encoder_argument_is_named():
  config = _config()
  config.encoders = {'video': {'depht': 3}}
  with pytest.raises(ValueError, match="'depht'"):
    build_model(config, modalities=SHAPES, num_classes=2)


def test_input_rank_is_checked():
  config = _config()
  config.encoder.name = 'cifar_resnet'
  with pytest.raises(ValueError, match="'audio'.*\\(5,\\)"):
    build_model(config, modalities=SHAPES, num_classes=2)


def test_mid_fusion_rejects_bad_layer_and_conv_encoders():
  with pytest.raises(ValueError, match='mid_fusion_layer=3'):
    build_model(
        _config(fusion='nl_gate', mid_fusion_layer=3),
        modalities=SHAPES,
        num_classes=2,
    )
  config = _config(fusion='se_gate')
  config.encoders = {'video': {'name': 'resnet10'}}
  shapes = {'audio': (5,), 'video': (8, 8, 3)}
  with pytest.raises(ValueError, match='MLP encoders'):
    build_model(config, modalities=shapes, num_classes=2)


def test_normalized_heads_are_cosine_classifiers():
  config = _config(normalized_heads=True)
  config.fused_head.hidden_sizes = ()
  shapes = {'a': (4,), 'b': (3,)}
  model = build_model(config, modalities=shapes, num_classes=5)
  variables = model.init(jax.random.key(0), _batch(shapes), train=False)
  params = variables['params']
  for head in ('fused_head', 'head_a', 'head_b'):
    assert list(params[head]) == ['output_cosine'], head
  out = model.apply(variables, _batch(shapes), train=False)
  for logits in out['logits'].values():
    assert float(jnp.max(jnp.abs(logits))) <= 1.0 + 1e-6  # Cosines.
