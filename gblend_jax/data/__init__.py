"""Data sets (TFDS builders in ``data/``), splits and input pipelines."""

from gblend_jax.data.pipeline import ArraySource
from gblend_jax.data.pipeline import DatasetSplits
from gblend_jax.data.pipeline import IndexSubset
from gblend_jax.data.pipeline import SelectedFeatures
from gblend_jax.data.pipeline import Source
from gblend_jax.data.pipeline import check_examples
from gblend_jax.data.pipeline import default_data_config
from gblend_jax.data.pipeline import eval_batches
from gblend_jax.data.pipeline import gather
from gblend_jax.data.pipeline import load_dataset
from gblend_jax.data.pipeline import mismatch_modalities
from gblend_jax.data.pipeline import standardize
from gblend_jax.data.pipeline import steps_per_epoch
from gblend_jax.data.pipeline import train_iterator
from gblend_jax.data.registry import DATASETS
from gblend_jax.data.registry import default_data_dir
from gblend_jax.data.registry import get_builder
from gblend_jax.data.registry import prepare
from gblend_jax.data.splits import check_disjoint
from gblend_jax.data.splits import stratified_holdout
from gblend_jax.data.streaming import StreamedSource
from gblend_jax.data.streaming import feature_statistics
from gblend_jax.data.streaming import use_streaming

__all__ = [
    'DATASETS',
    'ArraySource',
    'DatasetSplits',
    'IndexSubset',
    'SelectedFeatures',
    'Source',
    'StreamedSource',
    'check_disjoint',
    'check_examples',
    'default_data_config',
    'default_data_dir',
    'eval_batches',
    'feature_statistics',
    'gather',
    'get_builder',
    'load_dataset',
    'mismatch_modalities',
    'standardize',
    'prepare',
    'steps_per_epoch',
    'stratified_holdout',
    'train_iterator',
    'use_streaming',
]
