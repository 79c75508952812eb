"""Generic checks of a run config, before any training step is spent.

`check_run_config` needs no data and runs first; `check_against_data` runs
once the data set is loaded (batch sizes against split sizes, per-class
counts, the metric that picks the best checkpoint). Each method checks its
own block (`gblend_jax.training.methods.Method.check_config`) with
`require` and `finite_at_least`. Every error names the key, its value and
what is allowed.
"""

import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from gblend_jax.data import streaming

# The metrics evaluation measures for every head.
EVAL_METRICS = ('loss', 'accuracy', 'top5_accuracy')


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
  """Raises ``ValueError('config.<key>=<value> must be <allowed>.')``
  unless ``ok``."""
  if not ok:
    raise ValueError(f'config.{key}={value!r} must be {allowed}.')


def _flat(block: ml_collections.ConfigDict, prefix: str) -> dict[str, Any]:
  flat = {}
  for key, value in block.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def finite_at_least(value: Any, low: float) -> bool:
  """Whether ``value`` is a finite number (not a bool) ``>= low``."""
  return _number(value) and math.isfinite(value) and value >= low


def check_run_config(config: ml_collections.ConfigDict) -> None:
  """Rejects values no run can use; needs no data.

  Args:
    config: a run config (see `gblend_jax.config.default_config`).

  Raises:
    ValueError: naming the key, the value and what is allowed.
  """
  if config.num_train_steps <= 0:
    require(finite_at_least(config.num_epochs, 0)
             and config.num_epochs > 0, 'num_epochs', config.num_epochs,
             '> 0 (or set config.num_train_steps > 0)')
  require(finite_at_least(config.eval_every_epochs, 0), 'eval_every_epochs',
           config.eval_every_epochs, 'a number >= 0')
  require(isinstance(config.max_checkpoints_to_keep, int)
           and config.max_checkpoints_to_keep >= 1,
           'max_checkpoints_to_keep', config.max_checkpoints_to_keep,
           'an integer >= 1 (a run must keep a checkpoint to resume from)')
  require(isinstance(config.log_every_steps, int)
           and config.log_every_steps >= 1, 'log_every_steps',
           config.log_every_steps, 'an integer >= 1')
  limit = config.get('max_skipped_fraction', 0.0)
  require(finite_at_least(limit, 0) and limit <= 1, 'max_skipped_fraction',
           limit, 'in [0, 1]')
  for key in ('data.batch_size', 'data.eval_batch_size'):
    value = config[key.split('.')[0]][key.split('.')[1]]
    require(isinstance(value, int) and value >= 1, key, value,
             'an integer >= 1')
  require(isinstance(config.data.train_examples_per_class, int)
           and config.data.train_examples_per_class >= 0,
           'data.train_examples_per_class',
           config.data.train_examples_per_class, 'an integer >= 0 (0: all)')
  _check_seeds(config)
  _check_optimizer(config.optimizer)
  _check_model(config.model)
  for key, value in config.data.mismatched_modalities.items():
    require(finite_at_least(value, 0) and value <= 1,
             f'data.mismatched_modalities.{key}', value, 'in [0, 1]')
  streaming.check_streaming_config(config.data)


def _check_seeds(config: ml_collections.ConfigDict) -> None:
  for key, value in _flat(config, '').items():
    if key.rsplit('.', 1)[-1].endswith('seed'):
      require(isinstance(value, int) and not isinstance(value, bool)
               and value >= 0, key, value, 'an integer >= 0')


def _check_optimizer(block: ml_collections.ConfigDict) -> None:
  lr = block.learning_rate
  require(finite_at_least(lr, 0), 'optimizer.learning_rate', lr,
           'a finite number >= 0')
  for name in ('momentum', 'weight_decay', 'grad_clip_norm', 'warmup_epochs'):
    value = block[name]
    require(finite_at_least(value, 0), f'optimizer.{name}', value,
             'a finite number >= 0')
  require(finite_at_least(block.decay_factor, 0),
           'optimizer.decay_factor', block.decay_factor, 'a number >= 0')


def _check_model(block: ml_collections.ConfigDict) -> None:
  for key, value in _flat(block, 'model.').items():
    name = key.rsplit('.', 1)[-1]
    if name.endswith('dropout_rate'):
      require(finite_at_least(value, 0) and value < 1, key, value,
               'in [0, 1)')
    elif name.endswith(('hidden_sizes', '_dim', 'width', 'num_filters',
                        'depth')):
      values = value if isinstance(value, (tuple, list)) else (value,)
      require(all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                   for v in values), key, value,
               'made of integers >= 1 (a layer needs a unit)')
  if block.get('shared_head', False):
    # MLA's shared head replaces the fusion and every other head.
    require(block.modality_heads, 'model.modality_heads', block.modality_heads,
            'True with model.shared_head=True (each modality\'s logits are '
            'the shared head\'s, trained as the modality heads)')
    require(block.fusion in ('concat', 'sum', 'film', 'gated'),
            'model.fusion', block.fusion,
            'a late fusion with model.shared_head=True (mid fusion has no '
            'per-modality features to classify)')
    require(not block.normalized_heads, 'model.normalized_heads',
            block.normalized_heads,
            'False with model.shared_head=True (its head is linear)')
  weights = tuple(block.get('shared_head_fusion_weights', ()))
  require(all(finite_at_least(w, 0) for w in weights),
          'model.shared_head_fusion_weights', weights,
          'numbers >= 0, one per modality (empty: entropy weights)')


def check_against_data(
    config: ml_collections.ConfigDict, *, train_size: int,
    class_counts: Sequence[int],
) -> None:
  """Checks the config against the loaded data, before the first step.

  Args:
    config: the run config.
    train_size: examples of the training split as trained on.
    class_counts: examples per class of the training split (as loaded).

  Raises:
    ValueError: naming the key, the value and the data's size.
  """
  if config.data.batch_size > train_size:
    raise ValueError(
        f'config.data.batch_size={config.data.batch_size} is larger than the '
        f'training split ({train_size} examples): use a batch of at most '
        f'{train_size}.'
    )
  per_class = config.data.train_examples_per_class
  counts = np.asarray(class_counts)
  if per_class > 0 and config.data.longtail.profile == 'none':
    short = np.flatnonzero(counts < per_class)
    if short.size:
      raise ValueError(
          f'config.data.train_examples_per_class={per_class} is larger than '
          f'class(es) {short.tolist()} of the training split (smallest '
          f'{int(counts.min())} examples): use at most {int(counts.min())}, '
          'or 0 for all.'
      )


def check_best_metric(best_metric: str, heads: Sequence[str]) -> None:
  """Checks that ``config.best_metric`` names a measured held-out metric."""
  valid = [f'holdout/{h}/{m}' for h in heads for m in EVAL_METRICS]
  if best_metric not in valid:
    raise ValueError(
        f'config.best_metric={best_metric!r} is not measured; choose one of '
        f'{valid}.'
    )


def unimodal_heads(modalities: Sequence[str], late_fusion: bool
                   ) -> tuple[str, ...]:
  """The ``unimodal_<m>`` heads evaluation adds for a late-fusion model."""
  if late_fusion and len(modalities) > 1:
    return tuple(f'unimodal_{m}' for m in modalities)
  return ()


def check_skipped_fraction(
    skipped: int, total_steps: int, limit: float, good_step: int | None
) -> None:
  """Stops a run whose skipped steps pass ``config.max_skipped_fraction``.

  Args:
    skipped: non-finite steps skipped so far (``skip_nonfinite_steps``).
    total_steps: the run's length in steps.
    limit: ``config.max_skipped_fraction``.
    good_step: the step of the latest checkpoint, or None.

  Raises:
    FloatingPointError: naming the count, the limit and the checkpoint kept.
  """
  if skipped > limit * total_steps:
    raise FloatingPointError(
        f'{skipped} training steps were skipped for non-finite values, more '
        f'than config.max_skipped_fraction={limit:g} of the run\'s '
        f'{total_steps} steps: stopped (the last checkpoint, '
        f'step {good_step}, is kept). Lower the learning rate or fix the '
        'data; raise config.max_skipped_fraction to go on regardless.'
    )
