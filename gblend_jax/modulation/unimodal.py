"""Unimodal logits: each modality's share of the fused logits.

OGM-GE (Peng et al., CVPR 2022) scores each modality by the true-class
probability of its *unimodal logits* ``f_m``. For concatenation fusion and a
linear head, ``f = W [φ_1; ...; φ_M] + b``, the paper splits the fused logits
as ``f_m = W_m φ_m + b / M``. The official code has no definition for FiLM or
gated fusion (it still splits the output layer's weight into halves, "a
potential strategy"), nor for more than two modalities. This module gives one
definition for every late fusion: the Shapley value.

Definition. Let ``g(S)`` be the fused logits ``classify(features)`` with the
features of every modality outside the set ``S`` replaced by zeros (the
encoders are not rerun). Modality ``m``'s unimodal logits are its Shapley
value relative to the all-zeros baseline plus an equal share of the
baseline's logits::

  f_m = Σ_{S ∌ m} |S|! (M - |S| - 1)! / M! · [g(S ∪ {m}) - g(S)] + g(∅) / M

Properties:

(a) Efficiency: ``Σ_m f_m = g(all) = classify(features)`` for every fusion
    (up to float rounding), so the unimodal logits split the fused logits.
(b) Concatenation and a linear head: ``g(S) = Σ_{j∈S} W_j φ_j + b`` is
    additive, so ``f_m = W_m φ_m + b / M``: the paper's split, exactly.
(c) `SumFusion` (``Σ_j W_j x_j + b_j``) and a linear head ``V h + c``:
    ``f_m = V W_m x_m + (V Σ_j b_j + c) / M``, each modality's own projected
    logits plus an equal share of all biases. (The official code's training
    step uses ``fc_m(x_m)`` with that layer's whole bias, which does sum to
    the fused logits ``fc_x(a) + fc_y(v)``; only its evaluation,
    ``valid()``, halves each layer's own bias, which does not sum.)
(d) FiLM and gated fusion (and nonlinear heads): the interaction between
    modalities is shared out; for ``M = 2`` each modality gets its own main
    effect ``g({m}) - g(∅)`` plus half of the interaction ``g({1, 2}) -
    g({1}) - g({2}) + g(∅)`` (plus half of ``g(∅)``). For FiLM,
    ``(G x_2 + g_0) ⊙ (P x_1 + p) + B x_2 + b_0``, the interaction is
    ``(G x_2) ⊙ (P x_1)``.
(e) Symmetry: modalities that contribute alike get equal logits; a modality
    whose features are all zeros gets only its share ``g(∅) / M``.

Cost: ``2^M - 1`` evaluations of ``classify`` (the empty set's weight is
``-1/M + 1/M = 0``), batched with ``jax.vmap`` into one call; cheap, as only
the fusion and the head run. ``M`` is limited to `MAX_MODALITIES`.

References:
  Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly
  Gradient Modulation", CVPR 2022, https://arxiv.org/abs/2203.15332.
  Shapley, "A Value for n-Person Games", 1953.
"""

import itertools
import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = (
    'MAX_MODALITIES',
    'shapley_weights',
    'unimodal_logits',
)

Array = jax.Array

# 2^8 - 1 = 255 evaluations of the fusion and head per call.
MAX_MODALITIES = 8


def shapley_weights(num_modalities: int) -> tuple[np.ndarray, np.ndarray]:
  """The coalitions and the weight of each coalition's logits in each ``f_m``.

  Args:
    num_modalities: M, 1 to `MAX_MODALITIES`.

  Returns:
    ``(masks, weights)``: bool ``[2^M - 1, M]`` (every non-empty set ``S``,
    ``masks[s, j]`` whether modality ``j`` is in it) and float64
    ``[2^M - 1, M]`` with ``f_m = Σ_s weights[s, m] g(S_s)``: ``(|S| - 1)!
    (M - |S|)! / M!`` where ``m ∈ S``, ``-|S|! (M - |S| - 1)! / M!``
    elsewhere. Each row but the full set's sums to 0; the full set's to 1.

  Raises:
    ValueError: if M is not in 1 to `MAX_MODALITIES`.

  Examples:
    >>> from gblend_jax.modulation.unimodal import shapley_weights
    >>> masks, weights = shapley_weights(2)
    >>> print(masks.astype(int))  # {2}, {1}, {1, 2}
    [[0 1]
     [1 0]
     [1 1]]
    >>> print(weights)
    [[-0.5  0.5]
     [ 0.5 -0.5]
     [ 0.5  0.5]]
  """
  if not 1 <= num_modalities <= MAX_MODALITIES:
    raise ValueError(
        f'unimodal logits need 1 to {MAX_MODALITIES} modalities (2^M - 1 '
        f'evaluations of the fused head); got {num_modalities}.'
    )
  m_total = num_modalities
  masks = np.array(
      list(itertools.product((False, True), repeat=m_total))[1:], dtype=bool
  )
  sizes = masks.sum(axis=1, keepdims=True)
  fact = math.factorial
  inside = np.vectorize(lambda n: fact(n - 1) * fact(m_total - n))(sizes)
  outside = np.vectorize(
      lambda n: -fact(n) * fact(m_total - n - 1) if n < m_total else 0
  )(sizes)
  weights = np.where(masks, inside, outside) / fact(m_total)
  return masks, weights.astype(np.float64)


def unimodal_logits(
    classify: Callable[[dict[str, Array]], Array],
    features: Mapping[str, Array],
    modalities: Sequence[str],
) -> dict[str, Array]:
  """Each modality's share ``f_m`` of the fused logits (Shapley value).

  See the module docstring for the definition and its properties: the
  shares sum to ``classify(features)``, and for concatenation fusion with a
  linear head they are the paper's ``W_m φ_m + b / M``.

  ``classify`` is evaluated on every non-empty set of modalities at once,
  under ``jax.vmap`` over the sets (features of the other modalities are
  zeros), so it must be a pure function of the features: fusion and head in
  evaluation mode, or with a fixed dropout key (every set then sees the same
  dropout mask and the shares still sum to the fused logits). Batch
  statistics are per set, as in separate calls. Jit-compatible and
  differentiable.

  Args:
    classify: ``{m: [B, D_m]} -> [B, C]``: the fusion module followed by the
      fused head, e.g. ``MultiModalClassifier.classify_features`` applied
      with the model's variables.
    features: the encoder outputs ``{m: [B, D_m]}`` (extra keys, such as
      ``'fused'``, are ignored and not passed on).
    modalities: the modalities to split the logits over, 1 to
      `MAX_MODALITIES`; ``classify`` receives exactly these keys.

  Returns:
    ``{m: [B, C]}`` in the logits' dtype promoted to at least float32.

  Raises:
    ValueError: for no, duplicate or too many modalities.
    KeyError: if ``features`` lacks a modality.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gblend_jax.modulation.unimodal import unimodal_logits
    >>> w = {'a': jnp.array([[1.0, 0.0]]), 'v': jnp.array([[0.0, 2.0]])}
    >>> bias = jnp.array([0.5, -0.5])
    >>> def classify(feats):  # concatenation + linear head
    ...   return feats['a'] @ w['a'] + feats['v'] @ w['v'] + bias
    >>> feats = {'a': jnp.array([[3.0]]), 'v': jnp.array([[1.0]])}
    >>> shares = unimodal_logits(classify, feats, ('a', 'v'))
    >>> print(shares['a'], shares['v'])  # W_m φ_m + b / 2
    [[ 3.25 -0.25]] [[0.25 1.75]]
  """
  modalities = tuple(modalities)
  if not modalities:
    raise ValueError('unimodal_logits needs at least one modality.')
  if len(set(modalities)) != len(modalities):
    raise ValueError(f'modalities has duplicates: {modalities}.')
  missing = [m for m in modalities if m not in features]
  if missing:
    raise KeyError(
        f'features lack modalities {missing}; got {sorted(features)}.'
    )
  masks, weights = shapley_weights(len(modalities))
  inputs = {m: jnp.asarray(features[m]) for m in modalities}

  def coalition_logits(mask):
    return classify({
        m: jnp.where(mask[j], x, jnp.zeros_like(x))
        for j, (m, x) in enumerate(inputs.items())
    })

  values = jax.vmap(coalition_logits)(jnp.asarray(masks))  # [2^M - 1, B, C]
  dtype = jnp.promote_types(values.dtype, jnp.float32)
  shares = jnp.einsum(
      'sm,s...->m...',
      jnp.asarray(weights, dtype),
      values.astype(dtype),
      precision=jax.lax.Precision.HIGHEST,
  )
  return {m: shares[j] for j, m in enumerate(modalities)}


def classifier_unimodal_logits(
    model: Any,
    variables: Mapping[str, Any],
    features: Mapping[str, Array],
    modalities: Sequence[str],
) -> dict[str, Array]:
  """`unimodal_logits` of a `gblend_jax.models.MultiModalClassifier`.

  Args:
    model: the classifier (late fusion); its ``classify_features`` method
      (fusion, then the fused head) is the ``classify`` of the shares.
    variables: its variables (``{'params': ...}`` and batch statistics).
    features: encoder outputs ``{m: [B, D_m]}`` of a forward pass.
    modalities: the modalities, in fusion order.

  Returns:
    ``{m: [B, C]}``, computed in evaluation mode (no dropout in fusion or
    head).
  """

  def classify(encoded):
    return model.apply(
        variables, encoded, train=False,
        method=type(model).classify_features,
    )

  return unimodal_logits(
      classify, {m: features[m] for m in modalities}, tuple(modalities)
  )
