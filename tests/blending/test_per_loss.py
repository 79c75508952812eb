"""Per-loss gradients in two backward passes against ``jax.jacrev``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import models
from gblend_jax.blending import per_loss
from gblend_jax.training import metric_writer
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils

MFEAT = {'fac': (216,), 'fou': (76,), 'kar': (64,), 'mor': (6,),
         'pix': (240,), 'zer': (47,)}


def test_hand_worked_example():
  # L = [a², 3b, ab] at a = 1, b = 2: ∇L_0 = (2a, 0) = (2, 0),
  # ∇L_1 = (0, 3), ∇L_2 = (b, a) = (2, 1).
  params = {'a': jnp.array(1.0), 'b': jnp.array(2.0)}

  def losses(p):
    return jnp.stack([p['a'] ** 2, 3 * p['b'], p['a'] * p['b']])

  grads, values, aux = per_loss.per_loss_grads(
      losses, params, own_params=(('a',), ('b',), None))
  np.testing.assert_array_equal(grads['a'], [2.0, 0.0, 2.0])
  np.testing.assert_array_equal(grads['b'], [0.0, 3.0, 1.0])
  np.testing.assert_array_equal(values, [1.0, 6.0, 2.0])
  assert aux is None


def _model(views, fusion='concat', encoder=None):
  config = models.default_model_config()
  config.encoder.mlp.hidden_sizes = (16,)
  config.encoder.mlp.dropout_rate = 0.3
  config.fused_head.hidden_sizes = (16,)
  config.fusion = fusion
  if encoder is not None:
    config.encoder.name = encoder
    config.encoder.cifar_resnet.update(depth=8, width=4)
  shapes = ({v: MFEAT[v] for v in views} if encoder is None
            else {v: (8, 8, 3) for v in views})
  return models.build_model(config, modalities=shapes, num_classes=5), shapes


def _loss_vector(model, shapes, seed=0):
  heads = steps.head_order(tuple(shapes), True)
  rng = np.random.default_rng(seed)
  batch = {m: rng.normal(size=(7, *s)).astype(np.float32)
           for m, s in shapes.items()}
  batch['label'] = rng.integers(0, 5, 7).astype(np.int32)
  state = steps.TrainState.create(model, optax.identity(),
                                  jax.random.PRNGKey(seed), shapes)
  return (steps.training_losses(model, state, batch, heads), state.params,
          heads)


def _both(model, shapes):
  loss_vector, params, heads = _loss_vector(model, shapes)
  own = per_loss.model_own_params(model, heads)

  def shortcut(p):
    return per_loss.per_loss_grads(loss_vector, p, own_params=own,
                                   has_aux=True)

  def with_losses(q):
    losses, aux = loss_vector(q)
    return losses, (losses, aux)

  def jacrev(p):
    return jax.jacrev(with_losses, has_aux=True)(p)

  fast = jax.jit(shortcut)
  slow = jax.jit(jacrev)
  (grads, losses, aux), (expected, (losses_j, aux_j)) = fast(params), slow(
      params)
  np.testing.assert_array_equal(losses, losses_j)
  jax.tree.map(np.testing.assert_array_equal, aux[1], aux_j[1])
  flops = [jax.jit(f).lower(params).compile().cost_analysis()
           for f in (shortcut, jacrev)]
  flops = [(f[0] if isinstance(f, (list, tuple)) else f)['flops']
           for f in flops]
  return grads, expected, own, flops


@pytest.mark.parametrize('views', [('kar', 'pix'), ('fou', 'kar', 'pix'),
                                   tuple(MFEAT)])
def test_late_fusion_shortcut_equals_jacrev(views):
  model, shapes = _model(views)
  grads, expected, own, (fast, slow) = _both(model, shapes)
  assert own == (*((f'encoder_{v}', f'head_{v}') for v in views), None)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-6, atol=1e-7), grads, expected)
  # A unimodal loss has exactly zero gradient off its own encoder and head.
  for i, v in enumerate(views):
    for key, tree in grads.items():
      if key not in (f'encoder_{v}', f'head_{v}'):
        assert all(not np.any(leaf[i]) for leaf in jax.tree.leaves(tree))
  # XLA's FLOPs: a forward pass and two backward passes (about twice the
  # forward) instead of H = len(views) + 1; measured 0.75, 0.61, 0.38.
  num_heads = len(views) + 1
  assert fast / slow < (1 + 2 * 2) / (1 + 2 * num_heads) + 0.1


def test_conv_encoders_with_batch_norm():
  model, shapes = _model(('left', 'right'), encoder='cifar_resnet')
  grads, expected, own, _ = _both(model, shapes)
  assert own[:2] == (('encoder_left', 'head_left'),
                     ('encoder_right', 'head_right'))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-5, atol=1e-6), grads, expected)


def test_mid_fusion_takes_the_general_path():
  model, shapes = _model(('kar', 'pix'), fusion='se_gate')
  grads, expected, own, (fast, slow) = _both(model, shapes)
  assert own == (None, None, None)
  jax.tree.map(np.testing.assert_array_equal, grads, expected)
  assert fast == slow


class SharedEncoder(nn.Module):
  """One encoder for both modalities: every loss reaches it."""

  @nn.compact
  def __call__(self, inputs, *, train):
    del train
    encoder = nn.Dense(8, name='encoder')
    features = {m: nn.relu(encoder(inputs[m])) for m in ('a', 'b')}
    logits = {m: nn.Dense(5, name=f'head_{m}')(features[m])
              for m in ('a', 'b')}
    fused = jnp.concatenate([features['a'], features['b']], axis=-1)
    logits['fused'] = nn.Dense(5, name='fused_head')(fused)
    return {'logits': logits, 'features': features}


def test_shared_encoder_takes_the_general_path():
  model, shapes = SharedEncoder(), {'a': (6,), 'b': (6,)}
  grads, expected, own, (fast, slow) = _both(model, shapes)
  assert own is None  # The model states nothing: jax.jacrev.
  jax.tree.map(np.testing.assert_array_equal, grads, expected)
  assert fast == slow
  # Wrongly declaring the shared encoder for two losses is refused.
  loss_vector, params, _ = _loss_vector(model, shapes)
  with pytest.raises(ValueError, match="'encoder' for losses 0 and 1"):
    per_loss.per_loss_grads(
        loss_vector, params, has_aux=True,
        own_params=(('encoder', 'head_a'), ('encoder', 'head_b'), None))
  with pytest.raises(ValueError, match="names 'encoder_a'"):
    per_loss.per_loss_grads(
        loss_vector, params, has_aux=True,
        own_params=(('encoder_a',), ('head_b',), None))
  with pytest.raises(ValueError, match='2 entries for 3 losses'):
    per_loss.per_loss_grads(loss_vector, params, has_aux=True,
                            own_params=(('head_a',), ('head_b',)))


def test_mmpareto_rule_uses_the_shortcut():
  model, shapes = _model(('kar', 'pix'))
  loss_vector, params, heads = _loss_vector(model, shapes)
  state = steps.TrainState(step=jnp.int32(0), params=params, batch_stats={},
                           opt_state=(), rng=jax.random.PRNGKey(0))
  fast = steps.make_per_loss_rule(per_loss.model_own_params(model, heads))
  got, report = fast(loss_vector, state, {})
  want, report_j = steps.per_loss_rule(loss_vector, state, {})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-6, atol=1e-7), got.grads, want.grads)
  np.testing.assert_allclose(report(None)[0], report_j(None)[0])


@pytest.mark.slow
def test_trainer_auto_and_jacrev_train_alike(data_dir, tmp_path):
  rows = {}
  for path in ('auto', 'jacrev'):
    config = train_utils.tiny_synthetic_config(data_dir, steps=10)
    config.blend.mode = 'gradient'
    config.blend.estimate_every_steps = 1
    config.blend.per_loss_grads = path
    train.train_and_evaluate(config, str(tmp_path / path))
    rows[path] = metric_writer.read_metrics(str(tmp_path / path))
  assert len(rows['auto']) == len(rows['jacrev'])
  for a, b in zip(rows['auto'], rows['jacrev'], strict=True):
    assert a.keys() == b.keys() and a['step'] == b['step']
    for key in a:
      if key != 'train_step/steps_per_second' and 'seconds' not in key:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
  assert any('blend/weight/weak' in r for r in rows['auto'])


def test_bad_per_loss_grads_is_rejected(data_dir, tmp_path):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.blend.mode = 'gradient'
  config.blend.per_loss_grads = 'vjp'
  with pytest.raises(ValueError, match="blend.per_loss_grads.*'vjp'"):
    train.train_and_evaluate(config, str(tmp_path))
