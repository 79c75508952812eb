r"""OGM-GE on audio-visual data: the paper's setting (Peng et al., CVPR 2022).

A ResNet-18 over the log spectrogram (audio) and a ResNet-18 over each video
frame, pooled over time (visual); concatenation fusion and one linear layer,
whose output splits into one share per modality
(`gblend_jax.modulation.unimodal`).
The official settings: SGD lr 1e-3, momentum 0.9, weight decay 1e-4, lr
×0.1 at epoch 70 of 100, batch 64, modulation over epochs [0, 50], α 0.8 on
CREMA-D (the paper gives 0.1 for VGGSound; it gives no value for
Kinetics-Sounds and AVE, where the default 0.8 is ours: tune it).

ReconBoost (``method=reconboost``, Hua et al., ICML 2024) trains the same
two ResNet-18s as learners of a shared-head ensemble
(``model.fusion='ensemble'``; the authors' head 512 -> 256 -> C), with the
official CREMA-D settings (README, ``train.py``): SGD lr 0.01 (``m_lr`` =
``e_lr``), momentum 0.9, weight decay 5e-4 on each phase's parameters,
batch 64, 4 + 4 epochs per stage, w1 5, w2 1, β initialised to 1, lr ×0.1
every 30 stages; evaluated at the end of every stage. ``stages=N`` sets the
length (default 100: the authors' shipped CREMA-D model is from stage 99),
8 epochs each, so 800 epochs by default. AVE: w1 4, lr ×0.5 at stage 40.
Kinetics-Sounds has no official values; the CREMA-D ones are used. The
authors start from unimodal ResNet-18s (``--use_pretrain``): add
``--config.init_encoders.audio=WORKDIR --config.init_encoders.visual=WORKDIR``
(single-modality runs of this config with ``data.modalities``) and both
learners are in the ensemble from stage 0.

The data sets cannot be downloaded here: the builders read your copy from
the TFDS manual dir (see `data/<name>/` for the layout each expects).

  python -m experiments.main \
      --config experiments/configs/av_ogm.py:dataset=crema_d,method=ogm_ge \
      --workdir workdirs/crema_d_ogm_ge \
      --config.data.manual_dir=/path/to/manual

Arguments (comma-separated):
  dataset=...   crema_d (default), kinetics_sounds or ave.
  method=...    naive, ogm, ogm_ge (default) or reconboost.
  alpha=A       OGM's α (default: 0.8).
  stages=N      ReconBoost's stages (default 100).
  runlocal      the `small` builder config (64x64 frames), narrow ResNets
                (8 filters), batch 8 and 20 steps: minutes on a CPU.
"""

import ml_collections

from experiments.configs import common
from gblend_jax import config as config_lib

DATASETS = ('crema_d', 'kinetics_sounds', 'ave')
METHODS = ('naive', 'ogm', 'ogm_ge', 'reconboost')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dataset='crema_d', method='ogm_ge',
                          alpha='0.8', stages='100', runlocal=False)
  if args['dataset'] not in DATASETS:
    raise ValueError(
        f'Unknown dataset={args["dataset"]!r}; valid: {list(DATASETS)}.')
  if args['method'] not in METHODS:
    raise ValueError(
        f'Unknown method={args["method"]!r}; valid: {list(METHODS)}.')

  config = config_lib.default_config()
  config.data.name = args['dataset']
  config.data.builder_config = 'official'
  config.data.modalities = ('audio', 'visual')
  config.data.holdout_fraction = 0.1
  config.data.batch_size = 64
  config.data.eval_batch_size = 128
  # Per-feature mean and std of the training split: frames arrive as
  # uint8 and spectrograms as log magnitudes.
  config.data.standardize = True

  config.model.encoder.name = 'resnet18'
  config.model.encoders = {'visual': {'name': 'frame_resnet18'}}
  config.model.fusion = 'concat'
  config.model.fused_head.hidden_sizes = ()
  config.model.modality_heads = False

  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = 'step'
  config.optimizer.boundaries_epochs = (70,)
  config.optimizer.decay_factor = 0.1
  config.num_epochs = 100
  config.eval_every_epochs = 1.0

  if args['method'] == 'reconboost':
    _reconboost(config, args['dataset'], int(args['stages']))
  elif args['method'] != 'naive':
    config.modulation.method = args['method']
    config.modulation.alpha = float(args['alpha'])
    # Official modulation_starts=0, modulation_ends=50, both inclusive.
    config.modulation.start_epoch = 0.0
    config.modulation.end_epoch = 51.0
    config.modulation.modulated = 'conv_kernels'

  if args['runlocal']:
    config.data.builder_config = 'small'
    config.data.batch_size = 8
    config.data.eval_batch_size = 16
    for name in ('resnet18', 'frame_resnet18'):
      config.model.encoder[name].num_filters = 8
    config.num_train_steps = 20
    config.modulation.end_epoch = -1.0
    config.eval_every_epochs = 1.0
    config.log_every_steps = 5
    config.reconboost.learner_epochs = 0.5
    config.reconboost.rectify_epochs = 0.5
  return config


def _reconboost(config: ml_collections.ConfigDict, dataset: str,
                stages: int) -> None:
  """The official ReconBoost settings (``train.py``; see the docstring)."""
  config.model.fusion = 'ensemble'
  config.model.fused_head.hidden_sizes = (256,)
  config.model.modality_heads = True
  config.model.ensemble_beta = 1.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 0.0  # Per phase: reconboost.weight_decay.
  config.reconboost.enabled = True
  config.reconboost.learner_epochs = 4.0
  config.reconboost.rectify_epochs = 4.0
  config.reconboost.weight1 = 4.0 if dataset == 'ave' else 5.0
  config.reconboost.weight2 = 1.0
  config.reconboost.weight_decay = 5e-4
  stage_epochs = 8
  config.num_epochs = stages * stage_epochs
  config.eval_every_epochs = float(stage_epochs)
  if dataset == 'ave':  # lr x0.5 when stage 40 begins.
    config.optimizer.boundaries_epochs = (40 * stage_epochs,)
    config.optimizer.decay_factor = 0.5
  else:  # lr x0.1 every 30 stages.
    config.optimizer.boundaries_epochs = tuple(
        range(30 * stage_epochs, stages * stage_epochs, 30 * stage_epochs))
    config.optimizer.decay_factor = 0.1
