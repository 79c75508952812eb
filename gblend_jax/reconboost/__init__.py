"""ReconBoost (Hua et al., ICML 2024): alternating modality learners,
boosted against the ensemble of the others, with a global rectification.

  boosting   `reconcilement_loss` (phase 1's loss of the stage's learner),
             `ensemble_logits` (``β Σ f_j`` over the ensemble's members,
             one left out), `rectification_loss` (phase 2)
  schedule   `StageSchedule` (which phase a step is in, who is in the
             ensemble), `fresh_opt_state` (a new optimiser's state on the
             same learning-rate schedule), `phase_sq_norm` (the L2 of the
             parameters a phase trains)
  method     the trainer's `Method` for ``config.reconboost``

The model is `gblend_jax.models.ensemble.SharedHeadEnsemble`
(``model.fusion='ensemble'``).
"""

from gblend_jax.reconboost.boosting import ensemble_logits
from gblend_jax.reconboost.boosting import reconcilement_loss
from gblend_jax.reconboost.boosting import rectification_loss
from gblend_jax.reconboost.schedule import RECTIFY
from gblend_jax.reconboost.schedule import Phase
from gblend_jax.reconboost.schedule import StageSchedule
from gblend_jax.reconboost.schedule import fresh_opt_state
from gblend_jax.reconboost.schedule import phase_sq_norm

__all__ = (
    'RECTIFY',
    'Phase',
    'StageSchedule',
    'ensemble_logits',
    'fresh_opt_state',
    'phase_sq_norm',
    'reconcilement_loss',
    'rectification_loss',
)
