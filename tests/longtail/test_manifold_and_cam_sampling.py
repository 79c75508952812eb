"""Manifold mixup by interception, and CAM-based images in the train step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax import models
from gblend_jax.longtail import cam
from gblend_jax.longtail import cam_sampling
from gblend_jax.longtail import manifold
from gblend_jax.longtail import mixup as lt_mixup


class _TwoLayers(nn.Module):
  """x -> first (Dense 3) -> second (Dense 2)."""

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    return nn.Dense(2, name='second')(nn.Dense(3, name='first')(x))


def test_manifold_mixup_mixes_the_named_layer_output():
  model = _TwoLayers()
  x = jnp.arange(8.0).reshape(4, 2)
  variables = model.init(jax.random.key(0), x)
  lam, permutation = jnp.float32(0.3), jnp.array([2, 0, 3, 1])
  fired = []
  with nn.intercept_methods(manifold.manifold_mixup_interceptor(
      'first', lam, permutation, fired)):
    out = model.apply(variables, x)
  # By hand: h = x W1 + b1, mixed, then h̃ W2 + b2.
  p = variables['params']
  h = x @ p['first']['kernel'] + p['first']['bias']
  mixed = lam * h + (1 - lam) * h[np.asarray(permutation)]
  expected = mixed @ p['second']['kernel'] + p['second']['bias']
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert fired == ['first']
  # λ = 1 leaves the forward pass unchanged, exactly.
  with nn.intercept_methods(manifold.manifold_mixup_interceptor(
      'first', jnp.float32(1.0), permutation)):
    np.testing.assert_array_equal(model.apply(variables, x),
                                  model.apply(variables, x))


def _classifier(encoder: str, hidden=(), modalities=None):
  config = models.default_model_config()
  config.encoder.name = encoder
  config.encoder.mlp.hidden_sizes = (4,)
  config.encoder.cifar_resnet.update(depth=8, width=2)
  config.fused_head.hidden_sizes = hidden
  config.modality_heads = False
  modalities = modalities or {'image': (8, 8, 1)}
  model = models.build_model(config, modalities=modalities, num_classes=3)
  inputs = {m: jax.random.normal(jax.random.key(i), (4, *shape))
            for i, (m, shape) in enumerate(modalities.items())}
  variables = model.init(jax.random.key(1), inputs, train=False)
  return model, variables, inputs


def test_pooled_mixes_every_encoder_output_with_the_same_partners():
  model, variables, inputs = _classifier(
      'mlp', modalities={'a': (5,), 'b': (6,)})
  lam, permutation = jnp.float32(0.6), jnp.array([1, 2, 3, 0])
  plain = model.apply(variables, inputs, train=False)
  with nn.intercept_methods(manifold.manifold_mixup_interceptor(
      manifold.POOLED, lam, permutation)):
    out = model.apply(variables, inputs, train=False)
  for m in ('a', 'b'):
    np.testing.assert_allclose(
        out['features'][m],
        lt_mixup.mix(plain['features'][m], lam, permutation), rtol=1e-6)
  layers = manifold.mixable_layers(model, variables, inputs)
  assert {'encoder_a', 'encoder_b', 'fused_head', manifold.POOLED} <= set(
      layers)
  manifold.check_layer(model, variables, inputs, 'encoder_a')
  with pytest.raises(ValueError, match=r"manifold_layer='encoder_c' names "
                     r"no layer of the model; valid: \[.*'encoder_a'"):
    manifold.check_layer(model, variables, inputs, 'encoder_c')


def test_replacement_probabilities_balance_originals_and_new_images():
  counts = np.array([100, 40, 10])
  g = cam_sampling.cam_replacement_probabilities(counts)
  # n_max + n_min = 110 images a class after generation.
  np.testing.assert_allclose(g, [10 / 110, 70 / 110, 100 / 110], rtol=1e-6)
  # Class-balanced draws of class c are new images with probability g_c,
  # i.e. (n_max + n_min - n_c) of n_max + n_min.
  np.testing.assert_allclose((1 - g) * 110, counts, rtol=1e-5)


def test_cam_sampled_images_replace_by_probability_and_keep_foreground():
  model, variables, inputs = _classifier('cifar_resnet')
  labels = jnp.array([0, 1, 2, 1])
  key = jax.random.key(7)
  sampled = jax.jit(lambda probs: cam_sampling.cam_sampled_images(
      key, model, variables, inputs, labels, probs, 'image'))
  kept, replaced = sampled(jnp.zeros(3))
  np.testing.assert_array_equal(kept['image'], inputs['image'])
  assert replaced.tolist() == [0, 0, 0, 0]
  new, replaced = sampled(jnp.ones(3))
  assert replaced.tolist() == [1, 1, 1, 1]
  # The CAMs by hand: sown last features x the classifier column of y.
  _, state = model.apply(variables, inputs, train=False,
                         mutable=['intermediates'])
  features = state['intermediates']['encoder_image']['feature_map'][0]
  assert features.shape == (4, 2, 2, 8)  # 8x8, two stride-2 stages; 4·2.
  kernel = variables['params']['fused_head']['output']['kernel']
  masks = cam.foreground_mask(
      cam.class_activation_maps(features, kernel, labels, (8, 8)))
  # The foreground stays where it was (the paper's paste); the images are
  # those of cam_augment with the same keys.
  image, out = np.asarray(inputs['image']), np.asarray(new['image'])
  for b in range(4):
    mask = np.asarray(masks[b])
    assert mask.any()
    np.testing.assert_array_equal(out[b][mask], image[b][mask])
  keys = jax.random.split(jax.random.split(key)[1], 4)
  expected, _ = jax.jit(jax.vmap(cam.cam_augment))(keys, inputs['image'],
                                                   masks)
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_cam_model_checks_name_what_is_missing():
  model, variables, inputs = _classifier('mlp', modalities={'image': (5,)})
  with pytest.raises(ValueError, match='last convolutional features'):
    cam_sampling.check_cam_model(model, variables, inputs, 'image')
  model, variables, inputs = _classifier('cifar_resnet', hidden=(4,))
  with pytest.raises(ValueError, match=r'linear fused head .* layers '
                     r"\['hidden_0', 'output'\]"):
    cam_sampling.check_cam_model(model, variables, inputs, 'image')
  model, variables, inputs = _classifier('cifar_resnet')
  cam_sampling.check_cam_model(model, variables, inputs, 'image')
