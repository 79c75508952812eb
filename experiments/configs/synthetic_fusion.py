r"""Synthetic multi-modal data with a strong and a weak modality.

A controlled setting for the multi-modal methods: per-modality signal strength
and noise are set in the data set's builder config.

  python -m experiments.main \
      --config experiments/configs/synthetic_fusion.py \
      --workdir /tmp/synthetic

Arguments (comma-separated):
  modalities=a+b  which modalities (default strong+weak; one for a single
                  modality run).
  builder=...     builder config (default two_modalities; tiny for tests).
  runlocal        a few steps, for a quick check.
"""

import ml_collections

from experiments.configs import common
from gblend_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, modalities='strong+weak',
                          builder='two_modalities', runlocal=False)
  config = config_lib.default_config()
  config.data.name = 'synthetic_multimodal'
  config.data.builder_config = args['builder']
  config.data.modalities = tuple(args['modalities'].split('+'))
  config.data.batch_size = 64

  config.model.encoder.mlp.hidden_sizes = (64,)
  config.model.fused_head.hidden_sizes = (64, 64)
  config.model.modality_heads = True

  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.num_epochs = 20
  config.eval_every_epochs = 5

  if args['runlocal']:
    config.num_train_steps = 5
    config.eval_every_epochs = 1
    config.log_every_steps = 1
  return config
