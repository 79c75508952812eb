"""Manifold mixup at a named layer of any flax model, by method interception.

Manifold mixup (Verma et al., ICML 2019, §2) mixes the hidden features
``h_k`` of a layer ``k``: ``h̃_k = λ h_k + (1 - λ) h_k[π]`` and continues the
forward pass from ``h̃_k``; the target is mixed as in input mixup. Zhang et
al. (AAAI 2021, Table 4) find it works best right after global average
pooling (and still below input mixup).

Rather than threading a mixing hook through every encoder, the layer is
found by name: `manifold_mixup_interceptor` is a
`flax.linen.intercept_methods` interceptor that replaces the output of the
``__call__`` of the module at path ``layer`` (``'/'``-joined names relative
to the model, e.g. ``'encoder_image/_CifarBlock_1'``) by its mix. The special
name ``POOLED`` selects every encoder's output (``'encoder_<modality>'``),
i.e. the features after global pooling, each mixed with the same ``λ`` and
``π`` so that the modalities of an example stay paired. `mixable_layers`
lists the names a model offers, for error messages and discovery.

References:
  Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, "Manifold
  Mixup: Better Representations by Interpolating Hidden States", ICML 2019,
  https://arxiv.org/abs/1806.05236.
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
"""

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from gblend_jax.longtail import mixup as lt_mixup

__all__ = ('POOLED', 'check_layer', 'manifold_mixup_interceptor',
           'mixable_layers')

# The encoders' outputs: the features after global pooling.
POOLED = 'pooled'
ENCODER_PREFIX = 'encoder_'

Interceptor = Callable[..., Any]


def _module_path(module: nn.Module) -> str:
  return '/'.join(str(name) for name in module.path)


def _selected(path: str, layer: str) -> bool:
  if layer == POOLED:
    return path.startswith(ENCODER_PREFIX) and '/' not in path
  return path == layer


def manifold_mixup_interceptor(
    layer: str,
    lam: jax.Array,
    permutation: jax.Array,
    fired: list[str] | None = None,
) -> Interceptor:
  """An interceptor mixing the output of ``layer`` (Verma et al., §2).

  Use as ``with nn.intercept_methods(interceptor): model.apply(...)``.

  Args:
    layer: ``POOLED``, or the ``'/'``-joined path of a submodule.
    lam: scalar ``λ`` (1 leaves the features unchanged exactly).
    permutation: ``[B]`` mixing partners ``π``.
    fired: if given, the paths of the modules mixed are appended to it (at
      trace time), so a caller can check that ``layer`` exists.

  Returns:
    The interceptor.
  """

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name != '__call__':
      return out
    path = _module_path(context.module)
    if not _selected(path, layer):
      return out
    if fired is not None:
      fired.append(path)
    return jax.tree.map(lambda h: lt_mixup.mix(h, lam, permutation), out)

  return interceptor


def mixable_layers(
    model: nn.Module, variables: Any, inputs: Mapping[str, jax.Array]
) -> list[str]:
  """Paths of the submodules whose ``__call__`` runs in a forward pass.

  Args:
    model: the model.
    variables: its variables (only shapes matter: it runs under
      ``jax.eval_shape``).
    inputs: a batch of model inputs (shapes only).

  Returns:
    The ``'/'``-joined paths, in call order, without duplicates; plus
    ``POOLED`` when the model has encoders.
  """
  paths: list[str] = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__':
      path = _module_path(context.module)
      if path and path not in paths:
        paths.append(path)
    return next_fun(*args, **kwargs)

  def run(variables, inputs):
    with nn.intercept_methods(record):
      return model.apply(variables, inputs, train=False)

  jax.eval_shape(run, variables, inputs)
  if any(_selected(p, POOLED) for p in paths):
    paths.append(POOLED)
  return paths


def check_layer(
    model: nn.Module, variables: Any, inputs: Mapping[str, jax.Array],
    layer: str,
) -> None:
  """Raises ValueError naming ``layer`` and the valid names if it is absent.

  Args:
    model: the model.
    variables: its variables (shapes only).
    inputs: a batch of model inputs (shapes only).
    layer: the ``config.longtail.manifold_layer`` to check.
  """
  valid = mixable_layers(model, variables, inputs)
  if layer not in valid:
    raise ValueError(
        f'config.longtail.manifold_layer={layer!r} names no layer of the '
        f'model; valid: {valid}.'
    )
