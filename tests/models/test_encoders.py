"""Tests for gblend_jax.models.encoders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.models import ENCODERS
from gblend_jax.models import MLPEncoder
from gblend_jax.models import build_encoder
from tests.models.helpers import param_count


def test_mlp_encoder_params_and_values():
  encoder = MLPEncoder(hidden_sizes=(7,))
  x = jax.random.normal(jax.random.key(0), (4, 10))
  params = encoder.init(jax.random.key(1), x, train=False)['params']
  assert param_count(params) == 10 * 7 + 7
  dense = params['dense_0']
  expected = jax.nn.relu(x @ dense['kernel'] + dense['bias'])
  np.testing.assert_allclose(
      encoder.apply({'params': params}, x, train=False), expected, rtol=1e-6
  )


def test_mlp_encoder_flattens_and_stacks_layers():
  encoder = MLPEncoder(hidden_sizes=(6, 5))
  x = jnp.ones((3, 2, 4))
  variables = encoder.init(jax.random.key(0), x, train=False)
  assert param_count(variables) == (8 * 6 + 6) + (6 * 5 + 5)
  assert encoder.apply(variables, x, train=False).shape == (3, 5)


def test_mlp_encoder_without_layers_only_flattens():
  x = jnp.arange(12.0).reshape(2, 3, 2)
  out = MLPEncoder(hidden_sizes=()).apply({}, x, train=False)
  np.testing.assert_array_equal(out, x.reshape(2, 6))


def test_mlp_dropout_only_in_train_mode():
  encoder = MLPEncoder(hidden_sizes=(64,), dropout_rate=0.5)
  plain = MLPEncoder(hidden_sizes=(64,))
  x = jnp.ones((8, 5))
  variables = plain.init(jax.random.key(0), x, train=False)
  reference = plain.apply(variables, x, train=False)
  np.testing.assert_array_equal(
      encoder.apply(variables, x, train=False), reference
  )
  dropped = encoder.apply(
      variables, x, train=True, rngs={'dropout': jax.random.key(1)}
  )
  zeroed = dropped == 0
  assert 0.3 < float(jnp.mean(zeroed[reference != 0])) < 0.7
  np.testing.assert_allclose(
      jnp.where(zeroed, 0.0, dropped),
      jnp.where(zeroed, 0.0, 2 * reference),
      rtol=1e-6,
  )


def test_registry_names():
  assert set(ENCODERS) == {
      'mlp',
      'cifar_resnet',
      'resnet10',
      'resnet18',
      'resnet50',
      'frame_resnet18',
  }


def test_build_encoder_passes_arguments():
  encoder = build_encoder('cifar_resnet', depth=32)
  assert encoder.depth == 32
  assert build_encoder('resnet18', small_inputs=True).stage_sizes == (
      2,
      2,
      2,
      2,
  )


def test_build_encoder_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="'nope'.*cifar_resnet.*mlp"):
    build_encoder('nope')


def test_build_encoder_unknown_argument_is_named():
  with pytest.raises(ValueError, match="'depth'.*hidden_sizes"):
    build_encoder('mlp', depth=3)
  # Arguments fixed by the ResNet18 constructor are not accepted either.
  with pytest.raises(ValueError, match="'stage_sizes'"):
    build_encoder('resnet18', stage_sizes=(1,))
