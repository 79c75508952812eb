"""Gradient Blending (Wang, Tran, Feiszli, CVPR 2020).

  blend           `blend_weights` (Algorithm 1's weights), `gradient_blend`
                  (the optax transform of ``Σ_k w_k ∇L_k``)
  cheap_path      `gradient_blend_grads`: per-loss gradients only on the
                  estimating steps (for your own loop; the trainer's too)
  nnx_grads       the same for ``flax.nnx`` modules with state
  per_loss        `per_loss_grads`: every head's gradient in two backward
                  passes when the unimodal losses reach disjoint encoders
  ogr             O, ΔO, ΔG and OGR per head (Eqs. 1-2)
  gradient_space  Proposition 1's statistics estimated in gradient space
  estimation      Algorithm 1 driven from the trainer; offline/online schedule
  method          the trainer's `Method` for ``config.blend``
"""

from gblend_jax.blending import ogr
from gblend_jax.blending.blend import GradientBlendState
from gblend_jax.blending.blend import blend_weights
from gblend_jax.blending.blend import gradient_blend

__all__ = ('GradientBlendState', 'blend_weights', 'gradient_blend', 'ogr')
