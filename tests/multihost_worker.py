"""One process of a localhost multi-process run of the tiny synthetic config.

  python tests/multihost_worker.py DATA_DIR WORKDIR PROCESS_ID PROCESS_COUNT \
      PORT

Each process has one CPU device; with PROCESS_COUNT > 1 the processes meet
through `jax.distributed` on localhost:PORT and split the global batch. The
chief prints the final metrics as one JSON line.
"""

import json
import sys

import jax
from absl import logging


def main(data_dir, workdir, process_id, process_count, port):
  process_id, process_count = int(process_id), int(process_count)
  logging.set_verbosity(logging.INFO)
  if process_count > 1:
    jax.distributed.initialize(
        coordinator_address=f'localhost:{port}',
        num_processes=process_count, process_id=process_id,
        local_device_ids=[0],
    )
  # pylint: disable=g-import-not-at-top
  from gblend_jax.training import trainer as train
  from tests import train_utils
  assert jax.process_count() == process_count, jax.process_count()
  assert jax.device_count() == process_count, jax.devices()
  config = train_utils.tiny_synthetic_config(data_dir, steps=6)
  # Per-example dropout masks follow the order of the examples in the
  # global batch, which is interleaved across processes: none here.
  config.model.fused_head.input_dropout_rate = 0.0
  results = train.train_and_evaluate(config, workdir)
  if jax.process_index() == 0:
    print(json.dumps(results['final']))


if __name__ == '__main__':
  main(*sys.argv[1:])
