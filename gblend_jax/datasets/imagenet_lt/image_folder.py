"""Builders of labelled image files: the files' bytes, or small uint8 squares.

Shared by ImageNet-LT and iNaturalist 2018. The ``full`` config stores each
image file's own bytes (JPEG for both data sets), checked by decoding them
once at build time (a truncated or corrupt file stops the build, naming
it); the input pipeline decodes them and applies the paper's transforms at
full resolution (`gblend_jax.data.streaming`: random-resized-crop 224 and
flip for training, resize 256 and centre crop 224 otherwise), so the
prepared files are the size of the data set's own (about 13 GB for
ImageNet-LT's train split) and are streamed, never held in memory. A new
config, so the version stays: the ``s<side>`` records are unchanged.

The ``s32`` .. ``s256`` configs store small squares instead. Each image is
decoded with
pillow, converted to RGB, resized so that its shorter side is ``S``
(bilinear, the longer side rounded) and cropped to the centred ``S x S``
square, as torchvision's ``Resize(S)`` then ``CenterCrop(S)`` do; the
builder config (``s32`` .. ``s256``) sets ``S``. JPEGs are decoded at the
largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides at least ``S``
(pillow's ``draft``), which makes building several times faster.

Images are decoded by a pool of threads (pillow releases the GIL while
decoding) and written by TFDS's plain ``_generate_examples`` path (no Beam).
"""

import concurrent.futures
import dataclasses
import os
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from gblend_jax.data import streaming

IMAGE_SIZES = (32, 64, 128, 256)
DEFAULT_CONFIG = 's64'
# The ``full`` config: the model's input side S (the train and test crops).
FULL_CROP = 224
# Images decoded per batch of work handed to the thread pool.
_CHUNK = 256


@dataclasses.dataclass(kw_only=True)
class ImageSizeConfig(tfds.core.BuilderConfig):
  """The side ``S`` of the square uint8 images a config stores, or, with
  ``encoded``, of the crops the pipeline cuts from the stored files."""

  image_size: int = 64
  encoded: bool = False


def size_configs() -> list[ImageSizeConfig]:
  """One config per side in ``IMAGE_SIZES``, named ``s<side>``, then
  ``full`` (the files' bytes, cropped to ``FULL_CROP`` when read)."""
  return [
      ImageSizeConfig(
          name=f's{size}', image_size=size,
          description=(f'Shorter side resized to {size}, centre crop '
                       f'{size}x{size}, uint8.'),
      )
      for size in IMAGE_SIZES
  ] + [
      ImageSizeConfig(
          name='full', image_size=FULL_CROP, encoded=True,
          description=(
              "Each image file's own bytes (JPEG), decoded in the input "
              f'pipeline: random-resized-crop {FULL_CROP} + flip for '
              f'training, resize {round(FULL_CROP / 0.875)} + centre crop '
              f'{FULL_CROP} for evaluation.'),
      )
  ]


def resize_and_crop(image: Image.Image, size: int) -> np.ndarray:
  """The centred ``size x size`` crop of ``image`` resized to shorter side.

  Args:
    image: Any pillow image (converted to RGB).
    size: ``S``: the shorter side becomes ``S`` (bilinear; the longer side
      ``round(long · S / short)``), then the centred ``S x S`` square is
      kept (offset ``round((long' - S) / 2)``).

  Returns:
    uint8 ``[S, S, 3]``.
  """
  if size < 1:
    raise ValueError(f'size={size} must be at least 1.')
  image = image.convert('RGB')
  width, height = image.size
  short = min(width, height)
  new_size = (max(size, round(width * size / short)),
              max(size, round(height * size / short)))
  if new_size != image.size:
    image = image.resize(new_size, Image.Resampling.BILINEAR)
  left = round((new_size[0] - size) / 2)
  top = round((new_size[1] - size) / 2)
  image = image.crop((left, top, left + size, top + size))
  return np.asarray(image, dtype=np.uint8)


def read_image(path: str, size: int) -> np.ndarray:
  """Decodes the image file at ``path`` into uint8 ``[size, size, 3]``."""
  with Image.open(path) as image:
    image.draft('RGB', (size, size))  # JPEG only; a no-op for others.
    return resize_and_crop(image, size)


@dataclasses.dataclass(frozen=True)
class ListedImage:
  """One image a list file names.

  Attributes:
    example_id: The example's ``id`` (a relative path or an integer).
    path: The image file.
    label: Its class.
    where: The list file and line (or entry) naming it, for errors.
  """

  example_id: str | int
  path: str
  label: int
  where: str


class ImageListBuilder(tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
  """Images named by list files, at the config's size.

  A subclass sets ``NUM_CLASSES``, ``INTEGER_IDS`` (int64 ids; else text),
  ``HOMEPAGE``, ``MANUAL_DOWNLOAD_INSTRUCTIONS``, ``LIST_FILES`` (split name
  to its list file under the manual directory) and ``LIST_KIND`` (what a
  list file is called in errors), and implements ``read_list(path, root)``:
  a list file's ``ListedImage``s. Features: ``id``, ``label`` and
  ``image`` uint8 [S, S, 3], or, in the ``full`` config, the image file's
  bytes (a string scalar; ``gblend_encoded_images`` tells the pipeline).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = size_configs()
  DEFAULT_BUILDER_CONFIG_NAME = DEFAULT_CONFIG
  NUM_CLASSES = 0
  INTEGER_IDS = False
  HOMEPAGE = ''
  LIST_FILES: dict[str, str] = {}
  LIST_KIND = 'list file'

  def read_list(self, path: str, root: str) -> list[ListedImage]:
    """The images of one list file, in list order."""
    raise NotImplementedError

  def list_images(self, root: str) -> dict[str, list[ListedImage]]:
    """Split name to the images of that split, in list order.

    Raises:
      FileNotFoundError: naming a missing list file or listed image, with
        the expected layout.
    """
    listed = {}
    for split, list_file in self.LIST_FILES.items():
      path = os.path.join(root, list_file)
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{self.name}: {self.LIST_KIND} {path} not found.\n'
            f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
      listed[split] = self.read_list(path, root)
      check_files_exist(listed[split], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return listed

  @property
  def gblend_encoded_images(self) -> dict[str, int]:
    """Encoded image features and the side of their crops (for
    `gblend_jax.data.streaming`)."""
    config = self.builder_config
    return {'image': config.image_size} if config.encoded else {}

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    image = (tfds.features.Tensor(shape=(), dtype=np.object_)
             if self.builder_config.encoded else
             tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': (tfds.features.Scalar(dtype=np.int64)
                   if self.INTEGER_IDS else tfds.features.Text()),
            'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            'image': image,
        }),
        supervised_keys=None,
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      root = os.fspath(dl_manager.manual_dir)
    except AssertionError as error:  # No manual dir, or an empty one.
      raise FileNotFoundError(str(error)) from error
    listed = self.list_images(root)
    for images in listed.values():
      for image in images:
        check_label(image.label, self.NUM_CLASSES, image.where)
    return {split: self._generate_examples(images)
            for split, images in listed.items()}

  def _generate_examples(
      self, images: Sequence[ListedImage]
  ) -> Iterator[tuple[str | int, dict[str, object]]]:
    size = self.builder_config.image_size
    encoded = self.builder_config.encoded

    def decode(image: ListedImage) -> np.ndarray | bytes:
      try:
        if encoded:
          return streaming.read_image_bytes(image.path)
        return read_image(image.path, size)
      except (OSError, ValueError) as error:
        raise ValueError(f'{image.where}: cannot read {image.path}: '
                         f'{error}') from error

    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK]
        for image, pixels in zip(chunk, pool.map(decode, chunk),
                                 strict=True):
          yield image.example_id, {'id': image.example_id,
                                   'label': image.label, 'image': pixels}


def check_label(label: int, num_classes: int, where: str) -> None:
  """Raises a ValueError naming ``where`` if ``label`` is out of range."""
  if not 0 <= label < num_classes:
    raise ValueError(f'{where}: label {label} is not in '
                     f'[0, {num_classes}).')


def check_files_exist(images: Sequence[ListedImage],
                      instructions: str) -> None:
  """Raises a FileNotFoundError naming the first listed file not there.

  Checked before any image is decoded, so that a missing file stops the
  build at once.
  """
  for image in images:
    if not os.path.isfile(image.path):
      raise FileNotFoundError(f'{image.where}: image file {image.path} not '
                              f'found.\n{instructions}')
