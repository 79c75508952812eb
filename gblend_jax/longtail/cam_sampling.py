"""CAM-based balanced sampling in the deferred re-sampling stage.

Zhang et al. (AAAI 2021, §"CAM-based sampling"): after the first
(instance-balanced) stage, every class ``c`` gets ``n_max + n_min - n_c``
new images, each made from a random training image of the class with the
stage-one model: its class activation map splits it into foreground and
background, and the foreground is kept on a transformed copy of the image
(`gblend_jax.longtail.cam`). The re-sampling stage then samples
class-balanced from the originals and the new images together, ``n_max +
n_min`` of every class.

Here the new images are made in the train step, on the fly, rather than
stored: the batch drawn class-balanced from the originals has each image of
class ``y`` replaced by a CAM-based image with probability

  ``g_y = (n_max + n_min - n_y) / (n_max + n_min)``,

the share of new images in class ``y`` of the augmented set, so that the
stage sees originals and new images in the proportions of the paper. The
CAMs come from the frozen stage-one model (its variables, snapshotted at
the switch, are an argument of the step), and each draw gets a fresh
transform (the paper's set is generated once; drawing afresh gives the same
distribution of images without storing ``C (n_max + n_min)`` of them).

References:
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
  Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for
  Discriminative Localization", CVPR 2016, https://arxiv.org/abs/1512.04150.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax.longtail import cam
from gblend_jax.models import resnet

__all__ = ('cam_replacement_probabilities', 'cam_sampled_images',
           'check_cam_model')

ENCODER_PREFIX = 'encoder_'


def cam_replacement_probabilities(counts: np.ndarray) -> np.ndarray:
  """``g_y``: the share of CAM-based images in each class after generation.

  Args:
    counts: ``[C]`` training images per class ``n_c`` (all positive).

  Returns:
    float32 ``[C]``, ``(n_max + n_min - n_c) / (n_max + n_min)``.

  Examples:
    >>> cam_replacement_probabilities(np.array([90, 30, 10])).round(6)
    array([0.1, 0.7, 0.9], dtype=float32)
  """
  counts = np.asarray(counts, np.float64)
  new = cam.cam_image_counts(counts)
  return (new / (counts.max() + counts.min())).astype(np.float32)


def _classifier_kernel(params: Mapping[str, Any]) -> jax.Array:
  return params['fused_head']['output']['kernel']


def _feature_map(intermediates: Mapping[str, Any], modality: str) -> jax.Array:
  return intermediates[ENCODER_PREFIX + modality][resnet.FEATURE_MAP][0]


def cam_sampled_images(
    key: jax.Array,
    model: nn.Module,
    variables: Mapping[str, Any],
    inputs: Mapping[str, jax.Array],
    labels: jax.Array,
    replace_probs: jax.Array,
    modality: str,
    *,
    move_foreground: bool = False,
) -> tuple[dict[str, jax.Array], jax.Array]:
  """Replaces images by CAM-based ones with probability ``g_{label}``.

  Args:
    key: PRNG key of the replacement and transform draws.
    model: a single-modality `MultiModalClassifier` whose encoder sows its
      last convolutional features (`gblend_jax.models.resnet.FEATURE_MAP`)
      and whose fused head is linear on the pooled features.
    variables: the stage-one model's ``{'params', 'batch_stats'}``.
    inputs: ``{modality: [B, H, W] or [B, H, W, K]}`` images.
    labels: ``[B]`` labels (the CAM of each image is of its label).
    replace_probs: ``[C]`` replacement probabilities
      (`cam_replacement_probabilities`).
    modality: the image modality.
    move_foreground: see `gblend_jax.longtail.cam.cam_augment`.

  Returns:
    ``(inputs, replaced)``: the inputs with the chosen images replaced, and
    a float32 ``[B]`` 0/1 indicator of the replaced ones.
  """
  _, state = model.apply(variables, inputs, train=False,
                         mutable=['intermediates'])
  features = jax.lax.stop_gradient(
      _feature_map(state['intermediates'], modality))
  kernel = jax.lax.stop_gradient(_classifier_kernel(variables['params']))
  images = inputs[modality]
  with_channels = images if images.ndim == 4 else images[..., None]
  height, width = with_channels.shape[1:3]
  cams = cam.class_activation_maps(features, kernel, labels, (height, width))
  masks = cam.foreground_mask(cams)
  choose_key, transform_key = jax.random.split(key)
  keys = jax.random.split(transform_key, images.shape[0])
  augmented, _ = jax.vmap(
      lambda k, x, m: cam.cam_augment(k, x, m,
                                      move_foreground=move_foreground)
  )(keys, with_channels, masks)
  augmented = augmented.reshape(images.shape).astype(images.dtype)
  replaced = jax.random.uniform(choose_key, labels.shape) < replace_probs[
      labels]
  shape = (-1,) + (1,) * (images.ndim - 1)
  new_images = jnp.where(replaced.reshape(shape), augmented, images)
  return {**inputs, modality: new_images}, replaced.astype(jnp.float32)


def check_cam_model(
    model: nn.Module, variables: Mapping[str, Any],
    inputs: Mapping[str, jax.Array], modality: str,
) -> None:
  """Raises ValueError unless CAMs can be computed for this model.

  CAMs need one image modality whose encoder sows its last convolutional
  features, and a linear fused head on the pooled features (identity
  fusion of one modality).

  Args:
    model: the model.
    variables: its variables (shapes only).
    inputs: a batch of model inputs (shapes only).
    modality: the image modality.
  """
  what = 'config.longtail.cam_sampling=True'
  if set(inputs) != {modality}:
    raise ValueError(
        f'{what} needs a single image modality; the data has '
        f'{sorted(inputs)}.'
    )
  params = variables['params']
  head = params.get('fused_head', {})
  if set(head) != {'output'}:
    raise ValueError(
        f'{what} needs a linear fused head (config.model.fused_head.'
        f'hidden_sizes=(), config.model.normalized_heads=False); the head '
        f'has layers {sorted(head)}.'
    )

  def run(variables, inputs):
    return model.apply(variables, inputs, train=False,
                       mutable=['intermediates'])

  _, state = jax.eval_shape(run, variables, inputs)
  sown = state.get('intermediates', {}).get(ENCODER_PREFIX + modality, {})
  if resnet.FEATURE_MAP not in sown:
    raise ValueError(
        f'{what} needs an encoder that exposes its last convolutional '
        f'features (cifar_resnet, resnet10, resnet18, resnet50); the '
        f'encoder of {modality!r} does not.'
    )
  depth = sown[resnet.FEATURE_MAP][0].shape[-1]
  kernel_rows = _classifier_kernel(params).shape[0]
  if depth != kernel_rows:
    raise ValueError(
        f'{what}: the classifier takes {kernel_rows} features but the last '
        f'convolution has {depth} channels (fusion must be the identity).'
    )
