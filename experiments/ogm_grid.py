r"""OGM-GE on UCI Multiple Features: naive fusion, OGM and OGM-GE.

Runs `experiments/configs/mfeat_ogm.py` for each view pair (a strong view
first, a weak one second) and method over seeds, each run through the one
trainer (resumable; finished runs are skipped), and writes the table, with
the command, the date and the machine, to
``experiments/results/ogm_ge_mfeat.md``.

  python -m experiments.ogm_grid --seeds 5 --workdir workdirs/ogm_mfeat

After the tables it runs the search for a setting where OGM-GE's mechanism
applies (`mechanism.py`: a complementarity screen of the view pairs and an
α sweep on the selection seeds, held-out data only, then naive vs OGM vs
OGM-GE on the chosen settings over the grid's seeds, all with the paper's
schedule) and replaces (or appends) its section of the file, between
`mechanism.SECTION_BEGIN` and `mechanism.SECTION_END`. ``--mechanism``
runs the search alone; every other line of the file stays as it is:

  python -m experiments.ogm_grid --mechanism --seeds 5 \
      --workdir workdirs/ogm_mfeat
"""

import datetime
import os
import shlex
import sys

import jax
from absl import app
from absl import flags
from absl import logging

from experiments import mechanism
from experiments import runs
from experiments import tables
from experiments.configs import mfeat_ogm
from gblend_jax.training import metric_writer

_SEEDS = flags.DEFINE_integer('seeds', 5, 'Seeds per setting.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/ogm_mfeat',
                               'Directory of the runs.')
_OUTPUT = flags.DEFINE_string('output', 'experiments/results/ogm_ge_mfeat.md',
                              'Where the table goes.')
_MECHANISM = flags.DEFINE_bool(
    'mechanism', False,
    'Run only the search for a setting where the mechanism applies and '
    'merge its section into --output (every other line kept).')
_SELECT_SEEDS = flags.DEFINE_list(
    'select_seeds', ['10', '11', '12'],
    'Seeds of the screen and the α sweep (held-out data only); distinct '
    'from the grid seeds 0..seeds-1.')

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'mfeat_ogm.py')
# (strong+weak view pair, config arguments, what the setting is).
SETTINGS = (
    ('pix+fou', '', 'pix (strong) + fou (weak), all training examples'),
    ('fac+zer', '', 'fac (strong) + zer (weak), all training examples'),
    ('kar+pix', 'per_class=20,mismatch=0.7',
     'kar + pix re-paired at random for 70% of examples, 20 per class '
     '(the Gradient Blending construction)'),
)

INTRO = """\
# OGM-GE on UCI Multiple Features

Each method of `experiments/configs/mfeat_ogm.py` trains two views of the
handwritten digits with the OGM-GE model (MLP encoders of two 128-unit
layers, concatenation, one linear layer) and the paper's optimiser (SGD,
momentum 0.9, weight decay 1e-4; lr 0.01, ×0.1 after 42 of 60 epochs,
batch 64). OGM and OGM-GE use α = 0.8 (the paper's CREMA-D value) over the
first 30 epochs (the paper: epochs 0 to 50 of 100) and modulate every
weight matrix of the encoders (MLPs have no conv kernels).

Columns: the fused model's top-1 test and train accuracy (%), mean ± std
over {seeds} seeds; then the held-out accuracy of each view's **unimodal
logits** (its share of the fused logits, `gblend_jax.modulation.unimodal`;
for concat
fusion the paper's `W_m φ_m + b/2`): how well each encoder is trained
inside the fused model. For the single-view rows that column holds the
view's own network, the reference for what its encoder can reach alone.
Last, the wall time of one run on this machine.

OGM's claim (Peng et al., CVPR 2022) is that in joint training the weak
modality's encoder stays under-trained, and that modulating the dominant
one lets it catch up: the weak view's unimodal column should rise under OGM
and OGM-GE, and the fused test accuracy with it.

"""


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  metric_writer.quiet_library_logs()
  if _MECHANISM.value:
    _run_mechanism()
    return
  sections = runs.run_view_pair_grid(
      CONFIG, mfeat_ogm.METHODS, SETTINGS, tables.ogm_setting,
      seeds=_SEEDS.value, workdir=_WORKDIR.value,
  )
  text = runs.write_report(
      _OUTPUT.value, INTRO.format(seeds=_SEEDS.value) + '\n'.join(sections),
      'experiments.ogm_grid', sys.argv[1:],
  )
  print(text)
  # Then the mechanism search (its finished runs are read, not rerun).
  _run_mechanism()


def _run_mechanism() -> None:
  """The mechanism search, merged into its section of ``--output``."""
  select = [int(s) for s in _SELECT_SEEDS.value]
  if set(select) & set(range(_SEEDS.value)):
    raise app.UsageError('--select_seeds must differ from the grid seeds '
                         f'0..{_SEEDS.value - 1}.')
  # The runs of a setting compile the same programs: keep them across runs.
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(_WORKDIR.value, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  section = mechanism.section(CONFIG, select_seeds=select,
                              seeds=_SEEDS.value, workdir=_WORKDIR.value)
  command = shlex.join(['python', '-m', 'experiments.ogm_grid', *sys.argv[1:]])
  section = section.replace(mechanism.SECTION_END, (
      f'Command: `{command}`  \n'
      f'Date: {datetime.date.today().isoformat()}  \n'
      f'Machine: {runs.machine()}\n\n{mechanism.SECTION_END}'))
  # A file without the section gets it at its end, after the tables'
  # footer (`before` is then absent too).
  runs.write_section(_OUTPUT.value, section, begin=mechanism.SECTION_BEGIN,
                     end=mechanism.SECTION_END, before=mechanism.SECTION_END)
  print(section)


if __name__ == '__main__':
  app.run(main)
