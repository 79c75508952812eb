"""Model configuration and construction from an ``ml_collections`` config."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from gblend_jax.models import ensemble
from gblend_jax.models import fusion as late
from gblend_jax.models import mid_fusion as mid
from gblend_jax.models.encoders import ENCODERS
from gblend_jax.models.encoders import build_encoder
from gblend_jax.models.encoders import encoder_fields
from gblend_jax.models.heads import ClassifierHead
from gblend_jax.models.multimodal import MultiModalClassifier

LATE_FUSIONS = ('concat', 'sum', 'film', 'gated')
MID_FUSIONS = ('mid_concat', 'se_gate', 'nl_gate')
# The learners' sum with one shared head (ReconBoost's model).
ENSEMBLE_FUSIONS = ('ensemble',)
FUSIONS = LATE_FUSIONS + MID_FUSIONS + ENSEMBLE_FUSIONS
# Computation dtypes of ``model.dtype`` (parameters stay float32).
DTYPES = ('float32', 'bfloat16')

# Per-example input ranks each image encoder accepts (MLPs take any rank).
_EXAMPLE_RANKS = {
    'cifar_resnet': (2, 3),
    'resnet10': (2, 3),
    'resnet18': (2, 3),
    'resnet50': (2, 3),
    'frame_resnet18': (4,),
}


def default_model_config() -> ml_collections.ConfigDict:
  """Returns the model config with every key the builder reads.

  Keys:
    encoder.name: Encoder of every modality (a key of ``ENCODERS``).
    encoder.<name>: Arguments of that encoder, one block per encoder, so
      that ``--config.model.encoder.name=cifar_resnet`` needs no clean-up.
    encoders: Per-modality overrides, e.g. ``{'pix': {'name':
      'cifar_resnet', 'depth': 20}}``: an optional ``name`` and arguments
      that replace those of the ``encoder.<name>`` block.
    fusion: One of ``FUSIONS``: late ``concat | sum | film | gated`` or mid
      ``mid_concat | se_gate | nl_gate`` (mid fusion needs MLP encoders), or
      ``ensemble``: ``β Σ_m H(z_m)`` with the fused head's layers as one
      head ``H`` shared by the modalities (`ensemble.SharedHeadEnsemble`,
      ReconBoost's model; encoders of one output width).
    ensemble_beta: The initial β of ``ensemble`` (ReconBoost's
      ``boost_rate``, 1.0).
    fusion_dim: Projection width of ``sum``, ``film`` and ``gated``.
    mid_fusion_layer: For mid fusion, the number of MLP hidden layers below
      the fusion point (0 fuses the flattened inputs); the remaining layers
      form the upper part (for ``mid_concat``: one shared trunk with the
      widths of ``encoder.mlp.hidden_sizes``). Upper layers use the dropout
      rate of ``encoder.mlp``.
    fused_head: ``ClassifierHead`` arguments of the fused head (G-Blend: two
      FC layers, then the prediction layer).
    modality_heads: Whether to add a linear head per modality (G-Blend).
    normalized_heads: Whether every head's prediction layer (fused and
      per-modality) is a cosine classifier, ``heads.CosineDense``: features
      and class weights normalised, no bias, logits in [-1, 1]. LDAM's
      normalised classifier (Cao et al., NeurIPS 2019; the official code
      uses it with LDAM, s = 30); a scale-free loss such as plain CE
      trains poorly on it. With late fusion the cosine of the fused
      features is not a sum of per-modality parts.
    dtype: Computation dtype of every encoder, fusion and head, one of
      ``DTYPES``: ``'bfloat16'`` is mixed precision as on TPUs and recent
      GPUs (parameters, optimiser state and BatchNorm statistics stay
      float32; the model's logits and features come back in float32, so
      losses and method statistics are float32).
    shared_head: One linear head shared by all modalities in place of the
      fusion, the fused head and the modality heads (MLA, Zhang et al.,
      CVPR 2024; `MultiModalClassifier`): each modality's logits are
      ``h(z_m)``, the fused logits their per-sample entropy-weighted
      fusion. Needs ``modality_heads=True`` (the trainer's per-modality
      heads), encoders of one feature width, no mid fusion, no
      ``normalized_heads``.
    shared_head_fusion_weights: With ``shared_head``, fixed fusion weights
      ``Σ_m a_m h(z_m)``, one per modality (MLA's code: 0.55, 0.45); empty:
      the entropy weights.
  """
  resnet = dict(num_filters=64, small_inputs=False)
  return ml_collections.ConfigDict(
      dict(
          encoder=dict(
              name='mlp',
              mlp=dict(hidden_sizes=(256,), dropout_rate=0.0),
              cifar_resnet=dict(depth=32, width=16),
              resnet10=dict(resnet),
              resnet18=dict(resnet),
              resnet50=dict(resnet),
              frame_resnet18=dict(resnet),
          ),
          encoders={},
          fusion='concat',
          fusion_dim=256,
          mid_fusion_layer=1,
          ensemble_beta=1.0,
          fused_head=dict(
              hidden_sizes=(256, 256), dropout_rate=0.0, input_dropout_rate=0.0
          ),
          modality_heads=True,
          normalized_heads=False,
          dtype='float32',
          shared_head=False,
          shared_head_fusion_weights=(),
      )
  )


def _encoder_spec(config, modality: str) -> tuple[str, dict[str, Any]]:
  override = dict(config.encoders.get(modality, {}))
  name = override.pop('name', config.encoder.name)
  if name not in ENCODERS:
    raise ValueError(
        f'Unknown encoder {name!r} for {modality!r}; valid names: '
        f'{sorted(ENCODERS)}.'
    )
  return name, {**config.encoder.get(name, {}), **override}


def _encoder(name: str, kwargs: Mapping[str, Any], dtype) -> nn.Module:
  """`build_encoder` with the computation dtype, for encoders that take
  one (a registered encoder without a ``dtype`` field computes in float32
  only)."""
  if 'dtype' in encoder_fields(name):
    return build_encoder(name, **{'dtype': dtype, **kwargs})
  if dtype != jnp.float32:
    raise ValueError(
        f'config.model.dtype={jnp.dtype(dtype).name!r}, but encoder {name!r} '
        'has no dtype field to compute in it; give it one (see '
        'models/encoders.py) or use float32.')
  return build_encoder(name, **kwargs)


def _check_rank(name: str, modality: str, shape: tuple[int, ...]) -> None:
  ranks = _EXAMPLE_RANKS.get(name)
  if ranks and len(shape) not in ranks:
    raise ValueError(
        f'Encoder {name!r} takes examples of rank {ranks}; modality '
        f'{modality!r} has shape {shape}.'
    )


def _mid_fusion(config, specs, modalities: tuple[str, ...], dtype):
  """Splits MLP encoders at ``mid_fusion_layer``; returns (lower, fusion)."""
  layer = config.mid_fusion_layer
  lower, upper = [], []
  for m, (name, kwargs) in zip(modalities, specs, strict=True):
    if name != 'mlp':
      raise ValueError(f'Mid fusion needs MLP encoders; {m!r} uses {name!r}.')
    hidden_sizes = tuple(kwargs.get('hidden_sizes', ()))
    if not 0 <= layer <= len(hidden_sizes):
      raise ValueError(
          f'mid_fusion_layer={layer} outside [0, {len(hidden_sizes)}] for '
          f'{m!r} with hidden_sizes {hidden_sizes}.'
      )
    kwargs = {**kwargs, 'hidden_sizes': hidden_sizes[:layer]}
    lower.append(_encoder(name, kwargs, dtype))
    upper.append(hidden_sizes[layer:])
  dropout_rate = config.encoder.mlp.dropout_rate
  if config.fusion == 'mid_concat':
    trunk = tuple(config.encoder.mlp.hidden_sizes)[layer:]
    fusion = mid.MidConcatFusion(modalities, trunk, dropout_rate,
                                 dtype=dtype)
  else:
    module = {'se_gate': mid.SEGateFusion, 'nl_gate': mid.NLGateFusion}
    fusion = module[config.fusion](
        modalities,
        upper_hidden_sizes=tuple(upper),
        dropout_rate=dropout_rate,
        dtype=dtype,
    )
  return lower, fusion


def _late_fusion(config, modalities: tuple[str, ...], dtype) -> nn.Module:
  if config.fusion == 'concat' or len(modalities) == 1:
    return late.ConcatFusion(modalities)
  module = {
      'sum': late.SumFusion,
      'film': late.FiLMFusion,
      'gated': late.GatedFusion,
  }[config.fusion]
  return module(modalities, fusion_dim=config.fusion_dim, dtype=dtype)


def build_model(
    model_config: ml_collections.ConfigDict,
    *,
    modalities: Mapping[str, tuple[int, ...]],
    num_classes: int,
) -> MultiModalClassifier | ensemble.SharedHeadEnsemble:
  """Builds the classifier described by ``model_config``.

  With a single modality the fusion is the identity (``ConcatFusion``) and
  the encoder is whole, whatever ``fusion`` says, so the same config also
  builds the single-modality networks that G-Blend's weight estimation and
  the baselines need.

  Args:
    model_config: A config like ``default_model_config()``.
    modalities: Per-example input shape of each modality, in fusion order.
    num_classes: Number of classes of every head.

  Returns:
    An unbound ``MultiModalClassifier``.

  Raises:
    ValueError: On unknown encoder or fusion names or dtypes, unknown
      encoder arguments, or input shapes an encoder cannot take.
  """
  if model_config.fusion not in FUSIONS:
    raise ValueError(
        f'Unknown fusion {model_config.fusion!r}; valid names: {list(FUSIONS)}.'
    )
  dtype_name = model_config.get('dtype', 'float32')
  if dtype_name not in DTYPES:
    raise ValueError(
        f'config.model.dtype={dtype_name!r} is not a computation dtype; '
        f'valid: {list(DTYPES)}.')
  dtype = jnp.dtype(dtype_name)
  names = tuple(modalities)
  if not names:
    raise ValueError('build_model needs at least one modality.')
  specs = [_encoder_spec(model_config, m) for m in names]
  for m, (name, _) in zip(names, specs, strict=True):
    _check_rank(name, m, tuple(modalities[m]))
  head = model_config.fused_head
  normalized = bool(model_config.get('normalized_heads', False))
  if model_config.fusion in ENSEMBLE_FUSIONS and len(names) > 1:
    if dtype != jnp.float32:
      raise ValueError(
          f'config.model.dtype={dtype_name!r} is not supported with '
          "config.model.fusion='ensemble' yet; use 'float32'.")
    return ensemble.SharedHeadEnsemble(
        modalities=names,
        encoders=tuple(build_encoder(name, **kwargs) for name, kwargs in specs),
        head=ClassifierHead(
            num_classes,
            hidden_sizes=tuple(head.hidden_sizes),
            dropout_rate=head.dropout_rate,
            input_dropout_rate=head.input_dropout_rate,
            normalized=normalized,
        ),
        num_classes=num_classes,
        modality_heads=model_config.modality_heads,
        beta_init=model_config.ensemble_beta,
    )
  if model_config.fusion in MID_FUSIONS and len(names) > 1:
    encoders, fusion = _mid_fusion(model_config, specs, names, dtype)
  else:
    encoders = [_encoder(name, kwargs, dtype) for name, kwargs in specs]
    fusion = _late_fusion(model_config, names, dtype)
  return MultiModalClassifier(
      modalities=names,
      encoders=tuple(encoders),
      fusion=fusion,
      fused_head=ClassifierHead(
          num_classes,
          hidden_sizes=tuple(head.hidden_sizes),
          dropout_rate=head.dropout_rate,
          input_dropout_rate=head.input_dropout_rate,
          normalized=normalized,
          dtype=dtype,
      ),
      num_classes=num_classes,
      modality_heads=model_config.modality_heads,
      normalized_modality_heads=normalized,
      dtype=dtype,
      shared_head=bool(model_config.get('shared_head', False)),
      shared_head_fusion_weights=tuple(
          model_config.get('shared_head_fusion_weights', ())),
  )


def has_unimodal_shares(model_config: ml_collections.ConfigDict) -> bool:
  """Whether the fused logits split into per-modality shares (late fusion
  into a fused head; `gblend_jax.modulation.unimodal`)."""
  return (model_config.fusion not in MID_FUSIONS
          and not model_config.get('shared_head', False))

