"""Multi-host launch: the arguments of `jax.distributed.initialize`, checked.

A multi-host run starts one process per host (or per accelerator) with the
same command; before anything else uses JAX, each process calls
`jax.distributed.initialize`, which connects it to the others through a
coordinator (process 0's host and a free port). Afterwards
`jax.process_index()`, `jax.process_count()` and `jax.devices()` describe the
whole job, and the trainer shards every global batch over all processes'
devices (each process reads its own positions of each batch:
`gblend_jax.data.batching.BatchPositions`).

Two ways in, as ``experiments.main`` offers them:

* explicit: ``coordinator_address``, ``num_processes`` and ``process_id``
  (all three), e.g. ``host0:1234``, ``2``, ``0`` on the first host and
  ``... 1`` on the second;
* detected: ``distributed=True`` alone. On Cloud TPU, SLURM, Open MPI (and
  the other cluster environments JAX knows) JAX reads the three from the
  environment; any of them given as well overrides what it finds.

The trainer calls `prepare_on_chief_first` before it loads the data set.
"""

import dataclasses
import re
from collections.abc import Sequence

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from gblend_jax import data

# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r'^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})$')


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
  """The keyword arguments of one `jax.distributed.initialize` call.

  Attributes:
    coordinator_address: ``host:port`` of process 0; None to detect it.
    num_processes: the job's processes; None to detect it.
    process_id: this process, in ``[0, num_processes)``; None to detect it.
    local_device_ids: the local devices this process uses; None for all.
  """
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def distributed_args(
    *,
    distributed: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int | str] | None = None,
) -> DistributedArgs | None:
  """Checks a launcher's multi-host flags; says how to initialise.

  Args:
    distributed: initialise even without the three explicit values (JAX
      detects the cluster environment).
    coordinator_address: ``host:port`` of process 0.
    num_processes: the number of processes, at least 1.
    process_id: this process's index; needs ``num_processes``.
    local_device_ids: indices of the local devices this process uses
      (one process per GPU); only in a distributed run.

  Returns:
    The arguments of `jax.distributed.initialize`, or None for a
    one-process run (no flag given).

  Raises:
    ValueError: a bad combination or value, naming the flags.
  """
  explicit = {'--coordinator_address': coordinator_address,
              '--num_processes': num_processes, '--process_id': process_id}
  given = [name for name, value in explicit.items() if value is not None]
  if not distributed and not given:
    if local_device_ids:
      raise ValueError(
          f'--local_device_ids={",".join(map(str, local_device_ids))} '
          'needs a distributed run: add --distributed, or '
          '--coordinator_address, --num_processes and --process_id.')
    return None
  if not distributed and len(given) < len(explicit):
    missing = [name for name in explicit if name not in given]
    raise ValueError(
        f'{", ".join(given)} without {", ".join(missing)}: give all three, '
        'or --distributed to let JAX detect the rest (Cloud TPU, SLURM, '
        'Open MPI).')
  if process_id is not None and num_processes is None:
    raise ValueError(
        f'--process_id={process_id} without --num_processes: a process '
        'index means nothing without the count.')
  if num_processes is not None and num_processes < 1:
    raise ValueError(f'--num_processes={num_processes} must be at least 1.')
  if process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(
        f'--process_id={process_id} must be in [0, {num_processes}) '
        f'(--num_processes={num_processes}).')
  if coordinator_address is not None:
    match = _ADDRESS.match(coordinator_address)
    if not match or not 0 < int(match.group(2)) < 65536:
      raise ValueError(
          f'--coordinator_address={coordinator_address!r} must be '
          'host:port, e.g. host0:1234 (process 0\'s host, a free port).')
  ids = None
  if local_device_ids:
    try:
      ids = tuple(int(i) for i in local_device_ids)
    except ValueError:
      ids = ()
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
      raise ValueError(
          f'--local_device_ids={",".join(map(str, local_device_ids))} must '
          'be distinct device indices >= 0, e.g. 0 or 0,1.')
  return DistributedArgs(coordinator_address, num_processes, process_id, ids)


def initialize(args: DistributedArgs | None) -> None:
  """Calls `jax.distributed.initialize` with ``args``; nothing for None.

  Must come before any other use of JAX in the process (JAX refuses it
  once a backend is up).

  Args:
    args: from `distributed_args`.

  Raises:
    ValueError: JAX detected no cluster environment where the flags left
      values to detect.
  """
  if args is None:
    return
  try:
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes, process_id=args.process_id,
        local_device_ids=(list(args.local_device_ids)
                          if args.local_device_ids else None))
  except ValueError as e:
    if None in (args.coordinator_address, args.num_processes,
                args.process_id):
      raise ValueError(
          f'--distributed: JAX found no cluster environment to detect the '
          f'processes from ({e}); outside Cloud TPU, SLURM or Open MPI give '
          '--coordinator_address, --num_processes and --process_id.'
      ) from e
    raise
  logging.info('Process %d of %d; %d local of %d devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def prepare_on_chief_first(data_config: ml_collections.ConfigDict) -> None:
  """In a multi-process run, process 0 prepares the data set before the rest.

  Every process then finds it prepared (a data directory all hosts share)
  or prepares its own copy (a host-local one), so that no two processes
  build into one folder. Nothing happens in a one-process run or when the
  data set is already prepared.

  Args:
    data_config: ``config.data`` (`gblend_jax.data.default_data_config`).
  """
  if jax.process_count() == 1:
    return
  if jax.process_index() == 0:
    data.prepare(data.get_builder(
        data_config.name, data_dir=data_config.data_dir,
        builder_config=data_config.builder_config),
        manual_dir=data_config.manual_dir)
  # If process 0 fails, the others stop here once JAX's coordination
  # service misses its heartbeat.
  multihost_utils.sync_global_devices('gblend_jax: data set prepared')
