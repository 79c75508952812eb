"""Classification heads."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Floor of the norms divided by (PyTorch's ``F.normalize`` uses 1e-12).
NORM_EPSILON = 1e-12


def _unit(x: Array, axis: int) -> Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, NORM_EPSILON)


class CosineDense(nn.Module):
  """Cosine classifier ``z_c = x·w_c / (||x|| ||w_c||)``, no bias.

  The normalised linear layer of LDAM (Cao, Wei, Gaidon, Arechiga, Ma,
  NeurIPS 2019, §3.2: the logits are cosines, scaled by ``s`` in the
  loss; ``NormedLinear`` of the official LDAM-DRW code and ``FCNorm`` of
  the bag of tricks' code). Logits lie in ``[-1, 1]``; the loss must scale
  them (LDAM's s = 30).

  Attributes:
    features: Number of classes ``C``.
    dtype: Computation dtype (the kernel stays float32).

  Inputs are ``[B, D]``; the kernel ``[D, C]`` is normalised per class
  (column), each input row per example. Returns ``[B, C]``.
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return _unit(x, -1) @ _unit(kernel, 0)


class ClassifierHead(nn.Module):
  """(Dropout ->) [Dense -> ReLU (-> Dropout)] x k -> Dense.

  With ``hidden_sizes=()`` this is the linear modality head of G-Blend (Wang,
  Tran, Feiszli, "What Makes Training Multi-modal Classification Networks
  Hard?", CVPR 2020); the paper's fused head is two FC layers then the
  prediction layer (``hidden_sizes=(d, d)``). ``input_dropout_rate`` applies
  dropout to the head's input features, one of the paper's baselines against
  overfitting. ``normalized=True`` makes the prediction layer a
  `CosineDense` (``output_cosine``) in place of the Dense ``output``: LDAM's
  normalised classifier.

  Attributes:
    num_classes: Number of output logits.
    hidden_sizes: Widths of the hidden FC layers.
    dropout_rate: Dropout after each hidden ReLU.
    input_dropout_rate: Dropout on the input features.
    normalized: Cosine logits (normalised features and class weights, no
      bias).
    dtype: Computation dtype (the parameters stay float32).

  Inputs are ``[B, D]``; returns logits ``[B, num_classes]``.
  """

  num_classes: int
  hidden_sizes: Sequence[int] = ()
  dropout_rate: float = 0.0
  input_dropout_rate: float = 0.0
  normalized: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    if self.input_dropout_rate:
      x = nn.Dropout(self.input_dropout_rate, deterministic=not train)(x)
    for i, width in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'hidden_{i}')(x))
      if self.dropout_rate:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.normalized:
      return CosineDense(self.num_classes, dtype=self.dtype,
                         name='output_cosine')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
