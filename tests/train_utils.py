"""Helpers for the end-to-end tests: tiny configs of the real experiments."""

import os
import subprocess
import sys

import ml_collections

from experiments.configs import synthetic_fusion

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_synthetic_config(
    data_dir: str, *, steps: int, modalities: str = 'strong+weak'
) -> ml_collections.ConfigDict:
  """The synthetic experiment on the `tiny` builder config, `steps` long."""
  config = synthetic_fusion.get_config(f'builder=tiny,modalities={modalities}')
  config.data.data_dir = data_dir
  config.data.batch_size = 16
  config.data.eval_batch_size = 32
  config.num_train_steps = steps
  config.log_every_steps = 2
  config.eval_every_epochs = 1.0
  return config


def stop_request_at(step: int):
  """A `train._StopRequest` that acts as if SIGTERM came during `step`.

  The trainer reads ``signal_name`` once per step, after the step, so the
  run saves a checkpoint at `step` and returns, as it does on SIGTERM.
  """
  from gblend_jax.training import trainer as train  # pylint: disable=g-import-not-at-top

  class StopAtStep(train._StopRequest):  # pylint: disable=protected-access
    reads = 0

    @property
    def signal_name(self):
      StopAtStep.reads += 1
      return 'SIGTERM' if StopAtStep.reads == step else None

    @signal_name.setter
    def signal_name(self, value):
      del value

  return StopAtStep


def interrupted_then_resumed(config, workdir: str, step: int, monkeypatch):
  """Runs `config` to `step`, stops as on SIGTERM, reruns to the end."""
  from gblend_jax.training import trainer as train  # pylint: disable=g-import-not-at-top

  with monkeypatch.context() as patch:
    patch.setattr(train, '_StopRequest', stop_request_at(step))
    assert train.train_and_evaluate(config, workdir) == {
        'interrupted_at_step': step}
  return train.train_and_evaluate(config, workdir)


def subprocess_env(devices: int | None = None, **extra: str) -> dict[str, str]:
  """The environment of a child process that trains: as the tests compile.

  The child gets the suite's XLA flags (``conftest.TEST_XLA_FLAGS``: the
  optimisation level the tests compile at) and its persistent compilation
  cache, so children that train the same tiny model compile it once. Any
  other XLA flag of this process is dropped: the child sees one CPU device,
  or ``devices`` of them.

  Args:
    devices: CPU devices the child sees (None: one).
    **extra: Further variables to set.

  Returns:
    A copy of ``os.environ`` with those variables set.
  """
  from tests import conftest  # pylint: disable=g-import-not-at-top

  flags = [conftest.TEST_XLA_FLAGS]
  if devices is not None:
    flags.append(f'--xla_force_host_platform_device_count={devices}')
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=conftest.JAX_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(
                 conftest.JAX_CACHE_MIN_SECONDS), **extra)
  env['XLA_FLAGS'] = ' '.join(filter(None, flags))
  return env


def run_on_cpu_devices(script: str, devices: int = 8,
                       timeout: int = 300) -> subprocess.CompletedProcess:
  """Runs a Python script in a subprocess that sees `devices` CPU devices.

  XLA reads the device count once, before JAX starts, so multi-device
  checks run in a process of their own.
  """
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
      env.get('XLA_FLAGS', '')
      + f' --xla_force_host_platform_device_count={devices}'
  ).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (REPO, env.get('PYTHONPATH')) if p
  )
  return subprocess.run([sys.executable, script], env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
