"""ReconBoost's losses (Hua et al., ICML 2024): pure functions.

The learner of stage ``s`` is ``f_m`` (modality ``m(s)``); the ensemble of
the others is ``F_{−m}(x) = β Σ_{j≠m} f_j(x_j)``, computed without
gradients (official ``models/dynamic_net.py:L96-L135``). Phase 1 trains
``f_m`` with the reconcilement-weighted loss (`reconcilement_loss`), phase
2 the whole ensemble with cross-entropy (`rectification_loss`).
"""

from collections.abc import Mapping
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gblend_jax import losses

Array = jax.Array


def reconcilement_loss(
    logits: Array,
    ensemble_logits: Array | None,
    labels: Array,
    *,
    weight1: float = 5.0,
    weight2: float = 1.0,
    empty_ensemble: Array | bool = False,
) -> Array:
  r"""Phase 1's loss of the stage's learner, averaged over the batch.

  The official per-sample loss (``train.py:L339-L340``):

  .. math::
     \ell = -\frac{w_1}{C} \log p_y + \frac{w_2}{C}\, q_y \log p_y
          = -\frac{w_1 - w_2 q_y}{C} \log p_y,

  with ``p = softmax(f_m(x_m))`` and ``q = softmax(sg(F_{−m}(x)))``: a
  cross-entropy whose sample weights shrink where the other learners
  already fit the sample. Its gradient with respect to the logits is
  ``((w_1 − w_2 q_y) / C)(p − e_y)`` per sample.

  With no other learner in the ensemble (stage 0 without pre-training) the
  authors' ensemble is a scalar constant ``c0`` broadcast to ``[B, 1]``;
  its softmax over that single column is 1, so ``q_y = 1`` whatever
  ``c0`` is (``train.py:L331-L332``): ``ℓ = −((w_1 − w_2)/C) log p_y``.

  Args:
    logits: ``[B, C]`` logits ``f_m(x_m)`` of the learner.
    ensemble_logits: ``[B, C]`` logits ``F_{−m}(x)`` of the other learners
      (gradients are stopped), or None for an empty ensemble.
    labels: ``[B]`` integer labels.
    weight1: ``w_1`` (official CREMA-D 5.0, AVE 4.0).
    weight2: ``w_2`` (official 1.0).
    empty_ensemble: a (traced) boolean: treat the ensemble as empty
      (``q_y = 1``) even though ``ensemble_logits`` is given.

  Returns:
    The scalar batch mean of ``ℓ``.
  """
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits)
  log_p_y = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
  if ensemble_logits is None:
    q_y = jnp.ones_like(log_p_y)
  else:
    q = jax.nn.softmax(jax.lax.stop_gradient(ensemble_logits))
    q_y = jnp.take_along_axis(q, labels[:, None], axis=-1)[:, 0]
    q_y = jnp.where(empty_ensemble, 1.0, q_y)
  return jnp.mean(-(weight1 - weight2 * q_y) / num_classes * log_p_y)


def ensemble_logits(
    learner_logits: Mapping[str, Array],
    modalities: Sequence[str],
    beta: Array,
    members: Array,
    *,
    exclude: str | None = None,
) -> tuple[Array, Array]:
  r"""``β Σ_{j ∈ ensemble, j ≠ exclude} f_j``: the ensemble's logits.

  Args:
    learner_logits: ``{m: [B, C]}`` logits of every learner.
    modalities: the modalities in fusion order (the order of
      ``members``).
    beta: the scalar β.
    members: ``[M]`` 0/1: which learners the ensemble holds (a learner
      joins after its first stage).
    exclude: a modality left out (phase 1's learner: ``F_{−m}``).

  Returns:
    ``(logits [B, C], empty)``: the ensemble's logits and whether no
    learner counted (then the logits are zeros).
  """
  kept = [i for i, m in enumerate(modalities) if m != exclude]
  total = sum(members[i] * learner_logits[modalities[i]] for i in kept)
  empty = jnp.sum(jnp.stack([members[i] for i in kept])) == 0
  return beta * total, empty


def rectification_loss(fused_logits: Array, labels: Array) -> Array:
  """Phase 2's loss: ``CE(β Σ_m f_m(x_m), y)`` (``train.py:L397-L398``),
  the mean cross-entropy of the ensemble's logits."""
  return losses.cross_entropy(fused_logits, labels)
