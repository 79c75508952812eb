"""Mid-level fusion: the G-Blend paper's fusion baselines (Wang, Tran,
Feiszli, CVPR 2020, Section 3 and Table 3).

Mid fusion happens inside the encoders, so each encoder is split at a fusion
point: a lower part (the ``encoder_<m>`` modules of ``MultiModalClassifier``)
and an upper part that lives in the fusion module below. Lower features are
read as token sequences ``[B, N, C]``: an MLP's ``[B, C]`` is one token; a
conv map ``[B, H, W, C]`` (or ``[B, T, H, W, C]``) gives ``N = H * W`` (x T)
tokens. Upper layers are Dense -> ReLU (-> Dropout) applied to every token,
followed by a mean over tokens.

* ``MidConcatFusion`` (mid-level concatenation): lower features of all
  modalities are concatenated along channels and one shared upper trunk
  continues.
* ``SEGateFusion`` (squeeze-excitation gating, Hu et al., "Squeeze-and-
  Excitation Networks", CVPR 2018): each modality's channels are rescaled by a
  sigmoid gate computed from the pooled lower features of the other
  modalities; each modality continues through its own upper layers and the
  results are concatenated.
* ``NLGateFusion`` (non-local gating, Wang et al., "Non-local Neural
  Networks", CVPR 2018): each modality's tokens attend (scaled dot product)
  to the other modalities' tokens, query from itself, key and value from the
  others; the attended values are projected back and added as a residual,
  then each modality continues through its own upper layers and the results
  are concatenated.

Simplification versus the paper: the paper fuses the conv blocks of two video
ResNets (spatio-temporal maps of the same size); here the upper part is an MLP
on tokens, so the builder supports only MLP encoders (split after
``mid_fusion_layer`` hidden layers). Conv lower parts can be used by building
the modules directly: ``MidConcatFusion`` needs equal token counts, the gates
do not. The non-local output projection starts at zero (the paper's
zero-initialised last BatchNorm), so ``NLGateFusion`` starts as separate
per-modality branches.

Every mid-fusion module returns ``(fused [B, F], {m: [B, D_m]})``; the
per-modality features feed the modality heads (the pooled lower features for
``MidConcatFusion``; each modality's upper output for the gates).
"""

import functools
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
FusionOutput = tuple[Array, dict[str, Array]]


def as_tokens(x: Array) -> Array:
  """Reshapes ``[B, C]`` to ``[B, 1, C]`` and ``[B, ..., C]`` to ``[B, N, C]``.

  Args:
    x: Features with the batch first and channels last.

  Returns:
    The token sequence ``[B, N, C]``.
  """
  return x.reshape((x.shape[0], -1, x.shape[-1]))


class UpperLayers(nn.Module):
  """Dense -> ReLU (-> Dropout) on every token, then a mean over tokens.

  Attributes:
    hidden_sizes: Widths of the layers (``()`` only pools).
    dropout_rate: Dropout after every ReLU.
    dtype: Computation dtype (the parameters stay float32).

  Inputs are ``[B, N, C]``; returns ``[B, hidden_sizes[-1]]`` (or ``[B, C]``).
  """

  hidden_sizes: Sequence[int] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, *, train: bool) -> Array:
    for i, width in enumerate(self.hidden_sizes):
      dense = nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')
      tokens = nn.relu(dense(tokens))
      if self.dropout_rate:
        tokens = nn.Dropout(self.dropout_rate, deterministic=not train)(tokens)
    return tokens.mean(axis=1)


class MidFusion(nn.Module):
  """Base class marking a fusion that returns ``(fused, per-modality)``."""

  modalities: tuple[str, ...]

  def _tokens(self, lower: Mapping[str, Array]) -> list[Array]:
    missing = [m for m in self.modalities if m not in lower]
    if missing:
      raise KeyError(
          f'Fusion is missing features of {missing}; got {sorted(lower)}.'
      )
    return [as_tokens(lower[m]) for m in self.modalities]


class MidConcatFusion(MidFusion):
  """Channel concatenation of lower features, then a shared upper trunk.

  Attributes:
    modalities: Order of the concatenated channel blocks.
    trunk_hidden_sizes: Widths of the shared upper layers.
    dropout_rate: Dropout in the trunk.
    dtype: Computation dtype (the parameters stay float32).
  """

  trunk_hidden_sizes: Sequence[int] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, lower: Mapping[str, Array], *, train: bool
  ) -> FusionOutput:
    tokens = self._tokens(lower)
    if len({t.shape[1] for t in tokens}) > 1:
      raise ValueError(
          'mid_concat needs the same number of tokens per modality, got '
          f'{[t.shape for t in tokens]} for {self.modalities}.'
      )
    trunk = UpperLayers(
        self.trunk_hidden_sizes, self.dropout_rate, dtype=self.dtype,
        name='trunk')
    fused = trunk(jnp.concatenate(tokens, axis=-1), train=train)
    pooled = {
        m: t.mean(axis=1)
        for m, t in zip(self.modalities, tokens, strict=True)
    }
    return fused, pooled


class _GatedBranches(MidFusion):
  """Shared logic: gate each modality, run its upper layers, concatenate."""

  upper_hidden_sizes: tuple[Sequence[int], ...] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  def _gate(self, modality: str, x: Array, others: list[Array]) -> Array:
    raise NotImplementedError

  @nn.compact
  def __call__(
      self, lower: Mapping[str, Array], *, train: bool
  ) -> FusionOutput:
    if len(self.modalities) < 2:
      raise ValueError(
          f'Gating needs two or more modalities, got {self.modalities}.'
      )
    if len(self.upper_hidden_sizes) != len(self.modalities):
      raise ValueError('upper_hidden_sizes needs one entry per modality.')
    tokens = self._tokens(lower)
    features = {}
    for i, modality in enumerate(self.modalities):
      others = tokens[:i] + tokens[i + 1 :]
      gated = self._gate(modality, tokens[i], others)
      upper = UpperLayers(
          self.upper_hidden_sizes[i],
          self.dropout_rate,
          dtype=self.dtype,
          name=f'upper_{modality}',
      )
      features[modality] = upper(gated, train=train)
    fused = jnp.concatenate([features[m] for m in self.modalities], axis=-1)
    return fused, features


class SEGateFusion(_GatedBranches):
  """Squeeze-excitation gating across modalities (Hu et al. 2018).

  For modality m with C channels: ``z = concat(mean_tokens(x_o), o != m)``,
  ``s = sigmoid(Dense(C)(relu(Dense(C // reduction)(z))))`` and the gated
  tokens are ``x_m * s``. The gate is sown as ``intermediates/gate_<m>``.

  Attributes:
    modalities: Two or more modalities.
    upper_hidden_sizes: Upper-layer widths, one tuple per modality.
    dropout_rate: Dropout in the upper layers.
    dtype: Computation dtype (the parameters stay float32).
    reduction: SE bottleneck ratio r.
  """

  reduction: int = 16

  def _gate(self, modality: str, x: Array, others: list[Array]) -> Array:
    channels = x.shape[-1]
    squeeze = jnp.concatenate([o.mean(axis=1) for o in others], axis=-1)
    hidden = max(1, channels // self.reduction)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    z = nn.relu(dense(hidden, name=f'se_reduce_{modality}')(squeeze))
    gate = nn.sigmoid(dense(channels, name=f'se_expand_{modality}')(z))
    self.sow('intermediates', f'gate_{modality}', gate)
    return x * gate[:, None, :]


class NLGateFusion(_GatedBranches):
  """Non-local (dot-product attention) gating across modalities.

  For modality m: ``q = Dense(d)(x_m)``; keys and values are projected from
  every other modality (own Dense per source) and concatenated along tokens;
  ``x_m + Dense(C)(softmax(q k^T / sqrt(d)) v)``, with that last Dense
  initialised to zero. Attention weights are sown as
  ``intermediates/attention_<m>``.

  Attributes:
    modalities: Two or more modalities.
    upper_hidden_sizes: Upper-layer widths, one tuple per modality.
    dropout_rate: Dropout in the upper layers.
    dtype: Computation dtype (the parameters stay float32).
    attention_dim: Width d of queries and keys (default: C // 2 of the query
      modality, as in Wang et al. 2018).
  """

  attention_dim: int | None = None

  def _gate(self, modality: str, x: Array, others: list[Array]) -> Array:
    channels = x.shape[-1]
    dim = self.attention_dim or max(1, channels // 2)
    sources = [m for m in self.modalities if m != modality]
    query = nn.Dense(dim, dtype=self.dtype, name=f'nl_{modality}_query')(x)
    keys = jnp.concatenate(
        [
            nn.Dense(dim, dtype=self.dtype, name=f'nl_{modality}_key_{s}')(o)
            for s, o in zip(sources, others, strict=True)
        ],
        axis=1,
    )
    values = jnp.concatenate(
        [
            nn.Dense(dim, dtype=self.dtype, name=f'nl_{modality}_value_{s}')(o)
            for s, o in zip(sources, others, strict=True)
        ],
        axis=1,
    )
    logits = jnp.einsum('bqd,bkd->bqk', query, keys) / jnp.sqrt(dim)
    attention = jax.nn.softmax(logits, axis=-1)
    self.sow('intermediates', f'attention_{modality}', attention)
    attended = jnp.einsum('bqk,bkd->bqd', attention, values)
    out = nn.Dense(
        channels, kernel_init=nn.initializers.zeros, dtype=self.dtype,
        name=f'nl_{modality}_out')(attended)
    return x + out
