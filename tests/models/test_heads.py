"""Tests for gblend_jax.models.heads."""

import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax.models import ClassifierHead
from tests.models.helpers import param_count


def test_linear_head_is_x_times_w_plus_b():
  head = ClassifierHead(num_classes=3)
  x = jax.random.normal(jax.random.key(0), (5, 4))
  params = head.init(jax.random.key(1), x, train=False)['params']
  assert list(params) == ['output']
  expected = x @ params['output']['kernel'] + params['output']['bias']
  np.testing.assert_allclose(
      head.apply({'params': params}, x, train=True), expected, rtol=1e-6
  )


def test_hidden_layers_are_dense_relu():
  head = ClassifierHead(num_classes=3, hidden_sizes=(6, 5))
  x = jax.random.normal(jax.random.key(0), (5, 4))
  params = head.init(jax.random.key(1), x, train=False)['params']
  assert param_count(params) == (4 * 6 + 6) + (6 * 5 + 5) + (5 * 3 + 3)
  h = x
  for name in ('hidden_0', 'hidden_1'):
    h = jax.nn.relu(h @ params[name]['kernel'] + params[name]['bias'])
  expected = h @ params['output']['kernel'] + params['output']['bias']
  np.testing.assert_allclose(
      head.apply({'params': params}, x, train=False), expected, rtol=1e-5
  )


def test_input_dropout_only_in_train_mode():
  head = ClassifierHead(num_classes=200, input_dropout_rate=0.5)
  x = jnp.ones((2, 200))
  # An identity output layer exposes the dropped input.
  params = {'output': {'kernel': jnp.eye(200), 'bias': jnp.zeros(200)}}
  np.testing.assert_array_equal(
      head.apply({'params': params}, x, train=False), x
  )
  out = head.apply(
      {'params': params}, x, train=True, rngs={'dropout': jax.random.key(5)}
  )
  assert set(np.unique(out).tolist()) == {0.0, 2.0}
  assert 0.4 < float(jnp.mean(out == 0)) < 0.6


def test_hidden_dropout_changes_train_output_only():
  head = ClassifierHead(num_classes=2, hidden_sizes=(32,), dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (4, 8))
  variables = head.init(jax.random.key(1), x, train=False)
  rngs = {'dropout': jax.random.key(2)}
  eval_out = head.apply(variables, x, train=False)
  np.testing.assert_array_equal(
      eval_out, head.apply(variables, x, train=False, rngs=rngs)
  )
  assert not np.allclose(
      eval_out, head.apply(variables, x, train=True, rngs=rngs)
  )


def test_normalized_head_gives_cosine_logits():
  head = ClassifierHead(num_classes=2, normalized=True)
  x = jnp.array([[3.0, 4.0], [0.0, -2.0]])
  params = head.init(jax.random.key(1), x, train=False)['params']
  assert list(params) == ['output_cosine']
  assert list(params['output_cosine']) == ['kernel']  # No bias.
  # Columns w_0 = (1, 1) -> (1, 1)/√2 and w_1 = (0, 2) -> (0, 1); rows
  # x_0 -> (0.6, 0.8) and x_1 -> (0, -1). z_00 = 1.4/√2 = 0.98995,
  # z_01 = 0.8, z_10 = -1/√2, z_11 = -1.
  kernel = jnp.array([[1.0, 0.0], [1.0, 2.0]])
  logits = head.apply({'params': {'output_cosine': {'kernel': kernel}}}, x,
                      train=False)
  np.testing.assert_allclose(
      logits, [[1.4 / np.sqrt(2), 0.8], [-1 / np.sqrt(2), -1.0]], rtol=1e-6)
  # A zero feature vector gives zero logits, not NaN.
  zero = head.apply({'params': {'output_cosine': {'kernel': kernel}}},
                    jnp.zeros((1, 2)), train=False)
  np.testing.assert_array_equal(zero, [[0.0, 0.0]])
