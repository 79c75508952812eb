"""Tests of the synthetic multi-modal TFDS builder."""

import dataclasses

import numpy as np
import pytest

from gblend_jax.data import registry
from gblend_jax.datasets.synthetic_multimodal import (
  synthetic_multimodal_dataset_builder as sm,
)


def _read(builder, split):
  source = builder.as_data_source(split=split)
  examples = sorted((source[i] for i in range(len(source))),
                    key=lambda e: e['id'])
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  builder = registry.get_builder(
      'synthetic_multimodal', builder_config='tiny',
      data_dir=str(tmp_path_factory.mktemp('tfds')),
  )
  registry.prepare(builder)
  return builder


def test_tiny_sizes_shapes_ids_and_class_balance(tiny):
  train, test = _read(tiny, 'train'), _read(tiny, 'test')
  assert train['strong'].shape == (96, 5) and train['weak'].shape == (96, 3)
  assert test['strong'].shape == (48, 5) and test['weak'].shape == (48, 3)
  assert train['strong'].dtype == np.float32
  np.testing.assert_array_equal(np.bincount(train['label']), [32, 32, 32])
  np.testing.assert_array_equal(np.bincount(test['label']), [16, 16, 16])
  np.testing.assert_array_equal(train['id'], np.arange(96))
  np.testing.assert_array_equal(test['id'], np.arange(96, 144))
  assert tiny.info.features['label'].num_classes == 3


def test_tiny_holds_what_generate_draws(tiny):
  drawn = sm.generate(tiny.builder_config)
  for split in ('train', 'test'):
    stored = _read(tiny, split)
    features, labels = drawn[split]
    np.testing.assert_array_equal(stored['label'], labels)
    for name in ('strong', 'weak'):
      np.testing.assert_array_equal(stored[name], features[name])


def _config(signal, noise):
  return sm.SyntheticConfig(
      name='hand', num_classes=3, num_train=30, num_test=6, seed=5,
      modalities=(sm.Modality('a', 4, signal=signal, noise=noise),),
  )


def test_generation_formula_by_hand():
  # Without noise, x = signal * mean[y]: norm `signal`, one point per class.
  features, labels = sm.generate(_config(2.0, 0.0))['train']
  x = features['a']
  np.testing.assert_allclose(np.linalg.norm(x, axis=1), 2.0, rtol=1e-6)
  means = np.stack([x[labels == c][0] for c in range(3)]) / 2.0
  np.testing.assert_allclose(x, 2.0 * means[labels], rtol=1e-6)
  assert len(np.unique(means.round(5), axis=0)) == 3
  # The noise term is noise * z with the same z: linear in `noise`.
  x1 = sm.generate(_config(2.0, 1.0))['train'][0]['a']
  x3 = sm.generate(_config(2.0, 3.0))['train'][0]['a']
  np.testing.assert_allclose(x3 - x, 3.0 * (x1 - x), atol=1e-5)
  assert 0.6 < np.std(x1 - x) < 1.4


def test_configs_are_as_documented():
  configs = {c.name: c for c in sm.Builder.BUILDER_CONFIGS}
  two = configs['two_modalities']
  assert (two.num_classes, two.num_train, two.num_test) == (4, 2000, 500)
  assert [dataclasses.astuple(m) for m in two.modalities] == [
      ('strong', 16, 1.0, 1.0), ('weak', 16, 0.3, 1.0)]
  tiny = configs['tiny']
  assert (tiny.num_classes, tiny.num_train, tiny.num_test) == (3, 96, 48)
  assert [dataclasses.astuple(m) for m in tiny.modalities] == [
      ('strong', 5, 3.5, 1.0), ('weak', 3, 0.5, 1.0)]
