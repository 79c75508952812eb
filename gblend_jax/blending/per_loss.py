"""Per-loss gradients in about two backward passes when the heads allow it.

`gradient_blend` (Proposition 1) and `mmpareto` need one gradient per loss,
stacked on a leading loss axis: ``jax.jacrev`` of the ``[H]`` loss vector,
one forward pass and H vector-Jacobian products (VJPs). With one encoder per
modality and late fusion, modality k's loss ``L_k`` reaches only its own
encoder and head, so the unimodal losses' gradients live on disjoint
parameter subtrees: one VJP of their sum ``Σ_k L_k`` holds every one of them,
each on its own subtree and zero elsewhere. The fused loss reaches all
encoders and takes a VJP of its own. H per-loss gradients then cost two
VJPs, at any number of modalities.

`per_loss_grads` takes which top-level parameter subtrees each loss reaches
(``own_params``, e.g. `gblend_jax.models.MultiModalClassifier.head_parameters`)
and runs one batched VJP over one cotangent per loss that may reach any
parameter plus one for the sum of the confined ones; with no confined
losses (or one) it is ``jax.jacrev``. The VJPs are those ``jax.jacrev``
runs, with the same cotangent (1) on every loss: the gradients are the ones
``jax.jacrev`` gives, to float rounding.

References:
  Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
  Networks Hard?", CVPR 2020, https://arxiv.org/abs/1905.12681
  (Proposition 1).
"""

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = (
    'check_own_params',
    'model_own_params',
    'per_loss_grads',
)

# For each loss: the top-level parameter keys its gradient is confined to, or
# None when it may reach any parameter.
OwnParams = Sequence[Sequence[str] | None]


def _top_key(path) -> str | None:
  key = path[0] if path else None
  return getattr(key, 'key', None)


def check_own_params(params: Any, own_params: OwnParams | None,
                     num_losses: int) -> list[int]:
  """Checks ``own_params`` against the parameters; returns the confined losses.

  Runs at trace time on the tree structure only.

  Args:
    params: the parameters (a mapping at the top level).
    own_params: one entry per loss (see `per_loss_grads`), or None.
    num_losses: H, the length of the loss vector.

  Returns:
    The indices of the losses whose gradient is confined to named subtrees.

  Raises:
    ValueError: if ``own_params`` has not H entries, names a key that is not
      a top-level key of ``params``, or names one key for two losses.
  """
  if own_params is None:
    return []
  if len(own_params) != num_losses:
    raise ValueError(
        f'own_params has {len(own_params)} entries for {num_losses} losses.')
  top_keys = {_top_key(path) for path, _ in
              jax.tree_util.tree_leaves_with_path(params)}
  owner = {}
  confined = []
  for i, keys in enumerate(own_params):
    if keys is None:
      continue
    confined.append(i)
    for key in keys:
      if key not in top_keys:
        raise ValueError(
            f'own_params[{i}] names {key!r}, not a top-level parameter key '
            f'of {sorted(k for k in top_keys if k is not None)}.')
      if key in owner:
        raise ValueError(
            f'own_params names {key!r} for losses {owner[key]} and {i}; the '
            'subtrees of the confined losses must be disjoint.')
      owner[key] = i
  return confined


def model_own_params(model: Any, heads: Sequence[str]) -> tuple | None:
  """``own_params`` of a model in head order, from its ``head_parameters()``.

  Args:
    model: a classifier; one with a ``head_parameters()`` method
      (`gblend_jax.models.MultiModalClassifier`) states which parameter
      subtrees each head's loss reaches; any other gets None.
    heads: head names in loss order.

  Returns:
    One entry per head (keys, or None for a head that may reach any
    parameter), or None when the model states nothing.
  """
  head_parameters = getattr(model, 'head_parameters', None)
  if head_parameters is None:
    return None
  groups = head_parameters()
  return tuple(groups.get(head) for head in heads)


def per_loss_grads(
    loss_vector: Callable[..., Any],
    params: Any,
    *,
    own_params: OwnParams | None = None,
    has_aux: bool = False,
) -> tuple[Any, jax.Array, Any]:
  """``∇_θ L_k`` for every loss k of ``params -> [H]`` losses.

  With ``own_params`` naming, for at least two losses, the top-level
  parameter subtrees each one reaches (pairwise disjoint), those losses'
  gradients come from one VJP of their sum, split by subtree: loss k's
  gradient is the sum's gradient on its own subtrees and 0 elsewhere
  (exact: the other confined losses do not reach them, by the premise).
  Every other loss gets a VJP of its own. All VJPs share one forward pass
  and run as one batched VJP, as in ``jax.jacrev``. Without confined
  losses this is ``jax.jacrev``.

  The premise is the caller's: a loss named with its subtrees must have a
  zero gradient on every other parameter. For
  `gblend_jax.models.MultiModalClassifier` with late fusion,
  ``head_parameters()`` states it (modality k's head sees only encoder k's
  features); it returns no subtrees for mid fusion, where it does not hold.

  Args:
    loss_vector: ``params -> [H]`` losses, or ``params -> ([H], aux)`` with
      ``has_aux``.
    params: the parameters to differentiate; a mapping at the top level
      when ``own_params`` is given.
    own_params: None, or one entry per loss: a sequence of top-level keys of
      ``params`` that the loss's gradient is confined to, or None for a loss
      that may reach any parameter (the fused loss).
    has_aux: whether ``loss_vector`` returns ``(losses, aux)``.

  Returns:
    ``(grads, losses, aux)``: every leaf of ``grads`` is ``[H, *leaf.shape]``
    in loss order; ``losses`` ``[H]``; ``aux`` (None without ``has_aux``).

  Raises:
    ValueError: at trace time, on a loss vector that is not ``[H]`` or on
      ``own_params`` that do not fit ``params`` (`check_own_params`).

  Examples:
    Two losses on disjoint parameters and one on both: two VJPs.

    >>> import jax.numpy as jnp
    >>> from gblend_jax.blending import per_loss
    >>> params = {'a': jnp.array(1.0), 'b': jnp.array(2.0)}
    >>> def losses(p):
    ...   return jnp.stack([p['a'] ** 2, 3 * p['b'], p['a'] * p['b']])
    >>> grads, _, _ = per_loss.per_loss_grads(
    ...     losses, params, own_params=(('a',), ('b',), None))
    >>> print(grads['a'], grads['b'])
    [2. 0. 2.] [0. 3. 1.]
  """
  if has_aux:
    losses, pullback, aux = jax.vjp(loss_vector, params, has_aux=True)
  else:
    (losses, pullback), aux = jax.vjp(loss_vector, params), None
  if losses.ndim != 1:
    raise ValueError(f'The loss vector must be [H]; got {losses.shape}.')
  num_losses = losses.shape[0]
  confined = check_own_params(params, own_params, num_losses)
  eye = jnp.eye(num_losses, dtype=losses.dtype)
  if len(confined) < 2:
    (grads,) = jax.vmap(pullback)(eye)
    return grads, losses, aux
  general = [i for i in range(num_losses) if i not in confined]
  rows = [eye[i] for i in general]
  rows.append(jnp.sum(eye[jnp.array(confined)], axis=0))
  (rows_grads,) = jax.vmap(pullback)(jnp.stack(rows))
  row_of = {i: r for r, i in enumerate(general)}
  summed = len(general)
  owner = {key: i for i in confined for key in own_params[i]}

  def split(path, stacked):
    key_owner = owner.get(_top_key(path))
    per_loss = []
    for i in range(num_losses):
      if i in row_of:
        per_loss.append(stacked[row_of[i]])
      elif key_owner == i:
        per_loss.append(stacked[summed])
      else:
        per_loss.append(jnp.zeros_like(stacked[summed]))
    return jnp.stack(per_loss)

  grads = jax.tree_util.tree_map_with_path(split, rows_grads)
  return grads, losses, aux
