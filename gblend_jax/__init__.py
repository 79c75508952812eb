"""gblend_jax: balanced training of multi-modal and long-tailed classifiers.

The library's public surface. Submodules:

  gblend_jax.models         encoders, fusion modules, heads, `build_model`
  gblend_jax.data           data sets, held-out splits, grain input pipelines
  gblend_jax.losses         per-head losses and their weighted sum
  gblend_jax.metrics        top-k accuracy, per-head metric sums
  gblend_jax.optim          optimisers and schedules from a config
  gblend_jax.train          `train_and_evaluate`, the one training loop
  gblend_jax.checkpointing  orbax checkpoints of a run
  gblend_jax.config         `default_config`, every key of a run
  gblend_jax.blend          `blend_weights`, `gradient_blend` (G-Blend)
  gblend_jax.ogr            overfitting, generalisation and OGR per head
  gblend_jax.gradient_space Proposition 1's statistics in gradient space
  gblend_jax.ogm            `ogm_coefficients`, `ogm_ge` (OGM-GE)
  gblend_jax.unimodal       `unimodal_logits`: each modality's share of the
                            fused logits
  gblend_jax.modulation     OGM-GE in the trainer (config, scores)
"""

from gblend_jax import ogr
from gblend_jax.blend import blend_weights
from gblend_jax.blend import gradient_blend
from gblend_jax.config import default_config
from gblend_jax.ogm import ogm_coefficients
from gblend_jax.ogm import ogm_ge
from gblend_jax.unimodal import unimodal_logits

__all__ = (
    'blend_weights',
    'default_config',
    'gradient_blend',
    'ogm_coefficients',
    'ogm_ge',
    'ogr',
    'train_and_evaluate',
    'unimodal_logits',
)


def __getattr__(name: str):
  """Imports the trainer on first use: code that reuses only the optax
  transforms does not pay for the data and checkpoint stack it pulls in."""
  if name == 'train_and_evaluate':
    from gblend_jax import train  # pylint: disable=g-import-not-at-top
    return train.train_and_evaluate
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
