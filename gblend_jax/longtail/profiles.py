"""Long-tailed class counts and the seeded subsets that realise them.

Long-tailed CIFAR (Cui et al., CVPR 2019; Cao et al., NeurIPS 2019; Zhang et
al., AAAI 2021, §"Datasets") keeps ``n_c`` training images of class ``c``:

* exponential profile: ``n_c = n_max · μ^c`` with ``μ = IF^{-1/(C-1)}``, so
  that ``n_max / n_min = IF`` (the imbalance factor), each count truncated to
  an integer as in the public CIFAR-LT code:
  ``n_c = int(n_max · IF^{-c/(C-1)})``;
* step profile (Cao et al., §4): the first ``⌈C/2⌉`` classes keep ``n_max``,
  the remaining ``⌊C/2⌋`` keep ``int(n_max / IF)``.

`longtail_indices` then draws, for every class, that many of its examples.

References:
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
  Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective
  Number of Samples", CVPR 2019, https://arxiv.org/abs/1901.05555.
  Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019,
  https://arxiv.org/abs/1906.07413.
"""

from collections.abc import Sequence

import numpy as np

__all__ = (
    'PROFILES',
    'exponential_profile',
    'longtail_counts',
    'longtail_indices',
    'step_profile',
)


def _check(num_classes: int, max_count: int, imbalance_factor: float) -> None:
  if num_classes < 1:
    raise ValueError(f'num_classes={num_classes} must be at least 1.')
  if max_count < 1:
    raise ValueError(f'max_count={max_count} must be at least 1.')
  if not imbalance_factor >= 1.0:  # Also rejects NaN.
    raise ValueError(
        f'imbalance_factor={imbalance_factor} must be at least 1 '
        '(n_max / n_min).'
    )


def _check_nonempty(counts: np.ndarray, what: str) -> np.ndarray:
  empty = np.flatnonzero(counts < 1)
  if empty.size:
    raise ValueError(
        f'The {what} leaves classes {empty.tolist()} empty (counts '
        f'{counts.tolist()}); lower the imbalance factor or raise max_count.'
    )
  return counts


def exponential_profile(
    num_classes: int, max_count: int, imbalance_factor: float
) -> np.ndarray:
  """Exponentially decaying counts ``n_c = int(n_max · IF^{-c/(C-1)})``.

  Class 0 is the largest and class ``C - 1`` the smallest, with
  ``n_{C-1} = int(n_max / IF)``. This is the CIFAR-10/100-LT profile of
  Cui et al. (2019) used by Zhang et al. (2021): ``n_c = n_max · μ^c``
  with ``μ = IF^{-1/(C-1)}``.

  Args:
    num_classes: number of classes ``C``.
    max_count: ``n_max``, the count of class 0.
    imbalance_factor: ``IF = n_max / n_min`` (at least 1).

  Returns:
    int64 ``[C]`` counts, non-increasing.

  Raises:
    ValueError: if ``IF < 1``, ``C < 1``, ``n_max < 1``, or a class would get
      no example.

  Examples:
    >>> exponential_profile(10, 5000, 100).tolist()
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
  """
  _check(num_classes, max_count, imbalance_factor)
  if num_classes == 1:
    return np.array([max_count], np.int64)
  exponents = np.arange(num_classes) / (num_classes - 1)
  counts = [int(max_count * imbalance_factor ** -e) for e in exponents]
  return _check_nonempty(np.array(counts, np.int64), 'exponential profile')


def step_profile(
    num_classes: int, max_count: int, imbalance_factor: float
) -> np.ndarray:
  """Two-level counts: ``n_max`` for the first half, ``n_max / IF`` after.

  The step imbalance of Cao et al. (2019, §4) with a minority fraction of
  one half: classes ``0 .. ⌈C/2⌉ - 1`` keep ``n_max`` examples, classes
  ``⌈C/2⌉ .. C - 1`` keep ``int(n_max / IF)``.

  Args:
    num_classes: number of classes ``C``.
    max_count: ``n_max``.
    imbalance_factor: ``IF = n_max / n_min`` (at least 1).

  Returns:
    int64 ``[C]`` counts.

  Raises:
    ValueError: as `exponential_profile`.

  Examples:
    >>> step_profile(5, 500, 10).tolist()
    [500, 500, 500, 50, 50]
  """
  _check(num_classes, max_count, imbalance_factor)
  majority = num_classes - num_classes // 2
  counts = np.full(num_classes, int(max_count / imbalance_factor), np.int64)
  counts[:majority] = max_count
  return _check_nonempty(counts, 'step profile')


PROFILES = {'exponential': exponential_profile, 'step': step_profile}


def longtail_counts(
    profile: str, num_classes: int, max_count: int, imbalance_factor: float
) -> np.ndarray:
  """Counts of the named profile (``'exponential'`` or ``'step'``).

  Args:
    profile: a key of `PROFILES`.
    num_classes: number of classes ``C``.
    max_count: ``n_max``.
    imbalance_factor: ``IF = n_max / n_min``.

  Returns:
    int64 ``[C]`` counts.

  Raises:
    ValueError: for an unknown profile, or as the profile functions.
  """
  if profile not in PROFILES:
    raise ValueError(
        f'Unknown long-tail profile {profile!r}; valid: {sorted(PROFILES)}.'
    )
  return PROFILES[profile](num_classes, max_count, imbalance_factor)


def longtail_indices(
    labels: Sequence[int] | np.ndarray,
    counts: Sequence[int] | np.ndarray,
    seed: int,
) -> np.ndarray:
  """Positions of a seeded subset with ``counts[c]`` examples of class ``c``.

  Class ``c`` keeps the first ``counts[c]`` of its positions in a permutation
  drawn from ``np.random.default_rng([seed, c])``. Each class therefore has
  its own stream: the subset of a class depends only on ``(seed, c, labels,
  counts[c])``, and the subsets for smaller counts are nested in those for
  larger ones (CIFAR-10-LT with IF=100 is a subset of IF=50 for the same
  seed). The result is the same on every call and every machine.

  Args:
    labels: integer class of each example, ``[n]``, in ``[0, C)``.
    counts: examples to keep per class, ``[C]``.
    seed: seed of the per-class draws.

  Returns:
    Sorted int64 positions into ``labels``, ``sum(counts)`` of them.

  Raises:
    ValueError: if a count is below 1 (an empty class), a class has fewer
      examples than asked, or a label is outside ``[0, C)``.

  Examples:
    >>> labels = [0, 1, 0, 1, 0, 2]
    >>> kept = longtail_indices(labels, [3, 1, 1], seed=0)
    >>> np.bincount(np.asarray(labels)[kept]).tolist()
    [3, 1, 1]
  """
  labels = np.asarray(labels)
  counts = np.asarray(counts, np.int64)
  if labels.ndim != 1 or counts.ndim != 1:
    raise ValueError(
        f'labels {labels.shape} and counts {counts.shape} must both be 1-D.'
    )
  num_classes = len(counts)
  out_of_range = (labels < 0) | (labels >= num_classes)
  if np.any(out_of_range):
    raise ValueError(
        f'Labels {np.unique(labels[out_of_range])[:20].tolist()} are not in '
        f'[0, {num_classes}) (len(counts) = {num_classes}).'
    )
  _check_nonempty(counts, 'requested subset')
  available = np.bincount(labels, minlength=num_classes)
  short = np.flatnonzero(available < counts)
  if short.size:
    c = int(short[0])
    raise ValueError(
        f'Class {c} has {available[c]} examples but {counts[c]} were asked '
        f'(classes short of examples: {short.tolist()}).'
    )
  kept = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    rng = np.random.default_rng([seed, c])
    kept.append(rng.permutation(members)[:counts[c]])
  return np.sort(np.concatenate(kept)).astype(np.int64)
