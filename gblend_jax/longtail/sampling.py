"""Re-sampling for long-tailed training: probabilities, index sets, sampler.

Class-aware sampling (Zhang et al., 2021, §"Re-sampling methods", after Kang
et al., 2020, §3, Eq. 1) draws a class ``j`` with probability

  ``p_j = n_j^q / Σ_i n_i^q``

(q = 1 instance-balanced, q = 0 class-balanced, q = 1/2 square-root), then an
example of that class uniformly. Progressively-balanced sampling moves from
the first to the second over ``T`` epochs:
``p_j(t) = (1 - t/T) p_j^{IB} + (t/T) p_j^{CB}``. Random over-sampling and
random under-sampling instead fix one balanced multiset of indices.

Everything here runs on the host in numpy (the input pipeline is host-side);
nothing is traced.

Plugging `EpochSampler` into the trainer
---------------------------------------
`gblend_jax.data.pipeline.train_iterator` builds
``MapDataset.range(n).shuffle(seed).repeat()[p::P].batch(G // P)`` and maps
`pipeline.gather` over the batches of positions. A sampler replaces the
shuffle-and-repeat stage, everything after it is unchanged::

  sampler = EpochSampler(labels, class_probs, seed=seed)
  dataset = sampler.to_map_dataset(num_epochs)   # a grain.MapDataset of ints
  dataset = dataset[p::P].batch(G // P, drop_remainder=True)
  dataset = dataset.map(functools.partial(pipeline.gather, source))
  iterator = iter(dataset.to_iter_dataset())

Position ``i`` of that dataset is ``epoch_indices(i // L)[i % L]`` with
``L = len(sampler)``, so the dataset is a pure function of (seed, epoch,
probabilities): grain's own ``iterator.get_state()`` / ``set_state()`` (a
position) checkpoints and resumes it exactly, mid-epoch included (the
sampler's own iterator position is not used on this path). Schedules
(deferred re-sampling, progressively-balanced) are a callable
``epoch -> probabilities`` given as ``class_probabilities``; see
`deferred_schedule` and `progressive_schedule`.
``labels`` must be those of the training source in its own order (e.g.
``splits.train.arrays['label']``). Used directly, the sampler is also an
iterator of indices with ``get_state()`` / ``set_state()`` of its own.

Random over- or under-sampling are fixed index sets: wrap them as
``pipeline.IndexSubset(source, indices)`` and pass that to ``train_iterator``.

References:
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
  Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling
  Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
  https://arxiv.org/abs/1910.09217.
"""

import functools
import math
import operator
import typing
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

if typing.TYPE_CHECKING:
  import grain

__all__ = (
    'EpochSampler',
    'SampledIndices',
    'class_probabilities',
    'deferred_schedule',
    'example_probabilities',
    'progressive_schedule',
    'progressively_balanced_probabilities',
    'random_over_sampling',
    'random_under_sampling',
)

ArrayLike = Sequence[int] | Sequence[float] | np.ndarray
# epoch -> [C] class probabilities, or None for a plain permutation.
Schedule = Callable[[int], np.ndarray | None]


def class_probabilities(counts: ArrayLike, q: float) -> np.ndarray:
  """Class-aware sampling probabilities ``p_j = n_j^q / Σ_i n_i^q``.

  Zhang et al. (2021), Eq. of §"Re-sampling methods" (Kang et al., 2020,
  Eq. 1). A class with no example gets probability 0 for every q.

  Args:
    counts: ``[C]`` examples per class.
    q: 1 instance-balanced, 0 class-balanced, 1/2 square-root.

  Returns:
    float64 ``[C]`` probabilities summing to 1.

  Examples:
    >>> class_probabilities([9, 1], 0.5).tolist()
    [0.75, 0.25]
    >>> class_probabilities([9, 1, 0], 0.0).tolist()
    [0.5, 0.5, 0.0]
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or np.any(counts < 0) or not np.any(counts > 0):
    raise ValueError(
        f'counts must be [C], non-negative, not all 0; got {counts.tolist()}.'
    )
  weights = np.where(counts > 0, np.power(np.maximum(counts, 1.0), q), 0.0)
  return weights / weights.sum()


def progressively_balanced_probabilities(
    counts: ArrayLike, epoch: float, total_epochs: float
) -> np.ndarray:
  """``p(t) = (1 - t/T) p^{IB} + (t/T) p^{CB}`` (Zhang et al., 2021).

  Progressively-balanced sampling (Kang et al., 2020, §3): instance-balanced
  (q = 1) at ``t = 0``, class-balanced (q = 0) at ``t = T`` and after
  (``t/T`` is clipped to ``[0, 1]``).

  Args:
    counts: ``[C]`` examples per class.
    epoch: the current epoch ``t``.
    total_epochs: ``T`` > 0.

  Returns:
    float64 ``[C]`` probabilities.

  Examples:
    >>> progressively_balanced_probabilities([3, 1], 1, 2).tolist()
    [0.625, 0.375]
  """
  if not total_epochs > 0:
    raise ValueError(f'total_epochs={total_epochs} must be positive.')
  fraction = min(max(epoch / total_epochs, 0.0), 1.0)
  return ((1.0 - fraction) * class_probabilities(counts, 1.0)
          + fraction * class_probabilities(counts, 0.0))


def progressive_schedule(
    counts: ArrayLike, total_epochs: float
) -> Schedule:
  """``epoch -> progressively_balanced_probabilities(counts, epoch, T)``."""
  counts = np.asarray(counts)
  if not total_epochs > 0:
    raise ValueError(f'total_epochs={total_epochs} must be positive.')
  # A partial of a module-level function pickles (grain worker processes).
  return functools.partial(
      progressively_balanced_probabilities, counts, total_epochs=total_epochs
  )


def deferred_schedule(
    probabilities: ArrayLike, start_epoch: int
) -> Schedule:
  """Deferred re-sampling (DRS): plain epochs, then ``probabilities``.

  Cao et al. (2019, §3.3) and Zhang et al. (2021, §"Two-stage training"):
  instance-balanced epochs (a permutation of the data, `EpochSampler` with
  None) before ``start_epoch``, class-aware sampling with ``probabilities``
  from then on (160 of 200 epochs on CIFAR-LT).

  Args:
    probabilities: ``[C]`` class probabilities of the second stage.
    start_epoch: first epoch of the second stage.

  Returns:
    A schedule for `EpochSampler`.
  """
  probabilities = np.asarray(probabilities, np.float64)
  return functools.partial(_deferred, probabilities, start_epoch)


def _deferred(
    probabilities: np.ndarray, start_epoch: int, epoch: int
) -> np.ndarray | None:
  return None if epoch < start_epoch else probabilities


def _constant(
    probabilities: np.ndarray | None, epoch: int
) -> np.ndarray | None:
  del epoch  # The same every epoch.
  return probabilities


def example_probabilities(
    labels: ArrayLike, class_probs: ArrayLike
) -> np.ndarray:
  """Probability of each example under class-aware sampling.

  Example ``i`` of class ``y_i`` is drawn with ``p_{y_i} / n_{y_i}``: the
  class with ``p_j``, then one of its ``n_j`` examples uniformly.

  Args:
    labels: ``[n]`` integer classes in ``[0, C)``.
    class_probs: ``[C]`` class probabilities.

  Returns:
    float64 ``[n]`` probabilities summing to 1.

  Raises:
    ValueError: if a class with positive probability has no example.
  """
  labels = np.asarray(labels, np.int64)
  class_probs = np.asarray(class_probs, np.float64)
  counts = np.bincount(labels, minlength=len(class_probs))
  missing = np.flatnonzero((counts == 0) & (class_probs > 0))
  if missing.size:
    raise ValueError(
        f'Classes {missing.tolist()} have positive sampling probability but '
        'no example.'
    )
  return class_probs[labels] / counts[labels]


def _by_class(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
  return [(int(c), np.flatnonzero(labels == c)) for c in np.unique(labels)]


def random_over_sampling(labels: ArrayLike, seed: int) -> np.ndarray:
  """Indices that repeat every class's examples up to ``n_max``.

  Random over-sampling (Zhang et al., 2021): each class keeps all of its
  examples and adds ``n_max - n_c`` more drawn uniformly with replacement
  from them (from ``np.random.default_rng([seed, c])``).

  Args:
    labels: ``[n]`` integer classes.
    seed: seed of the draws.

  Returns:
    Sorted int64 indices, ``n_max`` of every class present (with repeats).

  Examples:
    >>> labels = np.array([0, 0, 0, 1])
    >>> labels[random_over_sampling(labels, seed=0)].tolist()
    [0, 0, 0, 1, 1, 1]
  """
  labels = np.asarray(labels)
  groups = _by_class(labels)
  most = max(len(members) for _, members in groups)
  chosen = []
  for c, members in groups:
    rng = np.random.default_rng([seed, c])
    extra = rng.choice(members, size=most - len(members), replace=True)
    chosen.extend([members, extra])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def random_under_sampling(labels: ArrayLike, seed: int) -> np.ndarray:
  """Indices of ``n_min`` examples of every class, drawn without replacement.

  Random under-sampling (Zhang et al., 2021), each class drawn from
  ``np.random.default_rng([seed, c])``.

  Args:
    labels: ``[n]`` integer classes.
    seed: seed of the draws.

  Returns:
    Sorted int64 indices, ``n_min`` of every class present.

  Examples:
    >>> labels = np.array([0, 0, 0, 1])
    >>> labels[random_under_sampling(labels, seed=0)].tolist()
    [0, 1]
  """
  labels = np.asarray(labels)
  groups = _by_class(labels)
  fewest = min(len(members) for _, members in groups)
  chosen = [
      np.random.default_rng([seed, c]).choice(members, fewest, replace=False)
      for c, members in groups
  ]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


class EpochSampler:
  """Seeded, resumable example indices, one deterministic order per epoch.

  Epoch ``e`` is a pure function of ``(seed, e, probabilities(e))``:

  * probabilities None: a permutation of all examples (instance-balanced
    sampling without replacement, the usual shuffled epoch), repeated
    if ``num_samples`` exceeds the number of examples;
  * ``[C]`` class probabilities ``p``: ``num_samples`` i.i.d. draws, each a
    class with ``p_j`` then one of its examples uniformly (class-aware
    sampling with replacement, `example_probabilities`).

  Both come from ``np.random.default_rng([seed, e])``. The sampler iterates
  over indices across epoch boundaries; its state is ``{'epoch', 'position'}``
  and resuming recomputes that epoch's order and skips the consumed
  positions. See the module docstring for the grain pipeline.

  Args:
    labels: ``[n]`` integer class of each example of the source.
    class_probabilities: None, ``[C]`` probabilities, or a schedule
      ``epoch -> [C] | None`` (`progressive_schedule`, `deferred_schedule`).
    seed: seed of every epoch.
    num_samples: indices per epoch ``L`` (default ``n``).

  Examples:
    >>> sampler = EpochSampler([0, 0, 0, 1], [0.5, 0.5], seed=0)
    >>> first = sampler.next_indices(6)
    >>> state = sampler.get_state()
    >>> state
    {'epoch': 1, 'position': 2}
    >>> rest = sampler.next_indices(2)
    >>> resumed = EpochSampler([0, 0, 0, 1], [0.5, 0.5], seed=0)
    >>> resumed.set_state(state)
    >>> bool(np.array_equal(resumed.next_indices(2), rest))
    True
  """

  def __init__(
      self,
      labels: ArrayLike,
      class_probabilities: ArrayLike | Schedule | None = None,
      *,
      seed: int,
      num_samples: int | None = None,
  ):
    self.labels = np.asarray(labels, np.int64)
    if self.labels.ndim != 1 or not len(self.labels):
      raise ValueError(
          f'labels must be a non-empty [n] array; got {self.labels.shape}.'
      )
    if np.any(self.labels < 0):
      raise ValueError('labels must be non-negative.')
    self.seed = operator.index(seed)  # An integer; rejects floats.
    self.num_samples = len(self.labels) if num_samples is None else num_samples
    if self.num_samples < 1:
      raise ValueError(f'num_samples={self.num_samples} must be positive.')
    if callable(class_probabilities):
      self._schedule = class_probabilities
    else:
      fixed = (None if class_probabilities is None
               else np.asarray(class_probabilities, np.float64))
      self._schedule = functools.partial(_constant, fixed)
    # Positions of each class's examples, grouped: class c is
    # _order[_offsets[c]:_offsets[c] + _counts[c]].
    self._order = np.argsort(self.labels, kind='stable')
    self._counts = np.bincount(self.labels)
    self._offsets = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
    self._cache: dict[int, np.ndarray] = {}
    self._epoch = 0
    self._position = 0

  def __len__(self) -> int:
    return self.num_samples

  def probabilities(self, epoch: int) -> np.ndarray | None:
    """The class probabilities of ``epoch`` (None: a permutation)."""
    return self._schedule(epoch)

  def epoch_indices(self, epoch: int) -> np.ndarray:
    """The ``num_samples`` example indices of ``epoch``, in order.

    Args:
      epoch: a non-negative epoch number.

    Returns:
      int64 ``[num_samples]`` indices into ``labels`` (read-only; cached for
      the last two epochs asked).
    """
    if epoch < 0:
      raise ValueError(f'epoch={epoch} must be non-negative.')
    indices = self._cache.get(epoch)
    if indices is None:
      indices = self._compute(epoch)
      indices.flags.writeable = False
      # Tolerates concurrent readers (grain threads): at worst an epoch is
      # computed twice, with the same result.
      cached = list(self._cache)
      if len(cached) >= 2:
        self._cache.pop(min(cached), None)
      self._cache[epoch] = indices
    return indices

  def _compute(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, epoch])
    probs = self.probabilities(epoch)
    n = len(self.labels)
    if probs is None:
      rounds = math.ceil(self.num_samples / n)
      return np.concatenate(
          [rng.permutation(n) for _ in range(rounds)]
      )[:self.num_samples].astype(np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 1 or np.any(probs < 0) or not probs.sum() > 0:
      raise ValueError(
          f'Epoch {epoch}: class probabilities must be [C], non-negative '
          f'and not all 0; got {probs.tolist()}.'
      )
    counts = np.zeros(len(probs), np.int64)
    known = min(len(probs), len(self._counts))
    counts[:known] = self._counts[:known]
    if len(self._counts) > len(probs) and np.any(self._counts[known:]):
      raise ValueError(
          f'Epoch {epoch}: {len(probs)} class probabilities but labels up to '
          f'{len(self._counts) - 1}.'
      )
    missing = np.flatnonzero((counts == 0) & (probs > 0))
    if missing.size:
      raise ValueError(
          f'Epoch {epoch}: classes {missing.tolist()} have positive sampling '
          'probability but no example.'
      )
    classes = rng.choice(len(probs), size=self.num_samples,
                         p=probs / probs.sum())
    within = np.floor(
        rng.random(self.num_samples) * counts[classes]
    ).astype(np.int64)
    offsets = np.zeros(len(probs), np.int64)
    offsets[:known] = self._offsets[:known]
    return self._order[offsets[classes] + within].astype(np.int64)

  # Iteration with an explicit, checkpointable position.

  def __iter__(self) -> 'EpochSampler':
    return self

  def __next__(self) -> int:
    return int(self.next_indices(1)[0])

  def next_indices(self, count: int) -> np.ndarray:
    """The next ``count`` indices, crossing epoch boundaries as needed."""
    chunks = []
    while count > 0:
      indices = self.epoch_indices(self._epoch)
      take = min(count, self.num_samples - self._position)
      chunks.append(indices[self._position:self._position + take])
      self._position += take
      count -= take
      if self._position == self.num_samples:
        self._epoch, self._position = self._epoch + 1, 0
    if not chunks:
      return np.zeros((0,), np.int64)
    return np.concatenate(chunks)

  def get_state(self) -> dict[str, int]:
    """``{'epoch': e, 'position': k}``: the next index is epoch e's k-th."""
    return {'epoch': self._epoch, 'position': self._position}

  def set_state(self, state: Mapping[str, int]) -> None:
    """Resumes at ``state`` from `get_state` (same labels, seed, schedule)."""
    epoch, position = int(state['epoch']), int(state['position'])
    if epoch < 0 or not 0 <= position < self.num_samples:
      raise ValueError(
          f'State {dict(state)} is outside epochs >= 0 and positions in '
          f'[0, {self.num_samples}).'
      )
    self._epoch, self._position = epoch, position

  # Random access, for grain.

  def index_source(self, num_epochs: int = 1_000_000) -> 'SampledIndices':
    """The first ``num_epochs`` epochs as a random-access source of indices."""
    return SampledIndices(self, num_epochs)

  def to_map_dataset(
      self, num_epochs: int = 1_000_000
  ) -> 'grain.MapDataset':
    """``grain.MapDataset.source(self.index_source(num_epochs))``.

    Args:
      num_epochs: epochs covered; the default is effectively endless (grain
        datasets are lazy, nothing is computed up front).

    Returns:
      A MapDataset whose element ``i`` is epoch ``i // L``'s ``(i % L)``-th
      index.
    """
    # grain (and the orbax it imports) only here: the samplers themselves are
    # NumPy, and `gblend_jax.longtail` imports without the training extra.
    import grain  # pylint: disable=g-import-not-at-top

    return grain.MapDataset.source(self.index_source(num_epochs))


class SampledIndices:
  """Epochs ``0 .. num_epochs - 1`` of an `EpochSampler`, concatenated.

  A grain ``RandomAccessDataSource``: ``len`` and ``[i]`` only. Element ``i``
  is ``sampler.epoch_indices(i // L)[i % L]``.

  Args:
    sampler: the sampler.
    num_epochs: epochs covered.
  """

  def __init__(self, sampler: EpochSampler, num_epochs: int):
    if num_epochs < 1:
      raise ValueError(f'num_epochs={num_epochs} must be positive.')
    self.sampler = sampler
    self.num_epochs = num_epochs

  def __len__(self) -> int:
    return self.num_epochs * len(self.sampler)

  def __getitem__(self, index: int) -> int:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} is not in [0, {len(self)}).')
    epoch, position = divmod(index, len(self.sampler))
    return int(self.sampler.epoch_indices(epoch)[position])

  def __repr__(self) -> str:
    return (f'SampledIndices(num_epochs={self.num_epochs}, '
            f'epoch_length={len(self.sampler)}, seed={self.sampler.seed})')
