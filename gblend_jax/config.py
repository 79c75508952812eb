"""The full default configuration of a training run.

Experiment configs (``experiments/configs/*.py``) start from `default_config`
and change what they need, so every key exists and every ``--config.x=...``
override on the command line is checked against it.
"""

import ml_collections

from gblend_jax import data
from gblend_jax import models
from gblend_jax.modulation import method as modulation
from gblend_jax.training import optim
from gblend_jax.longtail import method as longtail_hooks

# How the per-head losses are combined (G-Blend, Wang et al. CVPR 2020):
#   none      naive training: the fused head's loss only (the baseline);
#   fixed     sum_i w_i L_i with blend.weights;
#   offline   Algorithm 2: Algorithm 1 once from the initial model;
#   online    Algorithm 3: Algorithm 1 at the start of every super-epoch;
#   gradient  Proposition 1 estimated in gradient space inside the step.
BLEND_MODES = ('none', 'fixed', 'offline', 'online', 'gradient')


def default_config() -> ml_collections.ConfigDict:
  """Every key of a run, with defaults. See WORKSPACE.md for the modes."""
  config = ml_collections.ConfigDict()
  config.data = data.default_data_config()
  config.model = models.default_model_config()
  config.optimizer = optim.default_optimizer_config()
  config.blend = ml_collections.ConfigDict({
      'mode': 'none',  # One of BLEND_MODES.
      # One weight per head in head order (modalities, then fused): the
      # weights of 'fixed'; the starting weights of the other modes (default
      # uniform).
      'weights': (),
      # Algorithm 1: epochs of training each head's model (offline: N;
      # online: n, the super-epoch length).
      'estimate_epochs': 5.0,
      # Online: epochs of training with the starting weights before the
      # first estimate.
      'warmup_epochs': 0.0,
      # Algorithm 1 measures 'loss' or 'accuracy' (the paper allows both).
      'measure': 'loss',
      # Size of the fixed training subset on which L^T is measured; 0: as
      # many examples as the held-out split.
      'train_subset_size': 0,
      'eps': 1e-6,  # Lower clip of O_i (Algorithm 1) and sigma_k^2.
      # Gradient mode: re-estimate every this many steps (between them one
      # backward pass of the weighted loss), EMA decay of the statistics.
      # Every 10 steps costs 1.07 x naive training on the mfeat MLP, every
      # step 2.3 x (experiments/results/benchmark_cpu.md); on the mfeat
      # grid both reach the same accuracy (experiments/results/
      # gblend_mfeat.md, rows gradient and gradient_every_step).
      'estimate_every_steps': 10,
      'decay': 0.9,
  })
  # OGM-GE (Peng et al. CVPR 2022): see gblend_jax/modulation/method.py.
  config.modulation = modulation.default_modulation_config()
  # Long-tailed recognition (Zhang et al. AAAI 2021): losses, DRW, samplers,
  # DRS, mixup, shot metrics; see gblend_jax/longtail/method.py. The
  # long-tailed training split itself is data.longtail.
  config.longtail = longtail_hooks.default_longtail_config()
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
