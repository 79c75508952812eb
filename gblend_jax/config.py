"""The full default configuration of a training run.

Experiment configs (``experiments/configs/*.py``) start from `default_config`
and change what they need, so every key exists and every ``--config.x=...``
override on the command line is checked against it.
"""

import ml_collections

from gblend_jax import data
from gblend_jax import models
from gblend_jax.training import methods
from gblend_jax.training import optim


def default_config() -> ml_collections.ConfigDict:
  """Every key of a run, with defaults. See WORKSPACE.md for the modes.

  Each registered method (`gblend_jax.training.methods.METHOD_MODULES`)
  adds its block: ``blend`` (G-Blend, `gblend_jax.blending.method`),
  ``modulation`` (OGM-GE, `gblend_jax.modulation.method`) and ``longtail``
  (the bag of tricks, `gblend_jax.longtail.method`; the long-tailed training
  split itself is ``data.longtail``), ``mmpareto`` (MMPareto,
  `gblend_jax.mmpareto.method`) and ``reconboost`` (ReconBoost,
  `gblend_jax.reconboost.method`).
  """
  config = ml_collections.ConfigDict()
  config.data = data.default_data_config()
  config.model = models.default_model_config()
  config.optimizer = optim.default_optimizer_config()
  for block, defaults in methods.default_blocks().items():
    config[block] = defaults
  config.seed = 0  # Parameter initialisation and dropout.
  config.num_epochs = 10
  config.num_train_steps = -1  # When > 0, overrides num_epochs.
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0  # Also sets the checkpoint period.
  config.max_checkpoints_to_keep = 2
  # A step whose loss, gradient or parameters are not finite stops the run
  # (naming the step and the head); True skips it instead (the update is not
  # applied; counted as train_step/skipped_steps and in results.json).
  config.skip_nonfinite_steps = False
  # With skip_nonfinite_steps: the run stops (naming the count) once more
  # than this fraction of its steps (num_train_steps or the epochs' steps)
  # have been skipped.
  config.max_skipped_fraction = 0.1
  # Comma-separated config keys (or blocks, e.g. 'optimizer') a rerun may
  # change when it resumes a work directory's checkpoints, e.g.
  # 'num_train_steps,num_epochs' to extend a run. Any other difference from
  # the recorded config.json is refused (see WORKSPACE.md).
  config.resume_allowed_changes = ''
  # Held-out metric that picks the best checkpoint (and early stopping).
  config.best_metric = 'holdout/fused/accuracy'
  # Stop after this many evaluations without a better best_metric; 0: never.
  config.early_stopping_patience = 0
  # Pre-training baseline: modality -> work directory of a single-modality
  # run whose `encoder_<modality>` initialises this model's encoder.
  config.init_encoders = ml_collections.ConfigDict()
  # Train metrics in eval mode are measured on this many training examples
  # (the first ones in the split's fixed order); 0 for all.
  config.eval_train_examples = 0
  return config
