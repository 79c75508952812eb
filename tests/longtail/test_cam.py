"""Class activation maps, foreground masks, warps and the CAM paste."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax.longtail import cam

# A 2 x 4 image, one channel: the foreground is column 0.
IMAGE = jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])[..., None]
MASK = jnp.array([[True, False, False, False], [True, False, False, False]])
# The image with its foreground kept and the flipped image behind it.
FLIP_PASTED = [[1, 3, 2, 1], [5, 7, 6, 5]]


def test_class_activation_map_hand_values():
  # Two feature channels on a 2 x 2 grid; class 1 weighs them 1 and 2.
  # The second image's features are constant, and so is its map.
  features = jnp.array([[[[1.0, 0.0], [0.0, 1.0]],
                         [[1.0, 1.0], [0.0, 2.0]]],
                        [[[1.0, 1.0], [1.0, 1.0]],
                         [[1.0, 1.0], [1.0, 1.0]]]])  # [2, 2, 2, 2]
  weights = jnp.array([[5.0, 1.0], [-5.0, 2.0]])  # [D=2, C=2]
  labels = jnp.array([1, 0])
  # Raw map of class 1: [[1, 2], [3, 4]] -> min-max [[0, 1/3], [2/3, 1]].
  cams = cam.class_activation_maps(features, weights, labels, (2, 2))
  np.testing.assert_allclose(cams[0], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
  np.testing.assert_array_equal(cams[1], np.zeros((2, 2)))
  big = cam.class_activation_maps(features, weights, labels, (8, 6))
  assert big.shape == (2, 8, 6)
  assert float(big[0].min()) == 0.0 and float(big[0].max()) == 1.0
  assert float(big[0, 0, 0]) == 0.0 and float(big[0, -1, -1]) == 1.0
  np.testing.assert_array_equal(big[1], np.zeros((8, 6)))


def test_foreground_mask_thresholds():
  cams = jnp.array([[0.0, 1 / 3], [2 / 3, 1.0]])
  # Mean 1/2, threshold 3/8.
  assert cam.foreground_mask(cams).tolist() == [[False, False], [True, True]]
  assert cam.foreground_mask(cams, threshold=0.3).tolist() == [
      [False, True], [True, True]]


def test_warps_hand_values():
  square = np.arange(9.0).reshape(3, 3)
  image = jnp.stack([square, -square], axis=-1)  # Two channels, alike.

  def warp(matrix):
    return np.asarray(cam.warp_affine(image, matrix))

  for channel, sign in ((0, 1), (1, -1)):
    np.testing.assert_allclose(warp(cam.flip_matrix(3))[..., channel],
                               sign * square[:, ::-1])
    # One pixel right, zeros shifted in.
    np.testing.assert_allclose(
        warp(cam.translation_matrix(1, 0))[..., channel],
        sign * np.array([[0, 0, 1], [0, 3, 4], [0, 6, 7]]))
    # 90 degrees anticlockwise about the centre is numpy's rot90.
    np.testing.assert_allclose(
        warp(cam.rotation_matrix((1.0, 1.0), 90.0, 1.0))[..., channel],
        sign * np.rot90(square), atol=1e-5)


def test_paste_foreground():
  background = jnp.array([[4.0, 3.0, 2.0, 1.0], [8.0, 7.0, 6.0, 5.0]])
  pasted = cam.paste_foreground(IMAGE, MASK, background[..., None])
  np.testing.assert_allclose(pasted[..., 0], FLIP_PASTED)


@functools.cache
def _augmented(num_keys=30):
  """Transforms and CAM images of IMAGE for several keys, jitted once."""

  def augment(key):
    transform = cam.sample_transform(key, 32, 32)
    stays = cam.cam_augment(key, IMAGE, MASK)
    moves = cam.cam_augment(key, IMAGE, MASK, move_foreground=True)
    return transform, stays, moves

  keys = jax.random.split(jax.random.key(0), num_keys)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(augment))(keys))


def test_sample_transform_draws_all_three_within_ranges():
  (choices, matrices), _, _ = _augmented()
  # Each with probability 1/3: 5 sigma of Binomial(30, 1/3) is 12.9.
  assert np.all(np.abs(np.bincount(choices, minlength=3) - 10) < 12.9)
  assert set(choices.tolist()) == {0, 1, 2}
  rotations = matrices[choices == cam.ROTATE_AND_SCALE]
  scales = np.sqrt(np.abs(np.linalg.det(rotations[:, :, :2])))
  assert np.all((scales >= 0.8) & (scales <= 1.2))
  angles = np.degrees(np.arctan2(rotations[:, 0, 1], rotations[:, 0, 0]))
  assert np.all(np.abs(angles) <= 45.0)
  shifts = matrices[choices == cam.TRANSLATE][:, :, 2]
  assert np.all(np.abs(shifts) <= 8) and np.all(shifts == np.round(shifts))
  np.testing.assert_array_equal(matrices[choices == cam.FLIP][0],
                                [[-1, 0, 31], [0, 1, 0]])


def test_cam_augment_keeps_the_foreground_and_pastes_on_the_flip():
  _, (stays, choices), (moves, _) = _augmented()
  assert stays.shape == (30, 2, 4, 1)
  # Every transform: the foreground (column 0) is the image's own.
  np.testing.assert_allclose(stays[:, :, 0], np.broadcast_to(
      np.asarray(IMAGE)[:, 0], (30, 2, 1)))
  flips = choices == cam.FLIP
  assert flips.any()
  for image in stays[flips]:
    np.testing.assert_allclose(image[..., 0], FLIP_PASTED)
  # Moved: the flipped image on the old and new foreground (columns 0, 3),
  # the original elsewhere.
  for image in moves[flips]:
    np.testing.assert_allclose(image[..., 0], [[4, 2, 3, 1], [8, 6, 7, 5]])


def test_cam_image_counts_balance_the_classes():
  counts = np.array([5000, 2997, 50])
  new = cam.cam_image_counts(counts)
  assert new.tolist() == [50, 2053, 5000]
  assert np.all(counts + new == 5050)
