"""Learning-rate schedules and optimisers built from configs."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax.training import optim


def _config(**overrides):
  config = optim.default_optimizer_config()
  config.update(overrides)
  return config


def test_bag_of_tricks_cifar_schedule():
  # lr 0.1, 5 warm-up epochs, x0.01 at epochs 160 and 180 (SPEC §3),
  # here with 10 steps per epoch (decay 0.1 at each boundary: 0.01 at 180).
  config = _config(learning_rate=0.1, schedule='step', warmup_epochs=5,
                   boundaries_epochs=(160, 180), decay_factor=0.1)
  lr = optim.learning_rate_schedule(config, total_steps=2000,
                                    steps_per_epoch=10)
  np.testing.assert_allclose(lr(0), 0.0)
  np.testing.assert_allclose(lr(25), 0.05, rtol=1e-6)  # Half-way warm-up.
  np.testing.assert_allclose(lr(50), 0.1, rtol=1e-6)
  np.testing.assert_allclose(lr(1599), 0.1, rtol=1e-6)
  np.testing.assert_allclose(lr(1600), 0.01, rtol=1e-6)
  np.testing.assert_allclose(lr(1800), 0.001, rtol=1e-6)


def test_cosine_schedule_ends_at_zero():
  config = _config(learning_rate=0.2, schedule='cosine')
  lr = optim.learning_rate_schedule(config, total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose(lr(0), 0.2, rtol=1e-6)
  np.testing.assert_allclose(lr(50), 0.1, rtol=1e-5)
  np.testing.assert_allclose(lr(100), 0.0, atol=1e-7)


def test_sgd_with_momentum_and_weight_decay_by_hand():
  # torch-style SGD: g' = g + wd * w; v = m v + g'; w -= lr v.
  config = _config(name='sgd', learning_rate=0.5, momentum=0.9,
                   weight_decay=0.1)
  tx = optim.build_optimizer(config, total_steps=10, steps_per_epoch=1)
  params = {'w': jnp.array([1.0, -2.0])}
  state = tx.init(params)
  grads = {'w': jnp.array([0.5, 0.5])}
  updates, state = tx.update(grads, state, params)
  params = optax.apply_updates(params, updates)
  g1 = np.array([0.5 + 0.1, 0.5 - 0.2])
  expected1 = np.array([1.0, -2.0]) - 0.5 * g1
  np.testing.assert_allclose(params['w'], expected1, rtol=1e-6)
  updates, state = tx.update(grads, state, params)
  params = optax.apply_updates(params, updates)
  g2 = 0.5 + 0.1 * expected1
  np.testing.assert_allclose(params['w'], expected1 - 0.5 * (0.9 * g1 + g2),
                             rtol=1e-6)


@pytest.mark.parametrize('key,value', [('name', 'lamb'),
                                       ('schedule', 'linear')])
def test_unknown_names_list_valid_ones(key, value):
  config = _config(**{key: value})
  with pytest.raises(ValueError, match='valid'):
    optim.build_optimizer(config, total_steps=10, steps_per_epoch=1)
