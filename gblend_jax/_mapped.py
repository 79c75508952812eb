"""Which mapped axes a value still differs over (for misuse checks).

Under ``jax.shard_map`` (``check_vma=True``, the default) JAX tracks the
manual mesh axes a value varies over; under ``jax.pmap`` (and
``shard_map(check_vma=False)``) it does not, and every value is taken as
per-device. Uses JAX internals where the public API has none; on a JAX
without them it reports nothing (the checks are skipped).
"""

import jax

__all__ = ('unreduced_axes',)


def unreduced_axes(x: jax.Array) -> tuple[str, ...]:
  """The mapped axes over which ``x`` may differ, at trace time.

  Args:
    x: a traced array (or a concrete one: no axes).

  Returns:
    Axis names: the axes ``x`` varies over under ``shard_map`` with vma
    checks; every manual axis under ``pmap`` or ``shard_map`` without them;
    ``()`` outside a mapped context or when JAX does not say.
  """
  try:
    from jax._src import config as jax_config  # pylint: disable=g-import-not-at-top

    varying = getattr(getattr(jax.typeof(x), 'mat', None), 'varying', None)
    if varying is None:
      varying = getattr(jax.typeof(x), 'vma', frozenset())
    if varying:
      return tuple(sorted(varying))
    manual = tuple(jax.sharding.get_abstract_mesh().manual_axes)
    if manual and not jax_config._check_vma.value:  # pylint: disable=protected-access
      return manual
  except (ImportError, AttributeError, TypeError):
    pass
  return ()
