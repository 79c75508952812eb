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
"""

from gblend_jax.config import default_config
from gblend_jax.train import train_and_evaluate

__all__ = (
    'default_config',
    'train_and_evaluate',
)
