"""Synthetic multi-modal classification with modalities of set strength.

For each modality ``m`` and class ``c`` a random unit vector ``mean[m][c]``
is drawn; an example of class ``y`` is
``x[m] = signal[m] * mean[m][y] + noise[m] * N(0, I)``. Labels are balanced
(``i % num_classes``, then shuffled). ``id`` is ``0..num_train-1`` in
``train`` and ``num_train..num_train+num_test-1`` in ``test``.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class Modality:
  """One modality: its feature name, dimension, signal and noise scales."""

  name: str
  dim: int
  signal: float
  noise: float = 1.0


@dataclasses.dataclass(kw_only=True)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Sizes, seed and modalities of one synthetic data set."""

  num_classes: int = 4
  num_train: int = 2000
  num_test: int = 500
  seed: int = 0
  modalities: tuple[Modality, ...] = ()


def generate(
    config: SyntheticConfig,
) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
  """Draws both splits of ``config``.

  Args:
    config: What to draw.

  Returns:
    ``{'train': (features, labels), 'test': (features, labels)}`` where
    ``features[m]`` has shape ``[n, dim_m]`` (float32) and ``labels`` shape
    ``[n]`` (int64).
  """
  rng = np.random.default_rng(config.seed)
  means = {}
  for modality in config.modalities:
    vectors = rng.normal(size=(config.num_classes, modality.dim))
    means[modality.name] = vectors / np.linalg.norm(
        vectors, axis=1, keepdims=True
    )
  drawn = {}
  for split, size in (('train', config.num_train), ('test', config.num_test)):
    labels = rng.permutation(np.arange(size) % config.num_classes)
    features = {}
    for modality in config.modalities:
      noise = rng.normal(size=(size, modality.dim))
      features[modality.name] = (
          modality.signal * means[modality.name][labels]
          + modality.noise * noise
      ).astype(np.float32)
    drawn[split] = (features, labels.astype(np.int64))
  return drawn


class Builder(tfds.core.GeneratorBasedBuilder):
  """Gaussian class clusters, one modality per feature."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticConfig(
          name='two_modalities',
          description='A strong and a weak modality, 4 classes.',
          num_classes=4, num_train=2000, num_test=500, seed=0,
          modalities=(Modality('strong', 16, signal=1.0),
                      Modality('weak', 16, signal=0.3)),
      ),
      SyntheticConfig(
          name='tiny',
          description='Tiny, for fast tests: 3 classes, 96 train, 48 test.',
          num_classes=3, num_train=96, num_test=48, seed=0,
          modalities=(Modality('strong', 5, signal=3.5),
                      Modality('weak', 3, signal=0.5)),
      ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    modalities = {
        m.name: tfds.features.Tensor(shape=(m.dim,), dtype=np.float32)
        for m in self.builder_config.modalities
    }
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Scalar(dtype=np.int64),
            'label': tfds.features.ClassLabel(
                num_classes=self.builder_config.num_classes
            ),
            **modalities,
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    drawn = generate(self.builder_config)
    first_id = {'train': 0, 'test': self.builder_config.num_train}
    return {
        split: self._generate_examples(*drawn[split], first_id[split])
        for split in ('train', 'test')
    }

  def _generate_examples(
      self, features: dict[str, np.ndarray], labels: np.ndarray, first_id: int
  ) -> Iterator[tuple[int, dict[str, object]]]:
    for row, label in enumerate(labels):
      example_id = first_id + row
      yield example_id, {
          'id': example_id,
          'label': int(label),
          **{name: values[row] for name, values in features.items()},
      }
