"""MLA's test-time fusion: per-sample entropy weights of unimodal logits.

Zhang, Yoon, Bansal, Yao, CVPR 2024 ("uncertainty-based fusion"). With
``o_m = h(z_m)`` the shared head's logits of modality m and, per example,
``H_m = −Σ_c p_{m,c} log p_{m,c}`` (``p_m = softmax(o_m)`` over classes):

  λ_m = exp(H_max − H_m) / Σ_j exp(H_max − H_j),   o = Σ_m λ_m o_m

(``λ = softmax(−H)`` over the modalities): the more certain modality
weighs more, example by example. The authors' code (``main.py:
calculate_entropy``) takes the softmax over the batch axis and sums the
entropy over the whole ``B × C`` matrix, one weight per modality and
batch, so an example's prediction depends on the rest of its evaluation
batch; BalanceBenchmark and this module use the per-sample form.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def prediction_entropy(logits: jax.Array) -> jax.Array:
  """``H = −Σ_c p_c log p_c`` of ``softmax(logits)``, per example.

  Args:
    logits: ``[B, C]``.

  Returns:
    ``[B]`` entropies (nats).
  """
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def entropy_weights(logits: Sequence[jax.Array]) -> jax.Array:
  """Per-sample fusion weights ``λ_m = softmax_m(−H_m)``.

  Args:
    logits: one ``[B, C]`` array per modality.

  Returns:
    ``[M, B]`` weights; each column sums to 1.
  """
  entropies = jnp.stack([prediction_entropy(o) for o in logits])
  return jax.nn.softmax(-entropies, axis=0)


def entropy_weighted_fusion(logits: Sequence[jax.Array]) -> jax.Array:
  """MLA's fused logits ``o = Σ_m λ_m o_m`` with per-sample entropy weights.

  Args:
    logits: one ``[B, C]`` array per modality (the shared head's logits).

  Returns:
    ``[B, C]`` fused logits.

  Examples:
    >>> import jax.numpy as jnp
    >>> fused = entropy_weighted_fusion([jnp.array([[2., 0., 0.]]),
    ...                                  jnp.array([[1., 1., 0.]])])
    >>> [f'{v:.5f}' for v in fused[0]]
    ['1.58705', '0.41295', '0.00000']
  """
  weights = entropy_weights(logits)
  return jnp.einsum('mb,mbc->bc', weights, jnp.stack(logits))
