"""Optimisers and learning-rate schedules from a config, built with optax.

Epoch-denominated settings (warm-up, step boundaries) are converted to steps
with the number of steps per epoch, so the papers' recipes (e.g. "lr x 0.01 at
epochs 160 and 180, 5 warm-up epochs") read as written.
"""

import ml_collections
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'step', 'cosine')


def default_optimizer_config() -> ml_collections.ConfigDict:
  """All optimiser and schedule keys with their defaults."""
  return ml_collections.ConfigDict({
      'name': 'sgd',  # One of OPTIMIZERS.
      'learning_rate': 0.1,  # Peak learning rate.
      'momentum': 0.9,  # SGD only.
      'nesterov': False,  # SGD only.
      'b1': 0.9,  # Adam(W) only.
      'b2': 0.999,  # Adam(W) only.
      # L2 added to the gradient for sgd/adam (as torch's weight_decay);
      # decoupled decay for adamw (Loshchilov & Hutter, 2019).
      'weight_decay': 0.0,
      'grad_clip_norm': 0.0,  # Global-norm clipping; 0 disables it.
      'schedule': 'constant',  # One of SCHEDULES.
      'warmup_epochs': 0.0,  # Linear warm-up from 0 to the peak.
      'boundaries_epochs': (),  # Step schedule: epochs where lr is scaled.
      'decay_factor': 0.1,  # Step schedule: scale at each boundary.
  })


def learning_rate_schedule(
    config: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
  """The learning rate per step.

  Args:
    config: an optimiser config (see `default_optimizer_config`).
    total_steps: length of training in steps.
    steps_per_epoch: steps in one epoch, to convert epoch settings.

  Returns:
    An optax schedule: linear warm-up, then constant, step or cosine decay.

  Raises:
    ValueError: for an unknown schedule name.
  """
  if config.schedule not in SCHEDULES:
    raise ValueError(
        f'Unknown config.optimizer.schedule={config.schedule!r}; valid: '
        f'{list(SCHEDULES)}.'
    )
  peak = config.learning_rate
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  decay_steps = max(total_steps - warmup_steps, 1)
  if config.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, decay_steps)
  else:
    boundaries = {
        int(round(epoch * steps_per_epoch)) - warmup_steps: config.decay_factor
        for epoch in config.boundaries_epochs
    }
    main = optax.piecewise_constant_schedule(peak, boundaries)
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def build_optimizer(
    config: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int
) -> optax.GradientTransformation:
  """An optax optimiser from a config.

  Args:
    config: an optimiser config (see `default_optimizer_config`).
    total_steps: length of training in steps.
    steps_per_epoch: steps in one epoch.

  Returns:
    The optimiser, with clipping and weight decay chained in as configured.

  Raises:
    ValueError: for an unknown optimiser name.
  """
  if config.name not in OPTIMIZERS:
    raise ValueError(
        f'Unknown config.optimizer.name={config.name!r}; valid: '
        f'{list(OPTIMIZERS)}.'
    )
  lr = learning_rate_schedule(
      config, total_steps=total_steps, steps_per_epoch=steps_per_epoch
  )
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.name == 'adamw':
    parts.append(
        optax.adamw(lr, b1=config.b1, b2=config.b2,
                    weight_decay=config.weight_decay)
    )
    return optax.chain(*parts)
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  if config.name == 'sgd':
    parts.append(
        optax.sgd(lr, momentum=config.momentum or None,
                  nesterov=config.nesterov)
    )
  else:
    parts.append(optax.adam(lr, b1=config.b1, b2=config.b2))
  return optax.chain(*parts)
