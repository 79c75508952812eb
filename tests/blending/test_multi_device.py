"""`gradient_blend` on 8 CPU devices: pmap with axis_name, and NamedSharding.

The checks live in `multi_device_checks.py` and run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, because this process
may already have initialised JAX with one device.
"""

import os

import pytest

from tests import train_utils

SCRIPT = os.path.join(os.path.dirname(__file__), 'multi_device_checks.py')


@pytest.mark.slow
def test_pmap_and_named_sharding_on_8_cpu_devices():
  result = train_utils.run_on_cpu_devices(SCRIPT, 8)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'pmap: ok' in result.stdout
  assert 'named sharding (AxisType.Explicit): ok' in result.stdout
  assert 'named sharding (AxisType.Auto): ok' in result.stdout
