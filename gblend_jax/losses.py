"""Per-head classification losses.

A multi-modal model returns its logits as a dict keyed by head (``'fused'`` and
one entry per modality). Gradient Blending (Wang et al., CVPR 2020, §3) trains
on a weighted sum of the per-head losses, so losses are computed per head and
combined by the caller. Losses are means over the real (unmasked) examples.
"""


import jax
import jax.numpy as jnp
import optax


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean of `values` over the examples whose mask is 1.

  Args:
    values: per-example values, shape ``[B]``.
    mask: ``[B]`` with 1 for real examples and 0 for padding, or None.

  Returns:
    A scalar: ``sum(values * mask) / max(sum(mask), 1)``.
  """
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
  """Softmax cross-entropy with integer labels, averaged over examples.

  Args:
    logits: ``[B, C]`` unnormalised scores.
    labels: ``[B]`` integer class indices in ``[0, C)``.
    mask: optional ``[B]`` weights (1 real, 0 padding).

  Returns:
    The scalar mean loss ``-mean_b log softmax(logits_b)[labels_b]``.
  """
  per_example = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
  )
  return masked_mean(per_example, mask)
