"""Tiny fake copies of CREMA-D, Kinetics-Sounds, AVE and VGGSound in their
layouts.

Clip ``i`` of a copy holds a tone in STFT bin ``20 + 3 i`` and frames whose
red level is ``25 i`` and green level ``20 k`` for frame k, so that every
stored array can be traced to its clip.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import scipy.io.wavfile
from PIL import Image

from gblend_jax.data import audio_visual as av
from gblend_jax.datasets.ave import ave_dataset_builder as ave
from gblend_jax.datasets.crema_d import crema_d_dataset_builder as crema_d
from gblend_jax.datasets.kinetics_sounds import (
  kinetics_sounds_dataset_builder as ks,
)


@dataclasses.dataclass(frozen=True)
class Layout:
  """A data set's fake copy: its clips and how its files are named."""

  builder: type
  clips: dict[str, list[tuple[str, int]]]  # split -> (id, label).
  line: Callable[[str, int], str]  # A split file's line for (id, label).
  frame_names: tuple[str, ...]
  bom: bool = False  # OGM-GE opens CREMA-D's lists as UTF-8-sig.


def crema_line(clip_id, label):
  return f'{clip_id},{crema_d.Builder.CLASS_NAMES[label]}'


def ave_line(clip_id, label):
  return f'{ave.Builder.CLASS_NAMES[label]}&{clip_id}&good&0&10'


_TEN_FRAMES = tuple(f'frame_{k:05d}.jpg' for k in range(1, 11))
LAYOUTS = {
    'crema_d': Layout(
        crema_d.Builder,
        {'train': [('1001_DFA_ANG_XX', 5), ('1001_DFA_HAP_XX', 1),
                   ('1002_IEO_NEU_XX', 0), ('1003_TIE_FEA_XX', 3)],
         'test': [('1041_TIE_DIS_XX', 4), ('1071_MTI_SAD_XX', 2)]},
        crema_line, ('00000.jpg', '00030.jpg', '00060.jpg'), bom=True),
    'kinetics_sounds': Layout(
        ks.Builder,
        {'train': [('--4-0ihtnBU_000058_000068', 4),
                   ('-00nar1nEPc_000033_000043', 13),
                   ('-Y3tYswTUCE_000167_000177', 30)],
         'test': [('-3Mwkq-7TV4_2', 23), ('04fLIUMTbco_6', 0)]},
        lambda clip_id, label: f'{clip_id},10,{label}', _TEN_FRAMES),
    'ave': Layout(
        ave.Builder,
        {'train': [('c---zaDCTaE', 7), ('fCZi6I6kPpU', 0), ('RUhOCu3LNXM', 27)],
         'validation': [('EV1bVf8Bldk', 12)],
         'test': [('OXvrQ0XIAeM', 3), ('DxQmMOIMRt0', 25)]},
        ave_line, _TEN_FRAMES),
}


def all_clips(layout):
  return [clip for split in layout.clips.values() for clip in split]


def write_copy(root, layout):
  """Writes ``layout``'s clips into ``root`` as its builder expects them."""
  builder = layout.builder
  audio_dir = os.path.join(root, builder.AUDIO_DIR)
  os.makedirs(audio_dir, exist_ok=True)
  for index, (clip_id, _) in enumerate(all_clips(layout)):
    time = np.arange(8000) / 16000  # 0.5 s at 16 kHz, int16 as CREMA-D.
    tone = 0.5 * np.sin(2 * np.pi * (20 + 3 * index) * av.SAMPLE_RATE
                        / av.N_FFT * time)
    scipy.io.wavfile.write(os.path.join(audio_dir, clip_id + '.wav'), 16000,
                           (tone * 2**15).astype(np.int16))
    frames_dir = os.path.join(root, builder.FRAMES_DIR, clip_id)
    os.makedirs(frames_dir)
    for k, name in enumerate(layout.frame_names):
      Image.new('RGB', (24, 16), (25 * index, 20 * k, 90)).save(
          os.path.join(frames_dir, name))
  for split, clips in layout.clips.items():
    lines = [layout.line(clip_id, label) for clip_id, label in clips]
    with open(os.path.join(root, builder.SPLIT_FILES[split]), 'w',
              encoding='utf-8-sig' if layout.bom else 'utf-8') as file:
      file.write('\n'.join(lines) + '\n')


# VGGSound: one headerless CSV for both splits, per-split folders. Clip i
# (in CSV order) holds a tone in STFT bin 10 + 3 i of n_fft 256 at 16 kHz
# and 10 frames whose red level is 25 i and green level 20 k for frame k.
VGGSOUND_ROWS = (
    ('--0PQM4-hqg', '30', 'waterfall burbling', 'train'),
    ('--56QUhyDQM', '185', 'playing tennis', 'train'),
    ('-0BIyqJj9ZU', '30', 'waterfall burbling', 'train'),
    ('-0jeONf82dE', '21', 'bird chirping, tweeting', 'train'),
    ('---g-f_I2yQ', '1', 'playing tennis', 'test'),
    ('-1D8_aLlV-A', '0', 'bird chirping, tweeting', 'test'),
)
VGGSOUND_FRAMES = tuple(f'{25 * k:05d}.jpg' for k in range(10))


def on_crema_d_copy(config, tmp_path) -> None:
  """Writes a fake CREMA-D copy of 24 training and 6 test clips (4 and 1 per
  emotion) under `tmp_path` and points ``config.data`` at it, with one
  held-out clip per emotion."""
  layout = LAYOUTS['crema_d']
  emotions = layout.builder.CLASS_NAMES
  clips = {
      'train': [(f'10{a:02d}_DFA_{emotions[c]}_XX', c)
                for c in range(6) for a in range(4)],
      'test': [(f'1090_DFA_{emotions[c]}_XX', c) for c in range(6)],
  }
  write_copy(os.path.join(tmp_path, 'manual', layout.builder.FOLDER),
             dataclasses.replace(layout, clips=clips))
  config.data.data_dir = os.path.join(tmp_path, 'tfds')
  config.data.manual_dir = os.path.join(tmp_path, 'manual')
  config.data.holdout_fraction = 0.25


def vggsound_paths(root, row, name=None):
  """``(wav file, frame folder)`` of a CSV row in the VGGSound layout."""
  youtube_id, start, _, split = row
  name = name or f'{youtube_id}_{start}'
  return (os.path.join(root, f'{split}-audios', f'{split}-set',
                       name + '.wav'),
          os.path.join(root, f'{split}-videos', f'{split}-set-img',
                       'Image-01-FPS', name + '.mp4'))


def write_vggsound_copy(root, rows=VGGSOUND_ROWS, *, padded=False):
  """Writes ``rows``' clips and ``vggsound.csv`` into ``root``.

  Args:
    root: the copy's folder.
    rows: ``(youtube_id, start_seconds, label, split)`` per clip.
    padded: name the files ``<id>_<start:06d>`` instead of as the CSV.
  """
  for index, row in enumerate(rows):
    name = f'{row[0]}_{int(row[1]):06d}' if padded else None
    audio_path, frames_dir = vggsound_paths(root, row, name)
    os.makedirs(os.path.dirname(audio_path), exist_ok=True)
    time = np.arange(8000) / 16000  # 0.5 s at 16 kHz, int16 as ffmpeg's.
    tone = 0.5 * np.sin(2 * np.pi * (10 + 3 * index) * 16000 / 256 * time)
    scipy.io.wavfile.write(audio_path, 16000, (tone * 2**15).astype(np.int16))
    os.makedirs(frames_dir)
    for k, frame in enumerate(VGGSOUND_FRAMES):
      Image.new('RGB', (24, 16), (25 * index % 256, 20 * k, 90)).save(
          os.path.join(frames_dir, frame))
  lines = [','.join(f'"{cell}"' if ',' in cell else cell for cell in row)
           for row in rows]
  with open(os.path.join(root, 'vggsound.csv'), 'w') as file:
    file.write('\n'.join(lines) + '\n')


def with_small_encoders(config) -> None:
  """Swaps the ResNet-18 pair of an ``av_ogm.py`` config for a small pair
  that compiles in a fraction of the time: an 8-filter ResNet-10 (with
  BatchNorm) on the spectrogram, a 64-unit MLP on the frames. Both give
  64 features, as the shared-head and ensemble models need.

  For the end-to-end tests of a method's audio-visual config, whose subject
  is the method's settings and machinery, not the encoders (the ResNet-18
  pair itself trains in `tests/test_train_modulation.py`;
  `tests/mla/test_train_mla.py` trains a BatchNorm ResNet on each
  modality)."""
  config.model.encoder.name = 'resnet10'
  config.model.encoder.resnet10.num_filters = 8
  config.model.encoders = {'visual': {'name': 'mlp', 'hidden_sizes': (64,)}}
