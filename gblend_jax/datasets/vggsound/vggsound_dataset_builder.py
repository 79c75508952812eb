"""VGGSound as OGM-GE trains on it: 309 classes, one CSV, wav and frames.

VGGSound (Chen et al., ICASSP 2020) has about 200k 10-second YouTube clips
of 309 sound classes. Its official CSV, ``vggsound.csv``, has no header and
one clip a line, ``youtube_id,start_seconds,label,split``, e.g.
``--0PQM4-hqg,30,waterfall burbling,train`` (labels with commas are quoted).
OGM-GE (Peng et al., CVPR 2022; ``dataset/VGGSoundDataset.py`` of
github.com/GeWu-Lab/OGM-GE_CVPR2022) names the clip
``<youtube_id>_<start_seconds>`` and reads, per split ``S`` in train, test:

- ``S-audios/S-set/<clip>.wav``, written by ``data/VGGSound/mp4_to_wav.py``
  (``ffmpeg -acodec pcm_s16le -ar 16000``);
- ``S-videos/S-set-img/Image-01-FPS/<clip>.mp4/``, the 1-fps JPEG frames
  ``00000.jpg, 00025.jpg, ...`` that ``data/VGGSound/video_preprocessing.py``
  writes (the number is the frame's index in the video).

Labels: OGM-GE indexes the classes in the order they first appear in the
train rows (``class_dict``) and its model has ``n_classes = 309`` outputs;
so does this builder (``label`` names: the CSV's class names in that
order). ``id`` is the clip name.

Audio (`audio_features`), as ``VGGSound.__getitem__``: the wav at 16 kHz,
mono, repeated until 10 s long, a 5 s window clipped to [-1, 1], then
``log(|librosa.stft(n_fft=256, hop_length=128)| + 1e-7)``: [129, 626].
Frames: 3 per clip (``--use_video_frames 3``), resized to 224 x 224 (its
test transform; the train transform's random-resized-crop and flip belong
to the input pipeline): [3, 224, 224, 3].

What is stored: the ``official`` config (version 2.0.0) stores the three
frame files' own bytes (JPEG, checked by one decode at build time; the
input pipeline decodes and resizes them, `gblend_jax.data.streaming`) and
the spectrogram as float16; the ``small`` config (version 1.0.0) stores
uint8 [3, 64, 64, 3] frames and a float32 spectrogram (see
`gblend_jax.data.audio_visual`).

Departures from the official code, each for a stated reason:

- The 5 s window starts at 2.5 s, the middle of the official draw (a start
  uniform in [0, 5] s at every read, in training and test alike): the
  builder stores one spectrogram per clip.
- The frames are the middle ones of 3 equal segments
  (`gblend_jax.data.audio_visual.select_frames`); the official loader draws
  3 positions but then reads the first 3 names ``os.listdir`` returns, in
  no set order.
- Bad input stops the build, naming the file, where the official loader
  skips it silently: a clip listed in the CSV whose wav file or frame
  folder is absent, a folder with fewer frames than the clip needs (the
  official loader keeps clips with more than 3), a truncated wav file, an
  unreadable frame. A copy lists in its CSV the clips it holds.
"""

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from gblend_jax.data import audio_visual as av

NUM_CLASSES = 309  # OGM-GE's n_classes for VGGSound.
SPLITS = ('train', 'test')
SAMPLE_RATE = 16000  # librosa.load(sr=16000).
CLIP_SAMPLES = 10 * SAMPLE_RATE  # Repeated until 10 s.
WINDOW_START = SAMPLE_RATE * 5 // 2  # 2.5 s: the middle of [0, 5] s.
WINDOW_SAMPLES = 5 * SAMPLE_RATE
N_FFT = 256
HOP_LENGTH = 128
NUM_FRAMES = 3  # --use_video_frames.
CSV_NAME = 'vggsound.csv'

_LAYOUT = f"""\
Put your copy of VGGSound (www.robots.ox.ac.uk/~vgg/data/vggsound/) in
<manual_dir>/VGGSound/ (or in the manual dir itself), laid out as OGM-GE's
dataset/VGGSoundDataset.py reads it (github.com/GeWu-Lab/OGM-GE_CVPR2022):

  VGGSound/
    {CSV_NAME}                 VGGSound's CSV, no header, lines
                                 `youtube_id,start_seconds,label,split`,
                                 e.g. `--0PQM4-hqg,30,waterfall burbling,train`;
                                 only the clips your copy holds
    train-audios/train-set/<clip>.wav
    test-audios/test-set/<clip>.wav
                                 each clip's sound (OGM-GE's
                                 data/VGGSound/mp4_to_wav.py: ffmpeg -acodec
                                 pcm_s16le -ar 16000)
    train-videos/train-set-img/Image-01-FPS/<clip>.mp4/
    test-videos/test-set-img/Image-01-FPS/<clip>.mp4/
                                 its 1-fps JPEG frames (00000.jpg, 00025.jpg,
                                 ...; data/VGGSound/video_preprocessing.py),
                                 at least {NUM_FRAMES}

<clip> is `<youtube_id>_<start_seconds>` as the CSV writes it (`_000030`,
zero-padded to 6 digits, is read too). The manual dir defaults to
<data_dir>/downloads/manual. A clip listed in the CSV whose files are
missing stops the build, naming them: remove its line from the CSV."""


@dataclasses.dataclass(kw_only=True)
class VGGSoundConfig(tfds.core.BuilderConfig):
  """Sizes of one builder config's frames.

  Attributes:
    image_size: Side of the square frames (S).
    compact: Store the frame files' bytes and a float16 spectrogram
      (`gblend_jax.data.audio_visual.clip_features`).
  """

  image_size: int
  compact: bool = False

  @property
  def audio_shape(self) -> tuple[int, int]:
    return N_FFT // 2 + 1, 1 + WINDOW_SAMPLES // HOP_LENGTH

  @property
  def visual_shape(self) -> tuple[int, int, int, int]:
    return NUM_FRAMES, self.image_size, self.image_size, 3


def audio_features(path: str) -> np.ndarray:
  """The log spectrogram OGM-GE computes from a VGGSound wav file.

  ``x`` at 16 kHz repeated to 10 s (its doubling until 10 s gives the same
  samples), ``w = clip(x[40000:120000], -1, 1)`` (5 s from 2.5 s), then
  ``log(|STFT(w)| + 1e-7)`` with a periodic Hann window of 256, hop 128,
  centred frames on the reflect-padded signal (librosa's ``stft``).

  Args:
    path: A wav file, any rate (resampled to 16 kHz) and channels.

  Returns:
    float32 ``[129, 626]``.

  Raises:
    ValueError: naming a truncated or unreadable wav file.
  """
  waveform, rate = av.read_complete_wav(path)
  waveform = av.tile_and_clip(av.resample(waveform, rate, SAMPLE_RATE),
                              CLIP_SAMPLES)
  window = waveform[WINDOW_START:WINDOW_START + WINDOW_SAMPLES]
  return av.log_stft(window, n_fft=N_FFT, hop_length=HOP_LENGTH)


class Builder(tfds.core.GeneratorBasedBuilder):
  """VGGSound: a log spectrogram and 3 frames per clip, 309 classes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT
  BUILDER_CONFIGS = [
      VGGSoundConfig(name='official', image_size=224,
                     description='OGM-GE sizes: log STFT [129, 626] of 5 s '
                     'at 16 kHz, float16; the frame files\' bytes, decoded '
                     'to [3, 224, 224, 3].'),
      VGGSoundConfig(name='small', image_size=64,
                     description='For CPU: log STFT [129, 626]; frames '
                     '[3, 64, 64, 3].'),
  ]
  av.compact_config(BUILDER_CONFIGS[0])
  FOLDER = 'VGGSound'

  @property
  def gblend_encoded_images(self) -> dict[str, object]:
    """The encoded frames of the compact config (for `streaming`)."""
    return av.encoded_frames(self.builder_config)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            **av.clip_features(self.builder_config),
        }),
        supervised_keys=None,
        homepage='https://www.robots.ox.ac.uk/~vgg/data/vggsound/',
    )

  def _missing(self, what: str, path: str) -> FileNotFoundError:
    return FileNotFoundError(f'{self.name}: {what} not found: {path}\n'
                             + _LAYOUT)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError as error:  # No manual dir, or an empty one.
      raise FileNotFoundError(str(error)) from None
    root = os.path.join(manual_dir, self.FOLDER)
    if not os.path.isfile(os.path.join(root, CSV_NAME)) and os.path.isfile(
        os.path.join(manual_dir, CSV_NAME)):
      root = manual_dir
    csv_path = os.path.join(root, CSV_NAME)
    if not os.path.isfile(csv_path):
      raise self._missing('the clip list', csv_path)
    rows, class_names = read_csv(csv_path)
    self.info.features['label'].names = class_names + [
        f'(not in {CSV_NAME}) {i}'
        for i in range(len(class_names), NUM_CLASSES)]
    clips = {split: [_clip(root, split, clip_id, label)
                     for clip_id, label in rows[split].items()]
             for split in SPLITS}
    self._check_files(clips)
    return {split: self._generate_examples(clips[split]) for split in SPLITS}

  def _check_files(self, clips: dict[str, list[av.Clip]]) -> None:
    """Every listed clip's wav file and frames exist, before any decoding."""
    absent, short = [], []
    for clip in (c for split in SPLITS for c in clips[split]):
      if not os.path.isfile(clip.audio_path):
        absent.append(clip.audio_path)
      elif not os.path.isdir(clip.frames_dir):
        absent.append(clip.frames_dir)
      elif (count := len(av.frame_files(clip.frames_dir))) < NUM_FRAMES:
        short.append(f'{clip.frames_dir} ({count})')
    if absent:
      raise FileNotFoundError(
          f'{self.name}: {len(absent)} clips listed in {CSV_NAME} are not on '
          f'disk, e.g. {absent[0]}; missing: {absent[:5]}. Remove their lines '
          f'from {CSV_NAME} (or add the files).\n' + _LAYOUT)
    if short:
      raise FileNotFoundError(
          f'{self.name}: {len(short)} clips have fewer than {NUM_FRAMES} '
          f'frames: {short[0]}; all: {short[:5]}. Extract the frames again '
          f'or remove their lines from {CSV_NAME}.')

  def _generate_examples(
      self, clips: list[av.Clip]
  ) -> Iterator[tuple[str, dict[str, object]]]:
    config = self.builder_config
    for clip in clips:
      audio = audio_features(clip.audio_path)
      if config.compact:
        audio = audio.astype(np.float16)
        visual = av.read_frame_bytes(clip.frames_dir, NUM_FRAMES)
      else:
        visual = av.read_frames(clip.frames_dir, NUM_FRAMES,
                                config.image_size)
      yield clip.id, {'id': clip.id, 'label': clip.label, 'audio': audio,
                      'visual': visual}


def _clip(root: str, split: str, clip_id: str, label: int) -> av.Clip:
  """Where a clip's files are: the name as the CSV writes it, else with the
  start zero-padded to 6 digits (``_000030``), else the former."""
  audio_dir = os.path.join(root, f'{split}-audios', f'{split}-set')
  frames_root = os.path.join(root, f'{split}-videos', f'{split}-set-img',
                             'Image-01-FPS')
  youtube_id, _, start = clip_id.rpartition('_')
  for name in (clip_id, f'{youtube_id}_{int(start):06d}'):
    audio_path = os.path.join(audio_dir, name + '.wav')
    if os.path.isfile(audio_path):
      break
  else:
    name = clip_id
  return av.Clip(clip_id, label, os.path.join(audio_dir, name + '.wav'),
                 os.path.join(frames_root, name + '.mp4'))


def read_csv(path: str) -> tuple[dict[str, dict[str, int]], list[str]]:
  """The clips of ``vggsound.csv`` by split, and the class names.

  Args:
    path: the CSV, lines ``youtube_id,start_seconds,label,split``.

  Returns:
    ``({split: {clip id: label}}, class names)``: labels index the classes
    in the order they first appear in the train rows (OGM-GE's
    ``class_dict``). A clip listed twice in a split keeps its last line; one
    listed in both splits stays in test only (with a warning).

  Raises:
    ValueError: a malformed line, an unknown split, a start that is not a
      whole number, a test class without train clips or more than 309
      classes, naming the file and line.
  """
  parsed = []
  for number, row in av.read_rows(path):
    where = f'{path}:{number}'
    if len(row) != 4:
      raise ValueError(f'{where}: expected 4 fields youtube_id,start_seconds,'
                       f'label,split; got {row}.')
    youtube_id, start, name, split = row
    if split not in SPLITS:
      raise ValueError(f'{where}: split {split!r} must be one of {SPLITS}.')
    if not start.isdigit():
      raise ValueError(f'{where}: start_seconds {start!r} must be a whole '
                       'number of seconds.')
    parsed.append((number, f'{youtube_id}_{start}', name, split))
  classes: dict[str, int] = {}
  for _, _, name, split in parsed:
    if split == 'train' and name not in classes:
      classes[name] = len(classes)
  if len(classes) > NUM_CLASSES:
    raise ValueError(f'{path}: {len(classes)} classes in the train rows; '
                     f'VGGSound has {NUM_CLASSES}.')
  rows = {split: {} for split in SPLITS}
  for number, clip_id, name, split in parsed:
    if name not in classes:
      raise ValueError(f'{path}:{number}: class {name!r} has no train clip, '
                       'so it has no label (OGM-GE indexes the train rows\' '
                       'classes).')
    rows[split][clip_id] = classes[name]  # The last line wins.
  both = rows['train'].keys() & rows['test'].keys()
  for clip_id in both:
    del rows['train'][clip_id]
  if both:
    logging.warning('%s: left %d clips listed in both splits in test only, '
                    'e.g. %s.', path, len(both), sorted(both)[:3])
  for split in SPLITS:
    if not rows[split]:
      raise ValueError(f'{path}: no {split} clips.')
  if len(classes) < NUM_CLASSES:
    logging.warning('%s: %d of VGGSound\'s %d classes have train clips.',
                    path, len(classes), NUM_CLASSES)
  return rows, list(classes)
