"""Loading a data set's splits, checking them, and batching them.

``load_dataset`` prepares a TFDS builder from ``data/``, carves a stratified
held-out split out of ``train``, checks every example once, and returns
random-access sources. ``train_iterator`` shuffles and batches a source for
ever (a new permutation each epoch) with a checkpointable position;
``eval_batches`` covers a source once in padded, masked batches.
"""

import dataclasses
import functools
import glob
import os
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Protocol

import grain
import ml_collections
import numpy as np

from gblend_jax.data import augment
from gblend_jax.data import batching
from gblend_jax.data import registry
from gblend_jax.data import splits
from gblend_jax.longtail import profiles

Example = dict[str, np.ndarray]
# Features that are not modalities.
RESERVED_KEYS = ('id', 'label')


class Source(Protocol):
  """A random-access data source: a length and examples by index."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Any: ...


def gather(source: Source, indices: np.ndarray) -> Example:
  """The examples at ``indices`` stacked into one batch.

  Sources with a ``take(indices)`` method (``ArraySource``, ``IndexSubset``)
  gather the whole batch with one fancy index; others are read one example
  at a time.

  Args:
    source: Examples (dicts of numpy arrays).
    indices: ``[n]`` integer positions.

  Returns:
    A dict of ``[n, ...]`` arrays.
  """
  indices = np.asarray(indices, np.int64)
  if hasattr(source, 'take'):
    return source.take(indices)
  examples = [source[int(i)] for i in indices]
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


class ArraySource:
  """A split held in memory as one stacked array per feature.

  Args:
    arrays: feature name to ``[n, ...]`` array; every array has length n.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
      raise ValueError(f'Features of different lengths: {lengths}.')
    self.arrays = dict(arrays)

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, index: int) -> Example:
    return {key: value[index] for key, value in self.arrays.items()}

  def take(self, indices: np.ndarray) -> Example:
    return {key: value[indices] for key, value in self.arrays.items()}


class IndexSubset:
  """The examples of ``source`` at ``indices``, in that order."""

  def __init__(self, source: Source, indices: Sequence[int] | np.ndarray):
    self.source = source
    self.indices = np.asarray(indices, dtype=np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Any:
    return self.source[int(self.indices[index])]

  def take(self, indices: np.ndarray) -> Example:
    return gather(self.source, self.indices[indices])


class SelectedFeatures:
  """Each example of ``source`` with only ``id``, ``label`` and ``modalities``.

  ``label`` becomes an int32 scalar, ``id`` an int32 scalar when it is an
  integer (else it stays a string: clip names of audio-visual data sets)
  and the modalities float32.
  """

  def __init__(self, source: Source, modalities: Sequence[str]):
    self.source = source
    self.modalities = tuple(modalities)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Example:
    example = self.source[index]
    selected = {
        'id': _as_id(example['id']),
        'label': np.asarray(example['label'], np.int32),
    }
    for name in self.modalities:
      selected[name] = np.asarray(example[name], np.float32)
    return selected


def _as_id(value: Any) -> np.ndarray:
  """An example id: int32 if it is an integer, else its bytes or string."""
  value = np.asarray(value)
  if np.issubdtype(value.dtype, np.integer):
    return value.astype(np.int32)
  return value


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
  """The three splits of a data set and what a model needs to know of it.

  Attributes:
    train: Training examples (``train`` less the held-out ones).
    holdout: Held-out examples, drawn stratified from the builder's ``train``.
    test: The builder's ``test`` split.
    num_classes: Number of classes; labels are in ``[0, num_classes)``.
    modalities: Per-example shape of each modality, in the requested order.
    train_class_counts: Examples of each class in ``train``, int64
      ``[num_classes]``.
    name: The data set's name (with its builder config, if any).
  """

  train: Source
  holdout: Source
  test: Source
  num_classes: int
  modalities: dict[str, tuple[int, ...]]
  train_class_counts: np.ndarray
  name: str


def default_data_config() -> ml_collections.ConfigDict:
  """Every data key of a run, with defaults."""
  placeholder = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict({
      'name': 'synthetic_multimodal',  # A key of registry.DATASETS.
      'builder_config': placeholder(str),  # None: the builder's first.
      'data_dir': placeholder(str),  # None: $GBLEND_DATA_DIR or ~/t..._d...
      'manual_dir': placeholder(str),  # None: <data_dir>/downloads/manual.
      'modalities': (),  # Names to use, in this order; (): all.
      'holdout_fraction': 0.1,  # Of each class of `train`, in (0, 1).
      'holdout_seed': 0,
      # Keep only this many training examples per class (seeded; 0: all).
      'train_examples_per_class': 0,
      # Long-tailed training split (Zhang et al., AAAI 2021): after the
      # held-out split is carved out, class c keeps n_c examples of the
      # profile (see `longtail_subset`); held-out and test stay balanced.
      'longtail': ml_collections.ConfigDict({
          'profile': 'none',  # 'none', 'exponential' or 'step'.
          'imbalance_factor': 100.0,  # IF = n_max / n_min, >= 1.
          # n_max, the count of class 0; 0: the smallest class's count.
          'max_count': 0,
          'seed': 0,  # Seed of the per-class draws.
      }),
      # Modality -> probability that an example's features come from a
      # random example of the split (see mismatch_modalities); {}: none.
      'mismatched_modalities': ml_collections.ConfigDict(),
      # Standardise every feature with the mean and std of the train split.
      'standardize': False,
      # Random augmentation of training batches (never held-out or test):
      # 'none', 'pad_crop_flip' or 'random_resized_crop_flip' (see
      # gblend_jax.data.augment).
      'augmentation': 'none',
      'augment_pad': 4,  # P of pad_crop_flip: zeros on each side.
      # Modalities to augment; (): every [H, W] or [H, W, C] modality.
      'augment_modalities': (),
      # Grain threads that gather (and augment) training batches ahead of
      # the step, and how many batches they may hold. Grain's own default
      # (16 threads, 500 batches) thrashes a small host and can hold
      # gigabytes of images; raise the threads on a large host with heavy
      # augmentation. 0 threads: read in the training thread.
      'read_threads': 1,
      'prefetch_batches': 4,
      'batch_size': 128,  # Global, over all processes.
      'eval_batch_size': 512,
      'shuffle_seed': 0,
  })


# (data dir, data set, modalities) -> {split: its checked examples}: the
# runs of a grid in one process read a data set once. Read-only: every later
# stage (held-out split, long-tail subset, standardisation) makes copies.
_READ_CACHE: dict[tuple[Any, ...], dict[str, ArraySource]] = {}


def load_dataset(data_config: ml_collections.ConfigDict) -> DatasetSplits:
  """Prepares a data set if needed, splits it and checks every example.

  The checked examples of the last data set read stay cached in memory, so
  that runs of a grid in one process read it once.

  Args:
    data_config: See ``default_data_config``.

  Returns:
    The train, held-out and test sources and the data set's description.
  """
  fraction = data_config.holdout_fraction
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'data.holdout_fraction={fraction} must be in (0, 1).')
  builder = registry.get_builder(
      data_config.name,
      data_dir=data_config.data_dir,
      builder_config=data_config.builder_config,
  )
  registry.prepare(builder, manual_dir=data_config.manual_dir)
  name = builder.name
  if builder.builder_config is not None:
    name = f'{name}/{builder.builder_config.name}'

  features = builder.info.features
  available = tuple(k for k in features.keys() if k not in RESERVED_KEYS)
  requested = tuple(data_config.modalities or ()) or available
  unknown = [m for m in requested if m not in available]
  if unknown:
    raise ValueError(
        f'Unknown modalities {unknown} for data set {name}; available: '
        f'{list(available)}.'
    )
  modalities = {m: tuple(features[m].shape) for m in requested}
  num_classes = features['label'].num_classes

  key = (builder.data_dir, name, requested)
  if key not in _READ_CACHE:
    _READ_CACHE.clear()  # Keep one data set's splits at most.
    _READ_CACHE[key] = {}
  read = _READ_CACHE[key]
  for split in ('train', 'test'):
    if split not in read:
      read[split] = _read_prepared_split(
          builder, split, name=name, num_classes=num_classes,
          modalities=modalities, requested=requested)
  train_labels = read['train'].arrays['label']
  kept, held_out = splits.stratified_holdout(
      train_labels, fraction, data_config.holdout_seed
  )
  train_ids, test_ids = read['train'].arrays['id'], read['test'].arrays['id']
  splits.check_disjoint(train_ids, test_ids, f'{name} train', 'test')
  splits.check_disjoint(
      train_ids[held_out], test_ids, f'{name} holdout', 'test'
  )
  if data_config.train_examples_per_class > 0:
    # A smaller training set, drawn after the held-out split so that the
    # held-out split is the same for every training-set size.
    kept = kept[splits.per_class_subset(
        train_labels[kept], data_config.train_examples_per_class,
        data_config.holdout_seed + 1,
    )]
  if data_config.longtail.profile != 'none':
    # After the held-out split, so that held-out and test stay balanced (as
    # the balanced test sets of CIFAR-LT and ImageNet-LT).
    kept = kept[longtail_subset(
        train_labels[kept], data_config.longtail, num_classes
    )]
  train = ArraySource(read['train'].take(kept))
  holdout = ArraySource(read['train'].take(held_out))
  test = read['test']
  if data_config.mismatched_modalities:
    train, holdout, test = (
        mismatch_modalities(source, data_config.mismatched_modalities,
                            seed=data_config.holdout_seed + index)
        for index, source in enumerate((train, holdout, test))
    )
  if data_config.standardize:
    train, holdout, test = standardize(train, (train, holdout, test),
                                       tuple(modalities))
  return DatasetSplits(
      train=train,
      holdout=holdout,
      test=test,
      num_classes=num_classes,
      modalities=modalities,
      train_class_counts=np.bincount(
          train_labels[kept], minlength=num_classes
      ),
      name=name,
  )


def longtail_subset(
    labels: np.ndarray, longtail: ml_collections.ConfigDict, num_classes: int
) -> np.ndarray:
  """Positions of a long-tailed subset of a labelled split.

  Class ``c`` keeps ``n_c`` of its examples, ``n_c`` from
  `gblend_jax.longtail.profiles.longtail_counts` (exponential:
  ``n_c = int(n_max · IF^{-c/(C-1)})``, Cui et al., CVPR 2019; step: Cao et
  al., NeurIPS 2019), drawn by `gblend_jax.longtail.profiles
  .longtail_indices`: long-tailed CIFAR as Zhang et al. (AAAI 2021) use it.

  Args:
    labels: ``[n]`` labels of the split.
    longtail: the ``data.longtail`` block (profile, imbalance_factor,
      max_count, seed).
    num_classes: ``C``.

  Returns:
    Sorted int64 positions into ``labels``.

  Raises:
    ValueError: naming the ``data.longtail`` key for an unknown profile, an
      imbalance factor below 1, a class left empty or short of examples.
  """
  check_longtail_config(longtail)
  available = np.bincount(labels, minlength=num_classes)
  max_count = int(longtail.max_count) or int(available.min())
  try:
    counts = profiles.longtail_counts(
        longtail.profile, num_classes, max_count, longtail.imbalance_factor
    )
    return profiles.longtail_indices(labels, counts, longtail.seed)
  except ValueError as error:
    raise ValueError(
        f'data.longtail (profile={longtail.profile!r}, imbalance_factor='
        f'{longtail.imbalance_factor}, max_count={max_count}): {error} '
        f'Training examples per class: {available.tolist()}.'
    ) from error


def check_longtail_config(longtail: ml_collections.ConfigDict) -> None:
  """Rejects a bad ``data.longtail`` block before any work.

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  valid = ('none', 'exponential', 'step')
  if longtail.profile not in valid:
    raise ValueError(
        f'Unknown data.longtail.profile={longtail.profile!r}; valid: '
        f'{list(valid)}.'
    )
  if longtail.profile == 'none':
    return
  if not longtail.imbalance_factor >= 1.0:  # Also rejects NaN.
    raise ValueError(
        f'data.longtail.imbalance_factor={longtail.imbalance_factor} must '
        'be >= 1 (n_max / n_min).'
    )
  if longtail.max_count < 0:
    raise ValueError(
        f'data.longtail.max_count={longtail.max_count} must be >= 0 (0: the '
        'smallest class of the training split).'
    )


def mismatch_modalities(
    source: ArraySource, probabilities: Mapping[str, float], *, seed: int
) -> ArraySource:
  """Makes modalities less reliable by pairing examples at random.

  For modality m with probability p_m, each example's m features are, with
  probability p_m, replaced by those of an example drawn uniformly from the
  same split (of any class), so m carries the label only for the other
  examples. This builds, from real data, a modality that is weakly
  informative and easy to memorise: the setting in which a late-fusion model
  overfits through one modality (Wang et al., CVPR 2020, §3).

  Args:
    source: a split in memory.
    probabilities: modality name to the probability of a random pairing.
    seed: seed of the draws.

  Returns:
    The split with those modalities re-paired.

  Raises:
    ValueError: for an unknown modality or a probability outside [0, 1].
  """
  rng = np.random.default_rng(seed)
  arrays = dict(source.arrays)
  for name, probability in sorted(probabilities.items()):
    if name not in arrays or name in RESERVED_KEYS:
      raise ValueError(
          f'data.mismatched_modalities names {name!r}; modalities: '
          f'{sorted(k for k in arrays if k not in RESERVED_KEYS)}.'
      )
    if not 0.0 <= probability <= 1.0:
      raise ValueError(
          f'data.mismatched_modalities.{name}={probability} is not in [0, 1].'
      )
    count = len(source)
    replaced = rng.random(count) < probability
    partners = rng.integers(0, count, size=count)
    arrays[name] = np.where(
        replaced.reshape((-1,) + (1,) * (arrays[name].ndim - 1)),
        arrays[name][partners], arrays[name],
    )
  return ArraySource(arrays)


def standardize(
    reference: ArraySource,
    sources: Sequence[ArraySource],
    modalities: Sequence[str],
) -> tuple[ArraySource, ...]:
  """Scales each feature to zero mean and unit variance on `reference`.

  The statistics come from the training split only (never the held-out or
  test split); a constant feature keeps scale 1.

  Args:
    reference: the split whose per-feature mean and std are used.
    sources: the splits to transform.
    modalities: which features to standardise.

  Returns:
    The transformed splits, in the order given.
  """
  stats = {}
  for name in modalities:
    values = reference.arrays[name]
    std = values.std(axis=0)
    stats[name] = values.mean(axis=0), np.where(std > 0, std, 1.0)
  return tuple(
      ArraySource({
          key: ((value - stats[key][0]) / stats[key][1]).astype(np.float32)
          if key in stats else value
          for key, value in source.arrays.items()
      })
      for source in sources
  )


def _read_prepared_split(
    builder: Any,
    split: str,
    *,
    name: str,
    num_classes: int,
    modalities: Mapping[str, tuple[int, ...]],
    requested: Sequence[str],
) -> ArraySource:
  """``check_examples`` of a prepared split; errors say what to delete.

  A prepared data set is reused as it is, so an error in it returns on every
  run until its folder is deleted: each error names the folder (and, for a
  damaged file, the split's files).
  """
  folder = os.fspath(builder.data_dir)
  try:
    return check_examples(
        SelectedFeatures(builder.as_data_source(split=split), requested),
        dataset=name, split=split, num_classes=num_classes,
        modalities=modalities,
    )
  except ValueError as error:
    raise ValueError(
        f'{error}\nThe prepared data set in {folder} holds these values: '
        'fix the source files, then delete that folder to rebuild it.'
    ) from error
  except RuntimeError as error:  # array_record / Riegeli read errors.
    files = sorted(glob.glob(os.path.join(folder, f'*-{split}.*')))
    raise OSError(
        f'Data set {name}, split {split}: a prepared file is damaged '
        f'({error}). Files of the split: {files}. Delete the folder '
        f'{folder} and rerun to rebuild it from the source files.'
    ) from error


def check_examples(
    source: Source,
    *,
    dataset: str,
    split: str,
    num_classes: int,
    modalities: Mapping[str, tuple[int, ...]],
) -> ArraySource:
  """Reads every example once, checks it, and returns the split in memory.

  Args:
    source: The split's examples.
    dataset: Data set name, for error messages.
    split: Split name, for error messages.
    num_classes: Labels must be in ``[0, num_classes)``.
    modalities: Shape that each modality must have.

  Returns:
    The split as an ``ArraySource`` of ``id``, ``label`` and the modalities.

  Raises:
    ValueError: naming the data set, split and example index of a missing
      modality, a wrong shape, a non-finite value, a label out of range or a
      repeated id.
  """
  where = f'Data set {dataset}, split {split}'
  keys = (*RESERVED_KEYS, *modalities)
  columns = {key: [] for key in keys}
  for index in range(len(source)):
    example = source[index]
    for name, shape in modalities.items():
      if name not in example:
        raise ValueError(f'{where}, example {index}: no modality {name!r}.')
      if np.shape(example[name]) != shape:
        raise ValueError(
            f'{where}, example {index}: modality {name!r} has shape '
            f'{np.shape(example[name])}, expected {shape}.'
        )
      dtype = np.asarray(example[name]).dtype
      if dtype.kind not in 'biuf':
        raise ValueError(
            f'{where}, example {index}: modality {name!r} has dtype {dtype}, '
            'expected numbers (bool, integer or float).'
        )
    for key in keys:
      columns[key].append(example[key])
  arrays = {'id': _as_id(columns['id']),
            'label': np.asarray(columns['label'], np.int32)}
  for name in modalities:
    arrays[name] = np.asarray(columns[name], np.float32).reshape(
        (len(source), *modalities[name])
    )
    finite = np.isfinite(arrays[name]).reshape(len(source), -1).all(axis=1)
    if not finite.all():
      index = int(np.flatnonzero(~finite)[0])
      raise ValueError(
          f'{where}, example {index}: modality {name!r} is not finite.'
      )
  labels = arrays['label']
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise ValueError(
        f'{where}, example {bad[0]}: label {labels[bad[0]]} is not in '
        f'[0, {num_classes}) ({bad.size} bad labels).'
    )
  unique_ids, counts = np.unique(arrays['id'], return_counts=True)
  if np.any(counts > 1):
    raise ValueError(
        f'{where}: repeated ids {unique_ids[counts > 1][:20].tolist()}.'
    )
  return ArraySource(arrays)


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full global batches in one pass over ``num_examples`` (at least 1)."""
  return max(num_examples // global_batch_size, 1)


def train_iterator(
    source: Source,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    sampler: Any = None,
    augmentation: str = 'none',
    augment_modalities: Sequence[str] = (),
    augment_pad: int = 4,
    read_threads: int = 1,
    prefetch_batches: int = 4,
) -> grain.DatasetIterator:
  """Batches of this process's share of an endlessly reshuffled source.

  The examples are shuffled, a new permutation each epoch, and repeated for
  ever; batches run across epoch boundaries. Global batch ``k`` holds
  positions ``[k * G, (k + 1) * G)`` of that stream, and process ``p`` takes
  the positions ``p, p + P, p + 2P, ...`` among them. The permutations are
  grain's (``MapDataset.range(n).shuffle(seed).repeat()``), computed a whole
  batch at a time by `gblend_jax.data.batching`.

  Args:
    source: Examples (dicts of numpy arrays).
    global_batch_size: Batch size ``G`` over all processes.
    seed: Seed of the shuffle.
    process_index: This process, ``p``.
    process_count: Number of processes ``P``; must divide ``G``.
    sampler: Optional `gblend_jax.longtail.sampling.EpochSampler` over
      ``source`` (re-sampling of long-tailed training): its stream of
      indices replaces the shuffle (``seed`` is then unused). Its position
      is part of the iterator's state.
    augmentation: A name of `gblend_jax.data.augment.AUGMENTATIONS`,
      applied to each batch after it is gathered; its draws come from
      ``np.random.default_rng((seed, k, p))`` for global batch ``k``, so a
      resumed iterator yields the same augmented batches as an
      uninterrupted one. With ``data.standardize`` the images are already
      standardised per pixel, so the zeros of ``pad_crop_flip`` pad with the
      training mean.
    augment_modalities: Modalities to augment; empty: every modality whose
      examples are ``[H, W]`` or ``[H, W, C]``.
    augment_pad: ``P`` of ``pad_crop_flip``.
    read_threads: grain threads that prepare batches ahead (0: none, read
      in the caller's thread). The batches and their order do not depend
      on it.
    prefetch_batches: batches prepared ahead, at least ``read_threads``.

  Returns:
    An iterator of dicts of stacked arrays ``[G // P, ...]``, with
    ``get_state()`` and ``set_state()``.
  """
  if read_threads < 0 or prefetch_batches < read_threads:
    raise ValueError(
        f'data.read_threads={read_threads} must be >= 0 and at most '
        f'data.prefetch_batches={prefetch_batches}.')
  # One grain element per global batch: its positions, then one gather.
  epochs = (batching.ShuffledEpochs(len(source), seed) if sampler is None
            else sampler)
  dataset = grain.MapDataset.source(batching.BatchPositions(
      epochs, global_batch_size=global_batch_size,
      process_index=process_index, process_count=process_count))
  dataset = dataset.map(functools.partial(gather, source))
  augment.check_augmentation(augmentation)
  if augmentation != 'none':
    shapes = {key: np.shape(value) for key, value in source[0].items()
              if key not in RESERVED_KEYS}
    dataset = dataset.map_with_index(augment.BatchAugmenter(
        augmentation, augment.image_modalities(shapes, augment_modalities),
        seed=seed, process_index=process_index, pad=augment_pad))
  return iter(dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads,
      prefetch_buffer_size=prefetch_batches if read_threads else 0)))


def eval_batches(
    source: Source,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Example]:
  """This process's share of fixed-size batches that cover ``source`` once.

  Global batch ``k`` holds positions ``[k * B, (k + 1) * B)`` of the source,
  padded past its end with copies of example 0; process ``p`` takes the
  ``p``-th of its ``P`` equal contiguous parts. Every process yields the same
  number of batches.

  Args:
    source: Examples (dicts of numpy arrays).
    batch_size: Global batch size ``B``; ``P`` must divide it.
    process_index: This process, ``p``.
    process_count: Number of processes ``P``.

  Yields:
    Dicts of stacked arrays ``[B // P, ...]`` plus ``'mask'`` (float32; 1 for
    a real example, 0 for padding).
  """
  if batch_size % process_count:
    raise ValueError(
        f'batch_size={batch_size} is not divisible by '
        f'process_count={process_count}.'
    )
  local = batch_size // process_count
  num_examples = len(source)
  for start in range(0, num_examples, batch_size):
    first = start + process_index * local
    positions = np.arange(first, first + local)
    mask = positions < num_examples
    batch = gather(source, np.where(mask, positions, 0))
    batch['mask'] = mask.astype(np.float32)
    yield batch


def source_labels(source: Source) -> np.ndarray:
  """``[N]`` int64 labels of a source, in its order (read from its arrays
  when it has them, else example by example)."""
  arrays = getattr(source, 'arrays', None)
  if arrays is not None:
    return np.asarray(arrays['label'], np.int64)
  return np.asarray([source[i]['label'] for i in range(len(source))],
                    np.int64)
