"""Late fusion: per-modality features ``{m: [B, D_m]}`` -> one ``[B, F]``.

The fused feature vector is what the fused head classifies. Modalities are
read in the order of the ``modalities`` attribute, so the output layout does
not depend on dict order. The FiLM and gated variants follow the fusion
modules of the OGM-GE reference code (Peng et al., CVPR 2022), except that
they return the fused features and leave the output layer to the fused head,
and that FiLM projects the modulated modality first (see `FiLMFusion`).
"""

import functools
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _ordered(features: Mapping[str, Array], modalities: Sequence[str]):
  missing = [m for m in modalities if m not in features]
  if missing:
    raise KeyError(
        f'Fusion is missing features of {missing}; got {sorted(features)}.'
    )
  return [features[m] for m in modalities]


def _first_and_rest(
    features: Mapping[str, Array], modalities: Sequence[str], kind: str
) -> tuple[Array, Array]:
  if len(modalities) < 2:
    raise ValueError(f'{kind} needs at least two modalities, got {modalities}.')
  first, *rest = _ordered(features, modalities)
  return first, jnp.concatenate(rest, axis=-1)


class ConcatFusion(nn.Module):
  """Concatenation: the late-fusion baseline of G-Blend (Wang et al. 2020).

  Attributes:
    modalities: Order of the concatenated blocks.

  Returns ``[B, sum_m D_m]``; with one modality it is the identity.
  """

  modalities: tuple[str, ...]

  def __call__(self, features: Mapping[str, Array], *, train: bool) -> Array:
    del train
    return jnp.concatenate(_ordered(features, self.modalities), axis=-1)


class SumFusion(nn.Module):
  """Sum of per-modality projections: ``sum_m W_m x_m + b_m``.

  Attributes:
    modalities: The fused modalities (one Dense ``proj_<m>`` each).
    fusion_dim: Common projection width F.
    dtype: Computation dtype (the parameters stay float32).

  Returns ``[B, fusion_dim]``.
  """

  modalities: tuple[str, ...]
  fusion_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, train: bool) -> Array:
    del train
    inputs = _ordered(features, self.modalities)
    return sum(
        nn.Dense(self.fusion_dim, dtype=self.dtype, name=f'proj_{m}')(x)
        for m, x in zip(self.modalities, inputs, strict=True)
    )


class FiLMFusion(nn.Module):
  """Feature-wise linear modulation (Perez et al., "FiLM", AAAI 2018).

  The first modality is modulated, the others condition it:
  ``gamma, beta = split(Dense(2F)(concat(x_2, ..., x_k)))`` and the output is
  ``gamma * Dense(F)(x_1) + beta``. The OGM-GE ``FiLM`` module
  (``models/fusion_modules.py``) modulates the raw features, ``gamma * x_1 +
  beta``, which needs ``D_1 = F``; this one adds the projection
  ``Dense(F)`` (``proj``) that the official module lacks, so that
  modalities of any width fuse. With more than two modalities the
  concatenation of all the others conditions the first. Order
  ``modalities`` to choose which one is modulated (the official
  ``x_film=True`` lets the first input condition the second).

  Attributes:
    modalities: At least two; the first is modulated.
    fusion_dim: Width F of the modulated projection.
    dtype: Computation dtype (the parameters stay float32).

  Returns ``[B, fusion_dim]``.
  """

  modalities: tuple[str, ...]
  fusion_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, train: bool) -> Array:
    del train
    modulated, condition = _first_and_rest(features, self.modalities, 'FiLM')
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    film = dense(2 * self.fusion_dim, name='film')(condition)
    gamma, beta = jnp.split(film, 2, axis=-1)
    return gamma * dense(self.fusion_dim, name='proj')(modulated) + beta


class GatedFusion(nn.Module):
  """Sigmoid gating as in the OGM-GE reference code (``x_gate=True``).

  ``sigmoid(Dense(F)(x_1)) * Dense(F)(concat(x_2, ..., x_k))``: the first
  modality computes a gate that multiplies the projection of the others.
  Order ``modalities`` to choose the gating modality.

  Attributes:
    modalities: At least two; the first computes the gate.
    fusion_dim: Width F of both projections.
    dtype: Computation dtype (the parameters stay float32).

  Returns ``[B, fusion_dim]``.
  """

  modalities: tuple[str, ...]
  fusion_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, train: bool) -> Array:
    del train
    gating, gated = _first_and_rest(features, self.modalities, 'Gated fusion')
    dense = functools.partial(nn.Dense, self.fusion_dim, dtype=self.dtype)
    gate = nn.sigmoid(dense(name='proj_gate')(gating))
    return gate * dense(name='proj_gated')(gated)
