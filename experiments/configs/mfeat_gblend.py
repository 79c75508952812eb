r"""Gradient Blending on UCI Multiple Features (G-Blend Table 1/4 in miniature).

Two views, each with an MLP encoder and a linear head, and the fused head on
their concatenated features (Wang et al., CVPR 2020, §3). The method decides
which losses train the model:

  single_a / single_b  the first / second view alone;
  naive                late fusion, the fused head's loss only;
  offline              G-Blend, Algorithm 2 (weights from the initial model);
  online               G-Blend, Algorithm 3 (re-estimated every super-epoch);
  gradient             G-Blend's Proposition 1 estimated in gradient space,
                       re-estimated every blend.estimate_every_steps (10);
  gradient_every_step  the same, re-estimated on every step.
  mmpareto             MMPareto (Wei & Hu, ICML 2024): the fused and the
                       unimodal losses, each encoder's gradients combined by
                       the Pareto rule, γ = 1.5 (the authors' value).
  mla                  MLA (Zhang et al., CVPR 2024): one shared linear head
                       in place of the fusion and the heads, one Adam step
                       per view and batch, the head-gradient projection
                       (the paper's ∇W Pᵀ), entropy-weighted fusion at test
                       time. The authors' own hyper-parameters are the α
                       schedule of P (fixed) and the optimiser; the shared
                       settings here (Adam 1e-3, 60 epochs, batch 32) replace
                       their SGD 1e-3 recipe for ResNets, as for every
                       method of this grid.
  agm                  AGM (Li et al., ICCV 2023), fused loss only, with the
                       authors' CREMA-D values: α 1, cap 10, the global
                       norm clipped to 1 when an element of the fused head's
                       output-kernel gradient leaves [-1, 1], κ recomputed
                       on every step of the run (their window, epochs 0-20
                       of 10, covers all of it). Kept here although the
                       optimiser is Adam, not their SGD: the shared settings
                       stay. The fused head has two hidden layers here, so
                       the clip watches its output layer (their fusion has
                       only that one).
  pmr                  PMR (Fan et al., CVPR 2023): the fused loss plus the
                       prototypical cross-entropy of the slower view, with
                       the authors' CREMA-D values α = 2.0 and μ = 0.0.
                       Adapted to this setting: the window is the first 33
                       of 60 epochs (their 0-70 of 130, inclusive, scaled),
                       and each prototype pass reads the whole training
                       split (prototype_fraction=1): their tenth of an
                       epoch is one batch of 32 here, about 3 examples per
                       class, where a class is often missing.
  reconboost           ReconBoost (Hua et al., ICML 2024): one view's learner
                       per stage, then the global rectification, on the
                       shared-head ensemble (see below).

  python -m experiments.main \
      --config experiments/configs/mfeat_gblend.py:views=kar+pix,method=online \
      --workdir /tmp/kar_pix_online

Arguments (comma-separated):
  views=a+b      two views among fac fou kar mor pix zer (default kar+pix).
  method=...     one of METHODS (default naive).
  per_class=K    training examples per class (default 20; 0 for all 135).
  mismatch=P     probability that an example's SECOND view comes from a
                 random example of the split (default 0): a weakly
                 informative, easy-to-memorise modality built from real data
                 (`gblend_jax.data.mismatch_modalities`).
  optimizer=O    adam (default: Adam, lr 1e-3) or sgd (SGD, momentum 0.9,
                 as the G-Blend paper trains; no weight decay and a
                 constant lr, as the Adam runs).
  lr=L           the learning rate (default: 1e-3 for adam, 0.01 for sgd).
  runlocal       a few steps, for a quick check.

Algorithm 1's weight rule (offline / online; empty: the config default of
`gblend_jax.blending.method.default_blend_config`), as in the investigation
of experiments/results/gblend_mfeat.md:
  rule=clip|square   blend.overfit_rule.
  floor_rel=R        blend.overfit_floor_relative.
  min_fused=M        blend.min_fused_weight.
  measure=loss|accuracy  blend.measure.
  estimate=E         blend.estimate_epochs (offline: N, online: n).

ReconBoost keeps the shared settings (MLP encoders of width 128, Adam lr
1e-3, batch 32, 60 epochs) and takes the authors' CREMA-D values for its
own: w1 = 5, w2 = 1, β initialised to 1. Adapted to this setting, and why:
  model           model.fusion='ensemble': the learners share one head with
                  one hidden layer, as the authors' Head (512 -> 256 -> C);
                  here 128 -> 128 -> C, the width of this grid's layers.
  3 + 3 epochs    per stage (the authors' 4 + 4): 60 epochs are then ten
                  whole stages, five per view; with 4 + 4 the run would
                  end in the middle of a stage, before its rectification.
  evaluations     every 6 epochs, at the end of each stage (where the
                  authors test), instead of every 10.
  weight decay    0 (reconboost.weight_decay; the authors' 5e-4 comes with
                  their SGD): no method of this grid decays its weights.
"""

import ml_collections

from experiments.configs import common
from experiments.configs import mfeat_fusion

METHODS = ('single_a', 'single_b', 'naive', 'offline', 'online', 'gradient',
           'gradient_every_step', 'mmpareto', 'mla', 'agm', 'pmr',
           'reconboost')

OPTIMIZERS = ('adam', 'sgd')

# The settings of the G-Blend and balancing tables:
# (view pair, config arguments, what the setting is).
SETTINGS = (
    ('kar+pix', 'per_class=20,mismatch=0.7',
     'kar (strong) + pix re-paired at random for 70% of examples'),
    ('fac+pix', 'per_class=20,mismatch=0.7',
     'fac (strongest) + pix re-paired at random for 70% of examples'),
    ('fou+kar', 'per_class=20', 'fou + kar, both intact'),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, views='kar+pix', method='naive',
                          per_class='20', mismatch='0', rule='',
                          floor_rel='', min_fused='', measure='',
                          estimate='', optimizer='adam', lr='',
                          runlocal=False)
  if args['optimizer'] not in OPTIMIZERS:
    raise ValueError(f'Unknown optimizer={args["optimizer"]!r}; valid: '
                     f'{list(OPTIMIZERS)}.')
  config, method = mfeat_fusion.two_view_config(args, METHODS)
  config.data.batch_size = 32

  config.model.encoder.mlp.hidden_sizes = (128,)
  config.model.fused_head.hidden_sizes = (128, 128)
  config.model.modality_heads = True

  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 0.0
  if args['optimizer'] == 'sgd':
    config.optimizer.name = 'sgd'
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.01
  if args['lr']:
    config.optimizer.learning_rate = float(args['lr'])
  config.optimizer.schedule = 'constant'
  config.num_epochs = 60
  config.eval_every_epochs = 10

  if method in ('offline', 'online', 'gradient'):
    config.blend.mode = method
  if method == 'mla':
    config.model.shared_head = True
    config.mla.enabled = True
    config.mla.projection = 'paper'
  if method == 'gradient_every_step':
    # Gradient-space weights re-estimated on every step rather than every
    # blend.estimate_every_steps (the default): what the period costs.
    config.blend.mode = 'gradient'
    config.blend.estimate_every_steps = 1
  if method == 'mmpareto':
    config.mmpareto.enabled = True
  if method == 'pmr':
    config.pmr.update(enabled=True, alpha=2.0, momentum=0.0,
                      start_epoch=0.0, end_epoch=33.0, prototype_fraction=1.0)
  # Algorithm 1: each head's model trains for 10 epochs from the initial
  # model (offline); super-epochs of 5 epochs after 5 warm-up epochs
  # (online; the paper's super-epoch length).
  config.blend.estimate_epochs = 10.0 if method == 'offline' else 5.0
  config.blend.warmup_epochs = 5.0
  config.blend.decay = 0.9
  if method == 'agm':
    config.agm.update(enabled=True, alpha=1.0, cap=10.0,
                      clip_threshold=1.0, clip_norm=1.0)
  if args['rule']:
    config.blend.overfit_rule = args['rule']
  if args['floor_rel']:
    config.blend.overfit_floor_relative = float(args['floor_rel'])
  if args['min_fused']:
    config.blend.min_fused_weight = float(args['min_fused'])
  if args['measure']:
    config.blend.measure = args['measure']
  if args['estimate']:
    config.blend.estimate_epochs = float(args['estimate'])

  if method == 'reconboost':
    config.model.fusion = 'ensemble'
    config.model.fused_head.hidden_sizes = (128,)
    config.reconboost.enabled = True
    config.reconboost.learner_epochs = 3.0
    config.reconboost.rectify_epochs = 3.0
    config.reconboost.weight1 = 5.0
    config.reconboost.weight2 = 1.0
    config.reconboost.weight_decay = 0.0
    config.eval_every_epochs = 6

  if args['runlocal']:
    config.num_train_steps = 5
    config.blend.estimate_epochs = 0.5
    config.blend.warmup_epochs = 0.0
    config.eval_every_epochs = 1
    config.log_every_steps = 1
    # Phases of one or two steps: both of stage 0 within the 5 steps.
    config.reconboost.learner_epochs = 0.3
    config.reconboost.rectify_epochs = 0.3
  return config
