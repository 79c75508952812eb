"""The VGGSound builder on a tiny copy in OGM-GE's layout, and its errors.

The copy (`av_fakes.write_vggsound_copy`): the official headerless CSV,
``S-audios/S-set/<clip>.wav`` and
``S-videos/S-set-img/Image-01-FPS/<clip>.mp4/<frame>.jpg`` for S in train,
test. Clip ``i`` holds a tone in STFT bin ``10 + 3 i`` and frames of red
level ``25 i``, green level ``20 k`` for frame k.
"""

import os

import numpy as np
import pytest
import scipy.io.wavfile
import tensorflow_datasets as tfds

from experiments import runs
from gblend_jax import data
from gblend_jax.data import audio_visual as av
from gblend_jax.data import streaming
from gblend_jax.datasets.vggsound import vggsound_dataset_builder as vggsound
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils
from tests.datasets import av_fakes

ROWS = av_fakes.VGGSOUND_ROWS
_AV_OGM = os.path.join(train_utils.REPO, 'experiments', 'configs',
                       'av_ogm.py')
# First appearance in the train rows (OGM-GE's class_dict).
CLASSES = ['waterfall burbling', 'playing tennis', 'bird chirping, tweeting']


def _builder(tmp_path, config='small'):
  return vggsound.Builder(data_dir=str(tmp_path / 'tfds'),
                          file_format='array_record', config=config)


def _build(tmp_path, config='small'):
  builder = _builder(tmp_path, config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / 'manual')))
  return builder


def _root(tmp_path):
  return tmp_path / 'manual' / 'VGGSound'


def _read(tmp_path, config='small'):
  sources = tfds.data_source(f'vggsound/{config}',
                             data_dir=str(tmp_path / 'tfds'))
  return {split: {s[i]['id'].decode(): s[i] for i in range(len(s))}
          for split, s in sources.items()}


def test_every_clip_is_stored_with_its_label_sound_and_frames(tmp_path):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  builder = _build(tmp_path)
  names = builder.info.features['label'].names
  assert len(names) == 309 and names[:3] == CLASSES
  # The names survive in the prepared copy.
  assert _builder(tmp_path).info.features['label'].names[:3] == CLASSES
  read = _read(tmp_path)
  assert {split: sorted(r) for split, r in read.items()} == {
      'train': ['--0PQM4-hqg_30', '--56QUhyDQM_185', '-0BIyqJj9ZU_30',
                '-0jeONf82dE_21'],
      'test': ['---g-f_I2yQ_1', '-1D8_aLlV-A_0']}
  picked = av.select_frames(10, 3)
  assert picked.tolist() == [1, 4, 7]
  for index, (youtube_id, start, name, split) in enumerate(ROWS):
    example = read[split][f'{youtube_id}_{start}']
    assert example['label'] == CLASSES.index(name)
    assert example['audio'].shape == (129, 626)
    assert example['audio'].dtype == np.float32
    assert np.argmax(example['audio'].mean(axis=1)) == 10 + 3 * index
    visual = example['visual']
    assert visual.shape == (3, 64, 64, 3) and visual.dtype == np.uint8
    means = visual.reshape(3, -1, 3).mean(axis=1)
    np.testing.assert_allclose(means[:, 0], 25 * index, atol=3)
    np.testing.assert_allclose(means[:, 1], 20 * picked, atol=3)


def test_official_config_stores_frame_bytes_and_float16(tmp_path):
  # Read as training reads it, each frame is the old uint8 frame exactly
  # and the spectrogram the float32 one to float16 rounding.
  av_fakes.write_vggsound_copy(_root(tmp_path))
  builder = _build(tmp_path, 'official')
  assert str(builder.version) == '2.0.0'
  assert builder.info.features['audio'].shape == (129, 626)
  assert builder.info.features['audio'].np_dtype == np.float16
  assert builder.info.features['visual'].shape == (3,)  # The files' bytes.
  spec = builder.gblend_encoded_images['visual']
  assert spec.shape == (3, 224, 224, 3)
  example = _read(tmp_path, 'official')['test']['---g-f_I2yQ_1']
  assert example['label'] == CLASSES.index('playing tennis')
  source = streaming.open_split(
      builder, 'test', name='vggsound', num_classes=309,
      modalities={'audio': (129, 626), 'visual': spec.shape})
  batch = source.take(np.arange(len(source)))
  for k, clip_id in enumerate(batch['id'].astype(str)):
    row = next(r for r in ROWS if f'{r[0]}_{r[1]}' == clip_id)
    audio_path, frames_dir = av_fakes.vggsound_paths(_root(tmp_path), row)
    np.testing.assert_allclose(batch['audio'][k],
                               vggsound.audio_features(audio_path),
                               rtol=2.0**-11, atol=2.0**-25)
    np.testing.assert_array_equal(batch['visual'][k],
                                  av.read_frames(frames_dir, 3, 224))


def test_audio_is_the_middle_5_s_of_the_clip_at_16_khz(tmp_path):
  # 10 s: bin 20 in [0, 2.5) s, bin 40 in [2.5, 7.5) s, bin 60 after.
  rate = 16000
  time = np.arange(10 * rate) / rate
  bins = np.where(time < 2.5, 20, np.where(time < 7.5, 40, 60))
  noise = 0.05 * np.random.default_rng(0).standard_normal(time.size)
  wave = (0.5 * np.sin(2 * np.pi * bins * rate / 256 * time)
          + noise).astype(np.float32)  # Noise: every bin well above 1e-7.
  path = str(tmp_path / 'clip.wav')
  scipy.io.wavfile.write(path, rate, wave)
  spectrogram = vggsound.audio_features(path)
  assert spectrogram.shape == (129, 1 + 80000 // 128)
  # Frames away from the window's edges see bin 40 only.
  assert (np.argmax(spectrogram[:, 2:-2], axis=0) == 40).all()
  # Frame 100, by hand: centred on sample 100 * 128 of the window
  # (2.5 s + 0.8 s into the clip), periodic Hann window of 256.
  window = wave[40000:120000].astype(np.float64)
  start = 100 * 128 - 128
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)
  expected = np.log(np.abs(np.fft.rfft(window[start:start + 256] * hann))
                    + 1e-7)
  np.testing.assert_allclose(spectrogram[:, 100], expected, atol=1e-4)


def test_a_short_clip_is_repeated_before_the_window(tmp_path):
  path = str(tmp_path / 'clip.wav')
  wave = np.linspace(-0.5, 0.5, 3000, dtype=np.float32)  # 0.1875 s.
  scipy.io.wavfile.write(path, 16000, wave)
  # OGM-GE doubles it to 192000 samples, then reads [40000, 120000).
  official = np.tile(wave, 64)[40000:120000]
  np.testing.assert_allclose(
      vggsound.audio_features(path),
      av.log_stft(official, n_fft=256, hop_length=128), atol=1e-6)


def test_zero_padded_file_names_are_read(tmp_path):
  av_fakes.write_vggsound_copy(_root(tmp_path), padded=True)
  _build(tmp_path)
  ids = [clip_id for split in _read(tmp_path).values() for clip_id in split]
  assert sorted(ids) == sorted(f'{r[0]}_{r[1]}' for r in ROWS)


def test_the_manual_dir_itself_can_hold_the_copy(tmp_path):
  av_fakes.write_vggsound_copy(tmp_path / 'manual')
  assert _build(tmp_path).info.splits['test'].num_examples == 2


def _remove_tree(path):
  for name in os.listdir(path):
    os.remove(os.path.join(path, name))
  os.rmdir(path)


def _expect_error(tmp_path, error, message):
  with pytest.raises(error) as raised:
    _build(tmp_path)
  assert message in str(raised.value), str(raised.value)
  assert not _builder(tmp_path).is_prepared()  # Nothing bad is prepared.


def test_a_listed_clip_without_its_wav_file_is_named(tmp_path):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  audio_path, _ = av_fakes.vggsound_paths(_root(tmp_path), ROWS[4])
  os.remove(audio_path)
  _expect_error(tmp_path, FileNotFoundError,
                f'1 clips listed in vggsound.csv are not on disk, e.g. '
                f'{audio_path}')


def test_a_listed_clip_without_its_frames_is_named(tmp_path):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  _, frames_dir = av_fakes.vggsound_paths(_root(tmp_path), ROWS[1])
  _remove_tree(frames_dir)
  _expect_error(tmp_path, FileNotFoundError, f'e.g. {frames_dir}')


def test_a_missing_frame_is_named(tmp_path):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  _, frames_dir = av_fakes.vggsound_paths(_root(tmp_path), ROWS[2])
  for name in av_fakes.VGGSOUND_FRAMES[2:]:
    os.remove(os.path.join(frames_dir, name))
  _expect_error(tmp_path, FileNotFoundError,
                f'fewer than 3 frames: {frames_dir} (2)')


def _truncate(path, keep):
  with open(path, 'rb') as file:
    data = file.read()
  with open(path, 'wb') as file:
    file.write(data[:keep])


@pytest.mark.parametrize('keep, message', [
    (5000, 'truncated wav file'),  # Of 16044 bytes; the header says 16000.
    (30, 'not a readable wav file'),  # Inside the header.
])
def test_a_truncated_wav_file_is_named(tmp_path, keep, message):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  audio_path, _ = av_fakes.vggsound_paths(_root(tmp_path), ROWS[3])
  _truncate(audio_path, keep)
  _expect_error(tmp_path, ValueError, f'{audio_path}: {message}')


def test_a_truncated_frame_is_named(tmp_path):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  _, frames_dir = av_fakes.vggsound_paths(_root(tmp_path), ROWS[5])
  frame = os.path.join(frames_dir, av_fakes.VGGSOUND_FRAMES[4])  # Read.
  _truncate(frame, 100)
  _expect_error(tmp_path, ValueError, f'{frame}: unreadable frame')


@pytest.mark.parametrize('line, message', [
    ('abcdefghijk,3,playing tennis,val',
     "vggsound.csv:7: split 'val' must be one of ('train', 'test')"),
    ('abcdefghijk,3.5,playing tennis,test',
     "vggsound.csv:7: start_seconds '3.5' must be a whole number"),
    ('abcdefghijk,3,playing tennis',
     'vggsound.csv:7: expected 4 fields'),
    ('abcdefghijk,3,dog barking,test',
     "vggsound.csv:7: class 'dog barking' has no train clip"),
])
def test_a_bad_csv_line_is_named_with_its_line(tmp_path, line, message):
  av_fakes.write_vggsound_copy(_root(tmp_path))
  with open(_root(tmp_path) / 'vggsound.csv', 'a') as file:
    file.write(line + '\n')
  _expect_error(tmp_path, ValueError, message)


def test_a_missing_csv_is_named_with_the_layout(tmp_path):
  (tmp_path / 'manual' / 'VGGSound').mkdir(parents=True)
  (tmp_path / 'manual' / 'VGGSound' / 'other.txt').write_text('')
  _expect_error(tmp_path, FileNotFoundError,
                f'the clip list not found: {_root(tmp_path)}/vggsound.csv')


@pytest.mark.slow
def test_ogm_ge_trains_on_the_copy_with_the_official_config(tmp_path):
  rows = [(f'clip{i:07d}', str(i), CLASSES[i % 3], 'train')
          for i in range(12)]
  rows += [(f'test{i:07d}', '0', CLASSES[i], 'test') for i in range(3)]
  av_fakes.write_vggsound_copy(_root(tmp_path), rows)
  config = runs.load_config(_AV_OGM, 'dataset=vggsound,runlocal')
  assert config.modulation.alpha == 0.1  # OGM-GE's VGGSound α.
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.manual_dir = str(tmp_path / 'manual')
  av_fakes.with_small_encoders(config)
  config.data.batch_size = 4
  config.data.eval_batch_size = 8
  config.num_train_steps = 3
  config.log_every_steps = 1
  config.modulation.end_epoch = 10.0  # Modulate every step.
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['step'] == 3
  final = results['final']
  assert np.isfinite(final['test/fused/loss'])
  # 309 outputs: a loss near log(309) after 3 steps of lr 1e-3.
  assert abs(final['test/fused/loss'] - np.log(309)) < 1.0
  rows = [r for r in metric_writer.read_metrics(str(tmp_path / 'run'))
          if 'ogm/ratio/audio' in r]
  assert len(rows) == 3
  for row in rows:  # k_m = 1 - tanh(0.1 rho_m) where rho_m > 1, else 1.
    for m in ('audio', 'visual'):
      rho = row[f'ogm/ratio/{m}']
      expected = 1 - np.tanh(0.1 * rho) if rho > 1 else 1.0
      assert row[f'ogm/coefficient/{m}'] == pytest.approx(expected, abs=1e-6)


def test_the_config_has_ogm_ges_vggsound_settings(tmp_path):
  config = runs.load_config(_AV_OGM, 'dataset=vggsound')
  train.check_config(config)
  assert (config.data.name, config.data.builder_config) == (
      'vggsound', 'official')
  assert config.modulation.method == 'ogm_ge'
  assert config.modulation.alpha == 0.1
  assert (config.modulation.start_epoch, config.modulation.end_epoch) == (
      0.0, 51.0)  # Epochs 0..50 inclusive.
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.optimizer.momentum, config.optimizer.weight_decay) == (
              'sgd', 1e-3, 0.9, 1e-4)
  assert tuple(config.optimizer.boundaries_epochs) == (70,)
  assert (config.num_epochs, config.data.batch_size) == (100, 64)
  assert runs.load_config(
      _AV_OGM, 'dataset=vggsound,alpha=0.3').modulation.alpha == 0.3
  assert runs.load_config(_AV_OGM, 'dataset=crema_d').modulation.alpha == 0.8
  builder = data.get_builder('vggsound', data_dir=str(tmp_path),
                             builder_config='official')
  features = builder.info.features  # Nothing prepared.
  assert features['label'].num_classes == 309
  assert features['audio'].shape == (129, 626)
  assert features['visual'].shape == (3,)  # Frame files' bytes.
