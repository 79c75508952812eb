"""gblend_jax: balanced training of multi-modal and long-tailed classifiers.

The library's public surface. Each method family is a subpackage of the same
shape (its functions and optax transforms, and a ``method.py`` that plugs it
into the trainer):

  gblend_jax.blending    Gradient Blending: `blend_weights`, `gradient_blend`,
                         `ogr`, gradient-space statistics, Algorithm 1
  gblend_jax.modulation  OGM-GE: `ogm_ge`, `ogm_coefficients`, `ogm_ratios`,
                         `unimodal_logits`
  gblend_jax.longtail    long-tail tricks: losses, samplers, mixup, CAM
  gblend_jax.mmpareto    MMPareto: `mmpareto_update`, `mmpareto`
  gblend_jax.mla         MLA: `head_gradient_projection`,
                         `alternating_updates`, `entropy_weighted_fusion`
  gblend_jax.agm         AGM: `agm_coefficients`, `mono_modal_responses`
  gblend_jax.pmr         PMR: `pmr_prototypes`, `pmr_update_prototypes`,
                         `pmr_logits`, `pmr_loss`, `pmr_coefficients`
  gblend_jax.reconboost  ReconBoost: `reconcilement_loss`, `StageSchedule`,
                         `fresh_opt_state`
  gblend_jax.training    the trainer, steps, checkpoints, optimisers, metrics
  gblend_jax.models      encoders, fusion modules, heads, `build_model`
  gblend_jax.data        data sets, held-out splits, grain input pipelines
  gblend_jax.config      `default_config`, every key of a run
  gblend_jax.losses      per-head cross-entropy
  gblend_jax.metrics     top-k accuracy, per-head metric sums

Importing the package, or the optax transforms from it, pulls in jax, optax
and numpy only; the flax.nnx helpers (`nnx_gradient_blend_grads`,
`nnx_per_loss_grads`, `opt_state_value`) import flax.nnx, and
`default_config` and `train_and_evaluate` the training stack
(ml_collections, tfds, grain, orbax), on first use.
"""

from gblend_jax.agm.agm import agm_coefficients
from gblend_jax.agm.agm import mono_modal_responses
from gblend_jax.blending import ogr
from gblend_jax.blending.blend import blend_weights
from gblend_jax.blending.blend import gradient_blend
from gblend_jax.blending.cheap_path import BlendGrads
from gblend_jax.blending.cheap_path import gradient_blend_grads
from gblend_jax.blending.cheap_path import is_estimate_step
from gblend_jax.mla.alternating import alternating_updates
from gblend_jax.mla.fusion import entropy_weighted_fusion
from gblend_jax.mla.projection import head_gradient_projection
from gblend_jax.mmpareto.transform import mmpareto
from gblend_jax.mmpareto.transform import mmpareto_update
from gblend_jax.modulation.ogm import ogm_coefficients
from gblend_jax.modulation.ogm import ogm_ge
from gblend_jax.modulation.ogm import ogm_ratios
from gblend_jax.modulation.ogm import ogm_scores
from gblend_jax.modulation.unimodal import unimodal_logits
from gblend_jax.pmr.prototypes import class_prototypes as pmr_prototypes
from gblend_jax.pmr.prototypes import class_sums as pmr_class_sums
from gblend_jax.pmr.prototypes import pmr_coefficients
from gblend_jax.pmr.prototypes import prototype_logits as pmr_logits
from gblend_jax.pmr.prototypes import prototype_loss as pmr_loss
from gblend_jax.pmr.prototypes import prototype_scores as pmr_scores
from gblend_jax.pmr.prototypes import rebalance_loss as pmr_rebalance_loss
from gblend_jax.pmr.prototypes import update_prototypes as pmr_update_prototypes
from gblend_jax.reconboost.boosting import reconcilement_loss

__all__ = (
    'BlendGrads',
    'alternating_updates',
    'agm_coefficients',
    'blend_weights',
    'default_config',
    'entropy_weighted_fusion',
    'gradient_blend',
    'gradient_blend_grads',
    'head_gradient_projection',
    'is_estimate_step',
    'mmpareto',
    'mmpareto_update',
    'mono_modal_responses',
    'nnx_gradient_blend_grads',
    'nnx_per_loss_grads',
    'ogm_coefficients',
    'ogm_ge',
    'ogm_ratios',
    'ogm_scores',
    'ogr',
    'opt_state_value',
    'pmr_class_sums',
    'pmr_coefficients',
    'pmr_logits',
    'pmr_loss',
    'pmr_prototypes',
    'pmr_rebalance_loss',
    'pmr_scores',
    'pmr_update_prototypes',
    'reconcilement_loss',
    'train_and_evaluate',
    'unimodal_logits',
)


_NNX_NAMES = ('nnx_gradient_blend_grads', 'nnx_per_loss_grads',
              'opt_state_value')


def __getattr__(name: str):
  """Imports on first use: the training stack for `default_config` and
  `train_and_evaluate`, flax.nnx for the nnx helpers, so that code that
  reuses only the optax transforms pays for neither."""
  if name in _NNX_NAMES:
    from gblend_jax.blending import nnx_grads  # pylint: disable=g-import-not-at-top
    return getattr(nnx_grads, name)
  if name == 'train_and_evaluate':
    from gblend_jax.training import trainer  # pylint: disable=g-import-not-at-top
    return trainer.train_and_evaluate
  if name == 'default_config':
    from gblend_jax import config  # pylint: disable=g-import-not-at-top
    return config.default_config
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
