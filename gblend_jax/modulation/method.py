"""OGM-GE in the trainer: the ``config.modulation`` block as a `Method`.

On-the-fly gradient modulation (Peng, Wei, Deng, Wang, Hu, "Balanced
Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022) needs,
in every training step, each modality's score ``s_m``: the true-class softmax
probability of its unimodal logits (its share of the fused logits, see
`gblend_jax.modulation.unimodal`), summed over the batch. `Modulation`
computes those scores from a `MultiModalClassifier`'s outputs in the step
and chains the `gblend_jax.modulation.ogm.ogm_ge` transform that consumes
them before the optimiser.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gblend_jax import plots
from gblend_jax.models.builder import MID_FUSIONS
from gblend_jax.modulation import ogm
from gblend_jax.modulation import unimodal
from gblend_jax.training import methods

Array = jax.Array

# none: plain training; ogm: coefficients only; ogm_ge: coefficients and
# Gaussian noise with each gradient tensor's standard deviation.
MODULATION_METHODS = ('none', 'ogm', 'ogm_ge')


def default_modulation_config() -> ml_collections.ConfigDict:
  """The ``config.modulation`` block.

  Keys:
    method: One of ``MODULATION_METHODS``.
    alpha: α of ``k_u = 1 - tanh(α ρ_u)`` (official: 0.8 CREMA-D, 0.1
      VGGSound).
    start_epoch, end_epoch: Active window ``[start_epoch, end_epoch)`` in
      epochs, half-open; ``end_epoch < 0`` (the default) runs to the end
      of training. The official ``modulation_starts``/``modulation_ends``
      are inclusive at both ends (``starts <= epoch <= ends``, defaults 0
      and 50 of 100 epochs), which is ``start_epoch=0, end_epoch=51`` here.
    modulated: Which encoder tensors are modulated (a key of
      `gblend_jax.modulation.ogm.MODULATED`): ``'conv_kernels'`` (4-D, the
      official code's choice), ``'matrices'`` (every tensor with more than
      one dimension; the choice for MLP encoders) or ``'all'``.
    noise_generator: The PRNG of OGM-GE's noise, ``'threefry'`` (JAX's
      default) or ``'rbg'`` (cheaper on accelerators; same distribution).
    noise_dtype: ``'float32'`` or ``'bfloat16'``: the dtype the standard
      normals are drawn in (see `gblend_jax.modulation.ogm.ogm_ge`).
  """
  return ml_collections.ConfigDict({
      'method': 'none',
      'alpha': 0.8,
      'start_epoch': 0.0,
      'end_epoch': -1.0,
      'modulated': 'conv_kernels',
      'noise_generator': 'threefry',
      'noise_dtype': 'float32',
  })


def check_modulation_config(config: ml_collections.ConfigDict) -> None:
  """Rejects a bad ``config.modulation`` before any training.

  Args:
    config: The run config.

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  block = config.modulation
  if block.method not in MODULATION_METHODS:
    raise ValueError(
        f'Unknown config.modulation.method={block.method!r}; valid: '
        f'{list(MODULATION_METHODS)}.'
    )
  if block.method == 'none':
    return
  if block.alpha < 0:
    raise ValueError(
        f'config.modulation.alpha={block.alpha} must be >= 0.'
    )
  if block.modulated not in ogm.MODULATED:
    raise ValueError(
        f'Unknown config.modulation.modulated={block.modulated!r}; valid: '
        f'{sorted(ogm.MODULATED)}.'
    )
  if block.noise_generator not in ogm.NOISE_GENERATORS:
    raise ValueError(
        'Unknown config.modulation.noise_generator='
        f'{block.noise_generator!r}; valid: {list(ogm.NOISE_GENERATORS)}.'
    )
  if block.noise_dtype not in ('float32', 'bfloat16'):
    raise ValueError(
        f'Unknown config.modulation.noise_dtype={block.noise_dtype!r}; '
        "valid: ['float32', 'bfloat16']."
    )
  if block.start_epoch < 0 or (
      block.end_epoch >= 0 and block.end_epoch <= block.start_epoch
  ):
    raise ValueError(
        'config.modulation window [start_epoch, end_epoch) = '
        f'[{block.start_epoch}, {block.end_epoch}) is empty or reversed; '
        'need 0 <= start_epoch < end_epoch (end_epoch < 0: to the end).'
    )
  if config.model.fusion in MID_FUSIONS:
    raise ValueError(
        f'config.modulation.method={block.method!r} needs late fusion; '
        f'config.model.fusion={config.model.fusion!r} fuses inside the '
        'encoders, where unimodal logits are not defined.'
    )


def build_transform(
    config: ml_collections.ConfigDict,
    modalities: Sequence[str],
    steps_per_epoch: int,
) -> optax.GradientTransformationExtraArgs | None:
  """The `ogm.ogm_ge` transform that ``config.modulation`` asks for.

  Args:
    config: The run config.
    modalities: The model's modalities in fusion order (the order of the
      scores).
    steps_per_epoch: Optimiser steps per epoch, to turn the window's epochs
      into steps.

  Returns:
    The transform to chain before the optimiser, or None for
    ``method='none'``.
  """
  block = config.modulation
  if block.method == 'none':
    return None
  if len(modalities) < 2:
    raise ValueError(
        f'config.modulation.method={block.method!r} balances several '
        f'modalities; the data have {list(modalities)}.'
    )
  start = int(round(block.start_epoch * steps_per_epoch))
  end = (
      None if block.end_epoch < 0
      else int(round(block.end_epoch * steps_per_epoch))
  )
  return ogm.ogm_ge(
      block.alpha,
      param_labels=ogm.label_encoders(tuple(modalities)),
      noise=block.method == 'ogm_ge',
      modulated=block.modulated,
      window=(start, end),
      modalities=tuple(modalities),
      seed=config.seed,
      noise_generator=block.noise_generator,
      noise_dtype=jnp.dtype(block.noise_dtype),
  )


def make_update_args(
    model: nn.Module, modalities: Sequence[str]
):
  """The train step's hook that hands OGM-GE its scores.

  Args:
    model: The classifier.
    modalities: Fusion order (the order of ``scores``).

  Returns:
    ``update_args(params, batch_stats, outputs, batch) -> (extra_args,
    metrics)``: ``{'scores': [M]}`` for ``tx.update`` and the per-modality
    scores as ``ogm/score/<m>`` (divided by the batch size: a mean
    true-class probability, comparable across batch sizes).
  """

  def update_args(params, batch_stats, outputs, batch):
    variables = {'params': params}
    if batch_stats:
      variables['batch_stats'] = batch_stats
    features = jax.lax.stop_gradient(outputs['features'])
    logits = unimodal.classifier_unimodal_logits(
        model, variables, features, modalities)
    scores = ogm.ogm_scores(logits, batch['label'], modalities)
    batch_size = batch['label'].shape[0]
    metrics = {
        f'ogm/score/{m}': scores[i] / batch_size
        for i, m in enumerate(modalities)
    }
    return {'scores': scores}, metrics

  return update_args


def state_metrics(
    opt_state: optax.OptState, modalities: Sequence[str]
) -> dict[str, Array]:
  """ρ, the coefficients and whether the window was open at the last
  update, as ``ogm/...`` metrics."""
  ratios = optax.tree.get(opt_state, 'ratios')
  coefficients = optax.tree.get(opt_state, 'coefficients')
  out = {'ogm/active': optax.tree.get(opt_state, 'active').astype(jnp.float32)}
  for i, m in enumerate(modalities):
    out[f'ogm/ratio/{m}'] = ratios[i]
    out[f'ogm/coefficient/{m}'] = coefficients[i]
  return out


class Modulation(methods.Method):
  """OGM / OGM-GE (``config.modulation``) in the trainer.

  Chains `ogm.ogm_ge` before the optimiser, hands it each step's scores
  from the forward pass (`make_update_args`), logs ``ogm/...`` metrics and
  draws ``ogm.png`` at the end.
  """

  block = 'modulation'
  metric_prefix = 'ogm/'
  default_config = staticmethod(default_modulation_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    check_modulation_config(config)

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return config.modulation.method != 'none'

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    del config
    return frozenset({'gradient_transform', 'modality_scores'})

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.modalities = tuple(run.modalities)

  def transform(self) -> optax.GradientTransformation | None:
    return build_transform(self.config, self.modalities,
                           self.run.steps_per_epoch)

  def step_hooks(self) -> methods.StepHooks:
    modalities = self.modalities
    return methods.StepHooks(
        update_args=make_update_args(self.run.model, modalities),
        opt_state_metrics=lambda s: state_metrics(s, modalities),
    )

  def draw_figures(self, workdir: str) -> list[str]:
    path = plots.plot_modulation(workdir, self.modalities)
    return [path] if path else []


METHOD = Modulation
