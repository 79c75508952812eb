"""Loading a data set's splits, checking them, and batching them.

``load_dataset`` prepares a TFDS builder from ``data/``, carves a stratified
held-out split out of ``train``, checks every example once, and returns
random-access sources: in memory (``ArraySource``) for small data sets,
read from the prepared files by index (`gblend_jax.data.streaming`) for
large ones. ``train_iterator`` shuffles and batches a source for ever (a new
permutation each epoch) with a checkpointable position, in grain worker
processes for a streamed source; ``eval_batches`` covers a source once in
padded, masked batches.
"""

import dataclasses
import functools
import glob
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Protocol

import grain
import ml_collections
import numpy as np
from absl import logging

from gblend_jax.data import augment
from gblend_jax.data import batching
from gblend_jax.data import registry
from gblend_jax.data import splits
from gblend_jax.data import streaming
from gblend_jax.longtail import profiles

Example = dict[str, np.ndarray]
# Features that are not modalities.
RESERVED_KEYS = ('id', 'label')


class Source(Protocol):
  """A random-access data source: a length and examples by index."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Any: ...


def gather(source: Source, indices: np.ndarray,
           rng: np.random.Generator | None = None) -> Example:
  """The examples at ``indices`` stacked into one batch.

  Sources with a ``take(indices)`` method (``ArraySource``, ``IndexSubset``,
  `streaming.StreamedSource`) gather the whole batch at once; others are
  read one example at a time.

  Args:
    source: Examples (dicts of numpy arrays).
    indices: ``[n]`` integer positions.
    rng: For a training batch of a source that transforms examples as it
      reads them (encoded images of a ``StreamedSource``): the draws of
      that transform. None: the test transform.

  Returns:
    A dict of ``[n, ...]`` arrays.
  """
  indices = np.asarray(indices, np.int64)
  if rng is not None and hasattr(source, 'take'):
    return source.take(indices, rng)
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

  @property
  def labels(self) -> np.ndarray | None:
    labels = getattr(self.source, 'labels', None)
    return None if labels is None else labels[self.indices]

  def take(self, indices: np.ndarray,
           rng: np.random.Generator | None = None) -> Example:
    return gather(self.source, self.indices[indices], rng)


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
      # Stream examples from the prepared files instead of holding the
      # splits in memory as float32: 'auto' streams when the requested
      # modalities of train + test exceed in_memory_limit_mb as float32, or
      # are encoded images (see gblend_jax.data.streaming); 'always' or
      # 'never' force a path. Both paths give the same batches.
      'streaming': 'auto',
      'in_memory_limit_mb': 2048.0,
      # Grain worker processes that read, decode and augment the batches of
      # a streamed training split (-1: the host's cores but one; 0: grain
      # threads in this process, read_threads of them).
      'workers': -1,
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
  images = streaming.encoded_images(builder)
  modalities = {m: (images[m].shape if m in images
                    else tuple(features[m].shape)) for m in requested}
  num_classes = features['label'].num_classes

  streamed = streaming.use_streaming(data_config, builder, modalities)
  logging.info('Data %s: %s.', name,
               'streamed from the prepared files by index' if streamed
               else 'read into memory')
  if streamed:
    read = {split: _reading_errors(
        builder, split, name, functools.partial(
            streaming.open_split, builder, split, name=name,
            num_classes=num_classes, modalities=modalities))
            for split in ('train', 'test')}
    train_labels, train_ids = read['train'].labels, read['train'].ids
    test_ids = read['test'].ids
  else:
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
    train_ids, test_ids = read['train'].arrays['id'], read['test'].arrays['id']
  kept, held_out = splits.stratified_holdout(
      train_labels, fraction, data_config.holdout_seed
  )
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
  if isinstance(read['train'], streaming.StreamedSource):
    train, holdout = (read['train'].subset(kept),
                      read['train'].subset(held_out))
  else:
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
    source: 'ArraySource | streaming.StreamedSource',
    probabilities: Mapping[str, float], *, seed: int
) -> 'ArraySource | streaming.StreamedSource':
  """Makes modalities less reliable by pairing examples at random.

  For modality m with probability p_m, each example's m features are, with
  probability p_m, replaced by those of an example drawn uniformly from the
  same split (of any class), so m carries the label only for the other
  examples. This builds, from real data, a modality that is weakly
  informative and easy to memorise: the setting in which a late-fusion model
  overfits through one modality (Wang et al., CVPR 2020, §3).

  Args:
    source: a split in memory, or streamed (then only the positions its
      modalities are read from change; the draws are the same).
    probabilities: modality name to the probability of a random pairing.
    seed: seed of the draws.

  Returns:
    The split with those modalities re-paired.

  Raises:
    ValueError: for an unknown modality or a probability outside [0, 1].
  """
  rng = np.random.default_rng(seed)
  streamed = isinstance(source, streaming.StreamedSource)
  arrays = source.modalities if streamed else dict(source.arrays)
  partner_positions = {}
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
    if streamed:
      partner_positions[name] = np.where(replaced, partners,
                                         np.arange(count))
      continue
    arrays[name] = np.where(
        replaced.reshape((-1,) + (1,) * (arrays[name].ndim - 1)),
        arrays[name][partners], arrays[name],
    )
  if streamed:
    return source.mismatched(partner_positions)
  return ArraySource(arrays)


def standardize(
    reference: 'ArraySource | streaming.StreamedSource',
    sources: Sequence['ArraySource | streaming.StreamedSource'],
    modalities: Sequence[str],
) -> tuple['ArraySource | streaming.StreamedSource', ...]:
  """Scales each feature to zero mean and unit variance on `reference`.

  The statistics come from the training split only (never the held-out or
  test split), from `streaming.feature_statistics` (float64 sums, a
  constant feature keeps scale 1), on either path; a streamed split's are
  cached next to its prepared files and applied as its examples are read.

  Args:
    reference: the split whose per-feature mean and std are used.
    sources: the splits to transform.
    modalities: which features to standardise.

  Returns:
    The transformed splits, in the order given.
  """
  if isinstance(reference, streaming.StreamedSource):
    stats = streaming.cached_statistics(reference, modalities)
    return tuple(source.standardized(stats) for source in sources)
  stats = streaming.feature_statistics(reference, modalities)
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
  """``check_examples`` of a prepared split; errors say what to delete."""
  return _reading_errors(builder, split, name, lambda: check_examples(
      SelectedFeatures(builder.as_data_source(split=split), requested),
      dataset=name, split=split, num_classes=num_classes,
      modalities=modalities,
  ))


def _reading_errors(builder: Any, split: str, name: str,
                    read: Callable[[], Any]) -> Any:
  """``read()``, with errors that say which prepared files to delete.

  A prepared data set is reused as it is, so an error in it returns on every
  run until its folder is deleted: each error names the folder (and, for a
  damaged file, the split's files).
  """
  folder = os.fspath(builder.data_dir)
  try:
    return read()
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
    workers: int = 0,
) -> 'TrainBatches':
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
      examples are ``[H, W]`` or ``[H, W, C]``, and every encoded image or
      frame sequence of a streamed source (which, under
      ``'random_resized_crop_flip'``, get the crop as they are decoded).
    augment_pad: ``P`` of ``pad_crop_flip``.
    read_threads: grain threads that prepare batches ahead (0: none, read
      in the caller's thread). The batches and their order do not depend
      on it.
    prefetch_batches: batches prepared ahead, at least ``read_threads``.
    workers: for a streamed source (`streaming.StreamedSource`, or an
      ``IndexSubset`` of one): grain worker processes that read, decode and
      augment whole batches (-1: `streaming.default_workers`; 0: none). An
      in-memory source is always read in this process. The batches and
      their order do not depend on it.

  Returns:
    An iterator of dicts of stacked arrays ``[G // P, ...]``, with
    ``get_state()`` and ``set_state()`` (``{'next_index': k}``, the next
    global batch) and ``close()`` (stops the workers).
  """
  if read_threads < 0 or prefetch_batches < read_threads:
    raise ValueError(
        f'data.read_threads={read_threads} must be >= 0 and at most '
        f'data.prefetch_batches={prefetch_batches}.')
  if workers < -1:
    raise ValueError(f'data.workers={workers} must be >= -1.')
  # One grain element per global batch: its positions, then one gather.
  epochs = (batching.ShuffledEpochs(len(source), seed) if sampler is None
            else sampler)
  positions = batching.BatchPositions(
      epochs, global_batch_size=global_batch_size,
      process_index=process_index, process_count=process_count)
  augment.check_augmentation(augmentation)
  streamed = streamed_source(source)
  # Encoded images (and frames) get the random resized crop as they are
  # decoded, at full resolution; every other augmentation runs on the
  # gathered batch.
  decoded = (tuple(m for m in streamed.images
                   if not augment_modalities or m in augment_modalities)
             if streamed is not None
             and augmentation == 'random_resized_crop_flip' else ())
  augmenter = None
  if augmentation != 'none':
    shapes = (dict(streamed.modalities) if streamed is not None else
              {key: np.shape(value) for key, value in source[0].items()
               if key not in RESERVED_KEYS})
    requested = tuple(m for m in augment_modalities if m not in decoded)
    names = () if augment_modalities and not requested else tuple(
        augment.image_modalities(
            {n: s for n, s in shapes.items() if n not in decoded},
            requested))
    if names:
      augmenter = augment.BatchAugmenter(
          augmentation, names, seed=seed, process_index=process_index,
          pad=augment_pad)
  batches = _TrainBatches(source, positions, augmenter,
                          decode_seed=(seed, process_index) if decoded
                          else None)
  return TrainBatches(
      batches, read_threads=read_threads, prefetch_batches=prefetch_batches,
      workers=streaming.resolve_workers(workers) if streamed is not None
      else 0)


def streamed_source(source: Source) -> 'streaming.StreamedSource | None':
  """The `streaming.StreamedSource` under ``source`` (through
  ``IndexSubset``s), or None for an in-memory source."""
  while source is not None:
    if isinstance(source, streaming.StreamedSource):
      return source
    source = getattr(source, 'source', None)
  return None


class _TrainBatches:
  """Global batch ``start + i`` of this process, as grain element ``i``.

  Picklable, so that grain worker processes can compute batches: each
  reads its positions, gathers them (decoding encoded images with the
  train transform, drawn from ``default_rng((seed, k, p, 1))``) and
  augments them (`augment.BatchAugmenter`, keyed by ``k``).
  """

  def __init__(self, source: Source, positions: batching.BatchPositions,
               augmenter: augment.BatchAugmenter | None,
               decode_seed: tuple[int, int] | None, start: int = 0):
    self.source = source
    self.positions = positions
    self.augmenter = augmenter
    self.decode_seed = decode_seed
    self.start = start

  def starting_at(self, start: int) -> '_TrainBatches':
    return _TrainBatches(self.source, self.positions, self.augmenter,
                         self.decode_seed, start)

  def __len__(self) -> int:
    return len(self.positions) - self.start

  def __getitem__(self, index: int) -> Example:
    batch_index = self.start + int(index)
    rng = None
    if self.decode_seed is not None:
      rng = np.random.default_rng((*self.decode_seed, batch_index, 1))
    batch = gather(self.source, self.positions[batch_index], rng)
    if self.augmenter is not None:
      batch = self.augmenter(batch_index, batch)
    return batch


class TrainBatches:
  """An endless iterator of training batches, with a checkpointable state.

  The state is the next global batch, ``{'next_index': k}``, the same
  whatever the threads and workers, so a run resumes exactly with other
  reading settings too. The grain pipeline (threads, or worker processes
  with ``workers`` > 0) starts at the first ``next`` and restarts at
  ``set_state``.
  """

  def __init__(self, batches: _TrainBatches, *, read_threads: int,
               prefetch_batches: int, workers: int):
    self._batches = batches
    self._read_threads = read_threads
    self._prefetch = prefetch_batches
    self._workers = workers
    self._next_index = 0
    self._iterator = None

  def __iter__(self) -> 'TrainBatches':
    return self

  def __next__(self) -> Example:
    if self._iterator is None:
      self._iterator = self._start()
    batch = next(self._iterator)
    self._next_index += 1
    return batch

  def _start(self) -> Iterator[Example]:
    dataset = grain.MapDataset.source(
        self._batches.starting_at(self._next_index))
    threads = self._read_threads
    dataset = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=threads,
        prefetch_buffer_size=self._prefetch if threads else 0))
    if self._workers:
      _mark_flags_parsed()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._workers,
          per_worker_buffer_size=max(self._prefetch // self._workers, 1)))
    return iter(dataset)

  def get_state(self) -> dict[str, int]:
    return {'next_index': self._next_index}

  def set_state(self, state: Mapping[str, int]) -> None:
    self.close()
    self._next_index = int(state['next_index'])

  def close(self) -> None:
    """Stops the grain pipeline (and its worker processes)."""
    iterator, self._iterator = self._iterator, None
    if iterator is not None and hasattr(iterator, 'close'):
      iterator.close()

  def __del__(self):
    self.close()


def _mark_flags_parsed() -> None:
  """Grain's worker processes read absl flags: outside an absl app (tests,
  notebooks) they take their defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


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
    a real example, 0 for padding). A streamed source's batches are read
    (and decoded) ahead by `streaming.default_workers` grain threads.
  """
  if batch_size % process_count:
    raise ValueError(
        f'batch_size={batch_size} is not divisible by '
        f'process_count={process_count}.'
    )
  batches = _EvalBatches(source, batch_size // process_count,
                         batch_size, process_index)
  if streamed_source(source) is None:
    yield from (batches[k] for k in range(len(batches)))
    return
  threads = streaming.default_workers()
  yield from grain.MapDataset.source(batches).to_iter_dataset(
      grain.ReadOptions(num_threads=threads,
                        prefetch_buffer_size=2 * threads))


class _EvalBatches:
  """Batch ``k`` of `eval_batches`: a grain data source."""

  def __init__(self, source: Source, local: int, batch_size: int,
               process_index: int):
    self.source = source
    self.local = local
    self.batch_size = batch_size
    self.process_index = process_index

  def __len__(self) -> int:
    return -(-len(self.source) // self.batch_size)

  def __getitem__(self, index: int) -> Example:
    first = int(index) * self.batch_size + self.process_index * self.local
    positions = np.arange(first, first + self.local)
    mask = positions < len(self.source)
    batch = gather(self.source, np.where(mask, positions, 0))
    batch['mask'] = mask.astype(np.float32)
    return batch


def source_labels(source: Source) -> np.ndarray:
  """``[N]`` int64 labels of a source, in its order (read from its arrays
  when it has them, else example by example)."""
  arrays = getattr(source, 'arrays', None)
  if arrays is not None:
    return np.asarray(arrays['label'], np.int64)
  labels = getattr(source, 'labels', None)
  if labels is not None:
    return np.asarray(labels, np.int64)
  return np.asarray([source[i]['label'] for i in range(len(source))],
                    np.int64)
