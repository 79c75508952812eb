"""End to end: the streaming path trains as the in-memory path does, and
its peak memory does not grow with the data set."""

import json
import os
import re

import pytest

from experiments import bench_input
from experiments import runs
from gblend_jax import data
from gblend_jax.data import pipeline
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

TIMING = ('train_step/steps_per_second',)


def _rows(workdir):
  return [{k: v for k, v in row.items() if k not in TIMING}
          for row in metric_writer.read_metrics(workdir)]


@pytest.mark.parametrize('key, value', [
    ('data.streaming', 'yes'), ('data.workers', -3),
    ('data.in_memory_limit_mb', float('nan'))])
def test_bad_streaming_values_stop_before_training(data_dir, key, value):
  config = train_utils.tiny_synthetic_config(data_dir, steps=1)
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=re.escape(f'{key}=')):
    train.check_config(config)


@pytest.mark.slow
def test_same_config_trains_the_same_both_ways(data_dir, tmp_path):
  runs = {}
  for mode, workers in (('never', 0), ('always', 1)):
    config = train_utils.tiny_synthetic_config(data_dir, steps=12)
    # Every data stage that the streamed path does on indices.
    config.data.standardize = True
    config.data.mismatched_modalities = {'weak': 0.3}
    config.data.train_examples_per_class = 25
    config.data.streaming = mode
    config.data.workers = workers  # One grain worker process.
    workdir = str(tmp_path / mode)
    results = train.train_and_evaluate(config, workdir)
    runs[mode] = (results, _rows(workdir))
  (memory, memory_rows), (streamed, streamed_rows) = runs.values()
  assert len(memory_rows) == 9  # 6 progress lines, 3 evaluations.
  assert streamed_rows == memory_rows
  for key in memory:
    if key != 'train_seconds':
      assert json.dumps(streamed[key]) == json.dumps(memory[key]), key


@pytest.mark.slow
def test_a_run_resumes_on_the_other_path(data_dir, tmp_path, monkeypatch):
  config = train_utils.tiny_synthetic_config(data_dir, steps=12)
  config.data.standardize = True
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  workdir = str(tmp_path / 'switched')
  with monkeypatch.context() as patch:
    patch.setattr(train, '_StopRequest', train_utils.stop_request_at(6))
    assert train.train_and_evaluate(config, workdir) == {
        'interrupted_at_step': 6}
  # In memory until step 6, then streamed by a grain worker: a neutral
  # change, the same run.
  config.data.streaming = 'always'
  config.data.workers = 1
  resumed = train.train_and_evaluate(config, workdir)
  assert _rows(workdir) == _rows(str(tmp_path / 'straight'))
  assert resumed['final'] == straight['final']


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_data_set(tmp_path):
  # N = 200 and 5N = 1000 fake ImageNet-LT images in the builder's layout,
  # config full (JPEG bytes), 2 steps of imagenet_lt.py:size=full,runlocal.
  peaks = {n: bench_input.peak_rss_mb(str(tmp_path / str(n)), n, steps=2)
           for n in (50, 250)}
  extra_mb = 4 * 200 * bench_input.FLOAT32_EXAMPLE_MB  # 459 MB.
  assert peaks[250] - peaks[50] < 0.1 * extra_mb, peaks
  run = os.path.join(str(tmp_path / '250'), 'run')
  rows = metric_writer.read_metrics(run)
  assert rows[-1]['step'] == 2 and 'test/fused/accuracy' in rows[-1]


@pytest.mark.slow
def test_av_ogm_trains_on_the_compact_crema_d_records(tmp_path):
  # The official config's records (frame JPEG bytes, float16 spectrogram)
  # on the fake CREMA-D copy: streamed (data.streaming='auto'), the frames
  # decoded with the train transform in a grain worker process, evaluated.
  config = runs.load_config(os.path.join(train_utils.REPO, 'experiments',
                                         'configs', 'av_ogm.py'),
                            'dataset=crema_d,runlocal')
  av_fakes.on_crema_d_copy(config, tmp_path)
  # The subject is the records' path, not the encoders: the small pair.
  av_fakes.with_small_encoders(config)
  config.data.builder_config = 'official'
  config.data.augmentation = 'random_resized_crop_flip'
  config.data.augment_modalities = ('visual',)
  config.data.workers = 1
  config.num_train_steps = 2
  config.log_every_steps = 1
  splits = data.load_dataset(config.data)
  assert config.data.streaming == 'auto'
  assert pipeline.streamed_source(splits.train) is not None
  assert splits.modalities == {'audio': (257, 188),
                               'visual': (1, 224, 224, 3)}
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['step'] == 2
  final = results['final']
  for key in ('test/fused/accuracy', 'test/unimodal_audio/accuracy',
              'test/unimodal_visual/accuracy'):
    assert 0.0 <= final[key] <= 1.0, key
  # 6 test clips, 6 classes: accuracy is a multiple of 1/6.
  assert final['test/fused/accuracy'] * 6 == pytest.approx(
      round(final['test/fused/accuracy'] * 6))
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'train_step/loss' in r]
  assert len(rows) == 2 and all(abs(r['train_step/loss']) < 1e3
                                for r in rows)


def test_an_av_only_bench_run_keeps_the_imagenet_part(tmp_path):
  path = tmp_path / 'input.md'
  imagenet = ('## Streaming input (ImageNet-shaped JPEGs)\n\n| 72 |\n\n'
              'Command: `python -m experiments.bench_input`  \n')
  path.write_text(imagenet + '\n' + bench_input.AV_TITLE + '\n\n| 40 |\n')
  assert bench_input._kept_parts(str(path), ('av',)) == imagenet + '\n'
  assert bench_input._kept_parts(str(path), bench_input.PARTS) == ''
  assert bench_input._kept_parts(str(tmp_path / 'new.md'), ('av',)) == ''
  with pytest.raises(ValueError, match=re.escape("Unknown parts ['video']")):
    bench_input.input_section(parts=('video',))
