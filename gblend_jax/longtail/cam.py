"""Class activation maps and CAM-based balanced sampling images.

Zhang et al. (AAAI 2021, §"CAM-based sampling") make new images for the
re-sampling stage from the model after stage one: compute the class
activation map (CAM, Zhou et al., CVPR 2016, §2) of a sampled image for
its label, split it into foreground and background, and combine the
foreground with a transformed copy of the image.

What is implemented, exactly:

* `cam_image_counts`: how many new images each class gets,
  ``n_max + n_min - n_c`` (the authors' code), so every class ends with
  ``n_max + n_min``.
* `class_activation_maps`: ``M_y(h, w) = Σ_d f(h, w, d) W[d, y]`` from the
  last convolutional features ``f`` and the linear classifier after global
  average pooling (the bias is dropped: it shifts the map by a constant),
  bilinearly resized to the image size, then min-max normalised per image to
  ``[0, 1]`` (a constant map becomes 0).
* `foreground_mask`: pixels with ``M >= threshold``; by default the threshold
  of the authors' public code, three quarters of the image's mean CAM value.
* `sample_transform`: one of three affine maps, each with probability 1/3,
  as in the authors' code: rotate by ``θ ~ U[-45°, 45°]`` and scale by
  ``s ~ U[0.8, 1.2]`` about the image centre; translate by integer pixel
  shifts up to ``max_shift`` of the height and width; or flip horizontally.
* `cam_augment` with the default ``move_foreground=False`` (the paper's and
  SPEC's description): the foreground stays where it is, unchanged, and the
  background is taken from the transformed image,
  ``x' = m ⊙ x + (1 - m) ⊙ T(x)``. With ``move_foreground=True`` it follows
  the authors' code instead: the transformed image is shown wherever the
  original or the transformed foreground mask is set, the original image
  elsewhere, ``x' = T(x)`` on ``m ∪ T(m)``, ``x`` off it (so the object moves
  and the original background stays).

Warps sample with bilinear interpolation (`jax.scipy.ndimage.map_coordinates`,
order 1) and fill outside the image with ``mode`` (default ``'constant'``
zeros, as ``cv2.warpAffine``). Everything is jit-compatible and works on one
image; ``jax.vmap`` it over a batch with split keys.

References:
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
  Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for
  Discriminative Localization", CVPR 2016, https://arxiv.org/abs/1512.04150.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = (
    'FLIP',
    'ROTATE_AND_SCALE',
    'TRANSLATE',
    'cam_augment',
    'cam_image_counts',
    'class_activation_maps',
    'flip_matrix',
    'foreground_mask',
    'paste_foreground',
    'rotation_matrix',
    'sample_transform',
    'translation_matrix',
    'warp_affine',
)

# Transform choices of `sample_transform`.
ROTATE_AND_SCALE, TRANSLATE, FLIP = 0, 1, 2


def cam_image_counts(counts: np.ndarray) -> np.ndarray:
  """New CAM-based images per class: ``n_max + n_min - n_c``.

  The number the authors' code generates for each class (drawing the source
  images of class ``c`` uniformly from its ``n_c`` examples), which brings
  every class to ``n_max + n_min`` images.

  Args:
    counts: ``[C]`` training examples per class.

  Returns:
    int64 ``[C]`` counts of images to generate.

  Examples:
    >>> cam_image_counts(np.array([100, 30, 10])).tolist()
    [10, 80, 100]
  """
  counts = np.asarray(counts, np.int64)
  return counts.max() + counts.min() - counts


def class_activation_maps(
    features: jax.Array,
    weights: jax.Array,
    labels: jax.Array,
    image_size: tuple[int, int],
) -> jax.Array:
  """Class activation maps of ``labels``, resized and normalised to [0, 1].

  ``M_b = Σ_d features[b, :, :, d] · weights[d, labels_b]`` (Zhou et al.,
  2016, §2), bilinearly resized to ``image_size`` and min-max normalised
  per image.

  Args:
    features: ``[B, h, w, D]`` last convolutional features (before pooling).
    weights: ``[D, C]`` kernel of the classifier on the pooled features.
    labels: ``[B]`` class of each map.
    image_size: ``(H, W)`` (static).

  Returns:
    float32 ``[B, H, W]`` maps in ``[0, 1]``.

  Examples:
    >>> features = jnp.zeros((1, 2, 2, 1)).at[0, 0, 0, 0].set(1.0)
    >>> cams = class_activation_maps(features, jnp.ones((1, 3)),
    ...                              jnp.array([2]), (4, 4))
    >>> cams.shape, float(cams.max()), float(cams.min())
    ((1, 4, 4), 1.0, 0.0)
  """
  if features.ndim != 4 or weights.ndim != 2:
    raise ValueError(
        f'Expected features [B, h, w, D] and weights [D, C]; got '
        f'{features.shape} and {weights.shape}.'
    )
  class_weights = jnp.take(weights, labels, axis=1).astype(jnp.float32)
  cams = jnp.einsum('bhwd,db->bhw', features.astype(jnp.float32),
                    class_weights)
  cams = jax.image.resize(
      cams, (cams.shape[0], *image_size), method='bilinear'
  )
  low = jnp.min(cams, axis=(1, 2), keepdims=True)
  spread = jnp.max(cams, axis=(1, 2), keepdims=True) - low
  return jnp.where(spread > 0, (cams - low) / jnp.where(spread > 0, spread, 1),
                   0.0)


def foreground_mask(
    cams: jax.Array,
    *,
    threshold: float | None = None,
    mean_fraction: float = 0.75,
) -> jax.Array:
  """Foreground pixels of CAMs: ``M >= threshold``.

  Args:
    cams: ``[..., H, W]`` maps (e.g. from `class_activation_maps`).
    threshold: a fixed threshold; None uses ``mean_fraction`` times each
      map's mean, the rule of the authors' code.
    mean_fraction: see ``threshold``.

  Returns:
    bool ``[..., H, W]`` mask.

  Examples:
    >>> foreground_mask(jnp.array([[0.0, 0.2], [0.6, 1.0]])).tolist()
    [[False, False], [True, True]]
  """
  if threshold is None:
    threshold = mean_fraction * jnp.mean(cams, axis=(-2, -1), keepdims=True)
  return cams >= threshold


def rotation_matrix(
    center: tuple[float, float], angle_degrees: jax.Array, scale: jax.Array
) -> jax.Array:
  """``[2, 3]`` rotation about ``center`` with scaling, as OpenCV's.

  Maps input pixel ``(x, y)`` (column, row) to
  ``R (x - c_x, y - c_y) + c``, ``R = s [[cos θ, sin θ], [-sin θ, cos θ]]``:
  a positive angle turns the image anticlockwise as displayed
  (``cv2.getRotationMatrix2D``).

  Args:
    center: ``(c_x, c_y)``.
    angle_degrees: ``θ`` in degrees.
    scale: ``s``.

  Returns:
    float32 ``[2, 3]`` forward matrix.
  """
  theta = jnp.deg2rad(jnp.asarray(angle_degrees, jnp.float32))
  a = scale * jnp.cos(theta)
  b = scale * jnp.sin(theta)
  cx, cy = center
  return jnp.array([
      [a, b, (1 - a) * cx - b * cy],
      [-b, a, b * cx + (1 - a) * cy],
  ], jnp.float32)


def translation_matrix(dx: jax.Array, dy: jax.Array) -> jax.Array:
  """``[2, 3]`` map of ``(x, y)`` to ``(x + dx, y + dy)``."""
  return jnp.array([[1, 0, dx], [0, 1, dy]], jnp.float32)


def flip_matrix(width: int) -> jax.Array:
  """``[2, 3]`` horizontal flip: ``(x, y)`` to ``(W - 1 - x, y)``."""
  return jnp.array([[-1, 0, width - 1], [0, 1, 0]], jnp.float32)


def warp_affine(
    image: jax.Array,
    matrix: jax.Array,
    *,
    mode: str = 'constant',
    cval: float = 0.0,
) -> jax.Array:
  """Applies a forward affine map to an image, like ``cv2.warpAffine``.

  Output pixel ``p`` takes the input at ``A⁻¹ (p - t)`` for
  ``matrix = [A | t]``, bilinearly interpolated; points outside the image
  follow ``mode`` (``'constant'`` fills ``cval``; also ``'nearest'``,
  ``'wrap'``, ``'mirror'``, ``'reflect'``).

  Args:
    image: ``[H, W]`` or ``[H, W, K]``.
    matrix: ``[2, 3]`` forward map in (column, row) coordinates.
    mode: boundary mode of `jax.scipy.ndimage.map_coordinates`.
    cval: fill value of ``'constant'``.

  Returns:
    The warped image, float32, same shape.

  Examples:
    >>> row = jnp.array([[1.0, 2.0, 3.0]])
    >>> warp_affine(row, flip_matrix(3)).tolist()
    [[3.0, 2.0, 1.0]]
  """
  height, width = image.shape[:2]
  linear, offset = matrix[:, :2], matrix[:, 2]
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32),
                            indexing='ij')
  out_xy = jnp.stack([cols.ravel(), rows.ravel()]) - offset[:, None]
  in_x, in_y = jnp.linalg.solve(linear, out_xy)
  coordinates = [in_y.reshape(height, width), in_x.reshape(height, width)]

  def warp_channel(channel):
    return jax.scipy.ndimage.map_coordinates(
        channel, coordinates, order=1, mode=mode, cval=cval
    )

  image = image.astype(jnp.float32)
  if image.ndim == 2:
    return warp_channel(image)
  return jax.vmap(warp_channel, in_axes=-1, out_axes=-1)(image)


def sample_transform(
    rng: jax.Array,
    height: int,
    width: int,
    *,
    max_angle: float = 45.0,
    scale_range: tuple[float, float] = (0.8, 1.2),
    max_shift: float = 0.25,
) -> tuple[jax.Array, jax.Array]:
  """Draws one of rotate-and-scale, translate or flip, each with p = 1/3.

  Args:
    rng: a PRNG key.
    height: image height ``H`` (static).
    width: image width ``W`` (static).
    max_angle: rotation angle ``θ ~ U[-max_angle, max_angle]`` degrees,
      about the image centre ``((W - 1)/2, (H - 1)/2)``.
    scale_range: scale ``s ~ U[low, high]`` of the rotation.
    max_shift: translation ``(dx, dy)`` in whole pixels, uniform in
      ``[-⌊max_shift·W⌋, ⌊max_shift·W⌋]`` (``H`` for ``dy``).

  Returns:
    ``(choice, matrix)``: int32 scalar (`ROTATE_AND_SCALE`, `TRANSLATE` or
    `FLIP`) and the float32 ``[2, 3]`` forward matrix.
  """
  choice_key, angle_key, scale_key, shift_key = jax.random.split(rng, 4)
  choice = jax.random.randint(choice_key, (), 0, 3)
  angle = jax.random.uniform(angle_key, (), minval=-max_angle,
                             maxval=max_angle)
  scale = jax.random.uniform(scale_key, (), minval=scale_range[0],
                             maxval=scale_range[1])
  limits = jnp.array([math.floor(max_shift * width),
                      math.floor(max_shift * height)])
  shift = jax.random.randint(shift_key, (2,), -limits, limits + 1)
  matrices = jnp.stack([
      rotation_matrix(((width - 1) / 2, (height - 1) / 2), angle, scale),
      translation_matrix(shift[0], shift[1]),
      flip_matrix(width),
  ])
  return choice, matrices[choice]


def paste_foreground(
    image: jax.Array, mask: jax.Array, background: jax.Array
) -> jax.Array:
  """``m ⊙ image + (1 - m) ⊙ background`` with ``mask`` ``[H, W]``.

  Args:
    image: ``[H, W, K]`` source of the foreground.
    mask: ``[H, W]`` bool (or {0, 1}) foreground mask.
    background: ``[H, W, K]`` image shown outside the mask.

  Returns:
    The composite, in the promoted dtype of the two images.
  """
  return jnp.where(mask[..., None].astype(bool), image, background)


def cam_augment(
    rng: jax.Array,
    image: jax.Array,
    mask: jax.Array,
    *,
    move_foreground: bool = False,
    mode: str = 'constant',
    max_angle: float = 45.0,
    scale_range: tuple[float, float] = (0.8, 1.2),
    max_shift: float = 0.25,
) -> tuple[jax.Array, jax.Array]:
  """A CAM-based sampling image (Zhang et al., 2021): see the module doc.

  Args:
    rng: a PRNG key.
    image: ``[H, W, K]`` image.
    mask: ``[H, W]`` foreground mask (`foreground_mask`).
    move_foreground: False: the foreground stays on a transformed background
      (the paper); True: the foreground moves on the original background
      (the authors' code).
    mode: boundary mode of `warp_affine` for the image (the mask is always
      filled with zeros).
    max_angle: see `sample_transform`.
    scale_range: see `sample_transform`.
    max_shift: see `sample_transform`.

  Returns:
    ``(augmented, choice)``: float32 ``[H, W, K]`` and the transform chosen.
  """
  height, width = image.shape[:2]
  choice, matrix = sample_transform(
      rng, height, width, max_angle=max_angle, scale_range=scale_range,
      max_shift=max_shift,
  )
  image = image.astype(jnp.float32)
  mask = mask.astype(bool)
  transformed = warp_affine(image, matrix, mode=mode)
  if not move_foreground:
    return paste_foreground(image, mask, transformed), choice
  moved_mask = warp_affine(mask.astype(jnp.float32), matrix) > 0.5
  return paste_foreground(transformed, mask | moved_mask, image), choice
