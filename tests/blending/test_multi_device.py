"""`gradient_blend` on 8 CPU devices: pmap with axis_name, and NamedSharding.

The checks live in `multi_device_checks.py` and run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, because this process
may already have initialised JAX with one device.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
SCRIPT = os.path.join(os.path.dirname(__file__), 'multi_device_checks.py')


def test_pmap_and_named_sharding_on_8_cpu_devices():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
      env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
  ).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (REPO, env.get('PYTHONPATH')) if p
  )
  result = subprocess.run(
      [sys.executable, SCRIPT],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'pmap: ok' in result.stdout
  assert 'named sharding (AxisType.Explicit): ok' in result.stdout
  assert 'named sharding (AxisType.Auto): ok' in result.stdout
