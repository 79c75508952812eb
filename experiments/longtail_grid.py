r"""The bag of tricks on Fashion-MNIST-LT: baseline, best of each family, bags.

Runs `experiments/configs/fashion_mnist_lt.py` in two stages, each run
through the one trainer (resumable; finished runs are read, not rerun):

1. Selection: every recipe of each family (re-weighting, re-sampling,
   mixup, two-stage) with seed 0 at the first imbalance factor; the recipe
   with the best *held-out* accuracy represents its family.
2. The table: the CE baseline, the four chosen recipes, the paper's
   known-bad pair (CS-CE with class-balanced sampling) and the paper's best
   bag (input mixup, DRS with CAM-based balanced sampling, fine-tuning
   without mixup), over seeds at every imbalance factor (stage 1's runs are
   reused as seed 0).

3. The standard baselines of recent tables beside them (`DECOUPLING_ROWS`):
   the logit-adjusted loss and post-hoc logit adjustment (Menon et al.,
   ICLR 2021), cRT, τ-norm and LWS (Kang et al., ICLR 2020), in a section of
   their own between `SECTION_BEGIN` and `SECTION_END`.

Writes the tables, the command, the wall time, the date and the machine to
``experiments/results/longtail_fashion_mnist.md``.

  python -m experiments.longtail_grid --seeds 3 \
      --workdir workdirs/longtail_fmnist

``--budget epochs`` runs only the paper's comparisons (`EPOCH_ROWS`) on the
config's ``budget=epochs`` (the cpu size on the paper's 200 / 400 epochs
with pad-crop-flip), seed 0 of every row first, then seed 1, and so on,
and replaces (or inserts, before stage 3's section) only its own section
of the file. A SIGINT / SIGTERM stops the run in progress (resumable from
its checkpoint) and the section is written from the finished runs, with
each row's number of seeds; ``--report_only`` trains nothing and writes the
section from the runs finished so far:

  python -m experiments.longtail_grid --budget epochs --imbalances 100 \
      --seeds 3 --workdir workdirs/longtail_fmnist_epochs

Several processes of that command share its grid (one per core): each
skips the runs another process is training (their work directories are
locked) and trains the next; ``--train_seeds`` gives a process its own
seeds first:

  python -m experiments.longtail_grid --budget epochs --imbalances 100 \
      --seeds 3 --train_seeds 1,2 --workdir workdirs/longtail_fmnist_epochs &
  python -m experiments.longtail_grid --budget epochs --imbalances 100 \
      --seeds 3 --train_seeds 2,1 --workdir workdirs/longtail_fmnist_epochs

``--decoupling_only`` runs stage 3's rows alone and replaces (or inserts,
before the hand-written notes) only their section of the file; every other
line of it stays as it is:

  python -m experiments.longtail_grid --decoupling_only --seeds 1 \
      --workdir workdirs/longtail_fmnist
"""

import datetime
import os
import statistics
import sys
import time

import jax
from absl import app
from absl import flags
from absl import logging

from experiments import runs
from experiments import tables
from gblend_jax.training import metric_writer
from gblend_jax.training import workdir as workdir_lib

_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per table row.')
_IMBALANCES = flags.DEFINE_list('imbalances', ['100', '50'],
                                'Imbalance factors; the first selects.')
_BUDGET = flags.DEFINE_enum(
    'budget', 'cpu', ['cpu', 'paper', 'epochs'],
    'Recipe budget of the config; epochs: only the rows of EPOCH_ROWS, in '
    'their own section of --output.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/longtail_fmnist',
                               'Directory of the runs.')
_OUTPUT = flags.DEFINE_string(
    'output', 'experiments/results/longtail_fashion_mnist.md',
    'Where the tables go.')
_DECOUPLING_ONLY = flags.DEFINE_bool(
    'decoupling_only', False,
    'Run only the logit-adjustment and decoupling rows and replace only '
    'their section of --output.')
_REPORT_ONLY = flags.DEFINE_bool(
    'report_only', False,
    'With --budget epochs: train nothing, write the section from the runs '
    'finished so far.')
_TRAIN_SEEDS = flags.DEFINE_list(
    'train_seeds', None,
    'With --budget epochs: train only these of the seeds 0 .. --seeds - 1 '
    '(default all); the section still reads every finished seed, so '
    'processes given disjoint seeds share one --workdir.')

CONFIG = os.path.join(os.path.dirname(__file__), 'configs',
                      'fashion_mnist_lt.py')
FAMILIES = {
    're-weighting': ('cs_ce', 'focal', 'cb_focal', 'cb_ce',
                     'balanced_softmax'),
    're-sampling': ('cb_sampling', 'sqrt_sampling', 'progressive', 'ros',
                    'rus'),
    'mixup': ('mixup', 'manifold_mixup', 'remix', 'mixup_ft'),
    'two-stage': ('drw', 'ldam_drw', 'drs', 'drs_cam'),
}
BASELINE, KNOWN_BAD, BEST_BAG = 'ce', 'cs_ce_cb_sampling', 'best_bag'
# Further rows, for the paper's comparisons (CLAIMS).
COMPARED = {
    'cs_ce': 'CS-CE alone',
    'cb_sampling': 'class-balanced sampling alone',
    'mixup': 'input mixup',
    'manifold_mixup': 'manifold mixup (after pooling)',
    'mixup_ft': 'input mixup, then fine-tuning without mixup',
    'drs': 'DRS (class-balanced, no CAM)',
    'drs_cam': 'DRS with CAM-based balanced sampling',
}
# Zhang et al.'s comparisons: (claim, recipe, recipes it beats); 'worse:'
# claims say the recipe is worse than each of the others.
CLAIMS = (
    ('worse: CS-CE with class-balanced sampling is worse than either alone',
     KNOWN_BAD, ('cs_ce', 'cb_sampling')),
    ('Input mixup beats manifold mixup', 'mixup', ('manifold_mixup',)),
    ('Fine-tuning without mixup helps input mixup', 'mixup_ft', ('mixup',)),
    ('CAM-based balanced sampling improves DRS', 'drs_cam', ('drs',)),
    ('Input mixup beats the CE baseline', 'mixup', (BASELINE,)),
    ('The best bag beats the baseline and each trick of the table',
     BEST_BAG, (BASELINE, 'cs_ce', 'cb_sampling', 'mixup', 'manifold_mixup',
                'mixup_ft', 'drs', 'drs_cam')),
)
# The paper's CIFAR-10-LT top-1 errors (ResNet-32, IF 100 / 50), as SPEC §3
# quotes them.
PAPER_IMBALANCES = ('100', '50')
PAPER_ERRORS = {'ce': ('28.05', '23.55'), 'mixup': ('25.94', '21.33'),
                'ldam_drw': ('22.27', '18.40'),
                'drs_cam': ('23.10', '19.28'),
                'best_bag': ('19.97', '16.41')}

# Stage 3: label -> (recipe, prefix of the metrics it reports). One
# ce_posthoc run gives the CE row of its seeds and both post-hoc rows.
DECOUPLING_ROWS = {
    'CE (the ce_posthoc runs, no correction)': ('ce_posthoc', ''),
    'logit-adjusted loss (τ = 1)': ('logit_adjusted', ''),
    'CE + post-hoc logit adjustment (τ = 1)': ('ce_posthoc', 'posthoc_'),
    'CE + τ-norm (τ chosen on held-out)': ('ce_posthoc', 'tau_norm_'),
    'cRT (classifier stage from epoch 16)': ('crt', ''),
    'LWS (classifier stage from epoch 16)': ('lws', ''),
}
SECTION_BEGIN = '<!-- longtail_grid: logit adjustment and decoupling -->'
SECTION_END = '<!-- longtail_grid: end of logit adjustment and decoupling -->'
NOTES = '## What it shows'
# The paper's comparisons at its epoch budget (--budget epochs), in the
# order they are run at each seed: the rows of the three findings
# first (the cheaper ones of findings 1 and 3 before mixup_ft's 400
# epochs). The best of each family is the 20-epoch selection's (held-out
# accuracy, seed 0, IF 100, in the file's selection tables); the selection
# is not rerun at 200 epochs (18 runs more).
EPOCH_FAMILY_BEST = {'re-weighting': 'balanced_softmax',
                     're-sampling': 'progressive', 'mixup': 'remix',
                     'two-stage': 'drs_cam'}
EPOCH_ROWS = {
    'ce': 'CE (baseline)',
    'mixup': 'input mixup',
    'progressive': 'progressive (best re-sampling at 20 epochs)',
    'best_bag': 'best bag: input mixup, DRS + CAM-BS, no-mixup fine-tune',
    'mixup_ft': 'input mixup, then fine-tuning without mixup',
    'balanced_softmax': 'balanced_softmax (best re-weighting at 20 epochs)',
    'drs': 'DRS (class-balanced, no CAM)',
    'drs_cam': 'DRS with CAM-based balanced sampling (best two-stage at 20 '
               'epochs)',
    'ldam_drw': 'DRW + LDAM',
    'manifold_mixup': 'manifold mixup (after pooling)',
    'remix': 'remix (best mixup at 20 epochs)',
}
# The three findings (20 epochs: input mixup hurts, fine-tuning
# does not help it, the best bag loses to re-balancing alone), then the
# paper's other comparisons among these rows.
EPOCH_CLAIMS = (
    ('(1) Input mixup beats the CE baseline', 'mixup', (BASELINE,)),
    ('(2) Fine-tuning without mixup helps input mixup', 'mixup_ft',
     ('mixup',)),
    ('(3) The best bag beats re-balancing alone (the best re-weighting and '
     're-sampling recipes)', BEST_BAG, ('balanced_softmax', 'progressive')),
    ('The best bag beats every other row', BEST_BAG,
     tuple(r for r in EPOCH_ROWS if r != BEST_BAG)),
    ('Input mixup beats manifold mixup', 'mixup', ('manifold_mixup',)),
    ('CAM-based balanced sampling improves DRS', 'drs_cam', ('drs',)),
    ('DRW + LDAM beats the CE baseline', 'ldam_drw', (BASELINE,)),
)
assert set(EPOCH_FAMILY_BEST.values()) <= set(EPOCH_ROWS)
EPOCH_BEGIN = '<!-- longtail_grid: the paper\'s epoch budget -->'
EPOCH_END = '<!-- longtail_grid: end of the paper\'s epoch budget -->'
EPOCH_INTRO = """\
The paper's comparisons again on budget `epochs` of
`experiments/configs/fashion_mnist_lt.py`: the size of the 20-epoch rows
above (ResNet-8 at half width, n_max = 500, same data and held-out split)
on the paper's schedule, 200 epochs (5 warm-up, lr × 0.01 at 160 and 180,
two-stage recipes switch at 160) and for the mixup recipes the authors'
400 (lr steps at 320 and 360, switch at 320, `mixup_ft` / `best_bag`
without mixup for the last 40), with the paper's pad-crop-flip
augmentation (4 pixels of padding on each side of the 28 × 28 images,
random 28 × 28 crop, flip p = 1/2). The best recipe of each family is the
20-epoch selection's. A row with fewer seeds than asked for says so in
its `seeds` column: the rest of its runs have not been run yet.
"""

DECOUPLING_INTRO = """\
The standard long-tail baselines of recent tables, on the setting and
budget above: the logit-adjusted loss (Menon et al., ICLR 2021, τ = 1),
post-hoc logit adjustment of the CE model (logits − τ log π, τ = 1),
τ-normalisation of its classifier (Kang et al., ICLR 2020; τ of
linspace(0, 2, 21) with the best held-out accuracy, bias dropped), and the
classifier stage of Kang et al.: CE with instance-balanced sampling to
epoch 16, then 4 epochs that train only the re-initialised classifier (cRT)
or per-class scales of the frozen one (LWS), class-balanced sampling, SGD
(momentum 0.9, weight decay 2e-4) on a fresh cosine schedule from lr 0.1;
the backbone's BatchNorm statistics are re-estimated in that stage, as the
authors' code does. Same 20 epochs in all as the rows above. The CE row
here is the model the two post-hoc rows correct (its own seeds).
"""

INTRO = """\
# The bag of tricks on Fashion-MNIST-LT

Zhang et al., "Bag of Tricks for Long-Tailed Visual Recognition with Deep
Convolutional Neural Networks" (AAAI 2021), on real offline data:
Fashion-MNIST (Debian package `dataset-fashion-mnist`) made long-tailed by
the exponential profile after a balanced held-out split (10 % of each
class); the test split (10000 images) stays balanced. Recipe budget
`{budget}` of `experiments/configs/fashion_mnist_lt.py` (its docstring
gives every number): for `cpu`, ResNet-8 at half width (8/16/32 channels),
n_max = 500, 20 epochs of batch 128, SGD momentum 0.9, weight decay 2e-4,
lr 0.1 with 1 warm-up epoch and × 0.01 at epochs 16 and 18; two-stage
recipes switch at epoch 16, and `mixup_ft` / `best_bag` drop mixup for the
last 2 epochs. No data augmentation. Many-shot classes have > 100 training
images, medium 20 to 100, few < 20.

"""


def _row(recipe: str, imbalance: str) -> str:
  return f'recipe={recipe},imbalance={imbalance},budget={_BUDGET.value}'


def _select(imbalance: str) -> tuple[dict[str, str], list[str]]:
  """Stage 1: the best recipe of each family by held-out accuracy."""
  chosen, sections = {}, []
  for family, recipes in FAMILIES.items():
    results = runs.run_sweep(CONFIG, [_row(r, imbalance) for r in recipes],
                             1, [], _WORKDIR.value)
    by_recipe = {r: runs_[0] for r, runs_ in zip(recipes, results.values(),
                                                 strict=True)}
    chosen[family] = max(
        recipes,
        key=lambda r: by_recipe[r]['reported']['holdout/fused/accuracy'])
    sections.append(f'### {family}\n\n' + tables.longtail_selection(
        by_recipe, {chosen[family]}))
  return chosen, sections


def _decoupling_section() -> tuple[str, float]:
  """Stage 3: the rows of `DECOUPLING_ROWS` at every imbalance factor, as
  the marked section; and their runs' training seconds."""
  recipes = list(dict.fromkeys(r for r, _ in DECOUPLING_ROWS.values()))
  seeds = _SEEDS.value
  parts = [SECTION_BEGIN,
           '## Logit adjustment and decoupled classifier learning\n',
           DECOUPLING_INTRO]
  train_seconds = 0.0
  for imbalance in _IMBALANCES.value:
    results = runs.run_sweep(
        CONFIG, [_row(r, imbalance) for r in recipes], seeds, [],
        _WORKDIR.value)
    by_recipe = dict(zip(recipes, results.values(), strict=True))
    by_row = {label: by_recipe[recipe]
              for label, (recipe, _) in DECOUPLING_ROWS.items()}
    prefixes = {label: prefix
                for label, (_, prefix) in DECOUPLING_ROWS.items()}
    taus = [r['reported']['tau_norm/tau'] for r in by_recipe['ce_posthoc']]
    parts.append(
        f'### Imbalance factor {imbalance}: test %, mean ± std over {seeds} '
        f'seed{"s" if seeds > 1 else ""}\n\n'
        + tables.longtail_table(by_row, {}, prefixes)
        + '\nτ-norm\'s τ chosen on the held-out split: '
        + ', '.join(f'{t:g}' for t in taus) + '.\n')
    train_seconds += sum(r['train_seconds'] for rs in results.values()
                         for r in rs)
  return '\n'.join(parts), train_seconds


def _run_decoupling_only() -> None:
  """Stage 3 alone: its section of ``--output`` replaced, the rest kept."""
  start = time.perf_counter()
  section, train_seconds = _decoupling_section()
  wall = time.perf_counter() - start
  command = ' '.join(['python -m experiments.longtail_grid', *sys.argv[1:]])
  section += (
      f'\nCommand: `{command}`; wall time {wall / 60:.1f} min, training time '
      f'of these runs {train_seconds / 60:.1f} min (finished runs are read '
      f'back, not rerun). Date: {datetime.date.today().isoformat()}. '
      f'Machine: {runs.machine()}.\n' + SECTION_END + '\n')
  runs.write_section(_OUTPUT.value, section, begin=SECTION_BEGIN,
                     end=SECTION_END, before=NOTES)
  print(section)


def _epoch_results(seeds: int, imbalances: list[str], train_seeds: list[int]
                   ) -> tuple[dict[str, dict[str, list[dict]]], str]:
  """The runs of `EPOCH_ROWS`, seed 0 of every row first, then seed 1 ...

  Args:
    seeds: Seeds per row (the results read back are those of 0 .. seeds-1).
    imbalances: Imbalance factors, run one after the other.
    train_seeds: The seeds whose runs not finished yet are trained, in this
      order (none: only read the finished); a run another process is
      training is skipped.

  Returns:
    imbalance -> recipe -> the results of its finished seeds; and how the
    training ended ('' when every run finished or ``train_seeds`` is
    empty).
  """
  stopped = ''
  if train_seeds:
    try:
      for imbalance in imbalances:
        for seed in train_seeds:
          for recipe in EPOCH_ROWS:
            try:
              run = runs.run_one(CONFIG, _row(recipe, imbalance), seed, [],
                                 _WORKDIR.value)
            except workdir_lib.WorkdirLockedError:
              print(f'IF {imbalance} {recipe} seed {seed}: being trained by '
                    'another process, skipped', flush=True)
              continue
            print(f'IF {imbalance} {recipe} seed {seed}: test acc '
                  f"{100 * run['reported']['test/fused/accuracy']:.2f}% "
                  f"({run['train_seconds']:.0f} s training)", flush=True)
    except runs.SweepInterrupted as e:
      stopped = f'stopped by a signal: {e}'
  results = {}
  for imbalance in imbalances:
    results[imbalance] = {}
    for recipe in EPOCH_ROWS:
      finished = ((seed, runs.finished_result(
          CONFIG, _row(recipe, imbalance), seed, [], _WORKDIR.value))
                  for seed in range(seeds))
      results[imbalance][recipe] = [dict(r, seed=seed) for seed, r in finished
                                    if r is not None]
  return results, stopped


def _paired_differences(by_recipe: dict[str, list[dict]]) -> str:
  """Each comparison of `EPOCH_CLAIMS`, paired by seed.

  The seeds of a row share the data and the held-out split and differ in
  initialisation and batch order, so a difference of two rows is taken
  seed by seed (the seeds both have finished).

  Args:
    by_recipe: recipe -> its finished results, each with its ``seed``.

  Returns:
    Markdown lines ``- a − b: mean ± std (seeds ...: per seed)``, one per
    pair of rows the claims compare, in points of test top-1 error; std
    over the seeds with n − 1 (none for one seed).
  """
  lines = []
  pairs = dict.fromkeys((recipe, other) for _, recipe, others in EPOCH_CLAIMS
                        for other in others)  # Each once, in claim order.
  for recipe, other in pairs:
    errors = [{r['seed']: 100 * r['reported']['test/fused/top1_error']
               for r in by_recipe.get(name, [])} for name in (recipe, other)]
    seeds = sorted(set(errors[0]) & set(errors[1]))
    if not seeds:
      continue
    diffs = [errors[0][s] - errors[1][s] for s in seeds]
    spread = (f' ± {statistics.stdev(diffs):.2f}' if len(diffs) > 1
              else '')
    lines.append(
        f'- {recipe} − {other}: {statistics.fmean(diffs):+.2f}{spread} '
        f'(seed{"s" if len(seeds) > 1 else ""} '
        f'{", ".join(map(str, seeds))}: '
        f'{", ".join(f"{d:+.2f}" for d in diffs)})')
  return '\n'.join(lines) + '\n'


def _epoch_section(results: dict[str, dict[str, list[dict]]], seeds: int
                   ) -> str:
  """`EPOCH_BEGIN` .. the tables and findings of the finished runs (without
  the closing command line and `EPOCH_END`)."""
  parts = [EPOCH_BEGIN,
           "## The paper's epoch budget (200 epochs, 400 with mixup; "
           'pad-crop-flip)\n', EPOCH_INTRO]
  for imbalance, by_recipe in results.items():
    done = {r: rs for r, rs in by_recipe.items() if rs}
    missing = [r for r, rs in by_recipe.items() if not rs]
    paper = {}
    if imbalance in PAPER_IMBALANCES:
      column = PAPER_IMBALANCES.index(imbalance)
      paper = {EPOCH_ROWS[r]: errors[column]
               for r, errors in PAPER_ERRORS.items() if r in done}
    parts.append(
        f'### Imbalance factor {imbalance}: test %, mean ± std over the '
        f'finished seeds (of {seeds} asked for)\n\n'
        + tables.longtail_table({EPOCH_ROWS[r]: rs for r, rs in done.items()},
                                paper, seeds=True)
        + (f'\nNot run yet: {", ".join(missing)}.\n' if missing else '')
        + f'\nThe findings at IF {imbalance} at this budget, checked on '
        'these means (a finding whose rows are not all run yet says so):\n\n'
        + tables.longtail_findings(by_recipe, EPOCH_CLAIMS,
                                   verdicts=('holds', '**disagrees**'))
        + '\nThe same comparisons paired by seed (row − row, points of '
        'top-1 error; mean ± std over the seeds both rows finished, then '
        'each seed\'s difference):\n\n' + _paired_differences(by_recipe))
  return '\n'.join(parts)


def _train_seeds(seeds: int) -> list[int]:
  """``--train_seeds`` as integers, each checked to be in 0 .. seeds-1."""
  if _TRAIN_SEEDS.value is None:
    return list(range(seeds))
  try:
    chosen = [int(s) for s in _TRAIN_SEEDS.value]
  except ValueError:
    raise app.UsageError(
        f'--train_seeds must be integers, got {_TRAIN_SEEDS.value}') from None
  bad = [s for s in chosen if not 0 <= s < seeds]
  if bad:
    raise app.UsageError(
        f'--train_seeds {bad} not in 0 .. {seeds - 1} (--seeds {seeds}).')
  return chosen


def _run_epoch_budget() -> None:
  """`EPOCH_ROWS` on budget ``epochs``: trains what is not finished (unless
  ``--report_only``), then replaces only its section of ``--output``."""
  start = time.perf_counter()
  seeds, imbalances = _SEEDS.value, _IMBALANCES.value
  results, stopped = _epoch_results(
      seeds, imbalances, [] if _REPORT_ONLY.value else _train_seeds(seeds))
  wall = time.perf_counter() - start
  finished = [r for by_recipe in results.values()
              for rs in by_recipe.values() for r in rs]
  train_seconds = sum(r['train_seconds'] for r in finished)
  asked = seeds * len(EPOCH_ROWS) * len(imbalances)
  command = ' '.join(['python -m experiments.longtail_grid', *sys.argv[1:]])
  section = (
      _epoch_section(results, seeds)
      + f'\nCommand: `{command}`; {len(finished)} of {asked} runs finished'
      + (f' ({stopped})' if stopped else '')
      + f'; wall time {wall / 60:.1f} min, training time of the finished '
      f'runs {train_seconds / 60:.1f} min (finished runs are read back, not '
      'rerun: the same command continues the grid). Date: '
      f'{datetime.date.today().isoformat()}. Machine: {runs.machine()}.\n'
      + EPOCH_END + '\n')
  runs.write_section(_OUTPUT.value, section, begin=EPOCH_BEGIN,
                     end=EPOCH_END, before=SECTION_BEGIN)
  print(section)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  metric_writer.quiet_library_logs()
  # Runs of one recipe compile the same programs: keep them across runs.
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(_WORKDIR.value, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  if _DECOUPLING_ONLY.value:
    _run_decoupling_only()
    return
  if _BUDGET.value == 'epochs':
    _run_epoch_budget()
    return
  if _REPORT_ONLY.value:
    raise app.UsageError('--report_only is for --budget epochs.')
  start = time.perf_counter()
  imbalances = _IMBALANCES.value
  chosen, selection = _select(imbalances[0])
  train_seconds = 0.0
  labels = {BASELINE: 'CE (baseline)'}
  labels.update({recipe: f'{recipe} (best {family})'
                 for family, recipe in chosen.items()})
  labels[KNOWN_BAD] = 'CS-CE + class-balanced sampling (known-bad pair)'
  for recipe, label in COMPARED.items():
    labels.setdefault(recipe, label)
  labels[BEST_BAG] = 'best bag: input mixup, DRS + CAM-BS, no-mixup fine-tune'
  sections = [
      f'## Selection (seed 0, IF {imbalances[0]}): the bold recipe has the '
      'best held-out accuracy of its family\n\nAccuracy %.\n',
      *selection,
  ]
  for imbalance in imbalances:
    results = runs.run_sweep(
        CONFIG, [_row(r, imbalance) for r in labels], _SEEDS.value, [],
        _WORKDIR.value)
    by_recipe = dict(zip(labels, results.values(), strict=True))
    by_row = {labels[r]: by_recipe[r] for r in labels}
    paper = {}
    if imbalance in PAPER_IMBALANCES:
      column = PAPER_IMBALANCES.index(imbalance)
      paper = {labels[r]: errors[column]
               for r, errors in PAPER_ERRORS.items() if r in labels}
    sections.append(
        f'## Imbalance factor {imbalance}: test %, mean ± std over '
        f'{_SEEDS.value} seeds\n\n' + tables.longtail_table(by_row, paper)
        + f'\nThe paper\'s findings at IF {imbalance}, checked on these '
        'means:\n\n' + tables.longtail_findings(by_recipe, CLAIMS))
    train_seconds += sum(r['train_seconds'] for rs in results.values()
                         for r in rs)
  section, section_seconds = _decoupling_section()
  sections.append(section + '\n' + SECTION_END + '\n')
  train_seconds += section_seconds
  wall = time.perf_counter() - start
  body = (INTRO.format(budget=_BUDGET.value) + '\n'.join(sections)
          + f'\nWall time of this command: {wall / 60:.1f} min (runs finished '
          'by an earlier invocation are read back, not rerun); the training '
          f'time of the table runs adds up to {train_seconds / 60:.1f} min. '
          "s/run is one run's training time as the trainer logs it (no data "
          'loading or evaluation).\n')
  text = runs.write_report(_OUTPUT.value, body, 'experiments.longtail_grid',
                           sys.argv[1:])
  print(text)


if __name__ == '__main__':
  app.run(main)
