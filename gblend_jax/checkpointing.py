"""Checkpoints of a run: the latest few for resuming, and the best one.

A checkpoint holds the train state (parameters, batch statistics, optimiser
state, PRNG key, step) as an orbax pytree and, beside it, a JSON document with
everything else a resumed run needs: the input iterator position and the
loop's own bookkeeping (best held-out metric so far, early-stopping counter).

Layout inside the work directory::

  checkpoints/<step>/{state,extra}   latest `max_to_keep` checkpoints
  best/<step>/{state,extra}          the best checkpoint by a held-out metric
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores a run's checkpoints with orbax.

  Args:
    workdir: the run's work directory.
    max_to_keep: how many of the latest checkpoints to keep.
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options
    )
    best_options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
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
    return restored['state'], dict(restored['extra'])

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


def _save_args(state: Any, extra: dict[str, Any]) -> ocp.args.Composite:
  return ocp.args.Composite(
      state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)
  )
