"""AVE, the Audio-Visual Event data set, as a 28-class clip classification.

AVE (Tian et al., ECCV 2018) has 4143 10-second YouTube videos of 28 event
categories, split by its own files into 3339 ``train``, 402 ``validation``
and 402 ``test`` videos. The label is the video's category; its index is
that of the category in the sorted list of the 28 names, as in OGM-GE's
``dataset/dataset.py`` (``sorted(classes)``). ``id`` is the YouTube id.
A video listed twice in a split keeps its last line (the official loader's
rule); one listed in two splits stays only in the later one.

Configs (see ``gblend_jax.data.audio_visual``): ``official`` (2.0.0):
``audio`` float16 [257, 1004] (the standardised log PSD that
``pre-processing/obtain_audio_spectrogram.py`` stored for
``dataset/dataset.py``), ``visual`` the bytes of its 3 frames' JPEG files,
[3] (decoded to [3, 224, 224, 3] by the input pipeline); ``small``
(1.0.0): ``audio`` float32 [257, 188] (3 s STFT), ``visual`` uint8
[3, 64, 64, 3].
"""

from gblend_jax.data import audio_visual

# As AVE's annotation files write them.
CATEGORIES = (
    'Church bell', 'Male speech, man speaking', 'Bark',
    'Fixed-wing aircraft, airplane', 'Race car, auto racing',
    'Female speech, woman speaking', 'Helicopter', 'Violin, fiddle', 'Flute',
    'Ukulele', 'Frying (food)', 'Truck', 'Shofar', 'Motorcycle',
    'Acoustic guitar', 'Train horn', 'Clock', 'Banjo', 'Goat',
    'Baby cry, infant cry', 'Bus', 'Chainsaw', 'Cat', 'Horse',
    'Toilet flush', 'Rodents, rats, mice', 'Accordion', 'Mandolin',
)

_LAYOUT = """\
Put your copy of AVE (sites.google.com/view/audiovisualresearch) in
<manual_dir>/AVE/ (or in the manual dir itself): AVE's own split files and
the audio and 1-fps frames of each video, as OGM-GE's pre-processing
(github.com/GeWu-Lab/OGM-GE_CVPR2022, pre-processing/AVE&CREMAD/) writes
them from AVE/<video id>.mp4:

  AVE/
    trainSet.txt           AVE's split files, lines
    valSet.txt             `Category&VideoID&Quality&StartTime&EndTime`,
    testSet.txt            e.g. `Church bell&RUhOCu3LNXM&good&0&10`
    audio/<video id>.wav   the video's sound track (video_to_wav.py:
                           ffmpeg -ac 1 -ar 16000 -acodec pcm_s16le)
    visual/<video id>/     JPEG frames at 1 fps (frame_00001.jpg, ...,
                           frame_00010.jpg; video2frame-1fps.py)

The manual dir defaults to <data_dir>/downloads/manual. Listed videos whose
wav file or frame folder is missing are left out with a warning."""


class Builder(audio_visual.AudioVisualBuilder):
  """AVE: a log spectrogram and 1-fps frames per video, 28 events."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT
  BUILDER_CONFIGS = audio_visual.ave_ks_configs()
  CLASS_NAMES = tuple(sorted(CATEGORIES))
  FOLDER = 'AVE'
  SPLIT_FILES = {'train': 'trainSet.txt', 'validation': 'valSet.txt',
                 'test': 'testSet.txt'}
  DELIMITER = '&'
  ID_COLUMN = 1
  LABEL_COLUMN = 0
  HEADER = 'Category'  # The first line of AVE's Annotations.txt.
  HOMEPAGE = 'https://sites.google.com/view/audiovisualresearch'
