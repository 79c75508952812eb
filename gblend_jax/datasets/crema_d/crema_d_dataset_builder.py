"""CREMA-D audio-visual emotion clips, as OGM-GE reads them (6 classes).

CREMA-D (Cao et al., IEEE TAC 2014) has 7442 clips of 91 actors speaking
12 sentences with one of six emotions. OGM-GE's split files send 6698 to
``train`` and 744 to ``test``; the label is the emotion in the split file,
indexed as the official ``class_dict``: NEU 0, HAP 1, SAD 2, FEA 3, DIS 4,
ANG 5. ``id`` is the clip name (``1001_DFA_ANG_XX``).

Configs (see ``gblend_jax.data.audio_visual`` for the preprocessing):
``official`` (2.0.0): ``audio`` float16 [257, 188] (3 s STFT of
``dataset/CramedDataset.py``), ``visual`` the bytes of the official
``--fps 1`` frame's JPEG file, [1] (decoded to [1, 224, 224, 3] by the
input pipeline); ``small`` (1.0.0): ``audio`` float32 [257, 188],
``visual`` uint8 [1, 64, 64, 3].

Named ``crema_d_av``: TFDS ships an audio-only ``crema_d`` builder, and two
builders of one name cannot both be registered.
"""

from gblend_jax.data import audio_visual

_LAYOUT = """\
Put your copy of CREMA-D (github.com/CheyneyComputerScience/CREMA-D) in
<manual_dir>/CREMAD/ (or in the manual dir itself), laid out as the official
OGM-GE code (github.com/GeWu-Lab/OGM-GE_CVPR2022) reads it:

  CREMAD/
    train.csv              OGM-GE's split files (data/CREMAD/ of its repo):
    test.csv               6698 and 744 lines `<clip>,<emotion>`, e.g.
                           `1001_DFA_ANG_XX,ANG`
    AudioWAV/<clip>.wav    CREMA-D's own wav files
    Image-01-FPS/<clip>/   JPEG frames at 1 fps (00000.jpg, 00030.jpg, ...)
                           of VideoFlash/<clip>.flv, as OGM-GE's
                           data/CREMAD/video_preprocessing.py writes them

The manual dir defaults to <data_dir>/downloads/manual. Listed clips whose
wav file or frame folder is missing are left out with a warning."""


class Builder(audio_visual.AudioVisualBuilder):
  """CREMA-D: a log spectrogram and 1-fps frames per clip, 6 emotions."""

  name = 'crema_d_av'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT
  BUILDER_CONFIGS = audio_visual.standard_configs(
      num_frames=1, num_samples=audio_visual.CLIP_SAMPLES,
      spectrogram='stft', small_frames=1)
  CLASS_NAMES = ('NEU', 'HAP', 'SAD', 'FEA', 'DIS', 'ANG')
  FOLDER = 'CREMAD'
  AUDIO_DIR = 'AudioWAV'
  FRAMES_DIR = 'Image-01-FPS'
  SPLIT_FILES = {'train': 'train.csv', 'test': 'test.csv'}
  HOMEPAGE = 'https://github.com/CheyneyComputerScience/CREMA-D'
