"""Residual networks (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) as feature encoders.

Every encoder maps a batch to pooled features ``[B, D]``; there is no
classification layer (heads live in ``heads.py``). BatchNorm uses the running
average when ``train=False`` and keeps its statistics in the ``batch_stats``
collection.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Name of the sown last convolutional features (``intermediates`` collection).
FEATURE_MAP = 'feature_map'
_BATCH_NORM_MOMENTUM = 0.9
_BATCH_NORM_EPSILON = 1e-5


def _batch_norm(train: bool, **kwargs: Any) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=_BATCH_NORM_MOMENTUM,
      epsilon=_BATCH_NORM_EPSILON,
      **kwargs,
  )


def _conv(features: int, kernel: int, strides: int = 1, **kwargs) -> nn.Conv:
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(strides, strides),
      padding='SAME',
      use_bias=False,
      **kwargs,
  )


def _layers(train: bool, dtype: Any) -> tuple[Any, Any]:
  """``(conv, norm)``: `_conv` and `_batch_norm` in this mode and dtype."""
  return (functools.partial(_conv, dtype=dtype),
          functools.partial(_batch_norm, train, dtype=dtype))


def _with_channel_axis(x: Array) -> Array:
  """Adds a trailing channel axis to ``[B, H, W]`` inputs (spectrograms)."""
  if x.ndim == 3:
    return x[..., None]
  if x.ndim != 4:
    raise ValueError(
        f'Expected [B, H, W] or [B, H, W, C] inputs, got shape {x.shape}.'
    )
  return x


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity or 1x1-projection shortcut.

  Attributes:
    features: Output channels.
    strides: Stride of the first convolution (and of the projection).
    dtype: Computation dtype (see ``ResNet``).
  """

  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv, norm = _layers(train, self.dtype)
    residual = x
    y = conv(self.features, 3, self.strides)(x)
    y = nn.relu(norm()(y))
    y = conv(self.features, 3)(y)
    y = norm()(y)
    if residual.shape != y.shape:
      residual = conv(self.features, 1, self.strides, name='proj_conv')(x)
      residual = norm(name='proj_bn')(residual)
    return nn.relu(y + residual)


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a projection shortcut.

  The stride sits on the 3x3 convolution ("ResNet v1.5").

  Attributes:
    features: Bottleneck channels; the block outputs ``4 * features``.
    strides: Stride of the 3x3 convolution (and of the projection).
    dtype: Computation dtype (see ``ResNet``).
  """

  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv, norm = _layers(train, self.dtype)
    residual = x
    y = nn.relu(norm()(conv(self.features, 1)(x)))
    y = conv(self.features, 3, self.strides)(y)
    y = nn.relu(norm()(y))
    y = norm()(conv(4 * self.features, 1)(y))
    if residual.shape != y.shape:
      residual = conv(4 * self.features, 1, self.strides, name='proj_conv')(x)
      residual = norm(name='proj_bn')(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ImageNet-style ResNet trunk (He et al. 2016, Table 1) without the FC.

  Attributes:
    stage_sizes: Number of blocks in each of the four stages.
    block_cls: ``BasicBlock`` or ``BottleneckBlock``.
    num_filters: Channels of the first stage (doubled at every later stage).
    small_inputs: If True, replaces the 7x7 stride-2 stem and the max-pool by
      one 3x3 stride-1 convolution (for tiny images and spectrograms).
    dtype: Computation dtype of convolutions and BatchNorm (parameters and
      BatchNorm statistics stay float32; flax computes the statistics in
      float32).

  Inputs are ``[B, H, W, C]``, or ``[B, H, W]`` (a channel axis is added).
  Returns ``[B, D]`` with ``D = num_filters * 8`` (x4 for bottlenecks). The
  last convolutional features ``[B, h, w, D]`` are sown as
  ``intermediates/feature_map`` when that collection is mutable.
  """

  stage_sizes: Sequence[int]
  block_cls: type[nn.Module] = BasicBlock
  num_filters: int = 64
  small_inputs: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv, norm = _layers(train, self.dtype)
    x = _with_channel_axis(x)
    if self.small_inputs:
      x = conv(self.num_filters, 3, name='stem_conv')(x)
    else:
      x = conv(self.num_filters, 7, 2, name='stem_conv')(x)
    x = nn.relu(norm(name='stem_bn')(x))
    if not self.small_inputs:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = self.block_cls(self.num_filters * 2**stage, strides,
                           dtype=self.dtype)(x, train=train)
    self.sow('intermediates', FEATURE_MAP, x)
    return jnp.mean(x, axis=(1, 2))


ResNet10 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1))
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
ResNet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock
)


class FrameResNet18(nn.Module):
  """ResNet-18 applied to every video frame, then averaged over time.

  This is the visual encoder of OGM-GE (Peng et al., "Balanced Multimodal
  Learning via On-the-fly Gradient Modulation", CVPR 2022): a 2-D ResNet-18
  shared across frames whose features are mean-pooled over time.

  Attributes:
    num_filters: Channels of the first stage.
    small_inputs: See ``ResNet``.
    dtype: See ``ResNet``.

  Inputs are ``[B, T, H, W, C]``; returns ``[B, 8 * num_filters]``.
  """

  num_filters: int = 64
  small_inputs: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    if x.ndim != 5:
      raise ValueError(f'Expected [B, T, H, W, C] video, got shape {x.shape}.')
    batch, frames = x.shape[:2]
    resnet = ResNet18(
        num_filters=self.num_filters,
        small_inputs=self.small_inputs,
        dtype=self.dtype,
        name='resnet',
    )
    per_frame = resnet(x.reshape((batch * frames,) + x.shape[2:]), train=train)
    return per_frame.reshape(batch, frames, -1).mean(axis=1)


class CifarResNet(nn.Module):
  """CIFAR ResNet-(6n+2) of He et al. 2016, Section 4.2, without the FC.

  A 3x3 convolution with 16 channels, then three stages of ``n`` basic blocks
  with 16, 32 and 64 channels (stride 2 at the start of stages 2 and 3), then
  global average pooling. Shortcuts are identities; where the shape changes
  they subsample and zero-pad the channels (the paper's option A), so
  ResNet-20 has 0.27M parameters.

  Attributes:
    depth: 6n + 2 (20, 32, 44, 56, 110, ...).
    width: Channels of the first stage (16 in the paper; the later stages
      have twice and four times as many).
    dtype: See ``ResNet``.

  Inputs are ``[B, H, W, C]``; returns ``[B, 4 * width]``. The last
  convolutional features ``[B, h, w, 4 * width]`` (before pooling, for class
  activation maps) are sown as ``intermediates/feature_map`` when that
  collection is mutable.
  """

  depth: int = 20
  width: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv, norm = _layers(train, self.dtype)
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ValueError(f'CifarResNet depth must be 6n + 2, got {self.depth}.')
    blocks_per_stage = (self.depth - 2) // 6
    if self.width < 1:
      raise ValueError(f'CifarResNet width must be positive, got {self.width}.')
    x = conv(self.width, 3, name='stem_conv')(_with_channel_axis(x))
    x = nn.relu(norm(name='stem_bn')(x))
    for stage in range(3):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = _CifarBlock(self.width * 2**stage, strides, dtype=self.dtype)(
            x, train=train)
    self.sow('intermediates', FEATURE_MAP, x)
    return jnp.mean(x, axis=(1, 2))


class _CifarBlock(nn.Module):
  """Basic block with the parameter-free option-A shortcut."""

  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv, norm = _layers(train, self.dtype)
    y = conv(self.features, 3, self.strides)(x)
    y = nn.relu(norm()(y))
    y = norm()(conv(self.features, 3)(y))
    residual = x[:, :: self.strides, :: self.strides, :]
    missing = self.features - residual.shape[-1]
    if missing:
      pad = ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2))
      residual = jnp.pad(residual, pad)
    return nn.relu(y + residual)
