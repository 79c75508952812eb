"""MMPareto (Wei & Hu, ICML 2024): Pareto-combined joint and unimodal
gradients per encoder.

  transform  `mmpareto_update` (one encoder's rule), `mmpareto` (the optax
             transform over stacked per-loss gradients)
  method     the trainer's `Method` for ``config.mmpareto``
"""

from gblend_jax.mmpareto.transform import MMParetoState
from gblend_jax.mmpareto.transform import mmpareto
from gblend_jax.mmpareto.transform import mmpareto_update
from gblend_jax.mmpareto.transform import pareto_weights

__all__ = ('MMParetoState', 'mmpareto', 'mmpareto_update', 'pareto_weights')
