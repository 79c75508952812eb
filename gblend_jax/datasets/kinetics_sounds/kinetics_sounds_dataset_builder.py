"""Kinetics-Sounds as OGM-GE uses it: 31 classes, 14799 / 2597 clips.

Kinetics-Sounds (Arandjelovic and Zisserman, ICCV 2017) is the subset of
Kinetics-400 whose classes can be heard. OGM-GE's split files
(``data/KineticSound/my_train.txt`` and ``my_test.txt``) list 14799
``train`` and 2597 ``test`` clips as ``<clip>,10,<label>`` with labels
0..30; they do not name the classes, so the ``label`` names here are
``'0'`` .. ``'30'``. ``id`` is the clip name
(``--4-0ihtnBU_000058_000068``).

Configs (see ``gblend_jax.data.audio_visual``): ``official`` (2.0.0):
``audio`` float16 [257, 1004] (the standardised log PSD that
``pre-processing/obtain_audio_spectrogram.py`` stored for
``dataset/dataset.py``), ``visual`` the bytes of its 3 frames' JPEG files,
[3] (decoded to [3, 224, 224, 3] by the input pipeline); ``small``
(1.0.0): ``audio`` float32 [257, 188] (3 s STFT), ``visual`` uint8
[3, 64, 64, 3].
"""

from gblend_jax.data import audio_visual

_LAYOUT = """\
Put your Kinetics-Sounds clips (from Kinetics-400,
github.com/cvdfoundation/kinetics-dataset) in <manual_dir>/KineticSound/
(or in the manual dir itself), laid out as OGM-GE's dataset/dataset.py
reads AVE and Kinetics-Sounds (github.com/GeWu-Lab/OGM-GE_CVPR2022), with
wav files instead of its spectrogram pickles:

  KineticSound/
    my_train.txt           OGM-GE's split files (data/KineticSound/ of its
    my_test.txt            repo): 14799 and 2597 lines `<clip>,10,<label>`,
                           labels 0..30, e.g. `--4-0ihtnBU_000058_000068,10,4`
    audio/<clip>.wav       the clip's sound track (OGM-GE: ffmpeg -ac 1
                           -ar 16000 -acodec pcm_s16le)
    visual/<clip>/         JPEG frames at 1 fps (frame_00001.jpg, ...), as
                           OGM-GE's pre-processing/*/video2frame-1fps.py
                           writes them

The manual dir defaults to <data_dir>/downloads/manual. Listed clips whose
wav file or frame folder is missing (Kinetics videos disappear from
YouTube) are left out with a warning."""


class Builder(audio_visual.AudioVisualBuilder):
  """Kinetics-Sounds: a log spectrogram and 1-fps frames per clip."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT
  BUILDER_CONFIGS = audio_visual.ave_ks_configs()
  CLASS_NAMES = tuple(str(label) for label in range(31))
  FOLDER = 'KineticSound'
  SPLIT_FILES = {'train': 'my_train.txt', 'test': 'my_test.txt'}
  LABEL_COLUMN = 2
  HOMEPAGE = 'https://github.com/GeWu-Lab/OGM-GE_CVPR2022'
