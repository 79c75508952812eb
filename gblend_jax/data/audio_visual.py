"""Audio-visual clips as OGM-GE's official code reads them, and a TFDS base.

OGM-GE (Peng et al., CVPR 2022; github.com/GeWu-Lab/OGM-GE_CVPR2022) trains
on clips stored as a wav file plus a folder of JPEG frames sampled at 1 fps.
This module turns such a clip into fixed-shape arrays and holds what the
CREMA-D, Kinetics-Sounds and AVE builders in ``data/`` share.

Audio (``audio_features``): read the wav (any PCM or float format, mono or
stereo, averaged to mono, in [-1, 1]), resample to ``SAMPLE_RATE`` = 22050 Hz
(``librosa.load``'s default in the official code), tile to ``num_samples``,
clip to [-1, 1], then one of two log spectrograms:

- ``'stft'``, from ``dataset/CramedDataset.py`` (CREMA-D):
  ``np.tile(samples, 3)[:22050 * 3]``, ``librosa.stft(n_fft=512,
  hop_length=353)`` (Hann window, centred, reflect padding), then
  ``log(|S| + 1e-7)``: float32 ``[257, 1 + num_samples // 353]``, which is
  ``[257, 188]`` for 3 s.
- ``'psd'``, from ``pre-processing/obtain_audio_spectrogram.py``, which made
  the spectrogram pickles that ``dataset/dataset.py`` reads for AVE and
  Kinetics-Sounds: ``np.tile(samples, 10)[:160000]``,
  ``scipy.signal.spectrogram(nperseg=512, noverlap=353)`` (Tukey window,
  power spectral density), ``log(S + 1e-7)``, standardised by the clip's
  own mean and std (+1e-9): float32 ``[257, 1004]`` for 160000 samples.

Frames (``read_frames``): ``num_frames`` of a clip's frames, chosen by
``select_frames``, each converted to RGB and resized to a square: uint8
``[num_frames, image_size, image_size, 3]``. Random crops, flips and the
ImageNet normalisation of the official code belong to the input pipeline.

What a config stores (``AudioVisualConfig.compact``): the ``small``
configs store the arrays above (float32 spectrogram, uint8 frames); the
``official`` configs (version 2.0.0) store what the files hold: each
picked frame file's own bytes (``read_frame_bytes``: JPEG, checked by one
decode at build time) and the spectrogram as float16. The input pipeline
decodes the frames in its reading workers (`gblend_jax.data.streaming`,
``EncodedImages(test_resize='square')``): the resize to a square that the
builder used to do (the same pixels), or, with
``data.augmentation='random_resized_crop_flip'``, OGM-GE's train transform
(``RandomResizedCrop(224)`` and ``RandomHorizontalFlip`` of each frame) at
the frames' own resolution. float16 keeps a log spectrogram to 2^-11 of
its value (4e-3 at |x| = 8); it is stored rather than the audio because
the resampling to 22050 Hz and the STFT cost more per read than a cast,
and the stored spectrogram is what the builder always gave.

Known differences from the official code: the waveform is tiled until long
enough (the official ``np.tile(x, 3)`` leaves clips under 1 s short, and
with them the spectrogram); ``scipy.signal.resample_poly`` with resampy's
``'kaiser_best'`` filter replaces librosa's resampler (soxr or resampy, by
version; see ``resample``); the STFT pads by reflection, the default of the
librosa versions of 2022 (librosa >= 0.10 pads with zeros).
"""

import collections
import csv
import dataclasses
import functools
import math
import os
import re
import struct
import warnings
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.io.wavfile
import scipy.signal
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from gblend_jax.data import streaming

SAMPLE_RATE = 22050
CLIP_SECONDS = 3
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS  # 66150: CREMA-D's 3 s.
PSD_SAMPLES = 160000  # AVE and Kinetics-Sounds: 7.26 s at 22050 Hz.
N_FFT = 512
HOP_LENGTH = 353  # STFT hop; also the PSD's overlap (its hop is 159).
LOG_OFFSET = 1e-7
SPECTROGRAMS = ('stft', 'psd')
FRAME_SUFFIXES = ('.jpg', '.jpeg', '.png')


def read_wav(path: str) -> tuple[np.ndarray, int]:
  """Reads a wav file as a mono waveform in [-1, 1].

  Args:
    path: A wav file: 8-bit unsigned, 16/24/32-bit signed PCM or float, with
      any number of channels.

  Returns:
    ``(waveform, rate)``: float32 ``[n]`` (channels averaged, as
    ``librosa.to_mono`` does) and the sample rate in Hz.
  """
  rate, data = scipy.io.wavfile.read(path)
  if data.dtype.kind == 'u':
    half = 2.0 ** (8 * data.dtype.itemsize - 1)
    waveform = (data.astype(np.float64) - half) / half
  elif data.dtype.kind == 'i':
    waveform = data.astype(np.float64) / 2.0 ** (8 * data.dtype.itemsize - 1)
  else:
    waveform = data.astype(np.float64)
  if waveform.ndim == 2:
    waveform = waveform.mean(axis=1)
  if waveform.size == 0:
    raise ValueError(f'{path} holds no samples.')
  return waveform.astype(np.float32), int(rate)


def read_complete_wav(path: str) -> tuple[np.ndarray, int]:
  """`read_wav`, refusing a truncated or unreadable file.

  scipy reads a wav file cut short with a warning and fewer samples; here
  that is an error.

  Args:
    path: A wav file.

  Returns:
    ``(waveform, rate)``: float32 ``[n]`` mono in [-1, 1], and Hz.

  Raises:
    ValueError: the file is truncated or not a wav file, naming it.
  """
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', scipy.io.wavfile.WavFileWarning)
    try:
      result = read_wav(path)
    except (ValueError, EOFError, struct.error) as error:
      raise ValueError(f'{path}: not a readable wav file ({error}).') from None
  for warning in caught:
    message = str(warning.message)
    if 'EOF' in message or 'ncomplete' in message:
      raise ValueError(f'{path}: truncated wav file ({message}).')
  return result


@functools.cache
def _lowpass(up: int, down: int) -> np.ndarray:
  rate = max(up, down)
  return scipy.signal.firwin(2 * 64 * rate + 1, 0.9475 / rate,
                             window=('kaiser', 14.769656459379492))


def resample(waveform: np.ndarray, rate: int,
             target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Resamples ``waveform`` from ``rate`` to ``target_rate``.

  ``scipy.signal.resample_poly`` with a low-pass filter of the parameters
  of resampy's ``'kaiser_best'`` (librosa's default before 0.10): 64 zero
  crossings a side, cut-off at 0.9475 of the lower Nyquist frequency, Kaiser
  window with beta 14.77. From 16 kHz, the log STFT of its output is within
  0.01 of that after librosa 0.11's ``soxr_hq`` in 99% of the bins below
  7.3 kHz (and within 0.31 of that after resampy itself).
  """
  if rate == target_rate:
    return waveform.astype(np.float32)
  divisor = math.gcd(rate, target_rate)
  up, down = target_rate // divisor, rate // divisor
  return scipy.signal.resample_poly(
      np.asarray(waveform, np.float64), up, down, window=_lowpass(up, down)
  ).astype(np.float32)


def tile_and_clip(waveform: np.ndarray, num_samples: int) -> np.ndarray:
  """Repeats ``waveform`` to exactly ``num_samples`` and clips it to [-1, 1].

  Equals the official ``np.tile(x, 3)[:66150]`` (CREMA-D) and
  ``np.tile(x, 10)[:160000]`` (AVE, Kinetics-Sounds) whenever those are long
  enough; shorter clips are tiled further instead of left short.
  """
  repeats = -(-num_samples // len(waveform))
  return np.clip(np.tile(waveform, repeats)[:num_samples], -1.0, 1.0)


@functools.cache
def _stft(n_fft: int, hop_length: int) -> scipy.signal.ShortTimeFFT:
  window = scipy.signal.get_window('hann', n_fft)  # Periodic, as librosa's.
  return scipy.signal.ShortTimeFFT(window, hop_length, fs=SAMPLE_RATE,
                                   mfft=n_fft, scale_to=None)


def log_stft(waveform: np.ndarray, n_fft: int = N_FFT,
             hop_length: int = HOP_LENGTH) -> np.ndarray:
  """``log(|librosa.stft(x, n_fft, hop_length, pad_mode='reflect')| + 1e-7)``.

  Frame t is the window centred on sample ``t * hop_length`` of the signal
  reflect-padded by ``n_fft // 2`` at both ends (``ShortTimeFFT`` with
  ``padding='even'`` is numpy's ``'reflect'``), times a periodic Hann window.
  In float64 this equals librosa 0.11's ``stft`` exactly.

  Args:
    waveform: ``[n]`` samples.
    n_fft: FFT and window length.
    hop_length: Samples between frames.

  Returns:
    float32 ``[n_fft // 2 + 1, 1 + n // hop_length]``.
  """
  stft = _stft(n_fft, hop_length)
  spectrum = stft.stft(np.asarray(waveform, np.float64), p0=0,
                       p1=len(waveform) // hop_length + 1, padding='even')
  return np.log(np.abs(spectrum) + LOG_OFFSET).astype(np.float32)


def log_psd(waveform: np.ndarray, n_fft: int = N_FFT,
            noverlap: int = HOP_LENGTH) -> np.ndarray:
  """Standardised log power spectral density, as OGM-GE stored AVE and KS.

  Args:
    waveform: ``[n]`` samples at ``SAMPLE_RATE``.
    n_fft: Segment length (``nperseg``).
    noverlap: Overlap of consecutive segments.

  Returns:
    float32 ``[n_fft // 2 + 1, (n - noverlap) // (n_fft - noverlap)]``
    with mean 0 and standard deviation 1.
  """
  _, _, power = scipy.signal.spectrogram(
      np.asarray(waveform, np.float64), SAMPLE_RATE, nperseg=n_fft,
      noverlap=noverlap)
  log_power = np.log(power + LOG_OFFSET)
  return ((log_power - log_power.mean()) / (log_power.std() + 1e-9)).astype(
      np.float32)


def spectrogram_shape(num_samples: int, kind: str) -> tuple[int, int]:
  """Shape of the ``kind`` spectrogram of ``num_samples`` samples."""
  if kind == 'stft':
    return N_FFT // 2 + 1, 1 + num_samples // HOP_LENGTH
  if kind == 'psd':
    return N_FFT // 2 + 1, (num_samples - HOP_LENGTH) // (N_FFT - HOP_LENGTH)
  raise ValueError(f'Unknown spectrogram {kind!r}; valid: {SPECTROGRAMS}.')


def audio_features(path: str, num_samples: int = CLIP_SAMPLES,
                   kind: str = 'stft') -> np.ndarray:
  """The log spectrogram of a wav file (see the module docstring).

  Args:
    path: A wav file.
    num_samples: Length at ``SAMPLE_RATE`` after tiling.
    kind: ``'stft'`` (CREMA-D code) or ``'psd'`` (AVE and KS code).

  Returns:
    float32 ``spectrogram_shape(num_samples, kind)``, e.g. ``[257, 188]``
    for ``'stft'`` of 3 s.

  Raises:
    ValueError: naming a truncated or unreadable wav file.
  """
  spectrogram_shape(num_samples, kind)  # Checks `kind`.
  waveform, rate = read_complete_wav(path)
  waveform = tile_and_clip(resample(waveform, rate), num_samples)
  return log_stft(waveform) if kind == 'stft' else log_psd(waveform)


def select_frames(num_available: int, num_frames: int) -> np.ndarray:
  """Positions of the middle frame of ``num_frames`` equal segments.

  With ``s = num_available // num_frames``, frame ``i`` is
  ``i * s + s // 2`` of the sorted frames (the test-time choice of later
  GeWu-Lab loaders); fewer frames than ``num_frames`` are repeated in order.
  The official OGM-GE loaders differ: for CREMA-D they take the first
  ``--fps`` (default 1) names that ``os.listdir`` returns, in no set order
  (a random choice is drawn but not used); for AVE and Kinetics-Sounds
  frame ``i * s + 1`` (1-based) of each of 3 segments; the same frames in
  training and test in both.

  Examples:
    >>> select_frames(10, 3).tolist()
    [1, 4, 7]
    >>> select_frames(2, 3).tolist()
    [0, 0, 1]

  Args:
    num_available: Frames in the clip's folder, at least 1.
    num_frames: Frames to pick, at least 1.

  Returns:
    int64 ``[num_frames]``, non-decreasing, in ``[0, num_available)``.
  """
  if num_available < 1 or num_frames < 1:
    raise ValueError(
        f'Need at least one frame to pick from and to pick; got '
        f'num_available={num_available}, num_frames={num_frames}.'
    )
  positions = np.arange(num_frames, dtype=np.int64)
  if num_available >= num_frames:
    segment = num_available // num_frames
    return positions * segment + segment // 2
  return positions * num_available // num_frames


def _natural_key(name: str) -> list[str | int]:
  return [int(part) if part.isdigit() else part
          for part in re.split(r'(\d+)', name)]


def frame_files(folder: str) -> list[str]:
  """Image file names in ``folder``, in natural order (2 before 10)."""
  names = [name for name in os.listdir(folder)
           if name.lower().endswith(FRAME_SUFFIXES)]
  return sorted(names, key=_natural_key)


def frame_paths(folder: str, num_frames: int) -> list[str]:
  """The frame files of a clip that ``select_frames`` picks, in order.

  Raises:
    FileNotFoundError: naming a folder without frames.
  """
  names = frame_files(folder)
  if not names:
    raise FileNotFoundError(f'No frames ({", ".join(FRAME_SUFFIXES)}) in '
                            f'{folder}.')
  return [os.path.join(folder, names[position])
          for position in select_frames(len(names), num_frames)]


def read_frames(folder: str, num_frames: int, image_size: int) -> np.ndarray:
  """Reads ``num_frames`` frames of a clip (see ``select_frames``).

  Args:
    folder: The clip's frame folder (JPEG or PNG files).
    num_frames: Frames to return.
    image_size: Side of the square each frame is resized to (bilinear, as
      torchvision's ``Resize`` on PIL images; `streaming.square_transform`).

  Returns:
    uint8 ``[num_frames, image_size, image_size, 3]``.

  Raises:
    ValueError: naming a frame file that does not decode (e.g. truncated).
  """
  frames = []
  for path in frame_paths(folder, num_frames):
    try:
      with Image.open(path) as image:
        frames.append(streaming.square_transform(image.convert('RGB'),
                                                 image_size))
    except OSError as error:  # Truncated or not an image.
      raise ValueError(f'{path}: unreadable frame ({error}).') from None
  return np.stack(frames).astype(np.uint8)


def read_frame_bytes(folder: str, num_frames: int) -> np.ndarray:
  """The bytes of the ``num_frames`` frame files of a clip that
  ``read_frames`` would decode, each checked by one decode.

  Args:
    folder: The clip's frame folder (JPEG or PNG files).
    num_frames: Frames to return.

  Returns:
    object ``[num_frames]`` of ``bytes`` (a frame picked twice is stored
    twice).

  Raises:
    ValueError: naming a frame file that does not decode (e.g. truncated).
  """
  frames = np.empty(num_frames, dtype=object)
  for k, path in enumerate(frame_paths(folder, num_frames)):
    try:
      frames[k] = streaming.read_image_bytes(path)
    except OSError as error:
      raise ValueError(f'{path}: unreadable frame ({error}).') from None
  return frames


@dataclasses.dataclass(kw_only=True)
class AudioVisualConfig(tfds.core.BuilderConfig):
  """Sizes of the arrays one builder config stores per clip.

  Attributes:
    num_frames: Frames per clip (T).
    image_size: Side of the square frames (S).
    num_samples: Waveform length at 22050 Hz after tiling.
    spectrogram: ``'stft'`` or ``'psd'`` (see the module docstring).
    compact: Store the frame files' bytes and a float16 spectrogram
      (decoded to ``visual_shape`` and float32 when read); else uint8
      frames and a float32 spectrogram.
  """

  num_frames: int
  image_size: int
  num_samples: int = CLIP_SAMPLES
  spectrogram: str = 'stft'
  compact: bool = False

  @property
  def audio_shape(self) -> tuple[int, int]:
    return spectrogram_shape(self.num_samples, self.spectrogram)

  @property
  def visual_shape(self) -> tuple[int, int, int, int]:
    return self.num_frames, self.image_size, self.image_size, 3


# The official configs' records: version 2.0.0 (the small ones stay 1.0.0).
COMPACT_VERSION = '2.0.0'
COMPACT_RELEASE_NOTES = {
    '2.0.0': 'Compact records: the picked frame files\' own bytes (JPEG, '
             'decoded and resized in the input pipeline) and a float16 '
             'spectrogram, instead of uint8 frames and a float32 one.',
    '1.0.0': 'Initial release.',
}


def compact_config(config: tfds.core.BuilderConfig) -> None:
  """Marks an official config as storing compact records, version 2.0.0."""
  config.compact = True
  config.version = COMPACT_VERSION
  config.release_notes = dict(COMPACT_RELEASE_NOTES)


def clip_features(config: Any) -> dict[str, tfds.features.FeatureConnector]:
  """The ``audio`` and ``visual`` features of a config with
  ``audio_shape``, ``visual_shape`` and ``compact``."""
  if config.compact:
    return {
        # Encoding.BYTES: the array's own 2 bytes a value (TFDS otherwise
        # writes float16 as a float32 list).
        'audio': tfds.features.Tensor(shape=config.audio_shape,
                                      dtype=np.float16,
                                      encoding=tfds.features.Encoding.BYTES),
        'visual': tfds.features.Tensor(shape=config.visual_shape[:1],
                                       dtype=np.object_),
    }
  return {
      'audio': tfds.features.Tensor(shape=config.audio_shape,
                                    dtype=np.float32),
      'visual': tfds.features.Tensor(shape=config.visual_shape,
                                     dtype=np.uint8),
  }


def encoded_frames(config: Any) -> dict[str, streaming.EncodedImages]:
  """What `streaming` decodes of a config's records (one with
  ``visual_shape`` and ``compact``): ``visual``, when ``compact``, into
  ``visual_shape`` (each frame resized to the square)."""
  if not config.compact:
    return {}
  frames, size = config.visual_shape[:2]
  return {'visual': streaming.EncodedImages(size=size, frames=frames,
                                            test_resize='square')}


def standard_configs(*, num_frames: int, num_samples: int, spectrogram: str,
                     small_frames: int) -> list[AudioVisualConfig]:
  """The ``official`` and ``small`` configs of a data set.

  Args:
    num_frames: Frames of the official config (224 x 224).
    num_samples: Waveform length of the official config.
    spectrogram: Spectrogram of the official config.
    small_frames: Frames of the ``small`` config (64 x 64, 3 s ``'stft'``
      spectrogram ``[257, 188]``).

  Returns:
    ``[official, small]``.
  """
  official = AudioVisualConfig(
      name='official', num_frames=num_frames, image_size=224,
      num_samples=num_samples, spectrogram=spectrogram)
  compact_config(official)
  small = AudioVisualConfig(name='small', num_frames=small_frames,
                            image_size=64)
  for config, purpose, stored in (
      (official, 'OGM-GE sizes', 'float16; the frame files\' bytes, '
       'decoded to'),
      (small, 'For CPU', 'float32; uint8 frames')):
    config.description = (
        f'{purpose}: {config.spectrogram} spectrogram '
        f'{list(config.audio_shape)} of {config.num_samples} samples at '
        f'{SAMPLE_RATE} Hz, {stored} {list(config.visual_shape)}.')
  return [official, small]


def ave_ks_configs() -> list[AudioVisualConfig]:
  """Configs of AVE and Kinetics-Sounds, which OGM-GE loads alike.

  ``dataset/dataset.py`` reads 3 frames and the ``'psd'`` spectrogram of
  160000 samples, [257, 1004]; ``small`` keeps the 3 frames at 64 x 64 with
  the 3 s ``'stft'`` spectrogram, [257, 188].
  """
  return standard_configs(num_frames=3, num_samples=PSD_SAMPLES,
                          spectrogram='psd', small_frames=3)


@dataclasses.dataclass(frozen=True)
class Clip:
  """One listed clip: its id, class and where its files should be."""

  id: str
  label: int
  audio_path: str
  frames_dir: str


def read_rows(path: str, delimiter: str = ',') -> list[tuple[int, list[str]]]:
  """Non-blank rows of a text table as ``(line number, stripped cells)``."""
  with open(path, encoding='utf-8-sig', newline='') as file:
    rows = csv.reader(file, delimiter=delimiter)
    return [(number, [cell.strip() for cell in row])
            for number, row in enumerate(rows, start=1)
            if any(cell.strip() for cell in row)]


class AudioVisualBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Clips listed in split files, read from the manual dir.

  A subclass sets ``CLASS_NAMES`` (in label order), ``FOLDER`` (the data
  set's folder in the manual dir; the manual dir itself serves when it
  holds the first split file and that folder does not), ``AUDIO_DIR`` and
  ``FRAMES_DIR`` (relative to that root), ``SPLIT_FILES`` (split name to
  list file), how the list files read (``DELIMITER``, ``ID_COLUMN``,
  ``LABEL_COLUMN``, ``HEADER``: the first cell of a header row to skip),
  ``HOMEPAGE``, ``BUILDER_CONFIGS`` and ``MANUAL_DOWNLOAD_INSTRUCTIONS``
  (and ``VERSION`` once it changes).

  As in the official loaders, listed clips whose wav file or frame folder is
  missing are left out, with a warning that counts them; a split with none
  left is an error. A clip listed twice in a split keeps its last line (the
  official AVE loader's rule); one listed in two splits is kept only in the
  last of ``SPLIT_FILES`` (the test split), so that the splits are disjoint.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES: Sequence[str] = ()
  FOLDER = ''
  AUDIO_DIR = 'audio'
  FRAMES_DIR = 'visual'
  SPLIT_FILES: dict[str, str] = {}
  DELIMITER = ','
  ID_COLUMN = 0
  LABEL_COLUMN = 1
  HEADER: str | None = None
  HOMEPAGE = ''

  def parse_split_file(self, path: str) -> list[tuple[str, int]]:
    """The ``(clip id, label)`` pairs that a split file lists, in order."""
    pairs = []
    width = max(self.ID_COLUMN, self.LABEL_COLUMN) + 1
    for number, row in read_rows(path, self.DELIMITER):
      if self.HEADER is not None and row[0] == self.HEADER:
        continue
      if len(row) < width:
        raise ValueError(f'{path}:{number}: expected at least {width} '
                         f'{self.DELIMITER!r}-separated fields; got {row}.')
      pairs.append((row[self.ID_COLUMN], check_label(
          row[self.LABEL_COLUMN], self.CLASS_NAMES, f'{path}:{number}')))
    return pairs

  @property
  def gblend_encoded_images(self) -> dict[str, streaming.EncodedImages]:
    """The encoded frames of a compact config (for `streaming`)."""
    return encoded_frames(self.builder_config)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
            **clip_features(self.builder_config),
        }),
        supervised_keys=None,
        homepage=self.HOMEPAGE,
    )

  def missing(self, what: str, path: str) -> FileNotFoundError:
    """An error naming a missing file and explaining the expected layout."""
    return FileNotFoundError(f'{self.name}: {what} not found: {path}\n'
                             + self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError as error:  # No manual dir, or an empty one.
      raise FileNotFoundError(str(error)) from None
    # <manual_dir>/<FOLDER>, or the manual dir itself if it has the lists.
    root = os.path.join(manual_dir, self.FOLDER)
    first_list = next(iter(self.SPLIT_FILES.values()))
    if not os.path.isfile(os.path.join(root, first_list)) and (
        os.path.isfile(os.path.join(manual_dir, first_list))
        or not os.path.isdir(root)):
      root = manual_dir
    folders = {}
    for folder in (self.AUDIO_DIR, self.FRAMES_DIR):
      folders[folder] = os.path.join(root, folder)
      if not os.path.isdir(folders[folder]):
        raise self.missing('folder', folders[folder])
    labels = self._read_split_files(root)
    return {
        split: self._generate_examples(
            self._present_clips(split, labels[split], folders))
        for split in self.SPLIT_FILES
    }

  def _read_split_files(self, root: str) -> dict[str, dict[str, int]]:
    """Each split's clip ids and labels, duplicates resolved."""
    listed = {}
    for split, file_name in self.SPLIT_FILES.items():
      path = os.path.join(root, file_name)
      if not os.path.isfile(path):
        raise self.missing(f'{split} split file', path)
      pairs = self.parse_split_file(path)
      repeated = count_duplicates([clip_id for clip_id, _ in pairs])
      _warn_if(repeated > 0, '%s: %d clips listed more than once in %s keep '
               'their last line.', self.name, repeated, path)
      listed[split] = dict(pairs)  # The last line of each id wins.
    later_ids = set()
    for split in reversed(self.SPLIT_FILES):
      labels = listed[split]
      listed[split] = {
          clip_id: label for clip_id, label in labels.items()
          if clip_id not in later_ids
      }
      _warn_if(len(listed[split]) < len(labels), '%s %s: left out %d clips '
               'that a later split lists.', self.name, split,
               len(labels) - len(listed[split]))
      later_ids.update(labels)
      if not listed[split]:
        raise ValueError(f'{self.name}: no {split} clips left in '
                         f'{os.path.join(root, self.SPLIT_FILES[split])}.')
    return listed

  def _present_clips(self, split: str, labels: dict[str, int],
                     folders: dict[str, str]) -> list[Clip]:
    """The clips whose wav file and frames exist; warns about the others."""
    clips, absent = [], []
    for clip_id, label in labels.items():
      clip = Clip(clip_id, label,
                  os.path.join(folders[self.AUDIO_DIR], clip_id + '.wav'),
                  os.path.join(folders[self.FRAMES_DIR], clip_id))
      if not os.path.isfile(clip.audio_path):
        absent.append(clip.audio_path)
      elif not os.path.isdir(clip.frames_dir) or not frame_files(
          clip.frames_dir):
        absent.append(clip.frames_dir)
      else:
        clips.append(clip)
    if not clips:
      raise self.missing(f'every {split} clip, e.g. its file', absent[0])
    _warn_if(bool(absent), '%s %s: left out %d of %d listed clips whose '
             'files are missing, e.g. %s', self.name, split, len(absent),
             len(labels), absent[:3])
    return clips

  def _generate_examples(
      self, clips: list[Clip]
  ) -> Iterator[tuple[str, dict[str, object]]]:
    config = self.builder_config
    for clip in clips:
      try:
        audio = audio_features(clip.audio_path, config.num_samples,
                               config.spectrogram)
        if config.compact:
          audio = audio.astype(np.float16)
          visual = read_frame_bytes(clip.frames_dir, config.num_frames)
        else:
          visual = read_frames(clip.frames_dir, config.num_frames,
                               config.image_size)
      except (OSError, ValueError) as error:
        raise ValueError(f'{self.name}: cannot read clip {clip.id!r}: '
                         f'{error}') from error
      yield clip.id, {'id': clip.id, 'label': clip.label, 'audio': audio,
                      'visual': visual}


def _warn_if(condition: bool, message: str, *args: object) -> None:
  if condition:
    logging.warning(message, *args)


def check_label(name: str, names: Sequence[str], where: str) -> int:
  """The index of class ``name`` in ``names``; a ValueError naming ``where``.

  Args:
    name: A class name as a split file writes it.
    names: The class names, in label order.
    where: ``file:line`` for the error message.

  Returns:
    The label.
  """
  index = {n: i for i, n in enumerate(names)}.get(name)
  if index is None:
    raise ValueError(f'{where}: unknown class {name!r}; valid: {list(names)}.')
  return index


def count_duplicates(ids: Sequence[str]) -> int:
  """How many entries of ``ids`` repeat an earlier one."""
  return sum(n - 1 for n in collections.Counter(ids).values())
