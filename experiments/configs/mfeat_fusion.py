r"""UCI Multiple Features: one view alone, or late fusion of several.

The G-Blend paper's question (Wang et al., CVPR 2020, Table 1) on real data
that installs offline: does a late-fusion model of several feature views beat
its best single view? Each view gets an MLP encoder; the fused head is two
fully connected layers and the prediction layer.

  python -m experiments.main \
      --config experiments/configs/mfeat_fusion.py:views=fou+kar \
      --workdir /tmp/mfeat_fou_kar

Arguments (comma-separated):
  views=a+b+...  views to use, among fac fou kar mor pix zer (default fou+kar).
  baseline=...   one of the paper's overfitting baselines (default naive):
                 naive | dropout | early_stopping | pretrained | mid_concat |
                 se_gate | nl_gate. `pretrained` needs
                 --config.init_encoders.<view>=<workdir of a single-view run>.
  runlocal       a few steps, for a quick check.
"""

import ml_collections

from experiments.configs import common
from gblend_jax import config as config_lib

VIEWS = ('fac', 'fou', 'kar', 'mor', 'pix', 'zer')
BASELINES = ('naive', 'dropout', 'early_stopping', 'pretrained',
             'mid_concat', 'se_gate', 'nl_gate')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, views='fou+kar', baseline='naive',
                          runlocal=False)
  views = tuple(args['views'].split('+'))
  unknown = sorted(set(views) - set(VIEWS))
  if unknown:
    raise ValueError(f'Unknown mfeat views {unknown}; valid: {list(VIEWS)}.')
  if args['baseline'] not in BASELINES:
    raise ValueError(
        f'Unknown baseline={args["baseline"]!r}; valid: {list(BASELINES)}.'
    )

  config = config_lib.default_config()
  config.data.name = 'mfeat'
  config.data.modalities = views
  config.data.holdout_fraction = 0.1
  config.data.batch_size = 64
  # The views' scales differ by orders of magnitude (mor ~1e3, kar ~1).
  config.data.standardize = True

  config.model.encoder.name = 'mlp'
  config.model.encoder.mlp.hidden_sizes = (128,)
  config.model.fusion = 'concat'
  config.model.fused_head.hidden_sizes = (128, 128)
  config.model.modality_heads = False

  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = 'cosine'
  config.num_epochs = 60
  config.eval_every_epochs = 10
  config.log_every_steps = 200

  baseline = args['baseline']
  if baseline == 'dropout':
    config.model.fused_head.input_dropout_rate = 0.5
  elif baseline == 'early_stopping':
    config.eval_every_epochs = 2
    config.early_stopping_patience = 5
  elif baseline in ('mid_concat', 'se_gate', 'nl_gate'):
    config.model.fusion = baseline
    config.model.encoder.mlp.hidden_sizes = (128, 128)
    config.model.mid_fusion_layer = 1

  if args['runlocal']:
    config.num_train_steps = 5
    config.eval_every_epochs = 1
    config.log_every_steps = 1
  return config


def two_view_config(
    args: dict[str, str | bool], methods: tuple[str, ...]
) -> tuple[ml_collections.ConfigDict, str]:
  """The start of a two-view method grid's config (`mfeat_gblend`,
  `mfeat_ogm`).

  Args:
    args: parsed arguments with ``views`` (``a+b``), ``method``,
      ``per_class`` and ``mismatch`` (see `mfeat_gblend`).
    methods: the allowed methods; ``single_a``/``single_b`` train the first
      or second view alone.

  Returns:
    ``(config, method)``: this file's config for the views the
    method uses, with the training-set size and the second view's mismatch
    set.
  """
  views = args['views'].split('+')
  if len(views) != 2:
    raise ValueError(f'views={args["views"]!r} must name two views (a+b).')
  method = args['method']
  if method not in methods:
    raise ValueError(f'Unknown method={method!r}; valid: {list(methods)}.')
  used = {'single_a': views[:1], 'single_b': views[1:]}.get(method, views)
  config = get_config(f'views={"+".join(used)}')
  config.data.train_examples_per_class = int(args['per_class'])
  mismatch = float(args['mismatch'])
  if mismatch and views[1] in used:
    config.data.mismatched_modalities[views[1]] = mismatch
  return config, method
