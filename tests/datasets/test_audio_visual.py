"""Tests of the audio and frame preprocessing of the audio-visual builders."""

import os

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
from PIL import Image

from gblend_jax.data import audio_visual as av

BIN_HZ = av.SAMPLE_RATE / av.N_FFT  # 43.07 Hz between STFT bins.


def _tone(frequency, seconds, rate, amplitude=0.5):
  t = np.arange(int(seconds * rate)) / rate
  return amplitude * np.sin(2 * np.pi * frequency * t)


def _write_wav(path, data, rate=16000):
  scipy.io.wavfile.write(str(path), rate, data)
  return str(path)


def test_log_stft_of_3_s_at_22050_hz_is_257_by_188():
  spectrogram = av.log_stft(np.zeros(av.CLIP_SAMPLES, np.float32))
  assert spectrogram.shape == (257, 188) == av.spectrogram_shape(
      av.CLIP_SAMPLES, 'stft')
  assert spectrogram.dtype == np.float32
  np.testing.assert_allclose(spectrogram, np.log(1e-7), rtol=1e-6)


def test_log_stft_frames_are_centred_reflect_padded_hann_windows():
  waveform = np.random.default_rng(0).uniform(-1, 1, 5000)
  spectrogram = av.log_stft(waveform)
  assert spectrogram.shape == (257, 1 + 5000 // 353)
  n = np.arange(512)
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 512)  # Periodic, as librosa's.
  padded = np.pad(waveform, 256, mode='reflect')
  for frame in (0, 7, 14):  # Frame t is centred on sample 353 t.
    expected = np.abs(np.fft.rfft(padded[353 * frame:353 * frame + 512]
                                  * hann))
    np.testing.assert_allclose(spectrogram[:, frame],
                               np.log(expected + 1e-7), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['stft', 'psd'])
def test_a_pure_tone_lands_in_its_frequency_bin(tmp_path, kind):
  # 40 bins of 22050 / 512 Hz: 1722.7 Hz, written at 16 kHz and resampled.
  path = _write_wav(tmp_path / 'tone.wav',
                    _tone(40 * BIN_HZ, 1.0, 16000).astype(np.float32))
  samples = av.CLIP_SAMPLES if kind == 'stft' else av.PSD_SAMPLES
  spectrogram = av.audio_features(path, samples, kind)
  assert spectrogram.shape == av.spectrogram_shape(samples, kind)
  assert np.argmax(spectrogram.mean(axis=1)) == 40
  # All frames but those at the joins of the tiled 1 s clip.
  assert np.mean(np.argmax(spectrogram, axis=0) == 40) > 0.98


def test_psd_is_the_official_standardised_log_spectrogram():
  waveform = np.random.default_rng(1).uniform(-1, 1, av.PSD_SAMPLES)
  spectrogram = av.log_psd(waveform)
  assert spectrogram.shape == (257, 1004)  # The official code's assert.
  _, _, power = scipy.signal.spectrogram(waveform, 22050, nperseg=512,
                                         noverlap=353)
  expected = np.log(power + 1e-7)
  expected = (expected - expected.mean()) / (expected.std() + 1e-9)
  np.testing.assert_allclose(spectrogram, expected, rtol=1e-5, atol=1e-5)
  assert abs(spectrogram.mean()) < 1e-4 and abs(spectrogram.std() - 1) < 1e-4


@pytest.mark.parametrize(
    'dtype, full_scale, offset',
    [(np.int16, 2**15, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128),
     (np.float32, 1.0, 0)],
)
def test_read_wav_scales_any_format_and_averages_stereo(
    tmp_path, dtype, full_scale, offset):
  left = np.array([0.5, -0.25, 0.0, 0.75])
  right = np.array([0.0, -0.25, 0.5, -0.25])
  stereo = np.stack([left, right], axis=1) * full_scale + offset
  path = _write_wav(tmp_path / 'stereo.wav', stereo.astype(dtype), 8000)
  waveform, rate = av.read_wav(path)
  assert rate == 8000 and waveform.dtype == np.float32
  np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-7)


def test_read_wav_rejects_an_empty_file(tmp_path):
  path = _write_wav(tmp_path / 'empty.wav', np.zeros(0, np.int16))
  with pytest.raises(ValueError, match='no samples'):
    av.read_wav(path)


def test_resample_keeps_duration_and_pitch():
  resampled = av.resample(_tone(1000.0, 1.0, 16000), 16000)
  assert resampled.shape == (22050,) and resampled.dtype == np.float32
  spectrum = np.abs(np.fft.rfft(resampled))
  assert np.argmax(spectrum) == 1000  # 1 Hz bins for 1 s.
  same = np.arange(5, dtype=np.float32)
  np.testing.assert_array_equal(av.resample(same, 22050), same)


def test_resample_leaves_nothing_above_the_source_nyquist_frequency():
  noise = np.random.default_rng(3).uniform(-0.5, 0.5, 16000)
  power = np.abs(np.fft.rfft(av.resample(noise, 16000))) ** 2
  frequency = np.fft.rfftfreq(22050, 1 / 22050)
  assert power[frequency > 8000].sum() < 1e-5 * power.sum()
  assert power[frequency < 7000].sum() > 0.9 * power.sum()


def test_tile_and_clip_repeats_short_clips_and_clips_to_one():
  np.testing.assert_array_equal(
      av.tile_and_clip(np.array([0.5, 2.0, -3.0]), 7),
      [0.5, 1.0, -1.0, 0.5, 1.0, -1.0, 0.5])
  # As the official np.tile(x, 3)[:66150] for clips of at least 1 s.
  waveform = np.random.default_rng(2).uniform(-0.9, 0.9, 30000)
  np.testing.assert_array_equal(av.tile_and_clip(waveform, 66150),
                                np.tile(waveform, 3)[:66150])


def test_a_short_clip_still_gives_a_3_s_spectrogram(tmp_path):
  path = _write_wav(tmp_path / 'short.wav',
                    (_tone(440.0, 0.2, 16000) * 2**14).astype(np.int16))
  assert av.audio_features(path).shape == (257, 188)


def test_spectrogram_shape_rejects_unknown_kinds():
  assert av.spectrogram_shape(160000, 'psd') == (257, 1004)
  with pytest.raises(ValueError, match='mel'):
    av.spectrogram_shape(100, 'mel')


@pytest.mark.parametrize(
    'available, wanted, expected',
    [(10, 3, [1, 4, 7]), (10, 1, [5]), (3, 3, [0, 1, 2]), (7, 2, [1, 4]),
     (1, 1, [0]), (2, 3, [0, 0, 1]), (1, 3, [0, 0, 0])],
)
def test_select_frames_takes_the_middle_of_equal_segments(
    available, wanted, expected):
  assert av.select_frames(available, wanted).tolist() == expected


def test_select_frames_needs_frames():
  with pytest.raises(ValueError, match='num_available=0'):
    av.select_frames(0, 3)


def _write_frames(folder, colours, suffix='.jpg', size=(20, 12)):
  os.makedirs(folder, exist_ok=True)
  for index, colour in enumerate(colours, start=1):
    Image.new('RGB', size, colour).save(
        os.path.join(folder, f'frame_{index}{suffix}'))


def test_frame_files_sorts_numbers_naturally_and_skips_other_files(tmp_path):
  _write_frames(tmp_path, [(0, 0, 0)] * 11)
  (tmp_path / 'notes.txt').write_text('not a frame')
  names = av.frame_files(str(tmp_path))
  assert names == [f'frame_{i}.jpg' for i in range(1, 12)]


def test_read_frames_picks_converts_and_resizes(tmp_path):
  colours = [(40 * i, 200 - 30 * i, 100) for i in range(6)]
  _write_frames(tmp_path, colours)
  Image.new('L', (20, 12), 77).save(tmp_path / 'frame_4.jpg')  # Grey.
  frames = av.read_frames(str(tmp_path), num_frames=3, image_size=16)
  assert frames.shape == (3, 16, 16, 3) and frames.dtype == np.uint8
  expected = [colours[1], (77, 77, 77), colours[5]]  # Positions 1, 3, 5.
  np.testing.assert_allclose(frames.reshape(3, -1, 3).mean(axis=1), expected,
                             atol=3)


def test_read_frames_of_an_empty_folder_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='No frames'):
    av.read_frames(str(tmp_path), 1, 8)


def test_standard_configs_shapes():
  official, small = av.standard_configs(
      num_frames=3, num_samples=av.PSD_SAMPLES, spectrogram='psd',
      small_frames=2)
  assert (official.name, small.name) == ('official', 'small')
  assert official.audio_shape == (257, 1004)
  assert official.visual_shape == (3, 224, 224, 3)
  assert small.audio_shape == (257, 188)
  assert small.visual_shape == (2, 64, 64, 3)
  assert '[257, 1004]' in official.description
