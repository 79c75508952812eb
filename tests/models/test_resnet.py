"""Tests for gblend_jax.models.resnet (parameter counts from He et al. 2016)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.models import CifarResNet
from gblend_jax.models import FrameResNet18
from gblend_jax.models import ResNet
from gblend_jax.models import ResNet10
from gblend_jax.models import ResNet18
from gblend_jax.models import ResNet50
from tests.models.helpers import param_count
from tests.models.helpers import quick_variables

_BN = 2  # Trainable BatchNorm parameters per channel (scale and bias).


def _basic_block(c_in: int, c_out: int, stride: int) -> int:
  count = 9 * c_in * c_out + 9 * c_out * c_out + 2 * _BN * c_out
  if c_in != c_out or stride != 1:
    count += c_in * c_out + _BN * c_out  # 1x1 projection shortcut + BN.
  return count


def _bottleneck_block(c_in: int, width: int, stride: int) -> int:
  c_out = 4 * width
  count = c_in * width + 9 * width * width + width * c_out
  count += _BN * (2 * width + c_out)
  if c_in != c_out or stride != 1:
    count += c_in * c_out + _BN * c_out
  return count


def _imagenet_resnet(stage_sizes, bottleneck: bool, channels: int = 3) -> int:
  count = 49 * channels * 64 + _BN * 64
  c_in = 64
  for stage, blocks in enumerate(stage_sizes):
    width = 64 * 2**stage
    for block in range(blocks):
      stride = 2 if stage and not block else 1
      if bottleneck:
        count += _bottleneck_block(c_in, width, stride)
        c_in = 4 * width
      else:
        count += _basic_block(c_in, width, stride)
        c_in = width
  return count


def _cifar_resnet(depth: int) -> int:
  n = (depth - 2) // 6
  count = 9 * 3 * 16 + _BN * 16
  c_in = 16
  for c in (16, 32, 64):
    for _ in range(n):
      # Option-A shortcuts have no parameters.
      count += 9 * c_in * c + 9 * c * c + 2 * _BN * c
      c_in = c
  return count


def _shape_params(module, input_shape) -> int:
  x = jnp.zeros(input_shape)
  shapes = jax.eval_shape(
      lambda: module.init(jax.random.key(0), x, train=False)
  )
  return param_count(shapes['params'])


def test_cifar_resnet20_parameter_count():
  assert _cifar_resnet(20) == 269_072  # + a 10-way FC: 0.27M (paper Table 6).
  assert _shape_params(CifarResNet(depth=20), (1, 8, 8, 3)) == 269_072


@pytest.mark.parametrize('depth', [32, 56])
def test_deeper_cifar_resnet_parameter_count(depth):
  assert _shape_params(CifarResNet(depth=depth), (1, 8, 8, 3)) == (
      _cifar_resnet(depth)
  )


@pytest.mark.parametrize(
    'factory,stages,bottleneck,expected',
    [
        # torchvision resnet18 / resnet50 minus their 1000-way FC layers.
        (ResNet18, (2, 2, 2, 2), False, 11_689_512 - 513_000),
        (ResNet50, (3, 4, 6, 3), True, 25_557_032 - 2_049_000),
        (ResNet10, (1, 1, 1, 1), False, None),
    ],
)
def test_imagenet_resnet_parameter_counts(
    factory, stages, bottleneck, expected
):
  by_hand = _imagenet_resnet(stages, bottleneck)
  if expected is not None:
    assert by_hand == expected
  assert _shape_params(factory(), (1, 32, 32, 3)) == by_hand


def test_cifar_resnet_rejects_bad_depth():
  with pytest.raises(ValueError, match='6n \\+ 2'):
    CifarResNet(depth=21).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
    )


@pytest.mark.parametrize(
    'module,input_shape,output_shape',
    [
        (CifarResNet(depth=8), (2, 8, 8, 3), (2, 64)),
        (ResNet10(num_filters=4), (2, 16, 16, 3), (2, 32)),
        (ResNet18(num_filters=4, small_inputs=True), (2, 8, 8, 1), (2, 32)),
        (ResNet50(num_filters=2), (2, 16, 16, 3), (2, 64)),
        (ResNet18(num_filters=4), (2, 16, 12), (2, 32)),  # Spectrogram.
        (FrameResNet18(num_filters=4), (2, 3, 16, 16, 3), (2, 32)),
    ],
)
def test_encoder_output_shapes(module, input_shape, output_shape):
  out, _ = jax.eval_shape(
      lambda x: module.init_with_output(jax.random.key(0), x, train=False),
      jnp.zeros(input_shape),
  )
  assert out.shape == output_shape


def test_spectrogram_channel_axis_is_added():
  resnet = ResNet10(num_filters=2, small_inputs=True)
  x = jax.random.normal(jax.random.key(0), (2, 8, 6))
  variables = quick_variables(resnet, x, train=False)

  @jax.jit
  def both(variables, x):
    return (
        resnet.apply(variables, x, train=False),
        resnet.apply(variables, x[..., None], train=False),
    )

  without_channels, with_channels = both(variables, x)
  np.testing.assert_allclose(without_channels, with_channels, rtol=1e-6)


def test_batch_norm_stats_update_only_in_train_mode():
  resnet = CifarResNet(depth=8)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3)) + 1.0
  variables = quick_variables(resnet, x, train=False)
  stats = variables['batch_stats']
  apply = jax.jit(resnet.apply, static_argnames=('train', 'mutable'))
  _, train_state = apply(variables, x, train=True, mutable=('batch_stats',))
  _, eval_state = apply(variables, x, train=False, mutable=('batch_stats',))
  jax.tree.map(np.testing.assert_array_equal, eval_state['batch_stats'], stats)
  stem_mean = train_state['batch_stats']['stem_bn']['mean']
  assert not np.allclose(stem_mean, stats['stem_bn']['mean'])
  # Running mean after one step: 0.9 * 0 + 0.1 * batch mean.
  conv_out = jax.lax.conv_general_dilated(
      x,
      variables['params']['stem_conv']['kernel'],
      (1, 1),
      'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  np.testing.assert_allclose(
      stem_mean, 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
  )


def test_frame_resnet_is_the_mean_of_per_frame_resnet():
  frames = FrameResNet18(num_filters=4, small_inputs=True)
  resnet = ResNet(stage_sizes=(2, 2, 2, 2), num_filters=4, small_inputs=True)
  video = jax.random.normal(jax.random.key(0), (2, 3, 8, 8, 3))
  variables = quick_variables(frames, video, train=False)

  @jax.jit
  def both(variables, video):
    per_frame_variables = {k: v['resnet'] for k, v in variables.items()}
    per_frame = [
        resnet.apply(per_frame_variables, video[:, t], train=False)
        for t in range(video.shape[1])
    ]
    return frames.apply(variables, video, train=False), per_frame

  pooled, per_frame = both(variables, video)
  np.testing.assert_allclose(
      pooled, jnp.mean(jnp.stack(per_frame), axis=0), rtol=1e-5, atol=1e-6
  )


def test_frame_resnet_rejects_images():
  with pytest.raises(ValueError, match='B, T, H, W, C'):
    FrameResNet18(num_filters=2).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
    )
