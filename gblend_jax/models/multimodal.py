"""The multi-modal classifier of G-Blend (Wang, Tran, Feiszli, CVPR 2020).

One encoder per modality, a fusion module, a fused head and (optionally) one
linear head per modality, so that k modalities give k + 1 logits: what a
gradient blend of k + 1 losses consumes. Submodule names are fixed because
the trainer copies pre-trained parameters by name: ``encoder_<m>``,
``head_<m>``, ``fusion``, ``fused_head``; with ``shared_head`` one head,
``shared_head``, classifies every modality (MLA, Zhang et al., CVPR 2024).
"""

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gblend_jax.mla import fusion as mla_fusion
from gblend_jax.models.heads import ClassifierHead
from gblend_jax.models.mid_fusion import MidFusion

Array = jax.Array

FUSED = 'fused'


class MultiModalClassifier(nn.Module):
  """Encoders -> fusion -> fused head, plus linear per-modality heads.

  With one modality this is a single-modality network: the fused head
  classifies that encoder's features (through ``fusion``, normally the
  identity ``ConcatFusion``).

  Attributes:
    modalities: Modality names, in fusion order; ``'fused'`` is reserved.
    encoders: One unbound encoder per modality, as a sequence aligned with
      ``modalities`` or a mapping keyed by modality. For mid fusion these are
      the lower parts of the encoders.
    fusion: A late-fusion module (``fusion.py``) returning ``[B, F]``, or a
      ``MidFusion`` returning ``(fused, per-modality features)``.
    fused_head: Head on the fused features.
    num_classes: Number of classes of every head.
    modality_heads: Whether to add a linear head per modality.
    normalized_modality_heads: Whether those heads are cosine classifiers
      (``ClassifierHead(normalized=True)``, LDAM's normalised classifier).
    dtype: Computation dtype of the modality heads; the encoders, fusion
      and fused head carry their own (`build_model` gives all one). The
      logits and features are returned in float32 whatever it is, so that
      losses, softmax and every method's statistics (blend gains, OGM
      scores, prototypes) are float32.
    shared_head: One linear head ``shared_head`` applied to each
      modality's features in place of the fusion, the fused head and the
      per-modality heads (MLA's model): ``logits[m] = h(z_m)``, and
      ``logits['fused']`` is their per-sample entropy-weighted fusion
      (`gblend_jax.mla.entropy_weighted_fusion`), or ``Σ_m a_m h(z_m)``
      with ``shared_head_fusion_weights`` ``a``. Every encoder must give
      features of the same width.
    shared_head_fusion_weights: Fixed fusion weights, one per modality
      (MLA's code: 0.55, 0.45); empty: entropy weights.
    only_head: None, or a modality whose head's loss is confined to its
      own encoder (`head_parameters`): the model then runs only
      ``encoder_<m>`` and ``head_<m>`` and returns only their logits and
      features; built by `head_model`.

  Call ``model.apply(variables, inputs, train=...)`` with ``inputs`` mapping
  every modality to its batch (extra keys are ignored). Returns
  ``{'logits': {'fused': [B, C], m: [B, C]...}, 'features': {m: [B, D_m]...,
  'fused': [B, F]}}``; per-modality logits only with ``modality_heads``.
  Dropout draws from the ``'dropout'`` rng.
  """

  modalities: tuple[str, ...]
  encoders: Sequence[nn.Module] | Mapping[str, nn.Module]
  fusion: nn.Module
  fused_head: ClassifierHead
  num_classes: int
  modality_heads: bool = True
  normalized_modality_heads: bool = False
  dtype: Any = jnp.float32
  shared_head: bool = False
  shared_head_fusion_weights: tuple[float, ...] = ()
  only_head: str | None = None

  def _encoder(self, index: int, modality: str) -> nn.Module:
    if isinstance(self.encoders, Mapping):
      template = self.encoders[modality]
    else:
      template = self.encoders[index]
    return template.clone(parent=self, name=f'encoder_{modality}')

  def _modality_head(self, modality: str) -> ClassifierHead:
    return ClassifierHead(
        self.num_classes, normalized=self.normalized_modality_heads,
        dtype=self.dtype, name=f'head_{modality}')

  def _check(self, inputs: Mapping[str, Array]) -> None:
    if FUSED in self.modalities:
      raise ValueError(f'{FUSED!r} is reserved and cannot name a modality.')
    if len(self.encoders) != len(self.modalities):
      raise ValueError(
          f'{len(self.encoders)} encoders for modalities {self.modalities}.'
      )
    if self.fused_head.num_classes != self.num_classes:
      raise ValueError(
          f'fused_head has {self.fused_head.num_classes} classes, expected '
          f'{self.num_classes}.'
      )
    missing = [m for m in self.modalities if m not in inputs]
    if missing:
      raise KeyError(
          f'Inputs are missing modalities {missing}; present: '
          f'{sorted(inputs)}; the model needs {list(self.modalities)}.'
      )

  @nn.compact
  def __call__(
      self, inputs: Mapping[str, Array], *, train: bool
  ) -> dict[str, dict[str, Array]]:
    if self.only_head is not None:
      return self._only_head(inputs, train=train)
    self._check(inputs)
    encoded = {
        m: self._encoder(i, m)(inputs[m], train=train)
        for i, m in enumerate(self.modalities)
    }
    if self.shared_head:
      return self._shared_head(encoded, train=train)
    # Module attributes are bound under their attribute names: 'fusion' and
    # 'fused_head'.
    if isinstance(self.fusion, MidFusion):
      fused, features = self.fusion(encoded, train=train)
    else:
      fused, features = self.fusion(encoded, train=train), encoded
    logits = {FUSED: self.fused_head(fused, train=train)}
    if self.modality_heads:
      for m in self.modalities:
        logits[m] = self._modality_head(m)(features[m], train=train)
    return _float32({'logits': logits,
                     'features': {**features, FUSED: fused}})

  def _shared_head(self, encoded: Mapping[str, Array], *, train: bool):
    widths = {m: z.shape[-1] for m, z in encoded.items()}
    if len(set(widths.values())) != 1:
      raise ValueError(
          'config.model.shared_head=True classifies every modality with one '
          f'head; the encoders give features of widths {widths}.')
    weights = self.shared_head_fusion_weights
    if weights and len(weights) != len(self.modalities):
      raise ValueError(
          f'config.model.shared_head_fusion_weights={tuple(weights)} needs '
          f'one weight per modality {list(self.modalities)}.')
    head = ClassifierHead(self.num_classes, dtype=self.dtype,
                          name='shared_head')
    logits = _float32({m: head(encoded[m], train=train)
                       for m in self.modalities})
    per_modality = [logits[m] for m in self.modalities]
    if weights:
      fused = sum(a * o for a, o in zip(weights, per_modality, strict=True))
    else:
      fused = mla_fusion.entropy_weighted_fusion(per_modality)
    return {'logits': {FUSED: fused, **logits},
            'features': _float32(dict(encoded))}

  def _only_head(self, inputs: Mapping[str, Array], *, train: bool):
    m = self.only_head
    if self.head_parameters().get(m) is None:
      raise ValueError(
          f'only_head={m!r}: that head\'s loss is not confined to one '
          f'encoder in this model (heads {list(self.head_parameters())}).')
    if m not in inputs:
      raise KeyError(f'Inputs are missing modality {m!r}; present: '
                     f'{sorted(inputs)}.')
    index = self.modalities.index(m)
    features = self._encoder(index, m)(inputs[m], train=train)
    return _float32({'logits': {m: self._modality_head(m)(features,
                                                          train=train)},
                     'features': {m: features}})

  def head_model(self, head: str) -> 'MultiModalClassifier | None':
    """This model cut down to what one head's loss reaches, or None.

    Algorithm 1 of G-Blend trains each head's model alone; with late
    fusion, modality m's model is ``encoder_<m>`` and ``head_<m>``
    (`head_parameters`). Its copy need not run the other encoders: this
    model, applied to the full parameters, runs those two parts only and
    gives the same head-m logits as the whole model.

    Args:
      head: a head name of this model.

    Returns:
      The restricted model, or None for the fused head and for heads whose
      loss may reach any parameter (mid fusion, a shared head).
    """
    if self.shared_head or self.only_head is not None:
      return None
    if self.head_parameters().get(head) is None:
      return None
    return self.clone(only_head=head)

  def head_parameters(self) -> dict[str, tuple[str, ...] | None]:
    """The top-level parameter subtrees each head's loss reaches.

    With late fusion, modality m's head classifies encoder m's features
    only, so its loss reaches ``encoder_<m>`` and ``head_<m>`` and nothing
    else; the fused head's loss reaches every parameter. Mid fusion mixes
    the modalities inside the encoders, so no head is confined. What
    `gblend_jax.blending.per_loss.per_loss_grads` takes as ``own_params``
    (in head order) to compute all per-loss gradients in two backward
    passes.

    Returns:
      ``{head: keys or None}`` for every head (``'fused'`` and, with
      ``modality_heads``, each modality); None: the loss may reach any
      parameter.
    """
    late = not isinstance(self.fusion, MidFusion)
    groups = {FUSED: None}
    if self.modality_heads:
      for m in self.modalities:
        groups[m] = (f'encoder_{m}', f'head_{m}') if late else None
    return groups

  def classify_features(
      self, features: Mapping[str, Array], *, train: bool
  ) -> Array:
    """Late fusion and the fused head on given encoder features.

    What the fused logits would be for these per-modality features: the
    function whose per-modality decomposition OGM-GE needs
    (`gblend_jax.modulation.unimodal.unimodal_logits`). Call it with
    ``model.apply(variables, features, train=False,
    method=MultiModalClassifier.classify_features)``.

    Args:
      features: ``{m: [B, D_m]}``, e.g. ``outputs['features']`` of a call.
      train: Training mode of fusion and head (dropout).

    Returns:
      ``[B, num_classes]`` fused logits.

    Raises:
      ValueError: for mid fusion, whose fusion point lies inside the
        encoders, so per-modality encoder features do not determine it.
    """
    if self.shared_head:
      raise ValueError(
          'classify_features needs a fused head; this model has a shared '
          'head (model.shared_head=True), whose logits are per modality.')
    if isinstance(self.fusion, MidFusion):
      raise ValueError(
          'classify_features needs late fusion; this model fuses in the '
          f'middle of its encoders ({type(self.fusion).__name__}).'
      )
    fused = self.fusion(features, train=train)
    return _float32(self.fused_head(fused, train=train))


def _float32(tree: Any) -> Any:
  """Casts the floating arrays of `tree` to float32 (the model's outputs
  under a lower computation dtype)."""
  if isinstance(tree, Mapping):  # Keeps the keys' order (tree.map sorts).
    return {k: _float32(v) for k, v in tree.items()}
  return (tree.astype(jnp.float32)
          if jnp.issubdtype(tree.dtype, jnp.floating) else tree)
