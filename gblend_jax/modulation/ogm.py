"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement.

In joint training the dominant modality (the one whose unimodal logits give
the true class more probability) gets larger gradients and converges first,
leaving the others under-trained. OGM slows the dominant encoder down by
scaling its gradients, per step, with a coefficient ``k_u < 1``; GE adds
Gaussian noise to the encoders' gradients so that the smaller steps do not
also shrink SGD's gradient noise.

* `ogm_scores` sums each modality's true-class probability over a batch:
  ``s_m = Σ_i softmax(f_m(x_i))[y_i]``, with ``f_m`` the modality's share of
  the fused logits (`gblend_jax.modulation.unimodal.unimodal_logits`).
* `ogm_ratios` and `ogm_coefficients` turn the scores into the discrepancy
  ratios ``ρ_m`` and the coefficients ``k_m``.
* `ogm_ge` is an optax transform that applies them to the gradients of the
  encoders' parameters, chosen with ``param_labels`` (`label_encoders`).

Definitions. For two modalities ``ρ_m = s_m / s_other`` (the paper's Eq. 9).
For ``M`` modalities ``ρ_m = s_m / mean_{j≠m} s_j``: a modality dominates
when it beats the average of the others. A modality with ``ρ_m > 1`` gets
``k_m = 1 - tanh(α ρ_m)`` (Eq. 10), every other modality ``k_m = 1``. With
``M > 2`` several modalities can have ``ρ > 1`` (e.g. scores ``[3, 3, 1]``
give ``ρ = [1.5, 1.5, 0.33]``): each of them is modulated with its own
coefficient. At ``ρ = 1`` exactly (equal scores) no modality dominates and
every coefficient is 1. The official code differs there: its ``if ratio_v >
1 ... else`` modulates the audio encoder with ``1 - tanh(α)`` when the scores
are equal. Note the jump: ``k`` falls from 1 to ``1 - tanh(α)`` as ``ρ``
crosses 1.

References:
  Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly
  Gradient Modulation", CVPR 2022, https://arxiv.org/abs/2203.15332
  (Eq. 9 and 10; official code https://github.com/GeWu-Lab/OGM-GE_CVPR2022).
"""

import functools
import math
import numbers
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gblend_jax import _mapped

__all__ = (
    'MODULATED',
    'OGMGEState',
    'encoder_param_labels',
    'label_encoders',
    'ogm_coefficients',
    'ogm_ge',
    'ogm_ratios',
    'ogm_scores',
)

# The choices of `ogm_ge(modulated=...)`: which labelled tensors are modulated.
MODULATED = {
    # The official code: `len(parms.grad.size()) == 4`.
    'conv_kernels': lambda path, leaf: jnp.ndim(leaf) == 4,
    # Every non-1-D tensor (another toolkit's choice); right for MLP encoders.
    'matrices': lambda path, leaf: jnp.ndim(leaf) > 1,
    'all': lambda path, leaf: True,
}

# Added to the gradient's standard deviation, as in the official code.
NOISE_EPS = 1e-8


def _check_alpha(alpha: Any) -> None:
  if isinstance(alpha, numbers.Real) and not (
      math.isfinite(alpha) and alpha >= 0
  ):
    raise ValueError(f'alpha must be a finite number >= 0; got {alpha}.')


def _as_scores(scores: Any) -> jax.Array:
  scores = jnp.asarray(scores, jnp.float32)
  if scores.ndim != 1 or scores.shape[0] < 2:
    raise ValueError(
        f'scores must have shape [M] with M >= 2 modalities; got shape '
        f'{scores.shape}.'
    )
  try:
    values = np.asarray(scores)
  except jax.errors.TracerArrayConversionError:
    return scores  # Traced: negative scores give NaN ratios (see _ratios).
  if np.any(np.isfinite(values) & (values < 0)):
    raise ValueError(
        f'scores must be >= 0 (sums of true-class probabilities, '
        f'ogm_scores); got {values}.'
    )
  return scores


def _ratios(scores: jax.Array) -> jax.Array:
  """ρ_m = s_m / mean_{j≠m} s_j; 0/0 is 1; all NaN if a score is not finite
  or negative."""
  num_modalities = scores.shape[0]
  others = ~np.eye(num_modalities, dtype=bool)
  # Sum with a mask, not `total - s_m`: for M = 2 the denominator is then
  # exactly the other score.
  others_mean = jnp.sum(jnp.where(others, scores[None, :], 0.0), axis=1) / (
      num_modalities - 1
  )
  both_zero = (scores == 0) & (others_mean == 0)
  ratios = jnp.where(
      both_zero, 1.0, scores / jnp.where(both_zero, 1.0, others_mean)
  )
  valid = jnp.all(jnp.isfinite(scores)) & jnp.all(scores >= 0)
  return jnp.where(valid, ratios, jnp.nan)


def _coefficients(ratios: jax.Array, alpha: Any) -> jax.Array:
  # rho = inf (all other scores 0) gives k = 0 for alpha > 0 and k = 1 for
  # alpha = 0 (clipping avoids NaN from 0 * inf).
  finite_ratios = jnp.minimum(ratios, jnp.finfo(jnp.float32).max)
  # 1 - tanh(x) = 2 sigmoid(-2x), without float32 cancellation at large x.
  modulated = 2.0 * jax.nn.sigmoid(-2.0 * alpha * finite_ratios)
  # NaN ratios (non-finite scores) compare False: no modulation.
  return jnp.where(ratios > 1.0, modulated, 1.0).astype(jnp.float32)


def ogm_ratios(scores: jax.Array) -> jax.Array:
  """The discrepancy ratios ``ρ_m = s_m / mean_{j≠m} s_j``.

  For two modalities this is the paper's ``ρ = s_m / s_other`` (Eq. 9).
  Zero denominators give no NaN: ``s_m > 0`` against all-zero others is
  ``inf``, ``0 / 0`` is 1 (equal scores). If any score is not finite or
  negative, every ratio is NaN (and `ogm_coefficients` are all 1);
  concrete negative scores raise. Jit-compatible.

  Args:
    scores: [M] per-modality scores (`ogm_scores`), M >= 2.

  Returns:
    float32 [M] ratios.

  Raises:
    ValueError: if ``scores`` is not [M] with M >= 2, or is concrete and
      has a negative entry.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax.modulation.ogm import ogm_ratios
    >>> print(ogm_ratios(jnp.array([3.0, 1.0])).round(4))
    [3.     0.3333]
    >>> rho = ogm_ratios(jnp.array([6.0, 2.0, 4.0]))  # 6 / 3, 2 / 5, 4 / 4
    >>> print([round(float(r), 4) for r in rho])
    [2.0, 0.4, 1.0]
  """
  return _ratios(_as_scores(scores))


def ogm_coefficients(scores: jax.Array, alpha: float | jax.Array) -> jax.Array:
  """The gradient coefficients ``k_m`` of OGM (the paper's Eq. 10).

  ``k_m = 1 - tanh(α ρ_m)`` where ``ρ_m > 1`` (`ogm_ratios`), else 1. Equal
  scores give all ones (the official code would modulate its audio encoder
  with ``1 - tanh(α)`` there; see the module docstring); several modalities
  with ``ρ > 1`` (``M > 2``) are each modulated. Non-finite scores give all
  ones (no modulation); ``ρ = inf`` gives ``k = 0`` (1 for ``α = 0``).
  Jit-compatible, and
  ``alpha`` may be a traced value.

  Args:
    scores: [M] per-modality scores (`ogm_scores`), M >= 2.
    alpha: the modulation strength α >= 0 (0.8 for CREMA-D, 0.1 for
      VGGSound in the paper).

  Returns:
    float32 [M] coefficients in [0, 1].

  Raises:
    ValueError: if ``scores`` is not [M] with M >= 2, or ``alpha`` is a
      Python number that is negative or not finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax.modulation.ogm import ogm_coefficients
    >>> k = ogm_coefficients(jnp.array([3.0, 1.0]), alpha=0.8)
    >>> print(k.round(4))  # [1 - tanh(0.8 * 3), 1]
    [0.0163 1.    ]
  """
  _check_alpha(alpha)
  return _coefficients(_ratios(_as_scores(scores)), alpha)


def ogm_scores(
    logits: Mapping[str, jax.Array],
    labels: jax.Array,
    modalities: Sequence[str],
    *,
    weights: jax.Array | None = None,
) -> jax.Array:
  """``s_m = Σ_i softmax(f_m(x_i))[y_i]``, one score per modality.

  Args:
    logits: ``{m: [B, C]}`` unimodal logits (`unimodal_logits`).
    labels: [B] integer class labels.
    modalities: the order of the scores.
    weights: optional [B] example weights (0 for padding examples).

  Returns:
    float32 [M] scores, with gradients stopped.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax.modulation.ogm import ogm_scores
    >>> logits = {'a': jnp.log(jnp.array([[0.7, 0.3], [0.4, 0.6]])),
    ...           'v': jnp.zeros((2, 2))}
    >>> print(ogm_scores(logits, jnp.array([0, 1]), ('a', 'v')))
    [1.3 1. ]
  """
  labels = jnp.asarray(labels)
  scores = []
  for m in modalities:
    log_p = jax.nn.log_softmax(jnp.asarray(logits[m], jnp.float32), axis=-1)
    p_true = jnp.exp(
        jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    )
    if weights is not None:
      p_true = p_true * jnp.asarray(weights, jnp.float32)
    scores.append(jnp.sum(p_true))
  return jax.lax.stop_gradient(jnp.stack(scores))


def _encoder_label(path, modalities):
  keys = [getattr(k, 'key', None) for k in path]
  if keys and keys[0] == 'params':
    keys = keys[1:]
  for m in modalities:
    if keys and keys[0] == f'encoder_{m}':
      return m
  return None


def encoder_param_labels(params: Any, modalities: Sequence[str]) -> Any:
  """Labels every leaf under the top-level key ``encoder_<m>`` with ``m``.

  Everything else (fusion, heads) is labelled None. A leading ``'params'``
  collection key is skipped, so both ``variables['params']`` and
  ``variables`` work. The encoders of `MultiModalClassifier` are named
  ``encoder_<m>``.

  Args:
    params: a parameter (or gradient) pytree.
    modalities: the modality names.

  Returns:
    A pytree like ``params`` of modality names and None.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _encoder_label(path, modalities), params
  )


def label_encoders(modalities: Sequence[str]) -> Callable[[Any], Any]:
  """`encoder_param_labels` as a ``params -> labels`` function.

  Args:
    modalities: the modality names.

  Returns:
    A function for ``ogm_ge(param_labels=...)``.
  """
  return functools.partial(
      encoder_param_labels, modalities=tuple(modalities)
  )


# ``ogm_ge(noise_generator=...)``: the JAX PRNG implementation of each.
NOISE_GENERATORS = {'threefry': 'threefry2x32', 'rbg': 'rbg'}


class OGMGEState(NamedTuple):
  """State of `ogm_ge`."""

  count: jax.Array  # shape=(), dtype=int32; update calls so far.
  key: jax.Array  # shape=key data ((2,) threefry, (4,) rbg), uint32.
  coefficients: jax.Array  # shape=(M,), dtype=float32; last k (computed).
  ratios: jax.Array  # shape=(M,), dtype=float32; last ρ.
  active: jax.Array  # shape=(), dtype=bool; last update was in the window.


def _check_window(window):
  if not isinstance(window, Sequence) or len(window) != 2:
    raise ValueError(f'window must be a pair (start, end); got {window!r}.')
  for name, value in zip(('start', 'end'), window, strict=True):
    if value is not None and (
        not isinstance(value, numbers.Integral) or value < 0
    ):
      raise ValueError(
          f'window {name} must be None or an integer >= 0; got {value!r}.'
      )
  start, end = window
  if start is not None and end is not None and start > end:
    raise ValueError(
        f'window=({start}, {end}) is reversed: start must be <= end.'
    )


def ogm_ge(
    alpha: float | jax.Array,
    *,
    param_labels: Any,
    noise: bool = True,
    modulated: str | Callable[[Any, jax.Array], bool] = 'conv_kernels',
    window: tuple[int | None, int | None] = (None, None),
    axis_name: str | None = None,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
    noise_generator: str = 'threefry',
    noise_dtype: Any = jnp.float32,
) -> optax.GradientTransformationExtraArgs:
  """OGM-GE: scales each dominant encoder's gradients by ``k_m``, adds noise.

  ``update(grads, state, params=None, *, scores)`` takes the [M] scores
  (`ogm_scores`, in the order of ``modalities``), computes ``ρ`` and ``k``
  (`ogm_ratios`, `ogm_coefficients`; gradients stopped) and, while the step
  count is in ``window``, replaces every selected leaf ``g`` of modality
  ``m`` by ``k_m g`` plus, with ``noise`` (GE), ``N(0, σ²)`` noise where
  ``σ = std(g) + 1e-8`` is the sample standard deviation (ddof=1, as
  ``torch.Tensor.std``) of that tensor's original gradient. As in the
  official code the noise goes to every selected leaf of every modality,
  dominant or not. Outside the window the update is the identity (no noise
  either). Leaves labelled None, and labelled leaves that ``modulated`` does
  not select, pass through unchanged.

  The state (``optax.tree.get(state, name)``) holds the step ``count``, the
  noise ``key`` (raw key data, split every step, so a run resumed from a
  checkpointed state draws the same noise), and the last update's
  ``coefficients``, ``ratios`` (computed on every step, also outside the
  window) and ``active`` (whether they were applied).

  Put it first in the chain, on the raw gradients: before weight decay,
  momentum and the learning rate, as in the official code (torch SGD adds
  weight decay inside ``step()``, after the modulation). Its window counts
  optimiser steps; the official window is in epochs, inclusive at both ends
  (``modulation_starts=0``, ``modulation_ends=50``), i.e. ``window=(start *
  steps_per_epoch, (end + 1) * steps_per_epoch)``. With
  `gradient_blend` in the same chain, put ``ogm_ge`` after it (it needs
  params-shaped gradients; placed before, it raises).

  Multiple devices. Inside a user's ``jax.pmap`` pass ``axis_name``: the
  per-device scores are summed over it, so every device gets the global
  coefficients; reduce the gradients (``pmean``) before this transform so
  that the replicas, which share the noise key, stay identical. Inside
  ``jax.shard_map`` also pass ``axis_name`` (the scores of the local batch
  are summed over it), but do not pmean the gradients: autodiff already
  sums the gradients of replicated parameters over the mesh axis, so take
  the gradient of the global mean loss (``jax.lax.pmean`` of the per-device
  mean loss). Without ``axis_name`` in either, per-device scores would give
  per-device coefficients and the replicas would diverge: that raises.
  Under ``jax.jit`` with sharded arrays no ``axis_name`` is needed.

  Under ``optax.MultiSteps(chain(ogm_ge(...), opt), k)`` the inner update
  runs only on the emitting micro-step, on the averaged gradients, with
  that micro-step's ``scores`` alone: sum the scores over the k micro-steps
  yourself, or put ``ogm_ge`` outside (``chain(ogm_ge(...),
  MultiSteps(opt, k))``: each micro-step's gradients modulated with its own
  scores; the window then counts micro-steps). Under
  ``optax.inject_hyperparams`` only ``alpha`` may be injected: name every
  other argument in ``static_args``.

  Args:
    alpha: the modulation strength α >= 0 (may be injected).
    param_labels: the modality of each parameter leaf, or None for leaves
      that are not modulated: a pytree of labels with the parameters'
      structure (or a prefix of it), or a function ``params -> labels``
      (called with the params at init and the gradients at update, so it
      must use only the tree's structure and names), as in
      ``optax.partition``. `label_encoders` labels ``encoder_<m>``.
    noise: add the GE noise (OGM-GE); False is plain OGM.
    modulated: which labelled tensors are modulated: ``'conv_kernels'``
      (4-D; the default, as in the official code and
      ``config.modulation.modulated``), ``'matrices'`` (ndim > 1; pass it
      for MLP encoders, which have no 4-D kernels),
      ``'all'``, or a function ``(key_path, grad_leaf) -> bool`` that must
      decide from the path and the leaf's shape (a Python bool).
    window: ``(start, end)``: modulate on steps ``start <= count < end``;
      None leaves that side unbounded.
    axis_name: a mapped axis over which to sum the scores.
    seed: seed of the noise key.
    modalities: the order of the scores; None is the sorted set of labels.
    noise_generator: the PRNG of the GE noise (`NOISE_GENERATORS`):
      ``'threefry'`` (JAX's default) or ``'rbg'`` (XLA's RngBitGenerator,
      several times cheaper per number on GPUs and TPUs, where the noise of
      a ResNet pair's 22M gradients is a visible part of a step). The
      distribution is the same (`tests/modulation/test_ogm_noise.py`
      tests both); the numbers drawn are not.
    noise_dtype: the dtype the standard normals are drawn in (float32, or
      bfloat16: half the random bits); they are scaled by σ and added in
      float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose update is
    ``update(grads, state, params=None, *, scores, **extra_args)``.

  Raises:
    ValueError: at construction, for a negative ``alpha``, a bad or reversed
      ``window``, or an unknown ``modulated``; at init or trace time, if the
      labels do not match the parameters (naming the missing or extra
      keys), label no parameter, name an unknown modality, give fewer than
      2 modalities or select no leaf, if ``scores`` is not [M] (or is
      concrete and negative), if the gradients are not shaped like the
      parameters (e.g. per-loss gradients: ``ogm_ge`` before
      `gradient_blend`), or if the scores differ across a mapped axis and
      no ``axis_name`` is given.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from gblend_jax.modulation.ogm import label_encoders, ogm_ge
    >>> params = {
    ...     'encoder_a': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
    ...     'encoder_v': {'kernel': jnp.ones((2, 2))},
    ...     'fused_head': {'kernel': jnp.ones((2, 2))}}
    >>> tx = optax.chain(
    ...     ogm_ge(0.5, param_labels=label_encoders(('a', 'v')), noise=False,
    ...            modulated='matrices'),  # 2-D kernels: an MLP.
    ...     optax.sgd(learning_rate=1.0))
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> scores = jnp.array([3.0, 1.0])  # audio dominates: rho_a = 3
    >>> updates, state = tx.update(grads, state, params, scores=scores)
    >>> print(updates['encoder_a']['kernel'][0].round(4))  # -(1 - tanh(1.5))
    [-0.0949 -0.0949]
    >>> print(updates['encoder_a']['bias'], updates['encoder_v']['kernel'][0])
    [-1. -1.] [-1. -1.]
    >>> print(optax.tree.get(state, 'coefficients').round(4))
    [0.0949 1.    ]

  References:
    Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly
    Gradient Modulation", CVPR 2022, https://arxiv.org/abs/2203.15332
    (Eq. 9 and 10; official code https://github.com/GeWu-Lab/OGM-GE_CVPR2022).
  """
  _check_alpha(alpha)
  _check_window(window)
  if isinstance(modulated, str):
    if modulated not in MODULATED:
      raise ValueError(
          f'Unknown modulated={modulated!r}; valid: {sorted(MODULATED)} or a '
          'function (path, leaf) -> bool.'
      )
    select = MODULATED[modulated]
  elif callable(modulated):
    select = modulated
  else:
    raise ValueError(
        f'modulated must be one of {sorted(MODULATED)} or a function; got '
        f'{modulated!r}.'
    )
  if modalities is not None:
    modalities = tuple(modalities)
    if len(set(modalities)) != len(modalities):
      raise ValueError(f'modalities has duplicates: {modalities}.')
  start, end = window

  def resolve(tree):
    """Per leaf its modality's index, or None if not modulated; treedef; M."""
    if tree is None:
      raise ValueError('ogm_ge needs the params (or gradients) to label.')
    labels = param_labels(tree) if callable(param_labels) else param_labels
    try:
      # Broadcast a prefix of labels to the full tree, then flatten it.
      labels = jax.tree.map(
          lambda label, sub: jax.tree.map(lambda _: label, sub),
          labels,
          tree,
          is_leaf=lambda x: x is None,
      )
      paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
      label_leaves = treedef.flatten_up_to(labels)
    except (ValueError, TypeError) as e:
      raise ValueError(
          'param_labels do not match the parameters\' structure: '
          f'{_structure_mismatch(labels, tree) or _shorten(str(e))}'
      ) from e
    names = modalities
    if names is None:
      names = tuple(sorted({m for m in label_leaves if m is not None}))
    if all(m is None for m in label_leaves):
      top = sorted(map(str, tree)) if isinstance(tree, Mapping) else None
      raise ValueError(
          'param_labels label no parameter with a modality (every label '
          'is None). label_encoders(modalities) labels the parameters under '
          "a top-level key 'encoder_<m>' (after an optional 'params'); the "
          f'top-level keys here are {top}. Name the encoders so, or pass '
          'a labels pytree or function.'
      )
    if len(names) < 2:
      raise ValueError(
          f'ogm_ge needs at least 2 labelled modalities; got {names}.'
      )
    index = {m: i for i, m in enumerate(names)}
    plan = []
    for (path, leaf), label in zip(paths_leaves, label_leaves, strict=True):
      if label is not None and label not in index:
        raise ValueError(
            f'Parameter {jax.tree_util.keystr(path)} is labelled {label!r}, '
            f'not one of modalities={names}.'
        )
      chosen = label is not None and bool(select(path, leaf))
      plan.append(index[label] if chosen else None)
    if all(i is None for i in plan):
      hint = (" (MLP encoders have no 4-D conv kernels; use 'matrices')"
              if modulated == 'conv_kernels' else '')
      raise ValueError(
          f'modulated={modulated!r} selects no labelled '
          f'parameters: nothing would be modulated{hint}.'
      )
    return plan, treedef, names

  if noise_generator not in NOISE_GENERATORS:
    raise ValueError(
        f'noise_generator={noise_generator!r}; valid: '
        f'{list(NOISE_GENERATORS)}.')
  if jnp.dtype(noise_dtype) not in (jnp.dtype(jnp.float32),
                                    jnp.dtype(jnp.bfloat16)):
    raise ValueError(
        f'noise_dtype={noise_dtype!r}; valid: float32 or bfloat16.')
  impl = NOISE_GENERATORS[noise_generator]

  # Leaf shapes seen at init, per tree structure (static, trace time): the
  # gradients must have them.
  init_shapes = {}

  def init_fn(params):
    _, treedef, names = resolve(params)
    init_shapes[treedef] = [jnp.shape(x) for x in jax.tree.leaves(params)]
    ones = jnp.ones((len(names),), jnp.float32)
    return OGMGEState(
        count=jnp.zeros([], jnp.int32),
        key=jax.random.key_data(jax.random.key(seed, impl=impl)),
        coefficients=ones,
        ratios=ones,
        active=jnp.zeros([], jnp.bool_),
    )

  def modulate(leaves, plan, coefficients, key):
    if noise:
      # One draw for all selected leaves (one RNG call compiles much faster
      # than one per leaf), cut into the leaves in flattening order.
      total = sum(
          g.size for g, m in zip(leaves, plan, strict=True) if m is not None
      )
      normal = jax.random.normal(key, (total,), noise_dtype)
    out = []
    offset = 0
    for g, m in zip(leaves, plan, strict=True):
      if m is None:
        out.append(g)
        continue
      g32 = g.astype(jnp.float32)
      new = coefficients[m] * g32
      if noise:
        ddof = 1 if g.size > 1 else 0
        sigma = jnp.std(g32, ddof=ddof) + NOISE_EPS
        z = normal[offset:offset + g.size].reshape(g.shape).astype(
            jnp.float32)
        offset += g.size
        new = new + sigma * z
      out.append(new.astype(g.dtype))
    return out

  def update_fn(grads, state, params=None, *, scores, **extra_args):
    del extra_args
    plan, treedef, names = resolve(grads)
    _check_params_shaped(grads, params, init_shapes.get(treedef))
    del params
    scores = jnp.asarray(scores, jnp.float32)
    if scores.shape != (len(names),):
      raise ValueError(
          f'scores has shape {scores.shape}; expected ({len(names)},) for '
          f'modalities {names}.'
      )
    _as_scores(scores)  # Concrete negative scores raise.
    if axis_name is not None:
      scores = jax.lax.psum(scores, axis_name)
    elif _mapped.unreduced_axes(scores):
      axes = _mapped.unreduced_axes(scores)
      raise ValueError(
          f'ogm_ge runs inside the mapped axes {axes} (pmap or shard_map) '
          'without axis_name: each device would compute coefficients from '
          'its own scores and the replicas would diverge. Pass '
          f'axis_name={axes[0]!r}: the scores are summed over it.'
      )
    scores = jax.lax.stop_gradient(scores)
    ratios = _ratios(scores)
    coefficients = _coefficients(ratios, alpha)

    active = jnp.asarray(True)
    if start is not None:
      active &= state.count >= start
    if end is not None:
      active &= state.count < end
    key, step_key = jax.random.split(
        jax.random.wrap_key_data(state.key, impl=impl))

    leaves = treedef.flatten_up_to(grads)
    leaves = jax.lax.cond(
        active,
        lambda leaves: modulate(leaves, plan, coefficients, step_key),
        lambda leaves: list(leaves),
        leaves,
    )
    new_state = OGMGEState(
        count=optax.safe_increment(state.count),
        key=jax.random.key_data(key),
        coefficients=coefficients,
        ratios=ratios,
        active=active,
    )
    return jax.tree.unflatten(treedef, leaves), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _shorten(text: str, limit: int = 300) -> str:
  return text if len(text) <= limit else text[:limit] + ' ...'


def _structure_mismatch(labels: Any, tree: Any, path: str = '') -> str:
  """The first missing or extra keys of ``labels`` against ``tree``, or ''."""
  if not isinstance(labels, Mapping) or not isinstance(tree, Mapping):
    return ''
  missing = sorted(map(str, set(tree) - set(labels)))
  extra = sorted(map(str, set(labels) - set(tree)))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'no label for {[path + k for k in missing]}')
    if extra:
      parts.append(f'labels for unknown keys {[path + k for k in extra]}')
    return '; '.join(parts) + (
        ' (a label may be None, and one label can cover a whole subtree).')
  for key in labels:
    found = _structure_mismatch(labels[key], tree[key], f'{path}{key}/')
    if found:
      return found
  return ''


def _check_params_shaped(grads, params, init_shapes):
  """Raises if the gradients are not shaped like the parameters."""
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  if params is not None and (
      jax.tree.structure(params) == jax.tree.structure(grads)):
    expected = [jnp.shape(p) for p in jax.tree.leaves(params)]
  elif init_shapes is not None and len(init_shapes) == len(leaves):
    expected = init_shapes
  else:
    return
  for (path, g), shape in zip(leaves, expected, strict=True):
    if tuple(jnp.shape(g)) != tuple(shape):
      raise ValueError(
          f'ogm_ge got the gradient {jax.tree_util.keystr(path)} of shape '
          f'{jnp.shape(g)} for a parameter of shape {tuple(shape)}. A '
          'leading loss axis means per-loss gradients: put ogm_ge after '
          'gradient_blend in the chain (chain(gradient_blend(w), '
          'ogm_ge(...), opt)).'
      )
