"""Classification metrics, computed per head and accumulated over batches."""

from collections.abc import Iterable
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax import losses


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Whether the label is among the k highest logits, per example.

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer labels.
    k: how many top classes count; clipped to C.

  Returns:
    ``[B]`` float32, 1 where the label is in the top k. Ties are broken by
    ``jax.lax.top_k`` (lowest index first).
  """
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def head_metric_sums(
    logits: Mapping[str, jax.Array],
    labels: jax.Array,
    mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Sums of loss, top-1 and top-5 correct for every head over a batch.

  Sums (not means) so that batches of different real sizes combine exactly;
  divide by ``'count'`` with `finalize`.

  Args:
    logits: head name to ``[B, C]`` logits.
    labels: ``[B]`` labels.
    mask: optional ``[B]`` 1 for real examples, 0 for padding.

  Returns:
    Flat dict ``{'<head>/loss': ..., '<head>/accuracy': ...,
    '<head>/top5_accuracy': ..., 'count': ...}`` of scalar sums.
  """
  if mask is None:
    mask = jnp.ones(labels.shape, jnp.float32)
  sums = {'count': jnp.sum(mask)}
  for head, head_logits in logits.items():
    loss = losses.cross_entropy(head_logits, labels, mask) * sums['count']
    sums[f'{head}/loss'] = loss
    sums[f'{head}/accuracy'] = jnp.sum(
        topk_correct(head_logits, labels, 1) * mask
    )
    sums[f'{head}/top5_accuracy'] = jnp.sum(
        topk_correct(head_logits, labels, 5) * mask
    )
  return sums


def finalize(
    batch_sums: Iterable[Mapping[str, np.ndarray]],
) -> dict[str, float]:
  """Combines per-batch sums from `head_metric_sums` into means.

  Args:
    batch_sums: one dict of sums per batch (host values).

  Returns:
    Metric name to mean over all real examples, plus ``'count'``.
  """
  total: dict[str, float] = {}
  for sums in batch_sums:
    for name, value in sums.items():
      total[name] = total.get(name, 0.0) + float(value)
  count = total.get('count', 0.0)
  return {
      name: (value if name == 'count' else value / max(count, 1.0))
      for name, value in total.items()
  }
