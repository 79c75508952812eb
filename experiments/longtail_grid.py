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

``--decoupling_only`` runs stage 3's rows alone and replaces (or inserts,
before the hand-written notes) only their section of the file; every other
line of it stays as it is:

  python -m experiments.longtail_grid --decoupling_only --seeds 1 \
      --workdir workdirs/longtail_fmnist
"""

import datetime
import os
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
_BUDGET = flags.DEFINE_enum('budget', 'cpu', ['cpu', 'paper'],
                            'Recipe budget of the config.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/longtail_fmnist',
                               'Directory of the runs.')
_OUTPUT = flags.DEFINE_string(
    'output', 'experiments/results/longtail_fashion_mnist.md',
    'Where the tables go.')
_DECOUPLING_ONLY = flags.DEFINE_bool(
    'decoupling_only', False,
    'Run only the logit-adjustment and decoupling rows and replace only '
    'their section of --output.')

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
  with open(_OUTPUT.value) as f:
    text = f.read()
  text = tables.merge_section(text, section, begin=SECTION_BEGIN,
                              end=SECTION_END, before=NOTES)
  workdir_lib.write_text(_OUTPUT.value, text)
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
