"""ImageNet-LT: a long-tailed 1000-class subset of ImageNet, from list files.

ImageNet-LT (Liu et al., "Large-Scale Long-Tailed Recognition in an Open
World", CVPR 2019, https://liuziwei7.github.io/projects/LongTail.html)
samples ImageNet-2012's training images per class from a Pareto
distribution: 115846 ``train`` images, 1280 to 5 a class. Its ``validation``
split (20 a class, 20000) is also drawn from ImageNet's training images, its
``test`` split (50 a class, 50000) is ImageNet's validation set. Three list
files define the splits, one image a line: ``<relative path> <label>``, e.g.
``train/n01440764/n01440764_10026.JPEG 0``; the paths are relative to an
ImageNet folder holding ``train/`` and ``val/`` (the validation images in
class folders, ``val/n01440764/ILSVRC2012_val_00000293.JPEG``; a flat
``val/`` folder also serves).

Features: ``id`` (the relative path, as listed), ``label`` (0 .. 999, as
listed) and ``image`` uint8 [S, S, 3] (configs ``s32`` .. ``s256``, default
``s64``; see ``image_folder``). Named ``imagenet_lt_local``: TFDS ships an
``imagenet_lt`` builder. The registry key is ``imagenet_lt``.
"""

import os

from gblend_jax.datasets.imagenet_lt import image_folder

NUM_CLASSES = 1000
LIST_FILES = {'train': 'ImageNet_LT_train.txt',
              'validation': 'ImageNet_LT_val.txt',
              'test': 'ImageNet_LT_test.txt'}

_LAYOUT = """\
ImageNet-LT reads the manual dir (<data_dir>/downloads/manual unless
data.manual_dir names another) as an ImageNet-2012 folder plus the three
ImageNet-LT list files:

  <manual_dir>/
    ImageNet_LT_train.txt    lines `<relative image path> <label>`, from
    ImageNet_LT_val.txt      https://liuziwei7.github.io/projects/
    ImageNet_LT_test.txt     LongTail.html (or the OLTR repository)
    train/n01440764/n01440764_10026.JPEG ...   ImageNet's training images
    val/n01440764/ILSVRC2012_val_00000293.JPEG ...   its validation images
                             (class folders, or all in val/)

Point data.manual_dir at your ImageNet folder and copy the list files into
it, or link train/ and val/ into the manual dir."""


class Builder(image_folder.ImageListBuilder):
  """ImageNet-LT: the list files' images at the config's size."""

  name = 'imagenet_lt_local'
  NUM_CLASSES = NUM_CLASSES
  HOMEPAGE = 'https://liuziwei7.github.io/projects/LongTail.html'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT

  LIST_FILES = LIST_FILES

  def read_list(self, path: str, root: str) -> list[image_folder.ListedImage]:
    return read_list_file(path, root)


def read_list_file(path: str, root: str) -> list[image_folder.ListedImage]:
  """Reads an ImageNet-LT list file.

  Args:
    path: The list file; lines ``<relative image path> <label>`` (blank
      lines are skipped).
    root: The ImageNet folder the paths are relative to.

  Returns:
    The listed images, in order, with ``id`` the relative path. An image
    not found at its path but in its split's flat folder (``val/<file>``
    for ``val/<wnid>/<file>``) is read from there.

  Raises:
    ValueError: naming the file and line of a malformed line, a label that
      is not an integer in [0, 1000), or a path listed twice.
  """
  images, first_line = [], {}
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      where = f'{path}:{number}'
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2:
        raise ValueError(f'{where}: expected `<relative image path> '
                         f'<label>`, got {line.rstrip()!r}.')
      relative, label_text = fields
      try:
        label = int(label_text)
      except ValueError:
        raise ValueError(f'{where}: label {label_text!r} is not an '
                         'integer.') from None
      image_folder.check_label(label, NUM_CLASSES, where)
      if relative in first_line:
        raise ValueError(f'{where}: {relative} is listed again (first on '
                         f'line {first_line[relative]}).')
      first_line[relative] = number
      images.append(image_folder.ListedImage(
          example_id=relative, path=_resolve(root, relative), label=label,
          where=where))
  return images


def _resolve(root: str, relative: str) -> str:
  """``root/relative``, or its split's flat folder if only that holds it."""
  path = os.path.join(root, relative)
  parts = relative.split('/')
  if len(parts) == 3 and not os.path.isfile(path):
    flat = os.path.join(root, parts[0], parts[2])
    if os.path.isfile(flat):
      return flat
  return path
