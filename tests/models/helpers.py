"""Shared helpers for the model tests."""

import math

import jax
import numpy as np


def param_count(params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(x.size for x in jax.tree.leaves(params))


def quick_variables(module, *args, **kwargs):
  """Variables with ``module.init``'s shapes, filled without jax.random.

  Initialising a ResNet with jax.random takes seconds on CPU; this takes
  milliseconds. Kernels are N(0, 1 / fan_in), BatchNorm scales and variances
  are ones, everything else is zero.
  """
  shapes = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *args, **kwargs)
  )
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = math.prod(leaf.shape[:-1])
      return rng.normal(size=leaf.shape).astype(leaf.dtype) / fan_in**0.5
    if name in ('scale', 'var'):
      return np.ones(leaf.shape, leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
