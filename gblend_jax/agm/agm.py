"""AGM: adaptive gradient modulation by Shapley mono-modal responses.

Li, Li, Hu, Yang, Hu, "Boosting Multi-modal Model Performance with Adaptive
Gradient Modulation", ICCV 2023; the authors' code `lihong2303/AGM`
(``run/CREMAD_main.py``, ``model/CREMAD_net.py``, ``model/URFunny_net.py``).
With ``f(S)`` the fused logits when the raw inputs of every modality outside
``S`` are replaced by zeros (the padded passes in evaluation mode):

* mono-modal response of modality k (Shapley value, ``f(∅)`` taken as 0)::

    m_k = Σ_{S ⊆ 𝓜∖{k}} |S|! (M - |S| - 1)! / M! · [f(S ∪ {k}) - f(S)]

  so that ``Σ_k m_k = f(𝓜)``; for two modalities ``m_a = ½[f(a,v) - f(0,v)
  + f(a,0)]``;
* score ``s_k = (1/B) Σ_i -log max(softmax(m_k,i)_{y_i}, 1e-8)``;
* ratio ``r_k = exp(M/(M-1) · (s̄ - s_k))`` (``s̄`` the mean score), and the
  target ``η_k``: the same formula on the running scores ``S_k``;
* coefficient ``κ_k = exp(α · min(η_k - r_k, cap))``;
* running scores, after κ: ``S_k ← S_k (t-1)/t + s_k/t`` (a cumulative mean
  over steps t = 1, 2, ...);
* the loss ``CE(Σ_k GS_{κ_k}(m_k), y)``, where ``GS_c`` is the identity
  whose gradient is multiplied by ``c`` (`gradient_scale`): the gradient of
  everything upstream of ``m_k`` is scaled by ``κ_k``.

A modality whose loss fell faster than its running level (``r_k > η_k``,
it is stronger now than it has been) gets ``κ_k < 1``; a lagging one gets
``κ_k > 1``. BalanceBenchmark (``balancemm/trainer/AGM_trainer.py``) flips
the sign of both ratios, which reverses this; this module follows the
authors.

The authors' CREMA-D code also clips the global gradient norm to 1 whenever
an element of the fusion layer's weight gradient leaves [-1, 1]:
`clip_by_global_norm_if_exceeds`.
"""

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gblend_jax.modulation import unimodal

__all__ = (
    'AGMState',
    'MIN_PROBABILITY',
    'agm_coefficients',
    'agm_scores',
    'agm_statistics',
    'clip_by_global_norm_if_exceeds',
    'gradient_scale',
    'modulated_logits',
    'mono_modal_responses',
    'strength_ratios',
    'update_running_scores',
)

Array = jax.Array

# The authors' floor on a true-class probability in the scores.
MIN_PROBABILITY = 1e-8


@jax.custom_vjp
def gradient_scale(x: Array, scale: Array) -> Array:
  """``GS_c(x)``: returns ``x`` unchanged; its gradient is scaled by ``c``.

  The authors' backward hook on each mono-modal response
  (``CREMAD_net.py:L42-L51``). No gradient flows to ``scale``.

  Args:
    x: any array.
    scale: a scalar (or an array broadcastable to ``x``).

  Returns:
    ``x`` (the same values, bit for bit).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gblend_jax.agm import gradient_scale
    >>> print(jax.grad(lambda x: gradient_scale(x, 0.5) ** 2)(3.0))
    3.0
  """
  del scale
  return x


def _scale_fwd(x, scale):
  return x, scale


def _scale_bwd(scale, cotangent):
  scaled = (cotangent * scale).astype(cotangent.dtype)
  return scaled, jnp.zeros_like(scale)


gradient_scale.defvjp(_scale_fwd, _scale_bwd)


def _pad(inputs: Mapping[str, Array], modalities: Sequence[str],
         mask: np.ndarray) -> dict[str, Array]:
  padded = dict(inputs)
  for j, m in enumerate(modalities):
    if not mask[j]:
      padded[m] = jnp.zeros_like(inputs[m])
  return padded


def mono_modal_responses(
    apply_fn: Callable[[dict[str, Array]], Array],
    inputs: Mapping[str, Array],
    modalities: Sequence[str],
    *,
    full_logits: Array | None = None,
) -> dict[str, Array]:
  """AGM's mono-modal responses ``m_k`` from zero-padded forward passes.

  ``m_k = Σ_{S ∌ k} |S|! (M-|S|-1)! / M! [f(S ∪ {k}) - f(S)]`` with
  ``f(∅) = 0`` (``URFunny_net.py:L6-L31``; ``CREMAD_net.py:L7-L17`` for two
  modalities). The coalition weights are
  `gblend_jax.modulation.unimodal.shapley_weights`; unlike OGM-GE's
  `unimodal_logits`, which zeroes encoder *features*, AGM zeroes the raw
  *inputs* and reruns the whole network.

  Args:
    apply_fn: ``inputs -> [B, C]`` fused logits of the padded passes (the
      authors run them in evaluation mode, with gradients).
    inputs: ``{m: [B, ...]}``, the batch's inputs (extra keys are passed on
      unchanged).
    modalities: the modalities to split over, 1 to
      `gblend_jax.modulation.unimodal.MAX_MODALITIES`.
    full_logits: ``f(𝓜)``, the training-mode forward pass's fused logits
      (the authors'); None computes it with ``apply_fn``.

  Returns:
    ``{m: [B, C]}``, summing to ``f(𝓜)``; ``2^M - 2`` padded passes (plus
    one when ``full_logits`` is None), each a separate call of ``apply_fn``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax.agm import mono_modal_responses
    >>> def apply_fn(x):  # an interaction term: not additive
    ...   return jnp.stack([x['a'] + x['v'] * x['a'], x['v']], axis=-1)
    >>> inputs = {'a': jnp.array([2.0]), 'v': jnp.array([1.0])}
    >>> shares = mono_modal_responses(apply_fn, inputs, ('a', 'v'))
    >>> print(shares['a'], shares['v'])  # the interaction 2 split in halves
    [[3. 0.]] [[1. 1.]]
  """
  modalities = tuple(modalities)
  if len(set(modalities)) != len(modalities):
    raise ValueError(f'modalities has duplicates: {modalities}.')
  missing = [m for m in modalities if m not in inputs]
  if missing:
    raise KeyError(f'inputs lack modalities {missing}; got {sorted(inputs)}.')
  masks, weights = unimodal.shapley_weights(len(modalities))
  values = []
  for mask in masks:
    if mask.all() and full_logits is not None:
      values.append(jnp.asarray(full_logits))
    else:
      values.append(apply_fn(_pad(inputs, modalities, mask)))
  dtype = jnp.promote_types(values[-1].dtype, jnp.float32)
  shares = jnp.einsum(
      'sm,s...->m...', jnp.asarray(weights, dtype),
      jnp.stack(values).astype(dtype),
      precision=jax.lax.Precision.HIGHEST,
  )
  return {m: shares[j] for j, m in enumerate(modalities)}


def agm_scores(
    responses: Mapping[str, Array],
    labels: Array,
    modalities: Sequence[str],
) -> Array:
  """``s_k``: the mean cross-entropy of each mono-modal response.

  ``s_k = (1/B) Σ_i -log max(softmax(m_{k,i})_{y_i}, 1e-8)``
  (``CREMAD_main.py:L130-L143``).

  Args:
    responses: ``{m: [B, C]}`` from `mono_modal_responses`.
    labels: ``[B]`` integer labels.
    modalities: the order of the scores.

  Returns:
    ``[M]`` float32 scores (differentiable; callers stop the gradient).
  """
  floor = float(np.log(MIN_PROBABILITY))
  scores = []
  for m in modalities:
    log_p = jax.nn.log_softmax(responses[m].astype(jnp.float32), axis=-1)
    true = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    scores.append(-jnp.mean(jnp.maximum(true, floor)))
  return jnp.stack(scores)


def strength_ratios(scores: Array) -> Array:
  """``r_k = exp(M/(M-1) · (s̄ - s_k))`` of ``[M]`` scores (M ≥ 2).

  For two modalities ``r_a = exp(s_v - s_a)`` (``CREMAD_main.py:L145-L146``);
  the general form is ``URFunny_main.py:L117-L121``.

  Args:
    scores: ``[M]`` scores (or running scores, for the targets ``η``).

  Returns:
    ``[M]`` ratios; above 1 for a modality with a lower loss than average.

  Raises:
    ValueError: for fewer than two modalities.
  """
  scores = jnp.asarray(scores, jnp.float32)
  num = scores.shape[-1]
  if num < 2:
    raise ValueError(f'AGM compares several modalities; got {num} score.')
  mean = jnp.mean(scores, axis=-1, keepdims=True)
  return jnp.exp(num / (num - 1) * (mean - scores))


def agm_coefficients(
    scores: Array,
    running_scores: Array,
    *,
    alpha: float,
    cap: float | None,
) -> Array:
  """AGM's coefficients ``κ_k = exp(α · min(η_k - r_k, cap))``.

  ``r = strength_ratios(scores)``, ``η = strength_ratios(running_scores)``
  (``CREMAD_main.py:L145-L152``). A modality stronger now than its running
  level (``r_k > η_k``) gets ``κ_k < 1``.

  Args:
    scores: ``[M]`` this batch's scores ``s_k`` (`agm_scores`).
    running_scores: ``[M]`` running scores ``S_k`` before this batch.
    alpha: α ≥ 0 (1 in the authors' defaults).
    cap: upper bound of ``η_k - r_k`` (10 for CREMA-D, 7 for UR-Funny), or
      None for none (AV-MNIST, AVE, MOSEI).

  Returns:
    ``[M]`` float32 coefficients.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax import agm_coefficients
    >>> kappa = agm_coefficients(jnp.array([0.5, 1.5]), jnp.array([0.8, 1.2]),
    ...                          alpha=0.5, cap=10.0)
    >>> print(kappa.round(6))  # SPEC_METHODS §2 (h2)
    [0.541599 1.163253]
  """
  gap = strength_ratios(running_scores) - strength_ratios(scores)
  if cap is not None:
    gap = jnp.minimum(gap, cap)
  return jnp.exp(alpha * gap)


def update_running_scores(
    running_scores: Array, scores: Array, num_steps: Array
) -> Array:
  """``S_k ← S_k (t-1)/t + s_k/t`` with ``t = num_steps + 1``.

  The authors' cumulative mean over every training step
  (``CREMAD_main.py:L154-L155``), taken after the coefficients.

  Args:
    running_scores: ``[M]`` ``S_k`` over the ``num_steps`` steps before.
    scores: ``[M]`` this step's ``s_k``.
    num_steps: steps already averaged (0 before the first).

  Returns:
    ``[M]`` the running scores including this step.
  """
  t = jnp.asarray(num_steps, jnp.float32) + 1.0
  return running_scores * (t - 1.0) / t + scores / t


def modulated_logits(
    responses: Mapping[str, Array],
    coefficients: Array,
    modalities: Sequence[str],
) -> Array:
  """``Σ_k GS_{κ_k}(m_k)``: the fused logits whose loss AGM trains on.

  Equal in value to ``Σ_k m_k = f(𝓜)``; the gradient through ``m_k`` is
  scaled by ``κ_k`` (``CREMAD_main.py:L159-L166``).

  Args:
    responses: ``{m: [B, C]}`` (`mono_modal_responses`).
    coefficients: ``[M]`` κ (treated as constants).
    modalities: the order of ``coefficients``.

  Returns:
    ``[B, C]`` logits.
  """
  coefficients = jax.lax.stop_gradient(coefficients)
  return sum(gradient_scale(responses[m], coefficients[j])
             for j, m in enumerate(modalities))


class AGMState(NamedTuple):
  """The state of `agm_statistics`."""

  num_steps: jax.Array  # shape=(), dtype=int32; steps averaged.
  running_scores: jax.Array  # shape=[M], dtype=float32; S_k.
  coefficients: jax.Array  # shape=[M], dtype=float32; the last κ used.


def agm_statistics(
    num_modalities: int,
) -> optax.GradientTransformationExtraArgs:
  """Keeps AGM's running scores and last coefficients in the optimiser state.

  Passes the updates through unchanged. Each update takes this step's
  ``agm_scores`` ``s`` and the ``agm_coefficients`` κ the loss used, and
  stores ``S ← update_running_scores(S, s, t)`` and κ. The loss of the next
  step reads ``S`` for its targets and κ for steps outside the modulation
  window (the authors keep the last κ there). Read it back with
  ``optax.tree.get(opt_state, 'running_scores')``.

  Args:
    num_modalities: M, the length of the scores.

  Returns:
    The transform (``update(updates, state, params=None, *, agm_scores,
    agm_coefficients)``).
  """

  def init_fn(params):
    del params
    return AGMState(
        num_steps=jnp.zeros((), jnp.int32),
        running_scores=jnp.zeros((num_modalities,), jnp.float32),
        coefficients=jnp.ones((num_modalities,), jnp.float32),
    )

  def update_fn(updates, state, params=None, *, agm_scores,
                agm_coefficients, **extra_args):
    del params, extra_args
    scores = jnp.asarray(agm_scores, jnp.float32)
    if scores.shape != (num_modalities,):
      raise ValueError(
          f'agm_scores has shape {scores.shape}; expected '
          f'({num_modalities},).'
      )
    return updates, AGMState(
        num_steps=state.num_steps + 1,
        running_scores=update_running_scores(
            state.running_scores, jax.lax.stop_gradient(scores),
            state.num_steps),
        coefficients=jnp.asarray(
            jax.lax.stop_gradient(agm_coefficients), jnp.float32),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ConditionalClipState(NamedTuple):
  """The state of `clip_by_global_norm_if_exceeds`."""

  clipped: jax.Array  # shape=(), dtype=bool; whether the last update was.


def clip_by_global_norm_if_exceeds(
    max_norm: float,
    *,
    threshold: float,
    watched: Any,
) -> optax.GradientTransformationExtraArgs:
  """Clips the global norm to ``max_norm`` when a watched element is large.

  The authors' CREMA-D rule (``CREMAD_main.py:L233-L238``): if an element
  of the fusion layer's weight gradient lies outside ``[-threshold,
  threshold]``, every gradient is scaled by ``max_norm / ‖g‖`` when ``‖g‖ >
  max_norm`` (``torch.nn.utils.clip_grad_norm_``, without its 1e-6 in the
  denominator); otherwise the updates pass unchanged.

  Args:
    max_norm: the global norm to clip to.
    threshold: the bound on the watched elements' magnitude.
    watched: a pytree of bools with the params' structure (or a callable
      from the updates to one, as `optax.masked` takes): the leaves whose
      elements are watched.

  Returns:
    The transform; its state records whether the last update was clipped.
  """

  def init_fn(params):
    del params
    return ConditionalClipState(clipped=jnp.zeros((), bool))

  def update_fn(updates, state, params=None, **extra_args):
    del state, params, extra_args
    mask = watched(updates) if callable(watched) else watched
    peaks = [jnp.max(jnp.abs(g)) for g, w in zip(
        jax.tree.leaves(updates), jax.tree.leaves(mask), strict=True) if w]
    exceeds = (jnp.max(jnp.stack(peaks)) > threshold if peaks
               else jnp.zeros((), bool))
    norm = optax.global_norm(updates)
    clipped = jnp.logical_and(exceeds, norm > max_norm)
    factor = jnp.where(clipped, max_norm / jnp.where(clipped, norm, 1.0), 1.0)
    updates = jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates)
    return updates, ConditionalClipState(clipped=clipped)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
