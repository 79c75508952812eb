"""AGM (Li et al., ICCV 2023): adaptive gradient modulation by Shapley
mono-modal responses.

  agm     the pure pieces: `mono_modal_responses` (zero-padded passes),
          `agm_scores`, `strength_ratios`, `agm_coefficients`,
          `update_running_scores`, `gradient_scale`, `modulated_logits`;
          optax transforms `agm_statistics` (running scores in the optimiser
          state) and `clip_by_global_norm_if_exceeds` (the authors' clip)
  method  the trainer's `Method` for ``config.agm``
"""

from gblend_jax.agm.agm import AGMState
from gblend_jax.agm.agm import agm_coefficients
from gblend_jax.agm.agm import agm_scores
from gblend_jax.agm.agm import agm_statistics
from gblend_jax.agm.agm import clip_by_global_norm_if_exceeds
from gblend_jax.agm.agm import gradient_scale
from gblend_jax.agm.agm import modulated_logits
from gblend_jax.agm.agm import mono_modal_responses
from gblend_jax.agm.agm import strength_ratios
from gblend_jax.agm.agm import update_running_scores

__all__ = (
    'AGMState',
    'agm_coefficients',
    'agm_scores',
    'agm_statistics',
    'clip_by_global_norm_if_exceeds',
    'gradient_scale',
    'modulated_logits',
    'mono_modal_responses',
    'strength_ratios',
    'update_running_scores',
)
