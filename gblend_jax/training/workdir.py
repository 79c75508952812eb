"""A run's work directory: its lock, atomic writes and the recorded config.

One run at a time owns a work directory: `WorkdirLock` holds ``lock`` (the
holder's host and pid) for the life of the run, takes over a stale lock left
by a dead process of the same host, and refuses any other holder at once.
In a multi-host run only the chief (process 0) takes it: the processes of one
run share the directory on purpose.

Every file a rerun reads is written by `write_json` / `write_text`: a temp
file in the same directory, flushed to disk, then renamed over the old one,
so a kill during the write leaves the old file or the new one, never a torn
one.

The config a run's checkpoints were made with is ``config.json``, written
with the first checkpoint. A rerun compares its config with it
(`config_differences`) and refuses to resume with a different one
(`check_resume_config`) unless ``config.resume_allowed_changes`` lists every
key that differs; ``config.json`` is rewritten only once the rerun has
resumed cleanly (`record_config`).
"""

import errno
import json
import os
import socket
import tempfile
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

LOCK_FILE = 'lock'
CONFIG_FILE = 'config.json'
# Keys that change how fast a run goes or how often it logs, never what it
# computes: a rerun may change them freely.
NEUTRAL_KEYS = ('log_every_steps', 'data.read_threads',
                'data.prefetch_batches', 'resume_allowed_changes',
                # The streamed and in-memory paths give the same batches.
                'data.streaming', 'data.in_memory_limit_mb', 'data.workers')


class WorkdirLockedError(RuntimeError):
  """Another live process holds the work directory's lock."""


class ConfigMismatchError(ValueError):
  """A rerun's config differs from the one its checkpoints were made with."""


class DiskFullError(OSError):
  """A write of the run failed for lack of space (the path is named)."""


def write_bytes(path: str, payload: bytes) -> None:
  """Writes `payload` to `path` atomically (temp file, fsync, rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, temp = tempfile.mkstemp(dir=directory,
                              prefix=f'.{os.path.basename(path)}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  write_bytes(path, text.encode('utf-8'))


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON to `path` atomically."""
  write_text(path, json.dumps(value, indent=2) + '\n')


def read_json(path: str) -> Any:
  """Reads a JSON file; a damaged one raises an error naming the file."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(
        f'{path} is not valid JSON ({e}; {len(text)} bytes): it was '
        'probably cut short by a kill or a full disk.'
    ) from None


class WorkdirLock:
  """An exclusive lock on a work directory, as a context manager.

  Args:
    workdir: the work directory (created if missing).
    enabled: False on the processes of a multi-host run but the chief.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._enabled = enabled
    self._held = False

  def __enter__(self) -> 'WorkdirLock':
    if not self._enabled:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    me = {'host': socket.gethostname(), 'pid': os.getpid()}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = _read_holder(self.path)
        if holder is None:  # Being written by its holder: look again.
          continue
        if _is_stale(holder, me['host']):
          logging.warning(
              'Taking over the stale lock %s of process %s on %s (it is no '
              'longer running).', self.path, holder.get('pid'),
              holder.get('host'))
          try:
            os.remove(self.path)
          except FileNotFoundError:
            pass
          continue
        raise WorkdirLockedError(
            f'{os.path.dirname(self.path)} is in use by process '
            f'{holder.get("pid")} on host {holder.get("host")} (lock file '
            f'{self.path}). Wait for it to finish or stop it; use another '
            '--workdir for a second run.'
        ) from None
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._held = True
      return self
    raise WorkdirLockedError(
        f'Could not take the lock {self.path}: it keeps changing hands.')

  def __exit__(self, *exc) -> None:
    if self._held:
      self._held = False
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass


def _read_holder(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.loads(f.read())
  except (OSError, json.JSONDecodeError):
    return None


def _is_stale(holder: Mapping[str, Any], host: str) -> bool:
  """Whether the holder is a process of this host that no longer runs."""
  if holder.get('host') != host or not isinstance(holder.get('pid'), int):
    return False
  try:
    os.kill(holder['pid'], 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # Alive, another user's.
    return False
  return False


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, Mapping):
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f'{prefix}{key}.'))
    if not tree and prefix:
      flat[prefix[:-1]] = {}
    return flat
  if isinstance(tree, tuple):
    tree = list(tree)
  return {prefix[:-1]: tree}


def config_as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values, as ``config.json`` holds it."""
  return json.loads(config.to_json_best_effort())


def config_differences(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, tuple[Any, Any]] | None:
  """The keys whose values differ from the run's recorded config.

  Args:
    config: the config of this run.
    workdir: the work directory.

  A key the recorded config lacks but that holds its default value now
  is no difference: the key was added to the framework after the run, and
  its default keeps what the run trained (a new method's block, off).

  Returns:
    ``{key: (recorded value, new value)}`` (a missing key reads as
    ``'<missing>'``) without the `NEUTRAL_KEYS`, or None when the work
    directory records no config.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  old = _flatten(read_json(path))
  new = _flatten(config_as_json(config))
  defaults = _default_values()
  differences = {}
  for key in sorted(old.keys() | new.keys()):
    if _matches(key, NEUTRAL_KEYS):
      continue
    before, after = old.get(key, '<missing>'), new.get(key, '<missing>')
    if before == '<missing>' and key in defaults and after == defaults[key]:
      continue
    if before != after:
      differences[key] = (before, after)
  return differences


def _default_values() -> dict[str, Any]:
  """The flattened values of `gblend_jax.config.default_config`."""
  # Imported here: the config module imports every method's block.
  from gblend_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return _flatten(config_as_json(config_lib.default_config()))


def format_differences(differences: Mapping[str, tuple[Any, Any]]) -> str:
  return '; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in
                   differences.items())


def _matches(key: str, patterns) -> bool:
  return any(key == p or key.startswith(p + '.') for p in patterns)


def allowed_changes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The keys of ``config.resume_allowed_changes`` (comma-separated)."""
  text = config.get('resume_allowed_changes', '') or ''
  if not isinstance(text, str):
    text = ','.join(text)
  return tuple(k.strip() for k in text.split(',') if k.strip())


def has_checkpoints(workdir: str) -> bool:
  """Whether the work directory holds any (latest) checkpoint."""
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def check_resume_config(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, tuple[Any, Any]] | None:
  """Refuses to resume with a config other than the checkpoints' one.

  Args:
    config: the config of this run.
    workdir: the work directory.

  Returns:
    The (allowed) differences when the work directory has checkpoints and a
    recorded config; None when there is nothing to resume or no record.

  Raises:
    ConfigMismatchError: naming every key that differs and is not listed in
      ``config.resume_allowed_changes``.
  """
  if not has_checkpoints(workdir):
    return None
  differences = config_differences(config, workdir)
  if differences is None:
    logging.warning(
        '%s has checkpoints but no %s: resuming without comparing configs.',
        workdir, CONFIG_FILE)
    return None
  allowed = allowed_changes(config)
  refused = {k: v for k, v in differences.items() if not _matches(k, allowed)}
  if refused:
    raise ConfigMismatchError(
        f'The checkpoints in {workdir} were made with another config '
        f'({os.path.join(workdir, CONFIG_FILE)}); this run differs in '
        f'{format_differences(refused)}. Rerun with the recorded config, use '
        'another --workdir, or list the keys that may change in '
        "config.resume_allowed_changes (e.g. 'num_train_steps,num_epochs')."
    )
  if differences:
    logging.warning('Resuming %s with changed config values (allowed by '
                    'config.resume_allowed_changes): %s', workdir,
                    format_differences(differences))
  return differences


def record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``config.json`` atomically (chief only; see the module doc)."""
  write_text(os.path.join(workdir, CONFIG_FILE),
             config.to_json_best_effort(indent=2))


def check_resume_step(start_step: int, total_steps: int, workdir: str) -> None:
  """Refuses a resume from a checkpoint past this run's last step."""
  if start_step > total_steps:
    raise ConfigMismatchError(
        f'The latest checkpoint in {workdir} is at step {start_step}, past '
        f'this run\'s end at step {total_steps}: a shorter run cannot resume '
        'from it. Use another --workdir, or the recorded num_train_steps / '
        'num_epochs.'
    )


def disk_full_path(error: BaseException) -> str | None:
  """The path of a 'no space left' error in `error`'s chain, if any.

  Returns:
    The file named by the first ``ENOSPC`` `OSError` of the chain ('' when
    it names none); None when the chain has no such error.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return error.filename or ''
    if 'No space left on device' in str(error):
      return ''
    error = error.__cause__ or error.__context__
  return None


def describe_changes(
    differences: Mapping[str, tuple[Any, Any]] | None, workdir: str
) -> str:
  """A sentence on how this run's config differs from the recorded one."""
  if differences is None:
    return (f'{os.path.join(workdir, CONFIG_FILE)} is missing, so the config '
            'differences are unknown.')
  if not differences:
    return 'The config matches config.json.'
  return f'Config changes from config.json: {format_differences(differences)}.'


def run_exclusively(
    train_fn: Callable[[ml_collections.ConfigDict, str], Any],
    config: ml_collections.ConfigDict, workdir: str,
) -> Any:
  """Runs ``train_fn(config, workdir)`` holding the work directory's lock.

  Only the chief (process 0) of a multi-host run takes the lock. A
  'no space left on device' error anywhere in the error chain is raised
  again as one `DiskFullError` naming the path.

  Args:
    train_fn: the training function.
    config: its config.
    workdir: its work directory.

  Returns:
    What `train_fn` returns.
  """
  import jax  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  with WorkdirLock(workdir, enabled=jax.process_index() == 0):
    try:
      return train_fn(config, workdir)
    except Exception as e:  # pylint: disable=broad-except
      path = disk_full_path(e)
      if path is None:
        raise
      raise DiskFullError(
          errno.ENOSPC,
          f'No space left on device writing {path or workdir} (run '
          f'{workdir}). Free some space there and rerun the same command to '
          'resume from the last checkpoint.'
      ) from None
