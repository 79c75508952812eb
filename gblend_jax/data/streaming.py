"""Streaming sources: a prepared split's examples read by index, on demand.

A data set too large for host memory as float32 is never read whole. Its
prepared array_record files are opened through ``tfds`` (``as_data_source``,
random access by index); one streamed pass checks every record (label in
range, unique ids, shape and finiteness of fixed-shape modalities) and keeps
only the labels and ids, cached next to the prepared files. Everything the
in-memory path does with copies of the data is done on indices here:

- the held-out split, ``train_examples_per_class``, the long-tail subset and
  the ROS/RUS multisets are position arrays (``StreamedSource.subset``,
  `pipeline.IndexSubset`);
- ``mismatched_modalities`` re-pairs a modality through a per-modality
  position array (``StreamedSource.mismatched``), with the in-memory path's
  draws;
- ``standardize`` uses per-feature statistics computed once in a streamed
  two-pass sweep (``feature_statistics``; the in-memory path uses the same
  function) and cached next to the prepared files.

Encoded images (the ``full`` configs of the ImageNet-LT and iNaturalist
builders store each image file's own JPEG bytes; the ``official`` configs of
the audio-visual builders store the bytes of a clip's ``T`` frame files)
are decoded when a batch is read, in the reading worker (`EncodedImages`
says how): training batches get the paper's train transform
(random-resized-crop to ``S`` + flip, ``RandomResizedCrop`` and
``RandomHorizontalFlip`` of torchvision; each frame its own draws) when
``data.augmentation`` is ``'random_resized_crop_flip'``, every other read
the test transform: ``'shorter_side'`` (shorter side resized to
``round(S / 0.875)`` = 256 for ``S`` = 224, centre crop ``S``; ImageNet) or
``'square'`` (resized to ``S x S``, torchvision's ``Resize((S, S))``: what
OGM-GE does to video frames, and what the audio-visual builders did at
build time).

``use_streaming`` chooses the path: ``data.streaming`` 'auto' streams when
the float32 size of the requested modalities over the train and test splits
exceeds ``data.in_memory_limit_mb`` (default ``IN_MEMORY_LIMIT_MB``) or
when a modality is encoded; 'always' and 'never' force a path.
"""

import dataclasses
import glob
import hashlib
import io
import math
import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from gblend_jax.data import augment

STREAMING_MODES = ('auto', 'always', 'never')
# Float32 size of the requested modalities (train + test) above which
# data.streaming='auto' streams: 2 GiB, a few times what the in-memory path
# holds with its copies, on any laptop.
IN_MEMORY_LIMIT_MB = 2048.0
# Records read per call during the checking pass, and the float32 bytes
# of the examples read per call during the statistics passes.
CHUNK = 512
STATS_CHUNK_BYTES = 32 * 2**20
# Test transform: resize the shorter side to S / CROP_FRACTION (256 for
# S = 224), then the centred S x S crop (the ImageNet convention).
CROP_FRACTION = 0.875
CACHE_PREFIX = 'gblend_cache'


def check_streaming_config(data_config: Any) -> None:
  """Rejects bad ``data.streaming``, ``data.in_memory_limit_mb`` and
  ``data.workers`` values.

  Raises:
    ValueError: naming the key and its value.
  """
  if data_config.streaming not in STREAMING_MODES:
    raise ValueError(
        f'Unknown data.streaming={data_config.streaming!r}; valid: '
        f'{list(STREAMING_MODES)}.')
  if not data_config.in_memory_limit_mb >= 0:  # Also rejects NaN.
    raise ValueError(
        f'data.in_memory_limit_mb={data_config.in_memory_limit_mb} must be '
        '>= 0.')
  if data_config.workers < -1:
    raise ValueError(
        f'data.workers={data_config.workers} must be >= 0, or -1 for one '
        'per host core but one.')


def default_workers() -> int:
  """Grain worker processes for ``data.workers=-1``: the host's cores but
  one (kept for the training loop), at least 1."""
  return max((os.cpu_count() or 2) - 1, 1)


def resolve_workers(workers: int) -> int:
  """``data.workers``, with -1 resolved by ``default_workers``."""
  return default_workers() if workers == -1 else int(workers)


TEST_RESIZES = ('shorter_side', 'square')


@dataclasses.dataclass(frozen=True)
class EncodedImages:
  """How an encoded image feature becomes pixels when it is read.

  Attributes:
    size: ``S``: the side of the square crops.
    frames: 0: one image per example (a bytes scalar); ``T`` > 0: ``T``
      frames per example (a ``[T]`` array of bytes), decoded each.
    test_resize: The test transform (see the module docstring):
      ``'shorter_side'`` or ``'square'``.
  """

  size: int
  frames: int = 0
  test_resize: str = 'shorter_side'

  def __post_init__(self):
    if self.test_resize not in TEST_RESIZES:
      raise ValueError(f'Unknown test_resize={self.test_resize!r}; valid: '
                       f'{list(TEST_RESIZES)}.')

  @property
  def shape(self) -> tuple[int, ...]:
    """The shape of one decoded example: ``[(T,) S, S, 3]``."""
    pixels = (self.size, self.size, 3)
    return (self.frames, *pixels) if self.frames else pixels


def _as_encoded(spec: 'EncodedImages | int') -> EncodedImages:
  return spec if isinstance(spec, EncodedImages) else EncodedImages(int(spec))


def encoded_images(builder: Any) -> dict[str, EncodedImages]:
  """Encoded image features of a builder and how they are decoded.

  A builder declares them with a ``gblend_encoded_images`` property
  (feature name to an `EncodedImages`, or to ``S`` for one image with the
  ``'shorter_side'`` test transform); others have none.
  """
  declared = getattr(builder, 'gblend_encoded_images', None) or {}
  return {name: _as_encoded(spec) for name, spec in declared.items()}


def float32_megabytes(builder: Any, modalities: Mapping[str, Sequence[int]],
                      splits: Sequence[str] = ('train', 'test')) -> float:
  """Float32 size in MB (2^20 bytes) of ``modalities`` over ``splits``."""
  count = sum(builder.info.splits[s].num_examples for s in splits)
  values = sum(math.prod(shape) for shape in modalities.values())
  return count * values * 4 / 2**20


def use_streaming(data_config: Any, builder: Any,
                  modalities: Mapping[str, Sequence[int]]) -> bool:
  """Whether to stream (see the module docstring for the rule).

  Raises:
    ValueError: for ``data.streaming='never'`` with encoded images.
  """
  check_streaming_config(data_config)
  encoded = sorted(set(encoded_images(builder)) & set(modalities))
  if data_config.streaming == 'never':
    if encoded:
      raise ValueError(
          f'data.streaming=\'never\', but modalities {encoded} of '
          f'{builder.name} are encoded images (decoded and cropped when '
          "read): use 'auto' or 'always'.")
    return False
  if data_config.streaming == 'always' or encoded:
    return True
  return (float32_megabytes(builder, modalities)
          > data_config.in_memory_limit_mb)


# ---- Image transforms of encoded images.


def decode_image(data: bytes) -> Image.Image:
  """Decodes image file bytes into an RGB pillow image (fully loaded).

  Raises:
    OSError: for bytes that are not a whole image (e.g. a truncated JPEG).
  """
  image = Image.open(io.BytesIO(data))
  image.load()  # Truncated files fail here, not later.
  return image.convert('RGB')


def read_image_bytes(path: str) -> bytes:
  """The bytes of the image file at ``path``, once they decode whole.

  What a builder stores of an encoded image. The check decodes at JPEG's
  smallest DCT scale (pillow's ``draft``), which still reads every
  entropy-coded byte: a truncated or corrupt file raises.

  Raises:
    OSError: for a file that does not decode (the caller names it).
  """
  with open(path, 'rb') as f:
    data = f.read()
  with Image.open(io.BytesIO(data)) as image:
    image.draft('RGB', (1, 1))
    image.load()
  return data


def test_transform(image: Image.Image, size: int) -> np.ndarray:
  """Resize the shorter side to ``round(S / 0.875)``, centre crop ``S``.

  torchvision's ``Resize(256)`` (bilinear; the longer side
  ``int(long · 256 / short)``) then ``CenterCrop(224)`` (offset
  ``int(round((side - 224) / 2))``) for ``S`` = 224.

  Args:
    image: An RGB pillow image.
    size: ``S``.

  Returns:
    uint8 ``[S, S, 3]``.
  """
  resize = int(round(size / CROP_FRACTION))
  width, height = image.size
  if width <= height:
    new_size = (resize, int(resize * height / width))
  else:
    new_size = (int(resize * width / height), resize)
  image = image.resize(new_size, Image.Resampling.BILINEAR)
  left = int(round((new_size[0] - size) / 2.0))
  top = int(round((new_size[1] - size) / 2.0))
  return np.asarray(image.crop((left, top, left + size, top + size)),
                    np.uint8)


def square_transform(image: Image.Image, size: int) -> np.ndarray:
  """Resize to ``S x S`` (bilinear), ignoring the aspect ratio.

  torchvision's ``Resize((S, S))`` on a pillow image: OGM-GE's test
  transform of video frames.

  Args:
    image: An RGB pillow image.
    size: ``S``.

  Returns:
    uint8 ``[S, S, 3]``.
  """
  return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR),
                    np.uint8)


def train_transform(image: Image.Image, size: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Random-resized-crop to ``S x S``, then a left-right flip with p = 1/2.

  The box is `augment.random_resized_crop_boxes`'s (area ``U[0.08, 1]``,
  log-uniform ratio in ``[3/4, 4/3]``, 10 attempts, centre fallback) drawn
  on the image's own size; it is resized with pillow's bilinear filter
  (torchvision's ``RandomResizedCrop(S)`` on a pillow image does the same).

  Args:
    image: An RGB pillow image.
    size: ``S``.
    rng: Source of the draws (box, then flip).

  Returns:
    uint8 ``[S, S, 3]``.
  """
  width, height = image.size
  top, left, box_h, box_w = augment.random_resized_crop_boxes(
      rng, 1, height, width)[0]
  crop = image.resize((size, size), Image.Resampling.BILINEAR,
                      box=(left, top, left + box_w, top + box_h))
  pixels = np.asarray(crop, np.uint8)
  if rng.random() < 0.5:
    pixels = pixels[:, ::-1]
  return pixels


# ---- Sources.


class StreamedSource:
  """Examples of a prepared split, read from its files when asked for.

  Example ``i`` has the label and id at ``i`` and reads modality ``m`` from
  record ``feature_positions[m][i]`` (all equal to ``positions[i]`` unless
  re-paired by ``mismatched``). Modalities come out float32 (encoded images
  decoded and transformed), then standardised with ``stats`` if given.

  Args:
    records: Random-access records (``builder.as_data_source(split)``).
    positions: ``[n]`` record of each example.
    labels: ``[n]`` int32 labels.
    ids: ``[n]`` ids (int32, or bytes for text ids).
    modalities: Modality name to the shape it has once read.
    images: Encoded image modality name to its `EncodedImages` (or its
      side ``S``).
    feature_positions: Modality name to ``[n]`` records (default:
      ``positions``).
    stats: Modality name to ``(mean, std)`` arrays of its shape.
    where: ``'Data set X, split Y'``, for errors.
    cache: ``(folder, key)``: where statistics are cached and the key of
      the split's files; None: not cached.
  """

  def __init__(self, records: Any, *, positions: np.ndarray,
               labels: np.ndarray, ids: np.ndarray,
               modalities: Mapping[str, tuple[int, ...]],
               images: Mapping[str, EncodedImages | int] | None = None,
               feature_positions: Mapping[str, np.ndarray] | None = None,
               stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None
               = None, where: str = '',
               cache: tuple[str, str] | None = None):
    self.records = records
    self.positions = np.asarray(positions, np.int64)
    self.labels = np.asarray(labels, np.int32)
    self.ids = np.asarray(ids)
    self.modalities = dict(modalities)
    self.images = {name: _as_encoded(spec)
                   for name, spec in (images or {}).items()}
    self.feature_positions = {
        m: np.asarray((feature_positions or {}).get(m, self.positions),
                      np.int64) for m in self.modalities}
    self.stats = dict(stats or {})
    self.where = where
    self.cache = cache

  def _replace(self, **changes: Any) -> 'StreamedSource':
    kwargs = {'positions': self.positions, 'labels': self.labels,
              'ids': self.ids, 'modalities': self.modalities,
              'images': self.images,
              'feature_positions': self.feature_positions,
              'stats': self.stats, 'where': self.where,
              'cache': self.cache}
    kwargs.update(changes)
    return StreamedSource(self.records, **kwargs)

  def __len__(self) -> int:
    return len(self.positions)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in self.take(np.array([int(index)])).items()}

  def subset(self, indices: np.ndarray) -> 'StreamedSource':
    """The examples at ``indices`` (positions into this source)."""
    indices = np.asarray(indices, np.int64)
    return self._replace(
        positions=self.positions[indices], labels=self.labels[indices],
        ids=self.ids[indices],
        feature_positions={m: p[indices]
                           for m, p in self.feature_positions.items()})

  def mismatched(self, partners: Mapping[str, np.ndarray]
                 ) -> 'StreamedSource':
    """Modality ``m`` of example ``i`` read from example ``partners[m][i]``
    (positions into this source)."""
    feature_positions = dict(self.feature_positions)
    for name, partner in partners.items():
      feature_positions[name] = feature_positions[name][partner]
    return self._replace(feature_positions=feature_positions)

  def standardized(self, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]
                   ) -> 'StreamedSource':
    """This source with ``(x - mean) / std`` applied to those modalities."""
    return self._replace(stats={**self.stats, **stats})

  def take(self, indices: np.ndarray,
           rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """The examples at ``indices`` as one batch.

    Args:
      indices: ``[B]`` positions into this source.
      rng: For training batches: the draws of the train transform of
        encoded images (in example order, then frame order). None: the
        test transform.

    Returns:
      ``id``, ``label`` and each modality, ``[B, ...]`` (float32).

    Raises:
      ValueError: naming the example and id of an image (or frame) that
        does not decode.
    """
    indices = np.asarray(indices, np.int64)
    wanted = {m: p[indices] for m, p in self.feature_positions.items()}
    unique = np.unique(np.concatenate(list(wanted.values())))
    records = dict(zip(unique.tolist(),
                       read_records(self.records, unique), strict=True))
    batch = {'id': self.ids[indices], 'label': self.labels[indices]}
    for name, shape in self.modalities.items():
      rows = [records[p][name] for p in wanted[name].tolist()]
      if name in self.images:
        values = np.stack([
            self._decode(rows[k], int(indices[k]), rng, self.images[name])
            for k in range(len(rows))]).astype(np.float32)
      else:
        values = np.asarray(rows, np.float32).reshape((len(rows), *shape))
      if name in self.stats:
        mean, std = self.stats[name]
        values = ((values - mean) / std).astype(np.float32)
      batch[name] = values
    return batch

  def _decode(self, data: Any, index: int, rng: np.random.Generator | None,
              spec: EncodedImages) -> np.ndarray:
    """One example's image, or its ``[T]`` frames, decoded and transformed."""
    data = np.asarray(data)
    if not spec.frames:
      return self._image(data.item(), index, '', rng, spec)
    return np.stack([self._image(frame, index, f' frame {k}', rng, spec)
                     for k, frame in enumerate(data.reshape(-1))])

  def _image(self, data: Any, index: int, frame: str,
             rng: np.random.Generator | None,
             spec: EncodedImages) -> np.ndarray:
    try:
      image = decode_image(bytes(data))
    except OSError as error:
      example_id = self.ids[index]
      if isinstance(example_id, bytes):
        example_id = example_id.decode(errors='replace')
      raise ValueError(
          f'{self.where}, example {index} (id {example_id}){frame}: the '
          f'stored image does not decode ({error}).') from error
    if rng is not None:
      return train_transform(image, spec.size, rng)
    if spec.test_resize == 'square':
      return square_transform(image, spec.size)
    return test_transform(image, spec.size)


def read_records(records: Any, positions: np.ndarray) -> list[Any]:
  """Records at ``positions``, in one call when the source can."""
  positions = [int(p) for p in positions]
  if hasattr(records, '__getitems__'):
    return list(records.__getitems__(positions))
  return [records[p] for p in positions]


# ---- The checking pass and the caches next to the prepared files.


def _files_key(folder: str, split: str) -> list[tuple[str, int, int]]:
  """Name, size and mtime of each of a split's prepared files."""
  files = sorted(glob.glob(os.path.join(folder, f'*-{split}.*')))
  return [(os.path.basename(f), os.path.getsize(f),
           os.stat(f).st_mtime_ns) for f in files]


def _digest(*parts: Any) -> str:
  hasher = hashlib.sha256()
  for part in parts:
    if isinstance(part, np.ndarray):
      hasher.update(str(part.dtype).encode())
      hasher.update(np.ascontiguousarray(part).tobytes())
    else:
      hasher.update(repr(part).encode())
  return hasher.hexdigest()[:20]


def _cache_path(folder: str, kind: str, key: str) -> str:
  return os.path.join(folder, f'{CACHE_PREFIX}-{kind}-{key}.npz')


def _save_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes an npz atomically (a reader never sees half a file)."""
  temporary = f'{path}.tmp{os.getpid()}'
  with open(temporary, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(temporary, path)


def open_split(builder: Any, split: str, *, name: str, num_classes: int,
               modalities: Mapping[str, tuple[int, ...]]) -> StreamedSource:
  """A prepared split as a ``StreamedSource``, checked once.

  The first call streams through every record (``CHUNK`` at a time) and
  raises on a bad one; the labels and ids are then cached in the prepared
  folder, keyed by the split's files (a rewritten file is checked again).

  Args:
    builder: A prepared builder.
    split: Its split.
    name: The data set's name, for errors.
    num_classes: Labels must be in ``[0, num_classes)``.
    modalities: The requested modalities and their shapes once read.

  Returns:
    The split.

  Raises:
    ValueError: naming the example of a missing modality, a wrong shape,
      a non-finite value, a label out of range, or repeated ids.
  """
  folder = os.fspath(builder.data_dir)
  images = {m: s for m, s in encoded_images(builder).items()
            if m in modalities}
  where = f'Data set {name}, split {split}'
  records = builder.as_data_source(split=split)
  files = _digest(_files_key(folder, split))
  path = _cache_path(folder, f'index-{split}', _digest(
      files, sorted(modalities.items()), num_classes))
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as cached:
      labels, ids = cached['labels'], cached['ids']
  else:
    labels, ids = _check_records(records, where=where,
                                 num_classes=num_classes,
                                 modalities=modalities, images=images)
    _save_npz(path, labels=labels, ids=ids)
  return StreamedSource(records, positions=np.arange(len(labels)),
                        labels=labels, ids=ids, modalities=modalities,
                        images=images, where=where, cache=(folder, files))


def _check_records(records: Any, *, where: str, num_classes: int,
                   modalities: Mapping[str, tuple[int, ...]],
                   images: Mapping[str, EncodedImages]
                   ) -> tuple[np.ndarray, np.ndarray]:
  """One streamed pass: the checks of `pipeline.check_examples`, keeping
  only labels and ids."""
  from gblend_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  labels, ids = [], []
  for start in range(0, len(records), CHUNK):
    chunk = read_records(records, np.arange(start,
                                            min(start + CHUNK, len(records))))
    for offset, example in enumerate(chunk):
      index = start + offset
      for name, shape in modalities.items():
        if name not in example:
          raise ValueError(f'{where}, example {index}: no modality '
                           f'{name!r}.')
        value = np.asarray(example[name])
        if name in images:
          frames = images[name].frames
          if (value.dtype.kind not in 'OSU' or not value.size
              or value.shape != ((frames,) if frames else ())):
            raise ValueError(
                f'{where}, example {index}: modality {name!r} is not '
                f'encoded image bytes ({frames or "one"} a clip); got '
                f'dtype {value.dtype}, shape {value.shape}.')
          continue
        if value.shape != shape:
          raise ValueError(
              f'{where}, example {index}: modality {name!r} has shape '
              f'{value.shape}, expected {shape}.')
        if value.dtype.kind not in 'biuf':
          raise ValueError(
              f'{where}, example {index}: modality {name!r} has dtype '
              f'{value.dtype}, expected numbers (bool, integer or float).')
        if not np.isfinite(value.astype(np.float32)).all():
          raise ValueError(
              f'{where}, example {index}: modality {name!r} is not finite.')
      labels.append(example['label'])
      ids.append(example['id'])
  labels = np.asarray(labels, np.int32)
  ids = pipeline._as_id(ids)  # pylint: disable=protected-access
  if ids.dtype.kind == 'O':
    ids = ids.astype(bytes)
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise ValueError(
        f'{where}, example {bad[0]}: label {labels[bad[0]]} is not in '
        f'[0, {num_classes}) ({bad.size} bad labels).')
  unique_ids, counts = np.unique(ids, return_counts=True)
  if np.any(counts > 1):
    raise ValueError(
        f'{where}: repeated ids {unique_ids[counts > 1][:20].tolist()}.')
  return labels, ids


def feature_statistics(
    source: Any, modalities: Sequence[str], *, chunk: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Per-feature mean and std of ``source``, in two streamed passes.

  ``mean = Σ x / n`` then ``std = sqrt(Σ (x - mean)^2 / n)`` (the
  population std, numpy's default), both accumulated in float64 over
  batches of ``chunk`` examples read with ``source.take`` (so a streamed
  source is never held whole; encoded images with the test transform); a
  constant feature gets std 1.

  Args:
    source: Examples with ``take(indices)``.
    modalities: Features to describe.
    chunk: Examples per read; None: ``STATS_CHUNK_BYTES`` of float32
      examples (the same for both paths, so they agree to the bit).

  Returns:
    Modality name to float32 ``(mean, std)`` of its example shape.
  """
  count = len(source)
  if chunk is None:
    example = source.take(np.array([0]))
    size = sum(example[m][0].size for m in modalities) * 4
    chunk = max(STATS_CHUNK_BYTES // max(size, 1), 1)
  batches = [np.arange(s, min(s + chunk, count))
             for s in range(0, count, chunk)]
  sums = {}
  for indices in batches:
    batch = source.take(indices)
    for name in modalities:
      total = batch[name].sum(axis=0, dtype=np.float64)
      sums[name] = sums[name] + total if name in sums else total
  means = {name: sums[name] / count for name in modalities}
  squares = {}
  for indices in batches:
    batch = source.take(indices)
    for name in modalities:
      total = ((batch[name].astype(np.float64) - means[name])**2).sum(axis=0)
      squares[name] = squares[name] + total if name in squares else total
  stats = {}
  for name in modalities:
    std = np.sqrt(squares[name] / count)
    stats[name] = (means[name].astype(np.float32),
                   np.where(std > 0, std, 1.0).astype(np.float32))
  return stats


def cached_statistics(source: StreamedSource, modalities: Sequence[str]
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``feature_statistics`` of a streamed source, cached in its prepared
  folder, keyed by its files, examples and re-pairings."""
  if source.cache is None:
    return feature_statistics(source, modalities)
  folder, files = source.cache
  key = _digest(files, sorted(source.modalities.items()),
                sorted(source.images.items()), tuple(modalities),
                source.positions,
                *[source.feature_positions[m] for m in sorted(modalities)])
  path = _cache_path(folder, 'stats', key)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as cached:
      return {m: (cached[f'{m}/mean'], cached[f'{m}/std'])
              for m in modalities}
  stats = feature_statistics(source, modalities)
  _save_npz(path, **{f'{m}/{k}': v for m, (mean, std) in stats.items()
                     for k, v in (('mean', mean), ('std', std))})
  return stats
