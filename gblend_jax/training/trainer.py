"""The trainer: one loop that every method of the framework configures.

`train_and_evaluate(config, workdir)` trains a (multi-modal) classifier with
data parallelism over all devices (`jax.jit` with `NamedSharding` on a
``data`` mesh axis), evaluates every head on the train, held-out and test
splits, checkpoints with orbax and resumes from the latest checkpoint when
rerun on the same work directory. Later methods (blending, modulation,
long-tail tricks) are configuration of this loop, not new loops.

Sections: config checks, data, mesh and shardings, model and optimiser,
initialisation or resume, step functions, evaluation, the loop.
"""

import functools
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gblend_jax.blending import blend
from gblend_jax.blending import estimation as blend_estimation
from gblend_jax.training import checkpointing
from gblend_jax.training import config_checks
from gblend_jax import config as config_lib
from gblend_jax import data
from gblend_jax.training import metric_writer
from gblend_jax import metrics as metrics_lib
from gblend_jax import models
from gblend_jax.modulation import method as modulation
from gblend_jax.training import optim
from gblend_jax import plots
from gblend_jax.training import steps
from gblend_jax.training import workdir as workdir_lib
from gblend_jax.longtail import method as longtail_hooks

SPLITS = ('train', 'holdout', 'test')


TrainState = steps.TrainState


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects config values the trainer does not know, before any work.

  Args:
    config: a run config (see `gblend_jax.config.default_config`).

  Raises:
    ValueError: naming the key, the value and what is allowed.
  """
  if config.blend.mode not in config_lib.BLEND_MODES:
    raise ValueError(
        f'Unknown config.blend.mode={config.blend.mode!r}; valid: '
        f'{list(config_lib.BLEND_MODES)}.'
    )
  split, _, _ = config.best_metric.partition('/')
  if split != 'holdout':
    raise ValueError(
        f'config.best_metric={config.best_metric!r} must be a held-out metric '
        "('holdout/<head>/<metric>'): choosing checkpoints on the test split "
        'leaks the test set.'
    )
  modulation.check_modulation_config(config)
  longtail_hooks.check_config(config)
  if config.early_stopping_patience < 0:
    raise ValueError(
        'config.early_stopping_patience='
        f'{config.early_stopping_patience} must be >= 0.'
    )


def head_loss_weights(
    config: ml_collections.ConfigDict, heads: tuple[str, ...]
) -> np.ndarray:
  """The starting weight of each head's loss, in head order.

  Args:
    config: the run config.
    heads: the model's heads in blend order (modalities, then ``'fused'``).

  Returns:
    ``[H]`` float32 weights: one-hot on the fused head for naive training
    (``blend.mode='none'``); ``blend.weights`` if given; else uniform.

  Raises:
    ValueError: for blend weights of the wrong length, negative, not finite
      or not summing to 1, and for a blend mode on a model with one head.
  """
  mode = config.blend.mode
  if mode == 'none':
    return np.array([h == steps.FUSED for h in heads], np.float32)
  if len(heads) < 3:
    raise ValueError(
        f'config.blend.mode={mode!r} blends one loss per head and needs '
        'several modalities with config.model.modality_heads=True; this '
        f'model has the heads {list(heads)}.'
    )
  weights = np.asarray(config.blend.weights, np.float64)
  if weights.size == 0:
    if mode == 'fixed':
      raise ValueError(
          "config.blend.mode='fixed' needs config.blend.weights, one per "
          f'head in the order {list(heads)}.'
      )
    return np.full(len(heads), 1.0 / len(heads), np.float32)
  if weights.shape != (len(heads),):
    raise ValueError(
        f'config.blend.weights={tuple(config.blend.weights)} has '
        f'{weights.size} entries; the heads are {list(heads)}.'
    )
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise ValueError(
        f'config.blend.weights={tuple(config.blend.weights)} must be finite '
        'and non-negative.'
    )
  if abs(weights.sum() - 1.0) > 1e-6:
    raise ValueError(
        f'config.blend.weights={tuple(config.blend.weights)} sum to '
        f'{weights.sum():.6g}, not 1.'
    )
  return weights.astype(np.float32)


def _mesh_and_shardings() -> tuple[
    jax.sharding.Mesh, jax.sharding.NamedSharding, jax.sharding.NamedSharding
]:
  mesh = jax.make_mesh(
      (jax.device_count(),), ('data',),
      axis_types=(jax.sharding.AxisType.Auto,),
  )
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  return mesh, replicated, batch


def _to_global(
    batch: Mapping[str, np.ndarray], sharding: jax.sharding.NamedSharding
) -> dict[str, jax.Array]:
  """Assembles each process's share of a batch into one global array.

  Example ids stay on the host (they may be strings).
  """
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in batch.items() if k != 'id'
  }


def _load_pretrained_encoders(
    state: TrainState, init_encoders: Mapping[str, str]
) -> TrainState:
  """Copies ``encoder_<m>`` from single-modality runs (G-Blend's pre-training
  baseline) into a freshly initialised state."""
  params = flax.core.unfreeze(state.params)
  batch_stats = flax.core.unfreeze(state.batch_stats)
  for modality, source_workdir in init_encoders.items():
    name = f'encoder_{modality}'
    if name not in params:
      raise ValueError(
          f'config.init_encoders names {modality!r}, but the model has no '
          f'{name}; encoders: {sorted(k for k in params if "encoder" in k)}.'
      )
    source = checkpointing.Checkpointer(source_workdir).restore_raw()
    if name not in source['params']:
      raise ValueError(f'{source_workdir} has no parameters {name}.')
    _check_same_shapes(params[name], source['params'][name], name)
    params[name] = jax.tree.map(jnp.asarray, source['params'][name])
    if name in batch_stats:
      batch_stats[name] = jax.tree.map(
          jnp.asarray, source['batch_stats'][name]
      )
    logging.info('Initialised %s from %s.', name, source_workdir)
  return state.replace(params=params, batch_stats=batch_stats)


def _check_same_shapes(target: Any, source: Any, name: str) -> None:
  target_shapes = jax.tree.map(jnp.shape, target)
  source_shapes = jax.tree.map(np.shape, source)
  if target_shapes != source_shapes:
    raise ValueError(
        f'Pre-trained {name} has shapes {source_shapes}, this model '
        f'{target_shapes}.'
    )


class _StopRequest:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Trains and evaluates a model; resumes from ``workdir`` if it has a
  checkpoint made with the same config.

  The run holds the work directory's lock throughout; a full disk is
  reported once, naming the path (see `gblend_jax.training.workdir`).

  Args:
    config: the run config (see `gblend_jax.config.default_config`).
    workdir: where checkpoints, metrics and results are written.

  Returns:
    The results also written to ``workdir/results.json``.
  """
  return workdir_lib.run_exclusively(_train_and_evaluate, config, workdir)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Trains and evaluates a model; resumes from ``workdir`` if it has a
  checkpoint.

  Args:
    config: the run config (see `gblend_jax.config.default_config`).
    workdir: where checkpoints, metrics and results are written.

  Returns:
    The results also written to ``workdir/results.json``: the final metrics
    of every split and head, and the metrics of the best checkpoint.
  """
  check_config(config)
  config_checks.check_run_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  # A rerun resumes only with its checkpoints' config (or allowed changes).
  config_changes = workdir_lib.check_resume_config(config, workdir)

  # ---- Data.
  splits = data.load_dataset(config.data)
  global_batch = config.data.batch_size
  if global_batch % jax.device_count():
    raise ValueError(
        f'config.data.batch_size={global_batch} is not divisible by the '
        f'{jax.device_count()} devices.'
    )
  # Random over- or under-sampling train on a fixed balanced multiset.
  train_source = longtail_hooks.training_source(config, splits.train)
  config_checks.check_against_data(
      config, train_size=len(train_source),
      class_counts=splits.train_class_counts)
  steps_per_epoch = data.steps_per_epoch(len(train_source), global_batch)
  total_steps = (
      config.num_train_steps
      if config.num_train_steps > 0
      else int(config.num_epochs * steps_per_epoch)
  )
  eval_every = max(int(round(config.eval_every_epochs * steps_per_epoch)), 1)
  train_eval_source = splits.train
  if 0 < config.eval_train_examples < len(splits.train):
    train_eval_source = data.IndexSubset(
        splits.train, np.arange(config.eval_train_examples)
    )
  eval_sources = {
      'train': train_eval_source,
      'holdout': splits.holdout,
      'test': splits.test,
  }
  logging.info(
      'Data %s: %d train / %d held-out / %d test examples, %d classes, '
      'modalities %s; %d steps of batch %d (%d per epoch).',
      splits.name, len(splits.train), len(splits.holdout), len(splits.test),
      splits.num_classes, dict(splits.modalities), total_steps, global_batch,
      steps_per_epoch,
  )

  # ---- Mesh and shardings.
  _, replicated, batch_sharding = _mesh_and_shardings()

  # ---- Model, objective and optimiser.
  model = models.build_model(
      config.model, modalities=splits.modalities,
      num_classes=splits.num_classes,
  )
  heads = steps.head_order(tuple(splits.modalities),
                           config.model.modality_heads)
  initial_weights = head_loss_weights(config, heads)
  config_checks.check_best_metric(config.best_metric, (
      *heads, *config_checks.unimodal_heads(
          tuple(splits.modalities),
          config.model.fusion not in models.MID_FUSIONS)))
  # Long-tail tricks (losses, DRW, samplers, DRS, mixup, shot metrics).
  longtail = longtail_hooks.LongTailTraining(
      config, splits, steps_per_epoch=steps_per_epoch,
      total_steps=total_steps, heads=heads, model=model,
  )
  tx = optim.build_optimizer(
      config.optimizer, total_steps=total_steps,
      steps_per_epoch=steps_per_epoch,
  )
  modalities = tuple(splits.modalities)
  modulation_tx = modulation.build_transform(
      config, modalities, steps_per_epoch
  )
  if modulation_tx is not None:
    tx = optax.chain(modulation_tx, tx)
  if config.blend.mode == 'gradient':
    tx = optax.chain(
        blend.gradient_blend(
            initial_weights,
            estimate_every=config.blend.estimate_every_steps,
            decay=config.blend.decay,
            eps=config.blend.eps,
        ),
        tx,
    )
  learning_rate = optim.learning_rate_schedule(
      config.optimizer, total_steps=total_steps,
      steps_per_epoch=steps_per_epoch,
  )

  def init_state(rng: jax.Array) -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    dummy = {
        m: jnp.zeros((1, *shape), jnp.float32)
        for m, shape in splits.modalities.items()
    }
    variables = model.init(
        {'params': params_rng, 'dropout': dropout_rng}, dummy, train=False
    )
    params = variables['params']
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(params),
        rng=state_rng,
    )

  # ---- Initialisation, or resume from the latest checkpoint.
  init_fn = jax.jit(init_state, out_shardings=replicated)
  abstract_state = jax.eval_shape(init_fn, jax.random.PRNGKey(config.seed))
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      abstract_state,
  )
  checkpointer = checkpointing.Checkpointer(
      workdir, max_to_keep=config.max_checkpoints_to_keep
  )
  reading = {'read_threads': config.data.read_threads,
             'prefetch_batches': config.data.prefetch_batches}
  train_iter = data.train_iterator(
      train_source,
      global_batch_size=global_batch,
      seed=config.data.shuffle_seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      sampler=longtail.sampler(global_batch),
      augmentation=config.data.augmentation,
      augment_modalities=tuple(config.data.augment_modalities),
      augment_pad=config.data.augment_pad,
      **reading,
  )
  holdout_iter = None
  if config.blend.mode == 'gradient':
    holdout_iter = data.train_iterator(
        splits.holdout,
        global_batch_size=global_batch,
        seed=config.data.shuffle_seed + 1,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        **reading,
    )
  loop = {'best_metric': None, 'best_step': None, 'evals_since_best': 0,
          'stopped_early': False, 'blend_weights': None,
          'last_estimate_step': None, 'train_seconds': 0.0,
          'skipped_steps': 0}
  # A damaged latest checkpoint falls back to the previous good one.
  start_step, state, extra = checkpointer.restore_latest_usable(
      abstract_state,
      config_note=workdir_lib.describe_changes(config_changes, workdir))
  if start_step is None:
    start_step = 0
    state = init_fn(jax.random.PRNGKey(config.seed))
    if config.init_encoders:
      state = _load_pretrained_encoders(state, config.init_encoders)
      state = jax.device_put(state, replicated)
  else:
    train_iter.set_state(extra['data_iterator'])
    if holdout_iter is not None:
      holdout_iter.set_state(extra['holdout_iterator'])
    loop.update(extra['loop'])
    logging.info('Resumed from the checkpoint at step %d.', start_step)
  # Config files are written once the run starts or resumes cleanly.
  workdir_lib.check_resume_step(start_step, total_steps, workdir)
  if is_chief:
    workdir_lib.record_config(config, workdir)
    longtail.write_class_counts(workdir)

  # ---- Step functions.
  head_weights = jax.device_put(
      np.asarray(loop['blend_weights'] or initial_weights, np.float32),
      replicated,
  )
  late_fusion = config.model.fusion not in models.MID_FUSIONS
  eval_step = steps.make_eval_step(
      model, modalities if late_fusion and len(modalities) > 1 else ()
  )
  if config.blend.mode == 'gradient':
    # Two executables: per-loss gradients and re-estimation on every
    # estimate_every_steps-th step, one weighted backward pass in between.
    blend_step = steps.make_gradient_blend_train_step(
        model, tx, learning_rate, heads)
    train_steps = {
        estimate: jax.jit(
            steps.guard_nonfinite(
                functools.partial(blend_step, estimate=estimate),
                heads, skip=config.skip_nonfinite_steps),
            donate_argnums=(0,),
            in_shardings=(replicated, batch_sharding, batch_sharding),
            out_shardings=(replicated, replicated),
        )
        for estimate in (True, False)
    }
    every = config.blend.estimate_every_steps

    def run_step(state, batch, step):
      # The held-out stream advances every step, estimating or not.
      holdout_batch = next(holdout_iter)
      estimate = every > 0 and step % every == 0
      if estimate:
        holdout_batch = _to_global(holdout_batch, batch_sharding)
      else:
        holdout_batch = None
      return train_steps[estimate](state, batch, holdout_batch)
  else:
    hooks = {}
    if modulation_tx is not None:
      hooks.update(
          update_args=modulation.make_update_args(model, modalities),
          opt_state_metrics=lambda s: modulation.state_metrics(s, modalities),
      )
    if longtail.objective is not None:
      hooks['objective'] = longtail.objective
    train_step = jax.jit(
        steps.guard_nonfinite(
            steps.make_train_step(model, tx, learning_rate, heads, **hooks),
            heads, skip=config.skip_nonfinite_steps),
        donate_argnums=(0,),
        in_shardings=(replicated, batch_sharding, replicated, replicated),
        out_shardings=(replicated, replicated),
    )

    def run_step(state, batch, step):
      # The loss weights (DRW) and mixup's on/off flag of this step.
      loss_args = None
      if longtail.objective is not None:
        loss_args = longtail.loss_args(
            step, lambda x: jax.device_put(x, replicated), state, workdir)
      return train_step(state, batch, head_weights, loss_args)

  eval_step = jax.jit(
      eval_step, in_shardings=(replicated, batch_sharding),
      out_shardings=replicated,
  )

  # ---- Evaluation.
  eval_batch = -(-config.data.eval_batch_size // jax.device_count())
  eval_batch *= jax.device_count()

  def evaluate(
      state: TrainState, sources: Mapping[str, data.Source] = eval_sources
  ) -> dict[str, float]:
    results = {}
    for split, source in sources.items():
      batch_sums = []
      for batch in data.eval_batches(
          source, batch_size=eval_batch,
          process_index=jax.process_index(),
          process_count=jax.process_count(),
      ):
        batch_sums.append(
            jax.device_get(eval_step(state, _to_global(batch, batch_sharding)))
        )
      for name, value in metrics_lib.finalize(batch_sums).items():
        if name != 'count':
          results[f'{split}/{name}'] = value
    return results

  per_class_eval = jax.jit(
      longtail.make_per_class_eval(model),
      in_shardings=(replicated, batch_sharding), out_shardings=replicated,
  )

  def test_shot_metrics(state: TrainState):
    return longtail.shot_results(
        jax.device_get(per_class_eval(state, _to_global(b, batch_sharding)))
        for b in data.eval_batches(
            splits.test, batch_size=eval_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )

  run_start = time.perf_counter()
  seconds_before = loop['train_seconds']

  def save(step: int, state: TrainState) -> None:
    # Wall time of training (with estimates and evaluations), summed over
    # the invocations of an interrupted run.
    loop['train_seconds'] = seconds_before + time.perf_counter() - run_start
    extra = {'data_iterator': train_iter.get_state(), 'loop': dict(loop),
             'metrics_offset': writer.offset()}
    if holdout_iter is not None:
      extra['holdout_iterator'] = holdout_iter.get_state()
    checkpointer.save(step, state, _jsonable(extra))

  # ---- Blend weights by Algorithm 1 (offline and online modes).
  estimate = None
  if config.blend.mode in ('offline', 'online'):
    constant = config.optimizer.copy_and_resolve_references()
    constant.schedule, constant.warmup_epochs = 'constant', 0.0
    estimate_tx = optim.build_optimizer(
        constant, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
    estimate_step = jax.jit(
        steps.make_train_step(
            model, estimate_tx,
            optax.constant_schedule(constant.learning_rate), heads,
        ),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
    )
    subset_size = min(
        config.blend.train_subset_size or len(splits.holdout),
        len(splits.train),
    )
    train_subset = data.IndexSubset(splits.train, np.sort(
        np.random.default_rng(config.data.holdout_seed).choice(
            len(splits.train), subset_size, replace=False)))

    def make_batches(seed: int):
      batches = data.train_iterator(
          splits.train, global_batch_size=global_batch, seed=seed,
          process_index=jax.process_index(),
          process_count=jax.process_count(), **reading,
      )
      return (_to_global(b, batch_sharding) for b in batches)

    estimate = blend_estimation.ScheduledEstimator(
        config, train_step=estimate_step, tx=estimate_tx,
        make_batches=make_batches, evaluate=evaluate,
        sources={'train': train_subset, 'holdout': splits.holdout},
        heads=heads, steps_per_epoch=steps_per_epoch,
        put=lambda x: jax.device_put(x, replicated),
    )

  # ---- The loop.
  writer = metric_writer.MetricWriter(
      workdir, resume_step=start_step, enabled=is_chief,
      resume_offset=(extra or {}).get('metrics_offset'),
  )
  progress = metric_writer.ProgressReporter(
      total_steps, start_step, config.log_every_steps
  )
  # Metrics of the steps since the last check, on device (no sync per
  # step), then on the host until the next progress line.
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  checked: list[dict[str, float]] = []

  def check_pending() -> None:
    """Moves `pending` to `checked`; stops or skips non-finite steps."""
    if not pending:
      return
    numbers = [n for n, _ in pending]
    for number, row in zip(
        numbers, jax.device_get([m for _, m in pending]), strict=True):
      if not row.pop(steps.NONFINITE):
        checked.append(row)
        continue
      bad = _nonfinite_values(row)
      if not config.skip_nonfinite_steps:
        checkpointer.wait()  # The last good checkpoint is complete on disk.
        good = checkpointer.latest_step()
        raise FloatingPointError(
            f'Non-finite values in training step {number} (the update from '
            f'step {number - 1}): {bad}. Stopped; the last good checkpoint '
            + (f'(step {good}, {checkpointer.step_path(good)}) is kept.'
               if good is not None else 'would be at step 0: none saved.')
            + ' Set config.skip_nonfinite_steps=True to skip such steps.'
        )
      loop['skipped_steps'] += 1
      config_checks.check_skipped_fraction(
          loop['skipped_steps'], total_steps, config.max_skipped_fraction,
          checkpointer.latest_step())
      logging.warning(
          'Skipped training step %d (config.skip_nonfinite_steps): '
          'non-finite %s; %d steps skipped so far.', number, bad,
          loop['skipped_steps'])
    pending.clear()

  last_eval: dict[str, float] | None = None
  step = start_step
  interrupted = False
  with _StopRequest() as stop:
    while step < total_steps and not loop['stopped_early']:
      if estimate is not None and estimate.due(step, loop):
        result = estimate(state, step, loop['blend_weights'] or initial_weights)
        loop['blend_weights'] = result.weights.tolist()
        loop['last_estimate_step'] = step
        head_weights = jax.device_put(result.weights, replicated)
        writer.write(step, {**result.as_metrics(heads),
                            'blend/epoch': step / steps_per_epoch})
      batch = _to_global(next(train_iter), batch_sharding)
      state, step_metrics = run_step(state, batch, step)
      step += 1
      pending.append((step, step_metrics))
      if progress.should_report(step):
        check_pending()
        # Empty when every step since the last line was skipped.
        summary = _mean_over_steps(checked) if checked else {}
        checked.clear()
        _check_finite(step, summary)
        if config.skip_nonfinite_steps:
          summary['skipped_steps'] = loop['skipped_steps']
        summary['steps_per_second'] = progress.report(
            step, f"loss {summary.get('loss', float('nan')):.4f}"
        )
        writer.write(step, {
            k if k.startswith(('blend/', 'ogm/')) else f'train_step/{k}': v
            for k, v in summary.items()
        })
      stop_now = bool(stop.signal_name) and step < total_steps
      eval_now = step % eval_every == 0 or step == total_steps
      if eval_now or stop_now:
        check_pending()  # Never checkpoint a state after a bad step.
      if eval_now:
        last_eval = evaluate(state)
        writer.write(step, last_eval)
        logging.info('step %d: %s', step, _summarise(last_eval))
        _update_best(loop, step, last_eval, config, checkpointer, state)
        save(step, state)
      if stop_now:
        if not eval_now:
          save(step, state)
        interrupted = True
        logging.warning(
            '%s received: saved the checkpoint at step %d in %s; rerun the '
            'same command to resume.', stop.signal_name, step, workdir,
        )
        break
  checkpointer.wait()

  if interrupted:
    checkpointer.close()
    writer.close()
    return {'interrupted_at_step': step}
  final = last_eval or evaluate(state)  # None when resumed after the end.
  best = dict(final)
  best_state = None
  best_missing = None  # Why the best checkpoint cannot be read, if so.
  if loop['best_step'] is not None and loop['best_step'] != step:
    best_state, _, best_missing = checkpointer.restore_best(
        abstract_state, loop['best_step'])
    if best_state is not None:
      best = evaluate(best_state)
    else:
      logging.warning('Reporting the final state (step %d) as the best: %s.',
                      step, best_missing)
  if config.longtail.shot_metrics:
    # Many/medium/few-shot test accuracy (Zhang et al., AAAI 2021).
    final_shots, per_class_accuracy = test_shot_metrics(state)
    final = {**final, **final_shots}
    best = {**best, **(final_shots if best_state is None
                       else test_shot_metrics(best_state)[0])}
  results = {
      'step': step,
      'train_seconds': loop['train_seconds'],
      'final': final,
      'best_step': loop['best_step'] if best_missing is None else step,
      'best': best,
      'stopped_early': loop['stopped_early'],
  }
  if best_missing is not None:
    results['best_checkpoint_missing'] = best_missing
  if config.skip_nonfinite_steps:
    results['skipped_steps'] = loop['skipped_steps']
  if config.longtail.shot_metrics:
    # The final model's test accuracy per class (NaN: no test example).
    results['test_per_class_accuracy'] = [float(a)
                                          for a in per_class_accuracy]
  if config.blend.mode != 'none':
    results['blend_weights'] = dict(zip(
        heads, np.asarray(jax.device_get(
            optax.tree.get(state.opt_state, 'weights')
            if config.blend.mode == 'gradient' else head_weights
        )).tolist(), strict=True))
  if is_chief:
    workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
    if config.blend.mode in ('offline', 'online', 'gradient'):
      plots.plot_blend(workdir, heads)
    if modulation_tx is not None:
      plots.plot_modulation(workdir, modalities)
    if config.longtail.shot_metrics:
      plots.plot_per_class_accuracy(
          workdir, splits.train_class_counts, per_class_accuracy)
  checkpointer.close()
  writer.close()
  return results


def _update_best(loop, step, results, config, checkpointer, state):
  """Keeps the best checkpoint by the held-out metric; early stopping."""
  if config.best_metric not in results:
    measured = sorted(k for k in results if k.startswith('holdout/'))
    raise ValueError(
        f'config.best_metric={config.best_metric!r} is not measured; '
        f'choose one of {measured}.'
    )
  value = results[config.best_metric]
  if loop['best_metric'] is None or value > loop['best_metric']:
    loop.update(best_metric=value, best_step=step, evals_since_best=0)
    checkpointer.save_best(step, state, {'metrics': results})
  else:
    loop['evals_since_best'] += 1
    patience = config.early_stopping_patience
    if patience and loop['evals_since_best'] >= patience:
      loop['stopped_early'] = True
      logging.info(
          'Early stopping at step %d: %s has not improved on %.4f (step %d) '
          'for %d evaluations.', step, config.best_metric,
          loop['best_metric'], loop['best_step'], patience,
      )


def _mean_over_steps(rows: list[dict[str, np.ndarray]]) -> dict[str, float]:
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _nonfinite_values(row: Mapping[str, np.ndarray]) -> dict[str, float]:
  """The non-finite metrics of a step, e.g. ``{'fused/loss': nan}``."""
  return {k: float(v) for k, v in row.items()
          if np.ndim(v) == 0 and not np.isfinite(v)}


def _check_finite(step: int, summary: Mapping[str, float]) -> None:
  bad = {k: v for k, v in summary.items() if not np.isfinite(v)}
  if bad:
    raise FloatingPointError(
        f'Non-finite training values by step {step}: {bad}. The last good '
        'checkpoint is kept.'
    )


def _summarise(results: Mapping[str, float]) -> str:
  return ', '.join(
      f'{split} acc {results[f"{split}/fused/accuracy"]:.4f}'
      for split in SPLITS
      if f'{split}/fused/accuracy' in results
  )


def _jsonable(tree: Any) -> Any:
  """Host scalars and arrays in a nested dict, as plain JSON values."""
  if isinstance(tree, Mapping):
    return {str(k): _jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_jsonable(v) for v in tree]
  if isinstance(tree, (np.generic, np.ndarray)):
    return tree.tolist()
  return tree
