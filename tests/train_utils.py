"""Helpers for the end-to-end tests: tiny configs of the real experiments."""

import os

import ml_collections

from experiments.configs import synthetic_fusion

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_synthetic_config(
    data_dir: str, *, steps: int, modalities: str = 'strong+weak'
) -> ml_collections.ConfigDict:
  """The synthetic experiment on the `tiny` builder config, `steps` long."""
  config = synthetic_fusion.get_config(f'builder=tiny,modalities={modalities}')
  config.data.data_dir = data_dir
  config.data.batch_size = 16
  config.data.eval_batch_size = 32
  config.num_train_steps = steps
  config.log_every_steps = 2
  config.eval_every_epochs = 1.0
  return config
