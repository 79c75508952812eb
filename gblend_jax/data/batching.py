"""Positions of training batches, computed a whole batch at a time.

A training stream is a sequence of epochs, each a fixed-length array of
positions into a source: a permutation of the source (``ShuffledEpochs``) or
the draws of a long-tail sampler (`gblend_jax.longtail.sampling
.EpochSampler`). ``BatchPositions`` cuts that endless stream into global
batches of ``G`` positions, across epoch boundaries, and gives process ``p``
of ``P`` the positions ``p, p + P, ...`` of each.

This is the order of grain's per-element composition

  grain.MapDataset.range(n).shuffle(seed=seed).repeat()[p::P]
      .batch(G // P, drop_remainder=True)

(element for element, checked in ``tests/datasets/test_batching.py``) but one
grain element per batch instead of one per example, and each epoch's
permutation computed at once with numpy (``index_shuffle``): grain computes
it one index at a time (about 20 µs each, plus its per-element bookkeeping),
which made the pipeline slower than training on small models.
"""

import math
import threading
from typing import Protocol

import numpy as np

_MASK32 = 0xFFFFFFFF


class EpochStream(Protocol):
  """Epochs of positions: ``len`` positions each, by epoch number."""

  def __len__(self) -> int: ...

  def epoch_indices(self, epoch: int) -> np.ndarray: ...


def seed_seq_generate(seed: int, count: int) -> list[int]:
  """``std::seed_seq{seed}.generate`` of ``count`` 32-bit words.

  The C++ standard's seed sequence ([rand.util.seedseq]) with one seed
  word, which grain uses for the round keys of its index shuffle.

  Args:
    seed: the seed word, in ``[0, 2^32)``.
    count: ``n``, the number of words to generate.

  Returns:
    ``n`` integers in ``[0, 2^32)``.
  """
  n, s = count, 1
  words = [0x8B8B8B8B] * n
  if n == 0:
    return words
  t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else (
      3 if n >= 7 else (n - 1) // 2)
  p = (n - t) // 2
  q = p + t
  m = max(s + 1, n)

  def mix(x: int) -> int:
    return x ^ (x >> 27)

  for k in range(m):
    r1 = 1664525 * mix(words[k % n] ^ words[(k + p) % n]
                       ^ words[(k - 1) % n]) & _MASK32
    r2 = (r1 + (s if k == 0 else k % n + seed if k <= s else k % n)) & _MASK32
    words[(k + p) % n] = (words[(k + p) % n] + r1) & _MASK32
    words[(k + q) % n] = (words[(k + q) % n] + r2) & _MASK32
    words[k % n] = r2
  for k in range(m, m + n):
    r3 = 1566083941 * mix((words[k % n] + words[(k + p) % n]
                           + words[(k - 1) % n]) & _MASK32) & _MASK32
    r4 = (r3 - k % n) & _MASK32
    words[(k + p) % n] ^= r3
    words[(k + q) % n] ^= r4
    words[k % n] = r4
  return words


def index_shuffle(indices: np.ndarray, max_index: int, seed: int,
                  rounds: int = 4) -> np.ndarray:
  """Grain's ``index_shuffle``, vectorised over ``indices``.

  The position of each index in a pseudo-random permutation of
  ``[0, max_index]``: a Simon-style Feistel cipher on blocks of ``B`` bits
  (``B`` = ``ceil(log2(max_index))`` rounded up to even, at least 16), round
  keys from ``std::seed_seq{seed}``, cycle-walking until the value is at
  most ``max_index`` (Black and Rogaway, "Ciphers with arbitrary finite
  domains", 2002). Equal, index for index, to grain's C++ function
  (checked in ``tests/datasets/test_batching.py``).

  Args:
    indices: integers in ``[0, max_index]``.
    max_index: the largest position, ``n - 1``.
    seed: in ``[0, 2^32)``.
    rounds: even, at least 4.

  Returns:
    uint64 positions, the shape of ``indices``.
  """
  indices = np.asarray(indices, np.int64)
  if max_index == 0:
    return np.zeros(indices.shape, np.uint64)
  bits = math.ceil(math.log2(max_index))
  word = max(bits + bits % 2, 16) // 2
  # Blocks of up to 32 bits fit uint32, which halves the memory traffic.
  dtype = np.uint32 if word <= 16 else np.uint64
  mask = dtype((1 << word) - 1)
  keys = [dtype(k) & mask for k in seed_seq_generate(seed, rounds)]
  shift = {r: dtype(r) for r in (1, 2, 8, word - 1, word - 2, word - 8, word)}

  def rotl(x, r):
    return ((x << shift[r]) | (x >> shift[word - r])) & mask

  def simon(x):
    return (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2)

  def encrypt(value):
    left, right = (value >> shift[word]) & mask, value & mask
    for k1, k2 in zip(keys[::2], keys[1::2], strict=True):
      left ^= simon(right) ^ k1
      right ^= simon(left) ^ k2
    return (left << shift[word]) | right

  if word <= 12:
    # Small blocks (n <= 2^24): encrypt the whole block once and resolve
    # the walks by pointer jumping. A walk takes about 2^B / n steps
    # (hundreds for a small n, since B >= 16); each round doubles the steps
    # a pointer covers, until every walk from ``indices`` has ended (at
    # most 2B rounds). Invariant: table[x] is on the walk from x, at or
    # before its first value <= max_index. (A cycle of the cipher with no
    # value <= max_index never ends, but no index in range is on one.)
    table = encrypt(np.arange(1 << (2 * word), dtype=dtype)).astype(np.int32)
    for _ in range(2 * word):
      if not (table[indices] > max_index).any():
        break
      table = np.where(table > max_index, table[table], table)
    return table[indices].astype(np.uint64)
  result = encrypt(indices.ravel().astype(dtype))
  walking = np.flatnonzero(result > max_index)
  while walking.size:
    result[walking] = encrypt(result[walking])
    walking = walking[result[walking] > max_index]
  return result.reshape(indices.shape).astype(np.uint64)


class ShuffledEpochs:
  """A new permutation of ``range(n)`` each epoch, grain's own.

  Epoch ``e`` is the permutation that ``grain.MapDataset.range(n)
  .shuffle(seed=seed)`` gives its ``e``-th pass after ``.repeat()``: grain's
  4-round index shuffle with seed ``(seed + e) mod 2^32``.

  Args:
    num_examples: ``n``, at least 1.
    seed: the shuffle seed, in ``[0, 2^32)``.
  """

  def __init__(self, num_examples: int, seed: int):
    if num_examples < 1:
      raise ValueError(f'num_examples={num_examples} must be positive.')
    if not 0 <= seed < 2**32:
      raise ValueError(f'seed={seed} is not in [0, 2**32).')
    self.num_examples = int(num_examples)
    self.seed = int(seed)
    self._cache: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()  # Grain may read from several threads.

  def __len__(self) -> int:
    return self.num_examples

  def __getstate__(self) -> dict[str, int]:
    # Pickled into grain's worker processes: no lock, no cache.
    return {'num_examples': self.num_examples, 'seed': self.seed}

  def __setstate__(self, state: dict[str, int]) -> None:
    self.__init__(state['num_examples'], state['seed'])

  def epoch_indices(self, epoch: int) -> np.ndarray:
    """Epoch ``epoch``'s permutation (int64 ``[n]``; read-only, cached).

    Args:
      epoch: a non-negative epoch number.

    Returns:
      The positions of the epoch, in order.
    """
    if epoch < 0:
      raise ValueError(f'epoch={epoch} must be non-negative.')
    with self._lock:
      indices = self._cache.get(epoch)
      if indices is None:
        indices = index_shuffle(
            np.arange(self.num_examples), self.num_examples - 1,
            (self.seed + epoch) % 2**32).astype(np.int64)
        indices.flags.writeable = False
        if len(self._cache) >= 2:
          self._cache.pop(min(self._cache))
        self._cache[epoch] = indices
    return indices


class BatchPositions:
  """Global batch ``k``'s positions for process ``p``: a grain data source.

  Element ``k`` holds stream positions ``k·G + p + t·P`` for
  ``t = 0 .. G/P - 1``, where stream position ``j`` is
  ``epochs.epoch_indices(j // L)[j % L]`` with ``L = len(epochs)``.

  Args:
    epochs: the stream's epochs.
    global_batch_size: ``G``.
    process_index: ``p``.
    process_count: ``P``; must divide ``G``.
    num_epochs: epochs covered (the default is effectively endless; nothing
      is computed up front).
  """

  def __init__(self, epochs: EpochStream, *, global_batch_size: int,
               process_index: int = 0, process_count: int = 1,
               num_epochs: int = 1_000_000):
    if global_batch_size < 1:
      raise ValueError(
          f'global_batch_size={global_batch_size} must be positive.')
    if global_batch_size % process_count:
      raise ValueError(
          f'global_batch_size={global_batch_size} is not divisible by '
          f'process_count={process_count}.')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index={process_index} is not in '
                       f'[0, {process_count}).')
    self.epochs = epochs
    self.global_batch_size = global_batch_size
    self.process_index = process_index
    self.process_count = process_count
    self.num_epochs = num_epochs

  def __len__(self) -> int:
    return self.num_epochs * len(self.epochs) // self.global_batch_size

  def __getitem__(self, index: int) -> np.ndarray:
    """The int64 ``[G // P]`` positions of global batch ``index``."""
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'batch {index} is not in [0, {len(self)}).')
    length = len(self.epochs)
    start = index * self.global_batch_size + self.process_index
    stream = np.arange(start, (index + 1) * self.global_batch_size,
                       self.process_count)
    epochs, offsets = np.divmod(stream, length)
    first, last = int(epochs[0]), int(epochs[-1])
    if first == last:
      return self.epochs.epoch_indices(first)[offsets]
    positions = np.empty(len(stream), np.int64)
    for epoch in range(first, last + 1):
      here = epochs == epoch
      positions[here] = self.epochs.epoch_indices(epoch)[offsets[here]]
    return positions

  def __repr__(self) -> str:
    return (f'BatchPositions(epochs={self.epochs!r}, global_batch_size='
            f'{self.global_batch_size}, process={self.process_index}/'
            f'{self.process_count})')
