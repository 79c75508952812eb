"""On-the-fly gradient modulation (OGM-GE, Peng et al., CVPR 2022).

  ogm       `ogm_scores`, `ogm_ratios`, `ogm_coefficients`, `ogm_ge` (optax)
  unimodal  `unimodal_logits`: each modality's share of the fused logits
  method    the trainer's `Method` for ``config.modulation``
"""

from gblend_jax.modulation.ogm import OGMGEState
from gblend_jax.modulation.ogm import label_encoders
from gblend_jax.modulation.ogm import ogm_coefficients
from gblend_jax.modulation.ogm import ogm_ge
from gblend_jax.modulation.ogm import ogm_ratios
from gblend_jax.modulation.ogm import ogm_scores
from gblend_jax.modulation.unimodal import shapley_weights
from gblend_jax.modulation.unimodal import unimodal_logits

__all__ = (
    'OGMGEState',
    'label_encoders',
    'ogm_coefficients',
    'ogm_ge',
    'ogm_ratios',
    'ogm_scores',
    'shapley_weights',
    'unimodal_logits',
)
