"""Per-modality encoders and their registry.

Every encoder maps one modality's input batch to features ``[B, D]`` and is
called as ``encoder(x, train=...)``.
"""

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gblend_jax.models.resnet import CifarResNet
from gblend_jax.models.resnet import FrameResNet18
from gblend_jax.models.resnet import ResNet10
from gblend_jax.models.resnet import ResNet18
from gblend_jax.models.resnet import ResNet50

Array = jax.Array


class MLPEncoder(nn.Module):
  """Dense -> ReLU (-> Dropout) layers on flattened feature vectors.

  Attributes:
    hidden_sizes: Width of each hidden layer; ``()`` only flattens.
    dropout_rate: Dropout after every ReLU (active when ``train=True``).
    dtype: Computation dtype (the parameters stay float32).

  Inputs are ``[B, ...]`` (flattened to ``[B, d]``); returns
  ``[B, hidden_sizes[-1]]``.
  """

  hidden_sizes: Sequence[int] = (256,)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
      if self.dropout_rate:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    'mlp': MLPEncoder,
    'cifar_resnet': CifarResNet,
    'resnet10': ResNet10,
    'resnet18': ResNet18,
    'resnet50': ResNet50,
    'frame_resnet18': FrameResNet18,
}


def _field_names(factory: Callable[..., nn.Module]) -> set[str]:
  if isinstance(factory, functools.partial):
    fixed = set(factory.keywords)
    factory = factory.func
  else:
    fixed = set()
  fields = {f.name for f in dataclasses.fields(factory) if f.init}
  return fields - fixed - {'parent', 'name'}


def encoder_fields(name: str) -> set[str]:
  """The attributes a registered encoder takes (``ENCODERS[name]``)."""
  return _field_names(ENCODERS[name])


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
  """Builds a registered encoder.

  Args:
    name: A key of ``ENCODERS``.
    **kwargs: Attributes of that encoder (e.g. ``depth`` for
      ``cifar_resnet``).

  Returns:
    The unbound encoder module.

  Raises:
    ValueError: On an unknown name or an argument the encoder does not take.
  """
  if name not in ENCODERS:
    raise ValueError(
        f'Unknown encoder {name!r}; valid names: {sorted(ENCODERS)}.'
    )
  factory = ENCODERS[name]
  accepted = _field_names(factory)
  for key in kwargs:
    if key not in accepted:
      raise ValueError(
          f'Encoder {name!r} got unknown argument {key!r}; it accepts '
          f'{sorted(accepted)}.'
      )
  return factory(**kwargs)
