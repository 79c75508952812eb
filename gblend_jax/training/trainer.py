"""The trainer: one loop that every method of the framework configures.

`train_and_evaluate(config, workdir)` trains a (multi-modal) classifier with
data parallelism over all devices (`jax.jit` with `NamedSharding` on a
``data`` mesh axis), evaluates every head on the train, held-out and test
splits, checkpoints with orbax and resumes from the latest checkpoint when
rerun on the same work directory. Methods (blending, modulation, long-tail
tricks) plug in through `gblend_jax.training.methods`: the loop calls their
entry points and names none of them.

Sections of `train_and_evaluate`: data, mesh, model and methods, state,
steps, loop, finish.
"""

import dataclasses
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
from absl import logging

from gblend_jax import data
from gblend_jax import metrics as metrics_lib
from gblend_jax import models
from gblend_jax.training import checkpointing
from gblend_jax.training import config_checks
from gblend_jax.training import distributed
from gblend_jax.training import methods as methods_lib
from gblend_jax.training import metric_writer
from gblend_jax.training import program as program_lib
from gblend_jax.training import steps
from gblend_jax.training import workdir as workdir_lib

SPLITS = ('train', 'holdout', 'test')
CLASS_COUNTS_FILE = 'class_counts.json'

TrainState = steps.TrainState


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects config values the trainer does not know, before any work.

  Args:
    config: a run config (see `gblend_jax.config.default_config`).

  Raises:
    ValueError: naming the key, the value and what is allowed.
  """
  config_checks.check_run_config(config)
  split, _, _ = config.best_metric.partition('/')
  if split != 'holdout':
    raise ValueError(
        f'config.best_metric={config.best_metric!r} must be a held-out metric '
        "('holdout/<head>/<metric>'): choosing checkpoints on the test split "
        'leaks the test set.'
    )
  if config.early_stopping_patience < 0:
    raise ValueError(
        'config.early_stopping_patience='
        f'{config.early_stopping_patience} must be >= 0.'
    )
  methods_lib.check_config(config)


@dataclasses.dataclass
class LoopState:
  """The loop's bookkeeping, checkpointed with the train state.

  Attributes:
    best_metric: the best ``config.best_metric`` so far (None: no eval).
    best_step: the step of that evaluation (and of ``best/``).
    evals_since_best: evaluations since the best one (early stopping).
    stopped_early: whether early stopping ended the run.
    train_seconds: wall time of training (with estimates and evaluations),
      summed over the invocations of an interrupted run.
    skipped_steps: non-finite steps skipped (``skip_nonfinite_steps``).
  """

  best_metric: float | None = None
  best_step: int | None = None
  evals_since_best: int = 0
  stopped_early: bool = False
  train_seconds: float = 0.0
  skipped_steps: int = 0

  def update_best(self, step: int, results: Mapping[str, float],
                  config: ml_collections.ConfigDict) -> bool:
    """Records an evaluation; True when it is the best so far (the caller
    saves ``best/``). Sets ``stopped_early`` after the patience runs out."""
    if config.best_metric not in results:
      measured = sorted(k for k in results if k.startswith('holdout/'))
      raise ValueError(
          f'config.best_metric={config.best_metric!r} is not measured; '
          f'choose one of {measured}.'
      )
    value = results[config.best_metric]
    if self.best_metric is None or value > self.best_metric:
      self.best_metric, self.best_step, self.evals_since_best = value, step, 0
      return True
    self.evals_since_best += 1
    patience = config.early_stopping_patience
    if patience and self.evals_since_best >= patience:
      self.stopped_early = True
      logging.info(
          'Early stopping at step %d: %s has not improved on %.4f (step %d) '
          'for %d evaluations.', step, config.best_metric, self.best_metric,
          self.best_step, patience,
      )
    return False


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
    The results also written to ``workdir/results.json``: the final metrics
    of every split and head, and the metrics of the best checkpoint.
  """
  return workdir_lib.run_exclusively(_train_and_evaluate, config, workdir)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """`train_and_evaluate` once the work directory is locked."""
  check_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  # A rerun resumes only with its checkpoints' config (or allowed changes).
  config_changes = workdir_lib.check_resume_config(config, workdir)

  # ---- Data.
  distributed.prepare_on_chief_first(config.data)
  splits = data.load_dataset(config.data)
  global_batch = config.data.batch_size
  if global_batch % jax.device_count():
    raise ValueError(
        f'config.data.batch_size={global_batch} is not divisible by the '
        f'{jax.device_count()} devices.'
    )
  train_source = methods_lib.training_source(config, splits.train)
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
  eval_sources = _eval_sources(config, splits)
  logging.info(
      'Data %s: %d train / %d held-out / %d test examples, %d classes, '
      'modalities %s; %d steps of batch %d (%d per epoch).',
      splits.name, len(splits.train), len(splits.holdout), len(splits.test),
      splits.num_classes, dict(splits.modalities), total_steps, global_batch,
      steps_per_epoch,
  )

  # ---- Mesh and shardings.
  _, replicated, batch_sharding = _mesh_and_shardings()
  put = lambda tree: jax.device_put(tree, replicated)
  to_global = lambda batch: _to_global(batch, batch_sharding)
  processes = {'process_index': jax.process_index(),
               'process_count': jax.process_count()}
  reading = {'read_threads': config.data.read_threads,
             'prefetch_batches': config.data.prefetch_batches,
             'workers': config.data.workers}

  # ---- Model and methods.
  model = models.build_model(
      config.model, modalities=splits.modalities,
      num_classes=splits.num_classes,
  )
  heads = steps.head_order(tuple(splits.modalities),
                           config.model.modality_heads)
  config_checks.check_best_metric(config.best_metric, (
      *heads, *config_checks.unimodal_heads(
          tuple(splits.modalities),
          models.has_unimodal_shares(config.model))))
  run = methods_lib.RunInfo(
      config=config, model=model, modalities=splits.modalities, heads=heads,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      splits=splits, global_batch_size=global_batch,
  )
  methods = methods_lib.enabled_methods(run)
  program = program_lib.build_program(
      run, methods, replicated=replicated,
      skip_nonfinite_steps=config.skip_nonfinite_steps,
  )

  # ---- State: initialise, or resume from the latest checkpoint.
  abstract_state = program.abstract_state(jax.random.PRNGKey(config.seed),
                                          replicated)
  checkpointer = checkpointing.Checkpointer(
      workdir, max_to_keep=config.max_checkpoints_to_keep
  )
  samplers = [s for s in (m.sampler() for m in methods) if s is not None]
  train_iter = data.train_iterator(
      train_source,
      global_batch_size=global_batch,
      seed=config.data.shuffle_seed,
      sampler=samplers[0] if samplers else None,
      augmentation=config.data.augmentation,
      augment_modalities=tuple(config.data.augment_modalities),
      augment_pad=config.data.augment_pad,
      **processes, **reading,
  )
  loop = LoopState()
  # A damaged latest checkpoint falls back to the previous good one.
  start_step, state, extra = checkpointer.restore_latest_usable(
      abstract_state,
      config_note=workdir_lib.describe_changes(config_changes, workdir))
  if start_step is None:
    start_step = 0
    state = program.init(jax.random.PRNGKey(config.seed))
    if config.init_encoders:
      state = _load_pretrained_encoders(state, config.init_encoders)
      state = put(state)
  else:
    train_iter.set_state(extra['data_iterator'])
    loop = LoopState(**extra['loop'])
    for method in methods:
      method.restore(extra['methods'].get(type(method).block, {}))
    logging.info('Resumed from the checkpoint at step %d.', start_step)
  # Config files are written once the run starts or resumes cleanly.
  workdir_lib.check_resume_step(start_step, total_steps, workdir)
  if is_chief:
    workdir_lib.record_config(config, workdir)
    _write_class_counts(workdir, config, splits)

  # ---- Steps and evaluation.
  eval_batch = -(-config.data.eval_batch_size // jax.device_count())
  eval_batch *= jax.device_count()

  def eval_batches(source: data.Source):
    for batch in data.eval_batches(source, batch_size=eval_batch,
                                   **processes):
      yield to_global(batch)

  def evaluate(
      state: TrainState, sources: Mapping[str, data.Source] = eval_sources
  ) -> dict[str, float]:
    results = {}
    for split, source in sources.items():
      batch_sums = [jax.device_get(program.eval_step(state, batch))
                    for batch in eval_batches(source)]
      for name, value in metrics_lib.finalize(batch_sums).items():
        if name != 'count':
          results[f'{split}/{name}'] = value
    return results

  writer = metric_writer.MetricWriter(
      workdir, resume_step=start_step, enabled=is_chief,
      resume_offset=(extra or {}).get('metrics_offset'),
  )
  services = methods_lib.Services(
      workdir=workdir, put=put, to_global=to_global,
      train_iterator=lambda source, seed: data.train_iterator(
          source, global_batch_size=global_batch, seed=seed,
          **processes, **reading),
      evaluate=evaluate, eval_batches=eval_batches,
      build_train_step=lambda tx, lr, head=None: (
          program_lib.plain_train_step(run, tx, lr, replicated=replicated,
                                       head=head)),
      write_metrics=writer.write,
  )
  for method in methods:
    method.start(services)
  default_args = {'head_weights': put(
      np.array([h == steps.FUSED for h in heads], np.float32))}
  run_start = time.perf_counter()
  seconds_before = loop.train_seconds

  def save(step: int, state: TrainState) -> None:
    loop.train_seconds = seconds_before + time.perf_counter() - run_start
    extra = {'data_iterator': train_iter.get_state(),
             'loop': dataclasses.asdict(loop),
             'methods': {type(m).block: m.host_state() for m in methods},
             'metrics_offset': writer.offset()}
    checkpointer.save(step, state, _jsonable(extra))

  # ---- The loop.
  progress = metric_writer.ProgressReporter(
      total_steps, start_step, config.log_every_steps
  )
  monitor = _StepMonitor(config, checkpointer, loop, total_steps)
  last_eval: dict[str, float] | None = None
  step = start_step
  interrupted = False
  with _StopRequest() as stop:
    while step < total_steps and not loop.stopped_early:
      args = dict(default_args)
      for method in methods:
        changed = method.before_step(step, state)
        if changed is not None:
          state = changed
        args.update(method.step_args(step, state))
      train_step = program.train_step(methods_lib.step_variant(methods, step))
      batch = to_global(next(train_iter))
      state, step_metrics = train_step(state, batch, args)
      step += 1
      monitor.add(step, step_metrics)
      if progress.should_report(step):
        summary = monitor.summary(step)
        summary['steps_per_second'] = progress.report(
            step, f"loss {summary.get('loss', float('nan')):.4f}"
        )
        writer.write(step, {methods_lib.logged_name(methods, k): v
                            for k, v in summary.items()})
      stop_now = bool(stop.signal_name) and step < total_steps
      eval_now = step % eval_every == 0 or step == total_steps
      if eval_now or stop_now:
        monitor.check()  # Never checkpoint a state after a bad step.
      if eval_now:
        last_eval = evaluate(state)
        writer.write(step, last_eval)
        logging.info('step %d: %s', step, _summarise(last_eval))
        if loop.update_best(step, last_eval, config):
          checkpointer.save_best(step, state, {'metrics': last_eval})
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
  train_iter.close()  # Stops grain's worker processes.
  if interrupted:
    checkpointer.close()
    writer.close()
    return {'interrupted_at_step': step}

  # ---- Finish: final and best metrics, results.json, figures.
  results = _final_results(config, methods, state, step, loop, last_eval,
                           evaluate, checkpointer, abstract_state)
  if is_chief:
    workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
    for method in methods:
      method.draw_figures(workdir)
  checkpointer.close()
  writer.close()
  return results


def _final_results(config, methods, state, step, loop, last_eval, evaluate,
                   checkpointer, abstract_state) -> dict[str, Any]:
  """``results.json``: the final and the best state's metrics, and what the
  methods add.

  A best checkpoint that is missing, damaged or of another step than the
  loop recorded is not used: the final state is reported as the best, and
  ``best_checkpoint_missing`` says why.
  """
  final = last_eval or evaluate(state)  # None when resumed after the end.
  best_state, best_missing = None, None
  if loop.best_step is not None and loop.best_step != step:
    best_state, _, best_missing = checkpointer.restore_best(
        abstract_state, loop.best_step)
    if best_state is None:
      logging.warning('Reporting the final state (step %d) as the best: %s.',
                      step, best_missing)
  best = dict(final) if best_state is None else evaluate(best_state)
  for method in methods:
    final_extra = method.final_metrics(state)
    final.update(final_extra)
    best.update(final_extra if best_state is None
                else method.final_metrics(best_state))
  results = {
      'step': step,
      'train_seconds': loop.train_seconds,
      'final': final,
      'best_step': loop.best_step if best_missing is None else step,
      'best': best,
      'stopped_early': loop.stopped_early,
  }
  if best_missing is not None:
    results['best_checkpoint_missing'] = best_missing
  if config.skip_nonfinite_steps:
    results['skipped_steps'] = loop.skipped_steps
  for method in methods:
    results.update(method.results(state))
  return results


class _StepMonitor:
  """Step metrics on their way to the log: on device until a check (no
  sync per step), then on the host until the next progress line. A check
  stops the run at a non-finite step, or skips it
  (``config.skip_nonfinite_steps``)."""

  def __init__(self, config, checkpointer, loop: LoopState,
               total_steps: int):
    self._skip = config.skip_nonfinite_steps
    self._max_skipped = config.max_skipped_fraction
    self._total_steps = total_steps
    self._checkpointer = checkpointer
    self._loop = loop
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []
    self._checked: list[dict[str, float]] = []

  def add(self, step: int, step_metrics: dict[str, jax.Array]) -> None:
    self._pending.append((step, step_metrics))

  def check(self) -> None:
    """Moves pending metrics to the host; stops or skips non-finite steps.

    Raises:
      FloatingPointError: at a non-finite step, naming it and the last
        good checkpoint (unless such steps are skipped).
    """
    if not self._pending:
      return
    numbers = [n for n, _ in self._pending]
    rows = jax.device_get([m for _, m in self._pending])
    self._pending.clear()
    for number, row in zip(numbers, rows, strict=True):
      if not row.pop(steps.NONFINITE):
        self._checked.append(row)
        continue
      bad = _nonfinite_values(row)
      if not self._skip:
        self._checkpointer.wait()  # The last good checkpoint is on disk.
        good = self._checkpointer.latest_step()
        raise FloatingPointError(
            f'Non-finite values in training step {number} (the update from '
            f'step {number - 1}): {bad}. Stopped; the last good checkpoint '
            + (f'(step {good}, {self._checkpointer.step_path(good)}) is '
               'kept.' if good is not None else 'would be at step 0: none '
               'saved.')
            + ' Set config.skip_nonfinite_steps=True to skip such steps.'
        )
      self._loop.skipped_steps += 1
      config_checks.check_skipped_fraction(
          self._loop.skipped_steps, self._total_steps, self._max_skipped,
          self._checkpointer.latest_step())
      logging.warning(
          'Skipped training step %d (config.skip_nonfinite_steps): '
          'non-finite %s; %d steps skipped so far.', number, bad,
          self._loop.skipped_steps)

  def summary(self, step: int) -> dict[str, float]:
    """The mean of every metric over the steps since the last summary."""
    self.check()
    # Empty when every step since the last line was skipped.
    summary = _mean_over_steps(self._checked) if self._checked else {}
    self._checked.clear()
    _check_finite(step, summary)
    if self._skip:
      summary['skipped_steps'] = self._loop.skipped_steps
    return summary


def _eval_sources(config, splits) -> dict[str, data.Source]:
  """The splits evaluated at every evaluation (train: the first
  ``config.eval_train_examples`` examples, 0 for all)."""
  train = splits.train
  if 0 < config.eval_train_examples < len(splits.train):
    train = data.IndexSubset(splits.train,
                             np.arange(config.eval_train_examples))
  return {'train': train, 'holdout': splits.holdout, 'test': splits.test}


def _write_class_counts(workdir: str, config, splits) -> None:
  """Writes the examples per class of every split, and ``data.longtail``,
  to ``class_counts.json``."""
  record = {
      split: np.bincount(data.pipeline.source_labels(getattr(splits, split)),
                         minlength=splits.num_classes).tolist()
      for split in SPLITS
  }
  record['data.longtail'] = config.data.longtail.to_dict()
  workdir_lib.write_json(os.path.join(workdir, CLASS_COUNTS_FILE), record)



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
