"""Writes a run's metrics as JSON lines and TensorBoard events, and shows
progress (steps/s and ETA) while training runs.

Files inside the work directory::

  metrics.jsonl   one JSON object per write: {"step": N, "<name>": value, ...}
  tensorboard/    TensorBoard event files (tensorboardX, no TensorFlow)
"""

import json
import logging as std_logging
import math
import os
import time
from collections.abc import Mapping

import tensorboardX
from absl import logging


class MetricWriter:
  """Appends scalar metrics to ``metrics.jsonl`` and TensorBoard.

  On resume from step S, lines written after the checkpoint of S by the
  interrupted run are dropped first, so the file reads as one uninterrupted
  run: the file is cut at `resume_offset` (the byte offset `offset` gave when
  that checkpoint was saved), or, for checkpoints that do not record it,
  after the last line of step S. A torn last line (a kill or a full disk
  during a write) is dropped, with a warning.

  Args:
    workdir: the run's work directory.
    resume_step: the step training resumes from (0 for a new run).
    enabled: False on every process but the first of a multi-host run.
    resume_offset: the file's length when the checkpoint resumed from was
      saved; None when unknown.
  """

  def __init__(
      self, workdir: str, *, resume_step: int = 0, enabled: bool = True,
      resume_offset: int | None = None,
  ):
    self._enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    _truncate_after(self.path, resume_step, resume_offset)
    self._file = open(self.path, 'a')
    self._tensorboard = tensorboardX.SummaryWriter(
        os.path.join(workdir, 'tensorboard'), purge_step=resume_step or None
    )

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    """Records `metrics` (name to scalar) at `step`."""
    if not self._enabled:
      return
    row = {'step': int(step), **{k: float(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()
    for name, value in row.items():
      if name != 'step' and math.isfinite(value):
        self._tensorboard.add_scalar(name, value, int(step))
    self._tensorboard.flush()

  def offset(self) -> int | None:
    """The file's length so far in bytes (None when not enabled)."""
    if not self._enabled:
      return None
    self._file.flush()
    return self._file.tell()

  def close(self) -> None:
    if self._enabled:
      self._file.close()
      self._tensorboard.close()


def _truncate_after(path: str, step: int, offset: int | None = None) -> None:
  """Drops the rows written after the resumed checkpoint, and a torn one."""
  if not os.path.exists(path):
    return
  with open(path, 'rb') as f:
    original = f.read()
  lines = original.splitlines(keepends=True)
  rows = []  # (line, parsed row)
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      if not line.endswith(b'\n'):
        raise ValueError('no end of line')
    except ValueError as e:
      if number == len(lines):
        logging.warning(
            'Dropped the torn last line %d of %s (%d bytes, %s): a write was '
            'cut short.', number, path, len(line), e)
        continue
      raise ValueError(
          f'Line {number} of {path} is not a JSON row ({e}): the file is '
          'damaged. Fix or delete that line, then rerun.') from None
    rows.append((line, row))
  content = b''.join(line for line, _ in rows)
  if offset is not None and offset <= len(content):
    content = content[:offset]  # Whole rows: the checkpoint's offset.
  else:
    content = b''.join(line for line, row in rows if row['step'] <= step)
  if content != original:
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict[str, float]]:
  """Reads back every row of a run's ``metrics.jsonl``."""
  path = os.path.join(workdir, 'metrics.jsonl')
  rows = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f'Line {number} of {path}: {e}') from None
  return rows


class ProgressReporter:
  """Logs steps/s and the estimated time left every `every_steps` steps.

  Args:
    total_steps: the step at which training ends.
    start_step: the step training starts (or resumes) from.
    every_steps: how often to report.
  """

  def __init__(self, total_steps: int, start_step: int, every_steps: int):
    self._total = total_steps
    self._every = max(every_steps, 1)
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def should_report(self, step: int) -> bool:
    return step % self._every == 0 or step == self._total

  def report(self, step: int, summary: str) -> float:
    """Logs one progress line and returns the measured steps per second."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    eta = (self._total - step) / max(rate, 1e-9)
    logging.info(
        'step %d/%d (%.0f%%) | %.1f steps/s | ETA %s | %s',
        step, self._total, 100 * step / self._total, rate,
        _format_seconds(eta), summary,
    )
    self._last_step, self._last_time = step, now
    return rate


def quiet_library_logs() -> None:
  """Hides orbax's INFO lines (several per checkpoint) from the absl log.

  Warnings and errors still show; the trainer's own progress lines stay.
  """
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING
      or 'orbax' not in record.pathname
  )


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours:d}:{minutes:02d}:{seconds:02d}'
