"""MLA (Zhang, Yoon, Bansal, Yao, CVPR 2024): alternating unimodal steps
through one shared head, the head's gradient projection, and entropy-
weighted fusion at test time.

  projection   `head_gradient_projection` (optax), `update_projection`,
               `project_kernel_gradient`, `owm_alpha`
  alternating  `alternating_updates`: one optimiser step per modality
  fusion       `entropy_weighted_fusion`, `entropy_weights`,
               `prediction_entropy`
  method       the trainer's `Method` for ``config.mla``
"""

from gblend_jax.mla.alternating import alternating_updates
from gblend_jax.mla.alternating import merge_optimizer_state
from gblend_jax.mla.fusion import entropy_weighted_fusion
from gblend_jax.mla.fusion import entropy_weights
from gblend_jax.mla.fusion import prediction_entropy
from gblend_jax.mla.projection import ProjectionState
from gblend_jax.mla.projection import head_gradient_projection
from gblend_jax.mla.projection import owm_alpha
from gblend_jax.mla.projection import project_kernel_gradient
from gblend_jax.mla.projection import update_projection

__all__ = (
    'ProjectionState',
    'alternating_updates',
    'entropy_weighted_fusion',
    'entropy_weights',
    'head_gradient_projection',
    'merge_optimizer_state',
    'owm_alpha',
    'prediction_entropy',
    'project_kernel_gradient',
    'update_projection',
)
