"""Stratified held-out splits and id-disjointness checks."""

from collections.abc import Sequence

import numpy as np


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Splits example indices into kept and held-out parts, class by class.

  Class ``c`` with ``n_c`` examples gives ``round(fraction * n_c)`` of them to
  the held-out part, at least one when ``n_c >= 2`` and never all of them. The
  examples are drawn by a permutation seeded with ``seed``.

  Args:
    labels: Integer class of each example, shape ``[n]``.
    fraction: Share of each class to hold out, in (0, 1).
    seed: Seed of the per-class draws.

  Returns:
    ``(kept, held_out)``: sorted int64 index arrays that partition ``range(n)``.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'fraction={fraction} must be in (0, 1).')
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  held_out = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = int(round(fraction * len(members)))
    if len(members) >= 2:
      count = min(max(count, 1), len(members) - 1)
    held_out.append(rng.permutation(members)[:count])
  held_out = np.sort(np.concatenate(held_out)).astype(np.int64)
  kept = np.setdiff1d(np.arange(len(labels)), held_out).astype(np.int64)
  return kept, held_out


def per_class_subset(
    labels: np.ndarray, count: int, seed: int
) -> np.ndarray:
  """Positions of at most `count` examples of every class, drawn seeded.

  Args:
    labels: Integer class of each example, shape ``[n]``.
    count: Examples to keep per class (all of a class that has fewer).
    seed: Seed of the per-class draws.

  Returns:
    Sorted int64 positions into `labels`.
  """
  if count < 1:
    raise ValueError(f'count={count} must be at least 1.')
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  kept = [rng.permutation(np.flatnonzero(labels == label))[:count]
          for label in np.unique(labels)]
  return np.sort(np.concatenate(kept)).astype(np.int64)


def check_disjoint(
    ids_a: Sequence[int] | np.ndarray,
    ids_b: Sequence[int] | np.ndarray,
    name_a: str,
    name_b: str,
) -> None:
  """Raises a ValueError naming the ids that two splits share."""
  overlap = np.intersect1d(np.asarray(ids_a), np.asarray(ids_b))
  if overlap.size:
    shown = overlap[:20].tolist()
    raise ValueError(
        f'{overlap.size} example ids are in both {name_a} and {name_b}: '
        f'{shown}{" ..." if overlap.size > 20 else ""}.'
    )
