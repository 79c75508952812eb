"""Classification heads."""

from collections.abc import Sequence

import flax.linen as nn
import jax

Array = jax.Array


class ClassifierHead(nn.Module):
  """(Dropout ->) [Dense -> ReLU (-> Dropout)] x k -> Dense.

  With ``hidden_sizes=()`` this is the linear modality head of G-Blend (Wang,
  Tran, Feiszli, "What Makes Training Multi-modal Classification Networks
  Hard?", CVPR 2020); the paper's fused head is two FC layers then the
  prediction layer (``hidden_sizes=(d, d)``). ``input_dropout_rate`` applies
  dropout to the head's input features, one of the paper's baselines against
  overfitting.

  Attributes:
    num_classes: Number of output logits.
    hidden_sizes: Widths of the hidden FC layers.
    dropout_rate: Dropout after each hidden ReLU.
    input_dropout_rate: Dropout on the input features.

  Inputs are ``[B, D]``; returns logits ``[B, num_classes]``.
  """

  num_classes: int
  hidden_sizes: Sequence[int] = ()
  dropout_rate: float = 0.0
  input_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    if self.input_dropout_rate:
      x = nn.Dropout(self.input_dropout_rate, deterministic=not train)(x)
    for i, width in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(width, name=f'hidden_{i}')(x))
      if self.dropout_rate:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='output')(x)
