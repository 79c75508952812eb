"""Checkpoints of a run: the latest few for resuming, and the best one.

A checkpoint holds the train state (parameters, batch statistics, optimiser
state, PRNG key, step) as an orbax pytree and, beside it, a JSON document with
everything else a resumed run needs: the input iterator position and the
loop's own bookkeeping (best held-out metric so far, early-stopping counter)
and a CRC-32 of the state's bytes.

Damaged checkpoints: orbax reads a truncated file as an error but a flipped
byte as a different number, so every restore checks the CRC-32 too.
`Checkpointer.restore_latest_usable` falls back from a damaged latest
checkpoint to the newest one that restores and checks, with a warning naming
both; the damaged ones are moved to ``damaged_checkpoints/<step>`` (never
deleted). When none is usable it raises `CheckpointError` and changes
nothing. A checkpoint whose parameters have other shapes than the run's
model is not damaged but made with another config: `CheckpointConfigError`,
and nothing is moved.

Best checkpoints newer than the step a run resumes from (a kill between the
commit of ``best/T`` and that of ``checkpoints/T``) are set aside to
``damaged_checkpoints/best_<step>``: the resumed run writes them again.
`Checkpointer.restore_best` reads the best checkpoint of a given step and
checks that it holds that step's state.

Layout inside the work directory::

  checkpoints/<step>/{state,extra}   latest `max_to_keep` checkpoints
  best/<step>/{state,extra}          the best checkpoint by a held-out metric
  damaged_checkpoints/<step>/        latest checkpoints found damaged
"""

import os
import shutil
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

CHECKSUM_KEY = 'state_crc32'


class CheckpointError(RuntimeError):
  """A checkpoint exists but none can be restored."""


class CheckpointConfigError(CheckpointError):
  """A checkpoint was made with another config (other shapes)."""


class Checkpointer:
  """Saves and restores a run's checkpoints with orbax.

  Args:
    workdir: the run's work directory.
    max_to_keep: how many of the latest checkpoints to keep.
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    if max_to_keep < 1:
      raise ValueError(
          f'max_to_keep={max_to_keep} must be >= 1: a run must keep a '
          'checkpoint to resume from.')
    self._workdir = os.path.abspath(workdir)
    # Both managers save the same step at an evaluation: in a multi-process
    # run their barriers need names of their own.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix='latest'),
    )
    self._latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options
    )
    best_options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix='best'),
    )
    self._best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'best'), options=best_options
    )

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint, or None when there is none."""
    return self._latest.latest_step()

  def best_step(self) -> int | None:
    """The step of the best checkpoint, or None when there is none."""
    return self._best.latest_step()

  def save(self, step: int, state: Any, extra: dict[str, Any]) -> None:
    """Saves `state` and the JSON-serialisable `extra` as the latest."""
    self._latest.save(step, args=_save_args(state, extra), force=True)

  def save_best(self, step: int, state: Any, extra: dict[str, Any]) -> None:
    """Replaces the best checkpoint with this one."""
    self._best.save(step, args=_save_args(state, extra), force=True)

  def step_path(self, step: int, *, best: bool = False) -> str:
    """The directory of the checkpoint at `step`."""
    manager = self._best if best else self._latest
    return os.path.join(str(manager.directory), str(step))

  def restore_latest_usable(
      self, abstract_state: Any, *, config_note: str = ''
  ) -> tuple[int | None, Any, dict[str, Any] | None]:
    """Restores the newest latest checkpoint that is not damaged.

    A checkpoint is damaged when orbax cannot read it (missing, truncated or
    garbled files) or its state does not match the CRC-32 saved with it.
    Damaged checkpoints newer than the one restored are moved to
    ``damaged_checkpoints/<step>``, and best checkpoints newer than it are
    dropped (the resumed run writes them again), so that the resumed run can
    write those steps afresh.

    Args:
      abstract_state: as for `restore`.
      config_note: what is known of the config differences, for the error
        when the checkpoint's shapes differ.

    Returns:
      ``(step, state, extra)``, or ``(None, None, None)`` when there is no
      checkpoint.

    Raises:
      CheckpointConfigError: when the newest checkpoint's parameters have
        other shapes than `abstract_state`'s; nothing is moved then.
      CheckpointError: when checkpoints exist but none is usable; nothing is
        moved or overwritten then.
    """
    damaged = []
    for step in sorted(self._latest.all_steps(), reverse=True):
      self._check_shapes(step, abstract_state, config_note)
      try:
        state, extra = self.restore(abstract_state, step=step)
      except Exception as e:  # pylint: disable=broad-except
        # orbax and TensorStore raise many kinds of errors on bad files.
        reason = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
        damaged.append((step, self.step_path(step), reason))
        logging.warning('The checkpoint at step %d (%s) is damaged: %s',
                        step, self.step_path(step), reason)
        continue
      if damaged:
        logging.warning(
            'Falling back from the damaged checkpoint at step %d (%s) to the '
            'previous good one at step %d (%s); the damaged ones move to %s.',
            damaged[0][0], damaged[0][1], step, self.step_path(step),
            os.path.join(self._workdir, 'damaged_checkpoints'),
        )
        self._set_aside([d[0] for d in damaged], step)
      else:
        self._set_aside([], step)
      return step, state, extra
    if not damaged:
      self._set_aside([], 0)
    if damaged:
      listing = '; '.join(f'step {s} ({p}): {r}' for s, p, r in damaged)
      raise CheckpointError(
          f'No usable checkpoint in {self._latest.directory}: {listing}. '
          'Nothing was overwritten. Restore the checkpoints from a copy, or '
          'move the work directory aside to start afresh.'
      )
    return None, None, None

  def _set_aside(self, damaged_steps: list[int], good_step: int) -> None:
    """Moves damaged latest checkpoints and newer best ones away."""
    newer_best = [s for s in self._best.all_steps() if s > good_step]
    if jax.process_count() > 1:  # Every process lists before any moves.
      multihost_utils.sync_global_devices('gblend_jax best checkpoints listed')
    if not damaged_steps and not newer_best:
      return
    self.wait()
    if jax.process_index() == 0:
      target = os.path.join(self._workdir, 'damaged_checkpoints')
      os.makedirs(target, exist_ok=True)
      for step in damaged_steps:
        destination = os.path.join(target, str(step))
        if os.path.exists(destination):
          shutil.rmtree(destination)
        shutil.move(self.step_path(step), destination)
      for step in newer_best:
        logging.warning(
            'The best checkpoint at step %d (%s) is newer than the step %d '
            'this run resumes from; moved to %s (the resumed run writes it '
            'again).', step, self.step_path(step, best=True), good_step,
            os.path.join(target, f'best_{step}'))
        destination = os.path.join(target, f'best_{step}')
        if os.path.exists(destination):
          shutil.rmtree(destination)
        shutil.move(self.step_path(step, best=True), destination)
    multihost_utils.sync_global_devices('gblend_jax checkpoints set aside')
    self._latest.reload()
    self._best.reload()

  def _check_shapes(self, step: int, abstract_state: Any, note: str) -> None:
    """Raises `CheckpointConfigError` when the saved parameters differ."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
      # The global shapes (from the array metadata; the tree's write shapes
      # are per-process shards in a multi-process run).
      metadata = handler.metadata(
          epath.Path(os.path.join(self.step_path(step), 'state')))
      saved = {
          leaf.name: tuple(leaf.shape)
          for leaf in jax.tree.leaves(getattr(metadata, 'tree', metadata))
          if str(getattr(leaf, 'name', '')).startswith('params.')
      }
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable: `restore` tells whether it is damaged.
    finally:
      handler.close()
    params = getattr(abstract_state, 'params', None)
    if not saved or params is None:
      return
    expected = {
        'params.' + '.'.join(str(getattr(k, 'key', getattr(k, 'idx', k)))
                             for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    if saved == expected:
      return
    differ = sorted(k for k in saved.keys() | expected.keys()
                    if saved.get(k) != expected.get(k))
    shapes = '; '.join(f'{k}: saved {saved.get(k)}, this model '
                       f'{expected.get(k)}' for k in differ[:8])
    raise CheckpointConfigError(
        f'The checkpoint at step {step} ({self.step_path(step)}) was made '
        f'with another config: its parameters differ ({shapes}'
        f'{"; ..." if len(differ) > 8 else ""}). {note} Nothing was moved. '
        'Rerun with the config it was made with, or use another --workdir.'
    )

  def restore_best(
      self, abstract_state: Any, step: int
  ) -> tuple[Any, dict[str, Any] | None, str | None]:
    """Restores the best checkpoint of `step`, checking that it is that.

    Args:
      abstract_state: as for `restore`.
      step: the best step the loop's bookkeeping records.

    Returns:
      ``(state, extra, None)``, or ``(None, None, reason)`` when the best
      checkpoint of `step` is missing, damaged or holds another step.
    """
    self._best.reload()
    if step not in self._best.all_steps():
      have = self._best.all_steps()
      return None, None, (
          f'no best checkpoint of step {step} in {self._best.directory}'
          + (f' (it holds step(s) {sorted(have)})' if have else ''))
    try:
      state, extra = self.restore(abstract_state, step=step, best=True)
    except Exception as e:  # pylint: disable=broad-except
      return None, None, (
          f'the best checkpoint {self.step_path(step, best=True)} is damaged '
          f'({type(e).__name__}: {str(e).splitlines()[0][:300]})')
    held = getattr(state, 'step', None)
    if held is not None and int(jax.device_get(held)) != step:
      return None, None, (
          f'the best checkpoint {self.step_path(step, best=True)} holds the '
          f'state of step {int(jax.device_get(held))}, not {step}')
    return state, extra, None

  def restore(
      self, abstract_state: Any, *, step: int | None = None, best: bool = False
  ) -> tuple[Any, dict[str, Any]]:
    """Restores a checkpoint into the structure and shardings given.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (with shardings) of
        the state, e.g. from `jax.eval_shape`.
      step: which step; default the latest (or the best with `best=True`).
      best: read from the best checkpoint instead of the latest ones.

    Returns:
      The restored state and its JSON extra.
    """
    manager = self._best if best else self._latest
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {manager.directory}.')
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            extra=ocp.args.JsonRestore(),
        ),
    )
    state, extra = restored['state'], dict(restored['extra'])
    expected = extra.pop(CHECKSUM_KEY, None)
    if expected is not None and checksum(state) != expected:
      raise CheckpointError(
          f'The state in {os.path.join(str(manager.directory), str(step))} '
          f'does not match its CRC-32 (saved {expected}, read '
          f'{checksum(state)}): the files are corrupted.'
      )
    return state, extra

  def restore_raw(self, *, best: bool = True) -> dict[str, Any]:
    """Restores a state as nested dicts of host arrays, without a target.

    Used to take pre-trained encoders out of another run's checkpoint.

    Args:
      best: prefer the best checkpoint (falls back to the latest).

    Returns:
      The state as a nested dict (``{'params': ..., 'batch_stats': ...}``).
    """
    manager = self._best if best and self._best.latest_step() else self._latest
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'No checkpoint in {manager.directory}: train that run first.'
      )
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
    return jax.tree.map(lambda x: x, restored['state'])

  def wait(self) -> None:
    """Blocks until asynchronous saves have finished."""
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the managers."""
    self._latest.close()
    self._best.close()


def checksum(state: Any) -> int:
  """CRC-32 of the bytes, shapes and dtypes of a pytree's leaves.

  Leaves must be host arrays or fully addressable or fully replicated jax
  arrays (the trainer's state is replicated).
  """
  crc = 0
  for leaf in jax.tree.leaves(state):
    value = np.ascontiguousarray(jax.device_get(leaf))
    crc = zlib.crc32(f'{value.dtype}{value.shape}'.encode(), crc)
    crc = zlib.crc32(value.tobytes(), crc)
  return crc


def _save_args(state: Any, extra: dict[str, Any]) -> ocp.args.Composite:
  extra = {**extra, CHECKSUM_KEY: checksum(state)}
  return ocp.args.Composite(
      state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)
  )
