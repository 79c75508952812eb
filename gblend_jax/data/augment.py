"""Random image augmentation of training batches (numpy, whole batches).

The two training transforms of Zhang et al. (AAAI 2021, "Bag of tricks for
long-tailed visual recognition"):

- ``pad_crop_flip`` (CIFAR): pad ``P`` pixels of zeros on each side, take a
  random ``H x W`` crop of the padded image, flip it left-right with
  probability 1/2.
- ``random_resized_crop_flip`` (ImageNet-LT, iNaturalist; Szegedy et al.,
  CVPR 2015): a random box of area fraction ``U[0.08, 1]`` and aspect ratio
  (width / height) log-uniform in ``[3/4, 4/3]``, 10 attempts to fit one in
  the image, else a centre crop; the box is resized back to ``H x W``
  (bilinear, half-pixel centres, no anti-aliasing) and flipped left-right
  with probability 1/2.

Images are ``[B, H, W]`` or ``[B, H, W, C]``; every image of a batch has its
own draws, taken from one ``np.random.Generator`` for the batch.
"""

from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

AUGMENTATIONS = ('none', 'pad_crop_flip', 'random_resized_crop_flip')
# Random resized crop: area fraction and aspect ratio ranges, attempts.
CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10


def check_augmentation(name: str) -> None:
  """Rejects an augmentation name not in ``AUGMENTATIONS``.

  Raises:
    ValueError: naming the value and the valid names.
  """
  if name not in AUGMENTATIONS:
    raise ValueError(
        f'Unknown data.augmentation={name!r}; valid: {list(AUGMENTATIONS)}.'
    )


def is_image_shape(shape: Sequence[int]) -> bool:
  """Whether an example shape is an ``[H, W]`` or ``[H, W, C]`` image."""
  return len(shape) in (2, 3)


def _with_channels(images: np.ndarray) -> np.ndarray:
  """``[B, H, W]`` or ``[B, H, W, C]`` as ``[B, H, W, C]`` (C = 1 if none)."""
  if images.ndim == 3:
    return images[..., None]
  if images.ndim == 4:
    return images
  raise ValueError(
      f'Images of shape {images.shape}: expected [B, H, W] or [B, H, W, C].'
  )


def horizontal_flip(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
  """Reverses the columns of the images where ``flips`` is true.

  Args:
    images: ``[B, H, W]`` or ``[B, H, W, C]``.
    flips: ``[B]`` booleans.

  Returns:
    The images, those with ``flips`` mirrored left-right.
  """
  flips = np.asarray(flips, bool).reshape((-1,) + (1,) * (images.ndim - 1))
  return np.where(flips, images[:, :, ::-1], images)


def pad_crop(images: np.ndarray, offsets: np.ndarray, pad: int) -> np.ndarray:
  """Crops each zero-padded image at its offset back to its own size.

  Image ``b`` is padded with ``pad`` zeros on every side and the output is
  ``padded[b, y_b : y_b + H, x_b : x_b + W]``; offset ``(pad, pad)`` is the
  image itself, ``(0, 0)`` shifts it ``pad`` pixels down and right.

  Args:
    images: ``[B, H, W]`` or ``[B, H, W, C]``.
    offsets: ``[B, 2]`` integer ``(y, x)`` in ``[0, 2 * pad]``.
    pad: Pixels of zeros added on each side, ``P >= 0``.

  Returns:
    Crops of the images' shape and dtype.

  Raises:
    ValueError: for a negative pad or offsets out of range.
  """
  if pad < 0:
    raise ValueError(f'data.augment_pad={pad} must be >= 0.')
  offsets = np.asarray(offsets, np.int64)
  if offsets.shape != (len(images), 2) or offsets.min(
      initial=0) < 0 or offsets.max(initial=0) > 2 * pad:
    raise ValueError(
        f'Crop offsets must be [{len(images)}, 2] in [0, {2 * pad}]; got '
        f'shape {offsets.shape}.'
    )
  height, width = images.shape[1:3]
  widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (images.ndim - 3)
  padded = np.pad(images, widths)
  # Every H x W window of each padded image, [B, 2P+1, 2P+1, (C,) H, W]
  # (a view), then one window per image.
  windows = np.lib.stride_tricks.sliding_window_view(
      padded, (height, width), axis=(1, 2))
  crops = windows[np.arange(len(images)), offsets[:, 0], offsets[:, 1]]
  if images.ndim == 4:
    crops = np.moveaxis(crops, 1, 3)  # [B, C, H, W] -> [B, H, W, C].
  return np.ascontiguousarray(crops)


def pad_crop_flip(
    images: np.ndarray, rng: np.random.Generator, pad: int
) -> np.ndarray:
  """Pad-and-crop at a uniform random offset, then a flip with p = 1/2.

  Args:
    images: ``[B, H, W]`` or ``[B, H, W, C]``.
    rng: Source of the draws (offsets, then flips).
    pad: Pixels of zeros on each side, ``P``; offsets are uniform on
      ``{0, ..., 2P}`` in each direction.

  Returns:
    Augmented images of the same shape and dtype.
  """
  offsets = rng.integers(0, 2 * pad + 1, size=(len(images), 2))
  flips = rng.random(len(images)) < 0.5
  return horizontal_flip(pad_crop(images, offsets, pad), flips)


def random_resized_crop_boxes(
    rng: np.random.Generator, count: int, height: int, width: int
) -> np.ndarray:
  """Inception-style random crop boxes, ``(top, left, h, w)`` each.

  For each image, up to ``CROP_ATTEMPTS`` candidates: area ``s · H · W`` with
  ``s ~ U[0.08, 1]``, ratio ``r = w / h`` with ``log r ~ U[log 3/4,
  log 4/3]``, ``w = round(sqrt(s H W r))``, ``h = round(sqrt(s H W / r))``;
  the first that fits (``0 < h <= H``, ``0 < w <= W``) is placed at a
  uniform position. If none fits: the centre crop of the whole image, cut
  to the nearest ratio in ``[3/4, 4/3]``.

  Args:
    rng: Source of the draws.
    count: Number of boxes ``B``.
    height: Image height ``H``.
    width: Image width ``W``.

  Returns:
    ``[B, 4]`` int64 boxes inside the image.
  """
  area = height * width
  shape = (count, CROP_ATTEMPTS)
  scale = rng.uniform(*CROP_AREA, size=shape)
  ratio = np.exp(rng.uniform(*np.log(CROP_RATIO), size=shape))
  box_w = np.round(np.sqrt(scale * area * ratio)).astype(np.int64)
  box_h = np.round(np.sqrt(scale * area / ratio)).astype(np.int64)
  fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
  first = np.argmax(fits, axis=1)
  found = fits[np.arange(count), first]
  box_h = box_h[np.arange(count), first]
  box_w = box_w[np.arange(count), first]
  # Fallback: the whole image, cut to the nearest allowed ratio, centred.
  image_ratio = width / height
  if image_ratio < CROP_RATIO[0]:
    fallback_w, fallback_h = width, int(round(width / CROP_RATIO[0]))
  elif image_ratio > CROP_RATIO[1]:
    fallback_w, fallback_h = int(round(height * CROP_RATIO[1])), height
  else:
    fallback_w, fallback_h = width, height
  box_h = np.where(found, box_h, fallback_h)
  box_w = np.where(found, box_w, fallback_w)
  # Uniform placement for found boxes; centred for the fallback.
  top = np.floor(rng.random(count) * (height - box_h + 1)).astype(np.int64)
  left = np.floor(rng.random(count) * (width - box_w + 1)).astype(np.int64)
  top = np.where(found, top, (height - box_h) // 2)
  left = np.where(found, left, (width - box_w) // 2)
  return np.stack([top, left, box_h, box_w], axis=1)


def _source_coordinates(
    start: np.ndarray, size: np.ndarray, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Bilinear sampling positions of ``out_size`` pixels in ``[start,
  start + size)``: lower index, upper index and the upper weight, each
  ``[B, out_size]`` (half-pixel centres, clamped inside the box)."""
  centres = (np.arange(out_size) + 0.5) / out_size  # In (0, 1).
  position = start[:, None] + centres * size[:, None] - 0.5
  last = (start + size - 1)[:, None]
  position = np.clip(position, start[:, None], last)
  lower = np.floor(position).astype(np.int64)
  upper = np.minimum(lower + 1, last)
  return lower, upper, (position - lower).astype(np.float32)


def crop_and_resize(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Each image's box resized to the image's ``H x W``, bilinearly.

  Args:
    images: ``[B, H, W]`` or ``[B, H, W, C]``.
    boxes: ``[B, 4]`` integer ``(top, left, h, w)`` inside the images.

  Returns:
    Images of the input shape and dtype (integers are rounded).
  """
  original = images
  images = _with_channels(images)
  count, height, width = images.shape[:3]
  boxes = np.asarray(boxes, np.int64)
  y0, y1, wy = _source_coordinates(boxes[:, 0], boxes[:, 2], height)
  x0, x1, wx = _source_coordinates(boxes[:, 1], boxes[:, 3], width)
  # Separable: rows first (whole rows copied), then columns (as rows of
  # the transposed images).
  batch = np.arange(count)[:, None]
  values = images.astype(np.float32, copy=False)
  wy = wy[:, :, None, None]
  rows = (1 - wy) * values[batch, y0] + wy * values[batch, y1]
  columns = rows.transpose(0, 2, 1, 3)  # [B, W, H, C].
  wx = wx[:, :, None, None]
  out = ((1 - wx) * columns[batch, x0] + wx * columns[batch, x1]).transpose(
      0, 2, 1, 3)
  if np.issubdtype(original.dtype, np.integer):
    out = np.round(out)
  return out.reshape(original.shape).astype(original.dtype)


def random_resized_crop_flip(
    images: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
  """Random resized crop (``random_resized_crop_boxes``), then flip p = 1/2.

  Args:
    images: ``[B, H, W]`` or ``[B, H, W, C]``.
    rng: Source of the draws (boxes, then flips).

  Returns:
    Augmented images of the same shape and dtype.
  """
  height, width = images.shape[1:3]
  boxes = random_resized_crop_boxes(rng, len(images), height, width)
  flips = rng.random(len(images)) < 0.5
  return horizontal_flip(crop_and_resize(images, boxes), flips)


def augment_batch(
    batch: Mapping[str, np.ndarray],
    *,
    augmentation: str,
    modalities: Sequence[str],
    rng: np.random.Generator,
    pad: int = 4,
) -> dict[str, np.ndarray]:
  """Applies one augmentation to the named image modalities of a batch.

  Args:
    batch: Feature name to ``[B, ...]`` arrays.
    augmentation: A name of ``AUGMENTATIONS``.
    modalities: The image features to augment, in the order drawn.
    rng: Source of every draw of the batch.
    pad: ``P`` of ``pad_crop_flip``.

  Returns:
    The batch with those modalities augmented (a new dict).
  """
  check_augmentation(augmentation)
  out = dict(batch)
  for name in modalities:
    if augmentation == 'pad_crop_flip':
      out[name] = pad_crop_flip(batch[name], rng, pad)
    elif augmentation == 'random_resized_crop_flip':
      out[name] = random_resized_crop_flip(batch[name], rng)
  return out


def image_modalities(
    shapes: Mapping[str, Sequence[int]], requested: Sequence[str] = ()
) -> tuple[str, ...]:
  """The modalities to augment: ``requested``, or every image modality.

  Args:
    shapes: Modality name to its per-example shape.
    requested: Names from ``data.augment_modalities``; empty: every
      modality whose examples are ``[H, W]`` or ``[H, W, C]``.

  Returns:
    Modality names, in the order of ``requested`` or of ``shapes``.

  Raises:
    ValueError: naming a requested modality that is unknown or whose
      examples are not images.
  """
  if not requested:
    return tuple(n for n, s in shapes.items() if is_image_shape(s))
  for name in requested:
    if name not in shapes:
      raise ValueError(
          f'data.augment_modalities names {name!r}; modalities: '
          f'{list(shapes)}.'
      )
    if not is_image_shape(shapes[name]):
      raise ValueError(
          f'data.augment_modalities names {name!r}, whose examples have '
          f'shape {tuple(shapes[name])}: not an [H, W] or [H, W, C] image.'
      )
  return tuple(requested)


class BatchAugmenter:
  """Augments global batch ``k`` of process ``p`` with draws keyed by both.

  The generator of a batch is ``np.random.default_rng((seed, k, p))``, so a
  batch's augmentation is a pure function of the seed, its position in the
  stream and the process: a resumed iterator repeats an uninterrupted one.

  Args:
    augmentation: A name of ``AUGMENTATIONS``.
    modalities: Image features to augment.
    seed: Seed of the draws (>= 0).
    process_index: This process, ``p``.
    pad: ``P`` of ``pad_crop_flip``.
  """

  def __init__(self, augmentation: str, modalities: Sequence[str], *,
               seed: int, process_index: int = 0, pad: int = 4):
    check_augmentation(augmentation)
    if pad < 0:
      raise ValueError(f'data.augment_pad={pad} must be >= 0.')
    self.augmentation = augmentation
    self.modalities = tuple(modalities)
    self.seed = seed
    self.process_index = process_index
    self.pad = pad

  def __call__(self, index: int, batch: Mapping[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, int(index), self.process_index))
    return augment_batch(batch, augmentation=self.augmentation,
                         modalities=self.modalities, rng=rng, pad=self.pad)
