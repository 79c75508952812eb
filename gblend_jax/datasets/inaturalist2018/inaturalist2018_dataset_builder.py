"""iNaturalist 2018: 8142 species, naturally long-tailed, from the json files.

The iNaturalist 2018 competition (Van Horn et al., CVPR 2018,
https://github.com/visipedia/inat_comp/tree/master/2018) has 437513 training
images (1000 to 2 a species) and 24426 validation images (3 a species).
``train2018.json`` and ``val2018.json`` are COCO-style: ``images`` (``id``,
``file_name`` such as ``train_val2018/Plantae/7477/<hash>.jpg``, relative
to the folder the json files sit in), ``annotations`` (``image_id``,
``category_id`` in 0 .. 8141) and ``categories``.

Splits: ``train`` (``train2018.json``) and ``test`` (``val2018.json``): the
competition's test labels were never released, so papers (Zhang et al.,
AAAI 2021, among them) report top-1 accuracy on the validation images; the
split is named ``test`` because that is the split
``gblend_jax.data.pipeline.load_dataset`` evaluates on (it carves its own
held-out split out of ``train``).

Features: ``id`` (the json image id; unique over both files), ``label`` (the
category id) and ``image`` uint8 [S, S, 3] (configs ``s32`` .. ``s256``,
default ``s64``; see ``data.imagenet_lt.image_folder``). The registry key is
``inaturalist2018`` (TFDS's own builder is ``i_naturalist2018``).
"""

import json
import os

from gblend_jax.datasets.imagenet_lt import image_folder

NUM_CLASSES = 8142
JSON_FILES = {'train': 'train2018.json', 'test': 'val2018.json'}

_LAYOUT = """\
iNaturalist 2018 reads, from the manual dir (<data_dir>/downloads/manual
unless data.manual_dir names another), the competition's annotation files
and its image folder, as released
(https://github.com/visipedia/inat_comp/tree/master/2018: train2018.json.tar.gz,
val2018.json.tar.gz, train_val2018.tar.gz, extracted):

  <manual_dir>/
    train2018.json
    val2018.json
    train_val2018/<supercategory>/<category>/<file>.jpg ..."""


class Builder(image_folder.ImageListBuilder):
  """iNaturalist 2018: the json files' images at the config's size."""

  name = 'inaturalist2018'
  NUM_CLASSES = NUM_CLASSES
  INTEGER_IDS = True
  HOMEPAGE = 'https://github.com/visipedia/inat_comp/tree/master/2018'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT

  LIST_FILES = JSON_FILES
  LIST_KIND = 'annotation file'

  def read_list(self, path: str, root: str) -> list[image_folder.ListedImage]:
    return read_annotations(path, root)


def read_annotations(path: str,
                     root: str) -> list[image_folder.ListedImage]:
  """The images of an iNaturalist 2018 json file and their categories.

  Args:
    path: ``train2018.json`` or ``val2018.json``.
    root: The folder the ``file_name``s are relative to.

  Returns:
    The images in the order of ``images``, with ``id`` the image id and
    ``label`` the ``category_id`` of its annotation.

  Raises:
    ValueError: naming the file and entry of a missing key, an image with
      no annotation or more than one, an annotation of an unknown image, a
      repeated image id, or a category id not in [0, 8142).
  """
  with open(path) as f:
    content = json.load(f)
  for key in ('images', 'annotations'):
    if key not in content:
      raise ValueError(f'{path}: no {key!r} list; keys: {sorted(content)}.')
  categories = {}
  for index, annotation in enumerate(content['annotations']):
    where = f'{path}: annotations[{index}]'
    image_id, category = _fields(annotation, ('image_id', 'category_id'),
                                 where)
    if image_id in categories:
      raise ValueError(f'{where}: a second annotation of image {image_id}.')
    image_folder.check_label(category, NUM_CLASSES, where)
    categories[image_id] = category
  images, seen = [], set()
  for index, image in enumerate(content['images']):
    where = f'{path}: images[{index}]'
    image_id, file_name = _fields(image, ('id', 'file_name'), where)
    if image_id in seen:
      raise ValueError(f'{where}: image id {image_id} is repeated.')
    seen.add(image_id)
    if image_id not in categories:
      raise ValueError(f'{where}: no annotation of image {image_id} '
                       f'({file_name}).')
    images.append(image_folder.ListedImage(
        example_id=int(image_id), path=os.path.join(root, file_name),
        label=int(categories[image_id]), where=f'{where} (id {image_id})'))
  unknown = sorted(set(categories) - seen)
  if unknown:
    raise ValueError(f'{path}: annotations of images not in images: '
                     f'{unknown[:10]}.')
  return images


def _fields(entry: dict, keys: tuple[str, ...], where: str) -> list:
  missing = [k for k in keys if k not in entry]
  if missing:
    raise ValueError(f'{where}: no {missing}; keys: {sorted(entry)}.')
  return [entry[k] for k in keys]
