"""PMR (Fan et al., CVPR 2023): Prototypical Modal Rebalance.

  prototypes  class prototypes (`class_sums`, `prototypes_from_sums`,
              `class_prototypes`, `update_prototypes`), the prototype logits and
              the prototypical cross-entropy (`prototype_logits`,
              `prototype_loss`, `prototype_scores`), the switch
              (`pmr_coefficients`) and the added loss (`rebalance_loss`)
  method      the trainer's `Method` for ``config.pmr``
"""

from gblend_jax.pmr.prototypes import class_prototypes
from gblend_jax.pmr.prototypes import class_sums
from gblend_jax.pmr.prototypes import pmr_coefficients
from gblend_jax.pmr.prototypes import prototype_logits
from gblend_jax.pmr.prototypes import prototype_loss
from gblend_jax.pmr.prototypes import prototype_scores
from gblend_jax.pmr.prototypes import prototypes_from_sums
from gblend_jax.pmr.prototypes import rebalance_loss
from gblend_jax.pmr.prototypes import update_prototypes

__all__ = (
    'class_sums',
    'pmr_coefficients',
    'prototype_logits',
    'prototype_loss',
    'prototype_scores',
    'class_prototypes',
    'prototypes_from_sums',
    'rebalance_loss',
    'update_prototypes',
)
