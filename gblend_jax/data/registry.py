"""Names of the data sets' TFDS builders and how to build and prepare them.

Each builder lives in the package, in
``gblend_jax/datasets/<name>/<name>_dataset_builder.py`` (class ``Builder``).

A data directory holds the prepared data sets
(``<data_dir>/<name>/<config>/<version>/``) and, unless ``manual_dir`` says
otherwise, the files a user supplies (``<data_dir>/downloads/manual/``).
"""

import importlib
import os

import tensorflow_datasets as tfds

# Each data set's builder module, imported on first use.
DATASETS = {
    name: f'gblend_jax.datasets.{name}.{name}_dataset_builder'
    for name in (
        'ave',
        'cifar10',
        'cifar100',
        'crema_d',
        'fashion_mnist',
        'imagenet_lt',
        'inaturalist2018',
        'kinetics_sounds',
        'mfeat',
        'synthetic_multimodal',
        'vggsound',
    )
}
DATA_DIR_ENV = 'GBLEND_DATA_DIR'


def default_data_dir() -> str:
  """``$GBLEND_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
  return os.environ.get(DATA_DIR_ENV) or os.path.expanduser(
      '~/tensorflow_datasets'
  )


def get_builder(
    name: str,
    *,
    data_dir: str | None = None,
    builder_config: str | None = None,
    manual_dir: str | None = None,
) -> tfds.core.DatasetBuilder:
  """Returns the array_record TFDS builder of a data set.

  Args:
    name: A key of ``DATASETS``.
    data_dir: Where prepared data sets live; None for ``default_data_dir()``.
    builder_config: Name of a builder config; None for the builder's first.
    manual_dir: Where the user's files are; None for
      ``<data_dir>/downloads/manual``. Kept for ``prepare``.

  Returns:
    The builder, not necessarily prepared.
  """
  if name not in DATASETS:
    raise ValueError(
        f'Unknown data set {name!r}; valid names: {sorted(DATASETS)}.'
    )
  builder_class = importlib.import_module(DATASETS[name]).Builder
  kwargs = {'config': builder_config} if builder_config else {}
  builder = builder_class(
      data_dir=data_dir or default_data_dir(),
      file_format='array_record',
      **kwargs,
  )
  builder.gblend_manual_dir = manual_dir
  return builder


def prepare(
    builder: tfds.core.DatasetBuilder, *, manual_dir: str | None = None
) -> None:
  """Prepares ``builder`` unless it is already prepared.

  Args:
    builder: From ``get_builder``.
    manual_dir: Where the user's files are; None for the one given to
      ``get_builder``, else ``<data_dir>/downloads/manual``.
  """
  if builder.is_prepared():
    return
  manual_dir = manual_dir or getattr(builder, 'gblend_manual_dir', None)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
