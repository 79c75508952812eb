"""MMPareto: Pareto-combined gradients of the joint and unimodal losses.

Wei, Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal
Assistance", ICML 2024; the authors' code `GeWu-Lab/MMPareto_ICML2024`
(``code/MMPareto.py``, ``code/min_norm_solvers.py``). Training minimises the
joint loss and one unimodal loss per encoder, ``L = L_mm + Σ_k L_k``. For
the parameters ``Θ_k`` of encoder k, with ``g_m = ∇_{Θ_k} L_mm`` and
``g_u = ∇_{Θ_k} L_k`` (flattened over all of ``Θ_k``):

* ``c = cos(g_m, g_u)``; no conflict (``c > 0``, strict): ``α_m = α_u = ½``;
  a conflict: the two-vector min-norm (MGDA) point, ``α_m = (⟨g_u, g_u⟩ -
  ⟨g_m, g_u⟩) / ‖g_m - g_u‖²``, ``α_u = 1 - α_m``, with the solver's edge
  rules (``⟨g_m, g_u⟩ ≥ ⟨g_m, g_m⟩``: ``α_m = 0.999``; else ``⟨g_m, g_u⟩ ≥
  ⟨g_u, g_u⟩``: ``α_m = 0.001``);
* per parameter tensor p of ``Θ_k`` (the authors' code; the paper's
  Algorithm 1 is read as the same, unverified): ``s_p = g_m,p + g_u,p``,
  ``ĝ_p = 2(α_m g_m,p + α_u g_u,p)``, ``ρ_p = ‖s_p‖ / ‖ĝ_p‖`` and
  ``G_p = γ ρ_p ĝ_p`` if ``ρ_p > 1``, else ``γ ĝ_p`` (γ = 1.5).
  Per tensor, the rescaled pieces can point against ``g_m`` again (see
  ``tests/mmpareto``); ``per_tensor=False`` applies the rule to the whole
  encoder vector instead, where ``‖ĝ‖ ≤ ‖s‖`` always holds and the update
  is ``γ ‖s‖ ĝ / ‖ĝ‖``.

Every other parameter (fusion, heads) gets the plain gradient of ``L``,
the sum of the per-loss gradients. This is the authors' rule, not
BalanceBenchmark's: its trainer copies the gradients after all three
backward passes, so its conflict branch never runs and its update is
``3 (g_mm + g_k)`` on the encoders.
"""

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gblend_jax.modulation import ogm

# The min-norm solver's values of α_m when one gradient dominates.
_EDGE_HIGH, _EDGE_LOW = 0.999, 0.001


def _dot(a: Any, b: Any) -> jax.Array:
  return sum(jnp.vdot(x, y).real for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def pareto_weights(joint_grads: Any, unimodal_grads: Any) -> tuple[
    jax.Array, jax.Array]:
  """``(α_m, cos)`` of one encoder: MGDA's weight of the joint gradient.

  Args:
    joint_grads: ``g_m``, the joint loss's gradient (one encoder's pytree).
    unimodal_grads: ``g_u``, the encoder's unimodal loss's gradient.

  Returns:
    float32 scalars: ``α_m`` (½ without a conflict) and ``cos(g_m, g_u)``.
  """
  mm = _dot(joint_grads, joint_grads)
  uu = _dot(unimodal_grads, unimodal_grads)
  mu = _dot(joint_grads, unimodal_grads)
  cosine = mu / jnp.sqrt(jnp.maximum(mm * uu, jnp.finfo(jnp.float32).tiny))
  denominator = mm + uu - 2.0 * mu
  min_norm = (uu - mu) / jnp.where(denominator > 0, denominator, 1.0)
  min_norm = jnp.where(mu >= mm, _EDGE_HIGH,
                       jnp.where(mu >= uu, _EDGE_LOW, min_norm))
  alpha = jnp.where(cosine > 0, 0.5, min_norm)
  return alpha.astype(jnp.float32), cosine.astype(jnp.float32)


def mmpareto_update(
    joint_grads: Any,
    unimodal_grads: Any,
    *,
    gamma: float = 1.5,
    per_tensor: bool = True,
) -> Any:
  """MMPareto's gradient for one encoder (see the module docstring).

  Args:
    joint_grads: ``g_m = ∇_{Θ_k} L_mm``, a pytree of one encoder's
      parameters.
    unimodal_grads: ``g_u = ∇_{Θ_k} L_k``, the same structure.
    gamma: γ, the magnitude factor (1.5 in the authors' code).
    per_tensor: the authors' per-tensor magnitude rule (True), or the rule
      over the whole encoder vector.

  Returns:
    The combined gradient ``G``, structured like ``joint_grads``.

  Examples:
    The spec's conflicting pair (one tensor): ``α_m = 13/18``, ``ρ = 1.5667``.

    >>> import jax.numpy as jnp
    >>> from gblend_jax import mmpareto_update
    >>> g = mmpareto_update(jnp.array([1.0, 1.0, 0.0]),
    ...                     jnp.array([-3.0, 0.0, 1.0]))
    >>> print(' '.join(f'{x:.4f}' for x in g))
    -0.5222 3.3945 1.3056
  """
  alpha, _ = pareto_weights(joint_grads, unimodal_grads)
  summed = jax.tree.map(jnp.add, joint_grads, unimodal_grads)
  pareto = jax.tree.map(
      lambda m, u: 2.0 * (alpha * m + (1.0 - alpha) * u),
      joint_grads, unimodal_grads)

  def enhanced(s_norm, g_norm, g):
    ratio = s_norm / jnp.where(g_norm > 0, g_norm, 1.0)
    return gamma * jnp.where(ratio > 1.0, ratio, 1.0) * g

  if per_tensor:
    return jax.tree.map(
        lambda s, g: enhanced(jnp.linalg.norm(s), jnp.linalg.norm(g), g),
        summed, pareto)
  s_norm = jnp.sqrt(_dot(summed, summed))
  g_norm = jnp.sqrt(_dot(pareto, pareto))
  return jax.tree.map(lambda g: enhanced(s_norm, g_norm, g), pareto)


class MMParetoState(NamedTuple):
  """What the last update measured, per modality (for logging)."""

  cosine: jax.Array  # shape=[M], dtype=float32: cos(g_m, g_u) per encoder.
  joint_weight: jax.Array  # shape=[M], dtype=float32: α_m per encoder.


def mmpareto(
    modalities: Sequence[str],
    *,
    gamma: float = 1.5,
    per_tensor: bool = True,
    param_labels: Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
  """MMPareto as an optax transform over stacked per-loss gradients.

  Place it first in an ``optax.chain``, as `gblend_jax.gradient_blend`:
  the updates it receives have a leading loss axis ``[H, ...]`` in the
  heads' order, one modality head per modality, then the fused (joint)
  head: ``(m_1, ..., m_M, fused)``; it returns one parameter-shaped update.

  Args:
    modalities: ``(m_1, ..., m_M)``, the order of the unimodal losses.
    gamma: γ of `mmpareto_update`.
    per_tensor: the authors' per-tensor rule (True) or whole-encoder.
    param_labels: ``params -> labels`` (a modality name or None per leaf);
      None: `gblend_jax.modulation.ogm.label_encoders` (top-level
      ``encoder_<m>``).

  Returns:
    The transform; its state keeps the last ``cosine`` and
    ``joint_weight`` per modality (``optax.tree.get(state, 'cosine')``).

  Raises:
    ValueError: at update time, for per-loss gradients whose leading axis
      is not ``M + 1`` long, or a modality with no labelled parameter.
  """
  modalities = tuple(modalities)
  labels_of = param_labels or ogm.label_encoders(modalities)
  num_losses = len(modalities) + 1

  def init_fn(params):
    del params
    zeros = jnp.zeros((len(modalities),), jnp.float32)
    return MMParetoState(cosine=zeros, joint_weight=zeros)

  def update_fn(updates, state, params=None):
    del state
    leaves, treedef = jax.tree.flatten(updates)
    for leaf in leaves:
      if leaf.ndim == 0 or leaf.shape[0] != num_losses:
        raise ValueError(
            f'mmpareto needs per-loss gradients with a leading axis of '
            f'{num_losses} (modalities {list(modalities)}, then the joint '
            f'loss); got a leaf of shape {leaf.shape}.'
        )
    labels = treedef.flatten_up_to(
        labels_of(jax.tree.map(lambda x: x[0], updates)
                  if params is None else params))
    combined = [jnp.sum(leaf, axis=0) for leaf in leaves]
    cosines, weights = [], []
    for k, m in enumerate(modalities):
      positions = [i for i, label in enumerate(labels) if label == m]
      if not positions:
        raise ValueError(
            f'mmpareto: no parameter is labelled {m!r} (expected a '
            f'top-level encoder_{m}); labels found: '
            f'{sorted({str(x) for x in labels})}.'
        )
      joint = [leaves[i][-1] for i in positions]
      unimodal = [leaves[i][k] for i in positions]
      alpha, cosine = pareto_weights(joint, unimodal)
      for i, g in zip(positions, mmpareto_update(
          joint, unimodal, gamma=gamma, per_tensor=per_tensor), strict=True):
        combined[i] = g
      cosines.append(cosine)
      weights.append(alpha)
    new_state = MMParetoState(cosine=jnp.stack(cosines),
                              joint_weight=jnp.stack(weights))
    return jax.tree.unflatten(treedef, combined), new_state

  return optax.GradientTransformation(init_fn, update_fn)
