"""Tiny fake copies of CIFAR, ImageNet-LT and iNaturalist 2018 in their layouts.

* CIFAR: a ``cifar-*-python.tar.gz`` of pickled batches (bytes keys, as
  Python 2 wrote them) whose pixel ``(y, x, c)`` of image ``i`` is
  ``(7 i + 3 y + 5 x + 11 c + offset) % 256`` and whose label is
  ``i % num_classes``; every stored value is thus traceable to its row and
  channel.
* ImageNet-LT and iNaturalist: small JPEGs of one colour per class
  (``CLASS_COLOURS``), non-square, under the release's folder names, with
  the list files or json files that name them.
"""

import io
import json
import os
import pickle
import tarfile

import numpy as np
from PIL import Image

from gblend_jax.datasets.cifar10 import cifar10_dataset_builder as cifar10
from gblend_jax.datasets.cifar100 import cifar100_dataset_builder as cifar100

# A colour per fake class, far apart so that JPEG noise never confuses them.
CLASS_COLOURS = ((220, 30, 30), (30, 200, 40), (40, 50, 210))
# Fake ImageNet-LT (class, wnid) folders, and images per class per split.
WNIDS = ('n01440764', 'n01443537', 'n01484850')
IMAGENET_LT_COUNTS = {'train': (4, 2, 1), 'val': (1, 1, 1),
                      'test': (2, 2, 2)}
# Fake iNaturalist categories: (id, supercategory, name).
INAT_CATEGORIES = ((0, 'Plantae', 'Acer rubrum'),
                   (1, 'Aves', 'Pica pica'),
                   (2, 'Insecta', 'Apis mellifera'))
INAT_COUNTS = {'train': (3, 2, 1), 'val': (1, 1, 2)}


def cifar_images(num_images: int, offset: int) -> np.ndarray:
  """uint8 ``[n, 32, 32, 3]`` with ``(7 i + 3 y + 5 x + 11 c + offset)``."""
  i, y, x, c = np.meshgrid(np.arange(num_images), np.arange(32),
                           np.arange(32), np.arange(3), indexing='ij')
  return ((7 * i + 3 * y + 5 * x + 11 * c + offset) % 256).astype(np.uint8)


def _add_pickle(archive: tarfile.TarFile, member: str, content: dict) -> None:
  data = pickle.dumps(content, protocol=2)
  info = tarfile.TarInfo(member)
  info.size = len(data)
  archive.addfile(info, io.BytesIO(data))


def write_fake_cifar(
    folder, dataset: str = 'cifar10', train_per_batch: int = 10,
    num_test: int = 10,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes a fake ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``.

  Args:
    folder: Where the archive goes (the manual dir).
    dataset: ``'cifar10'`` (five train batches of ``train_per_batch``
      images) or ``'cifar100'`` (one ``train`` member of
      ``5 * train_per_batch``).
    train_per_batch: Images per CIFAR-10 train batch.
    num_test: Test images.

  Returns:
    ``{'train': (images, labels), 'test': (images, labels)}``, the train
    images in id order.
  """
  builder = {'cifar10': cifar10.Builder, 'cifar100': cifar100.Builder}[dataset]
  num_classes = len(builder.CLASS_NAMES)
  num_train = 5 * train_per_batch
  written = {
      split: (images, np.arange(len(images)) % num_classes)
      for split, images in (('train', cifar_images(num_train, 0)),
                            ('test', cifar_images(num_test, 100)))
  }
  os.makedirs(folder, exist_ok=True)
  with tarfile.open(os.path.join(folder, builder.ARCHIVE), 'w:gz') as archive:
    for split, members in builder.SPLIT_MEMBERS.items():
      images, labels = written[split]
      rows = np.array_split(np.arange(len(images)), len(members))
      for member, part in zip(members, rows, strict=True):
        content = {
            b'data': images[part].transpose(0, 3, 1, 2).reshape(-1, 3072),
            builder.LABEL_KEY.encode(): labels[part].tolist(),
            b'filenames': [f'{member}_{r}.png'.encode() for r in part],
        }
        if dataset == 'cifar100':
          content[b'coarse_labels'] = (labels[part] // 5).tolist()
        _add_pickle(archive, member, content)
    _add_pickle(archive, builder.META_MEMBER, {
        builder.META_KEY.encode(): [n.encode() for n in builder.CLASS_NAMES]})
  return written


def write_jpeg(path, colour: tuple[int, int, int],
               size: tuple[int, int] = (24, 16)) -> None:
  """A JPEG of one ``colour``, ``size`` = (width, height)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new('RGB', size, colour).save(path, quality=95)


def write_fake_imagenet_lt(root) -> dict[str, list[tuple[str, int]]]:
  """Writes list files and JPEGs of a 3-class ImageNet-LT into ``root``.

  Train and validation images lie under ``train/<wnid>/`` (they come from
  ImageNet's train set), test images under ``val/<wnid>/``.

  Returns:
    Split name (``train``, ``val``, ``test``) to the listed
    ``(relative path, label)`` pairs, in list order.
  """
  listed = {}
  for split, counts in IMAGENET_LT_COUNTS.items():
    lines = []
    for label, (wnid, count) in enumerate(zip(WNIDS, counts, strict=True)):
      for k in range(count):
        if split == 'test':
          path = f'val/{wnid}/ILSVRC2012_val_{label:05d}{k:03d}.JPEG'
        else:
          number = 100 * k + (50 if split == 'val' else 0)
          path = f'train/{wnid}/{wnid}_{number}.JPEG'
        write_jpeg(os.path.join(root, path), CLASS_COLOURS[label])
        lines.append((path, label))
    with open(os.path.join(root, f'ImageNet_LT_{split}.txt'), 'w') as f:
      f.writelines(f'{path} {label}\n' for path, label in lines)
    listed[split] = lines
  return listed


def write_fake_inaturalist(root) -> dict[str, list[tuple[int, str, int]]]:
  """Writes ``train2018.json``, ``val2018.json`` and JPEGs into ``root``.

  Image ids run on from train into val (unique over both, as released).
  Images are (18, 30) pixels (portrait).

  Returns:
    Split (``train``, ``val``) to ``(image id, file name, category id)``,
    in json order.
  """
  categories = [{'id': c, 'supercategory': s, 'name': n, 'kingdom': s}
                for c, s, n in INAT_CATEGORIES]
  listed, image_id = {}, 0
  for split, counts in INAT_COUNTS.items():
    images, annotations, rows = [], [], []
    for (category, supercategory, _), count in zip(INAT_CATEGORIES, counts,
                                                   strict=True):
      for _ in range(count):
        name = (f'train_val2018/{supercategory}/{category}/'
                f'{image_id:04x}.jpg')
        write_jpeg(os.path.join(root, name), CLASS_COLOURS[category],
                   size=(18, 30))
        images.append({'id': image_id, 'file_name': name, 'width': 18,
                       'height': 30, 'license': 0, 'rights_holder': 'x'})
        annotations.append({'id': image_id, 'image_id': image_id,
                            'category_id': category})
        rows.append((image_id, name, category))
        image_id += 1
    with open(os.path.join(root, f'{split}2018.json'), 'w') as f:
      json.dump({'images': images, 'annotations': annotations,
                 'categories': categories, 'info': {}, 'licenses': []}, f)
    listed[split] = rows
  return listed
