"""An additive ensemble of modality learners that share one head.

ReconBoost's model (Hua et al., ICML 2024; official ``models/dynamic_net.py``
and ``train.py:L287-L288``): learner ``f_m(x_m) = H(φ_m(x_m))`` with one
classifier ``H`` installed as every learner's head, and the ensemble
``F(x) = β Σ_m f_m(x_m)`` with a learnable scalar β. The ensemble is the
model's fused head, so the trainer's ``fused`` metrics are the ensemble's
prediction (the one the authors test, ``DynamicNet.forward``); each
learner is a modality head.

Only the learners already added to the ensemble count in ``F``: the
authors' ``DynamicNet`` starts empty and adds a learner after its first
stage. The 0/1 vector ``members`` (one entry per modality, in fusion order)
says which; it is a non-trained variable in the ``batch_stats`` collection
(the one the trainer carries besides the parameters, and checkpoints), set
by the method between steps (`gblend_jax.reconboost.method`); it is all
ones at initialisation, a plain shared-head sum.
"""

from collections.abc import Mapping
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gblend_jax.models.heads import ClassifierHead

Array = jax.Array

FUSED = 'fused'
BETA = 'beta'  # The params entry of β, shape ().
MEMBERS = 'members'  # The batch_stats entry of the membership, shape [M].
SHARED_HEAD = 'shared_head'


class SharedHeadEnsemble(nn.Module):
  """Encoders, one shared head, and ``F = β Σ_m members_m H(φ_m(x_m))``.

  Attributes:
    modalities: Modality names, in fusion order; ``'fused'`` is reserved.
    encoders: One unbound encoder per modality, aligned with
      ``modalities``; all must give features of one width (the head is
      shared).
    head: The shared head ``H`` (the authors': 512 -> 256 -> ReLU -> C,
      ``hidden_sizes=(256,)``).
    num_classes: Number of classes.
    modality_heads: Whether the learners' logits are returned as modality
      heads (ReconBoost trains them; without them only ``F`` is returned).
    beta_init: The initial β (the authors' ``boost_rate``, 1.0).

  Call ``model.apply(variables, inputs, train=...)``. Returns
  ``{'logits': {'fused': F, m: f_m...}, 'features': {m: φ_m(x_m)...,
  'fused': concatenated features}}``. Parameters: ``encoder_<m>``,
  ``shared_head``, ``beta``; ``batch_stats``: ``members`` (and the
  encoders' BatchNorm statistics).
  """

  modalities: tuple[str, ...]
  encoders: Sequence[nn.Module]
  head: ClassifierHead
  num_classes: int
  modality_heads: bool = True
  beta_init: float = 1.0

  def _check(self, inputs: Mapping[str, Array]) -> None:
    if FUSED in self.modalities:
      raise ValueError(f'{FUSED!r} is reserved and cannot name a modality.')
    if len(self.encoders) != len(self.modalities):
      raise ValueError(
          f'{len(self.encoders)} encoders for modalities {self.modalities}.'
      )
    missing = [m for m in self.modalities if m not in inputs]
    if missing:
      raise KeyError(
          f'Inputs are missing modalities {missing}; present: '
          f'{sorted(inputs)}; the model needs {list(self.modalities)}.'
      )

  def _ensemble(self, learners: Mapping[str, Array]) -> Array:
    beta = self.param(BETA, nn.initializers.constant(self.beta_init), ())
    members = self.variable(
        'batch_stats', MEMBERS,
        lambda: jnp.ones((len(self.modalities),), jnp.float32)).value
    return beta * sum(members[i] * learners[m]
                      for i, m in enumerate(self.modalities))

  def _learners(self, features: Mapping[str, Array], *, train: bool):
    widths = {m: features[m].shape[-1] for m in self.modalities}
    if len(set(widths.values())) > 1:
      raise ValueError(
          f'The shared head needs features of one width; got {widths} '
          '(set the encoders to one output width).'
      )
    head = self.head.clone(parent=self, name=SHARED_HEAD)
    return {m: head(features[m], train=train) for m in self.modalities}

  @nn.compact
  def __call__(
      self, inputs: Mapping[str, Array], *, train: bool
  ) -> dict[str, dict[str, Array]]:
    self._check(inputs)
    encoded = {
        m: self.encoders[i].clone(parent=self, name=f'encoder_{m}')(
            inputs[m], train=train)
        for i, m in enumerate(self.modalities)
    }
    learners = self._learners(encoded, train=train)
    logits = {FUSED: self._ensemble(learners)}
    if self.modality_heads:
      logits.update(learners)
    fused = jnp.concatenate([encoded[m] for m in self.modalities], axis=-1)
    return {'logits': logits, 'features': {**encoded, FUSED: fused}}

  @nn.compact
  def classify_features(
      self, features: Mapping[str, Array], *, train: bool
  ) -> Array:
    """The ensemble ``F`` on given encoder features (each modality's share
    of the fused logits, `gblend_jax.modulation.unimodal`, needs it).

    Args:
      features: ``{m: [B, D]}``, e.g. ``outputs['features']`` of a call.
      train: Training mode of the head (dropout).

    Returns:
      ``[B, num_classes]`` ensemble logits.
    """
    return self._ensemble(self._learners(features, train=train))


def ensemble_variables(params, batch_stats) -> tuple[Array, Array]:
  """``(β, members)`` of a `SharedHeadEnsemble`'s variables."""
  return params[BETA], batch_stats[MEMBERS]
