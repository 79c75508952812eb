"""CREMA-D, Kinetics-Sounds and AVE builders on tiny copies in their layouts.

Each test writes a few short wav files, small JPEG frames and the split files
into a temporary manual dir, in the on-disk layout its builder documents,
builds it and reads it back. Clip ``i`` of a copy holds a tone in STFT bin
``20 + 3 i`` and frames whose red level is ``25 i`` and green level
``20 k`` for frame k, so that every stored array can be traced to its clip.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gblend_jax.data import audio_visual as av
from gblend_jax.datasets.ave import ave_dataset_builder as ave
from gblend_jax.datasets.crema_d import crema_d_dataset_builder as crema_d
from gblend_jax.datasets.kinetics_sounds import (
  kinetics_sounds_dataset_builder as ks,
)
from tests.datasets import av_fakes


def _build(tmp_path, name, config='small', write=True):
  """Writes ``name``'s copy under ``<tmp>/manual/<FOLDER>`` and builds it."""
  layout = av_fakes.LAYOUTS[name]
  if write:
    av_fakes.write_copy(tmp_path / 'manual' / layout.builder.FOLDER, layout)
  builder = layout.builder(data_dir=str(tmp_path / 'tfds'),
                           file_format='array_record', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / 'manual')))
  return builder


def _read_all(builder, config='small'):
  """Every split through ``tfds.data_source``, as ``{split: {id: example}}``."""
  sources = tfds.data_source(f'{builder.name}/{config}',
                             data_dir=builder.data_dir_root)
  return {split: {source[i]['id'].decode(): source[i]
                  for i in range(len(source))}
          for split, source in sources.items()}


def _check_clip(example, index, label, layout, config):
  assert example['label'] == label
  assert example['audio'].shape == config.audio_shape
  assert example['audio'].dtype == np.float32
  assert np.argmax(example['audio'].mean(axis=1)) == 20 + 3 * index
  visual = example['visual']
  assert visual.shape == config.visual_shape and visual.dtype == np.uint8
  means = visual.reshape(config.num_frames, -1, 3).mean(axis=1)
  picked = av.select_frames(len(layout.frame_names), config.num_frames)
  np.testing.assert_allclose(means[:, 0], 25 * index, atol=3)
  np.testing.assert_allclose(means[:, 1], 20 * picked, atol=3)


@pytest.mark.parametrize('name', sorted(av_fakes.LAYOUTS))
def test_small_config_holds_every_clip_of_every_split(tmp_path, name):
  layout = av_fakes.LAYOUTS[name]
  builder = _build(tmp_path, name)
  assert builder.info.features['label'].names == list(
      layout.builder.CLASS_NAMES)
  read = _read_all(builder)
  assert sorted(read) == sorted(layout.clips)
  index = 0
  for split, clips in layout.clips.items():
    assert builder.info.splits[split].num_examples == len(clips)
    assert sorted(read[split]) == sorted(clip_id for clip_id, _ in clips)
    for clip_id, label in clips:
      _check_clip(read[split][clip_id], index, label, layout,
                  builder.builder_config)
      index += 1


@pytest.mark.parametrize(
    'name, audio_shape, visual_shape',
    [('crema_d', (257, 188), (1, 224, 224, 3)),
     ('kinetics_sounds', (257, 1004), (3, 224, 224, 3)),
     ('ave', (257, 1004), (3, 224, 224, 3))],
)
def test_official_config_shapes(tmp_path, name, audio_shape, visual_shape):
  builder = _build(tmp_path, name, config='official')
  features = builder.info.features
  assert features['audio'].shape == audio_shape
  assert features['visual'].shape == visual_shape
  clip_id, label = av_fakes.LAYOUTS[name].clips['test'][0]
  example = _read_all(builder, 'official')['test'][clip_id]
  assert example['label'] == label
  assert example['audio'].shape == audio_shape
  assert example['visual'].shape == visual_shape


def test_class_names_follow_the_official_label_order():
  assert crema_d.Builder.CLASS_NAMES == (
      'NEU', 'HAP', 'SAD', 'FEA', 'DIS', 'ANG')  # OGM-GE's class_dict.
  assert ks.Builder.CLASS_NAMES == tuple(str(i) for i in range(31))
  assert len(ave.Builder.CLASS_NAMES) == 28
  assert ave.Builder.CLASS_NAMES[:3] == (
      'Accordion', 'Acoustic guitar', 'Baby cry, infant cry')  # sorted().
  assert crema_d.Builder.name == 'crema_d_av'  # TFDS has an audio crema_d.


def test_the_manual_dir_itself_can_hold_the_layout(tmp_path):
  av_fakes.write_copy(tmp_path / 'manual', av_fakes.LAYOUTS['crema_d'])
  builder = _build(tmp_path, 'crema_d', write=False)
  assert builder.info.splits['train'].num_examples == 4


def test_clips_with_missing_files_are_left_out_with_a_warning(
    tmp_path, caplog):
  root = tmp_path / 'manual' / 'KineticSound'
  av_fakes.write_copy(root, av_fakes.LAYOUTS['kinetics_sounds'])
  os.remove(root / 'audio' / '-00nar1nEPc_000033_000043.wav')
  for name in os.listdir(root / 'visual' / '04fLIUMTbco_6'):
    os.remove(root / 'visual' / '04fLIUMTbco_6' / name)
  with caplog.at_level(logging.WARNING):
    builder = _build(tmp_path, 'kinetics_sounds', write=False)
  assert builder.info.splits['train'].num_examples == 2
  assert builder.info.splits['test'].num_examples == 1
  assert 'left out 1 of 3 listed clips' in caplog.text
  assert '-00nar1nEPc_000033_000043.wav' in caplog.text


def test_ave_duplicates_keep_the_last_line_and_the_later_split(tmp_path):
  root = tmp_path / 'manual' / 'AVE'
  av_fakes.write_copy(root, av_fakes.LAYOUTS['ave'])
  with open(root / 'trainSet.txt', 'a') as file:  # Listed again: Bus.
    bus = ave.Builder.CLASS_NAMES.index('Bus')
    file.write(av_fakes.ave_line('c---zaDCTaE', bus) + '\n'
               + av_fakes.ave_line('OXvrQ0XIAeM', 3) + '\n')  # Also in test.
  read = _read_all(_build(tmp_path, 'ave', write=False))
  assert read['train']['c---zaDCTaE']['label'] == (
      ave.Builder.CLASS_NAMES.index('Bus'))
  assert sorted(read['train']) == ['RUhOCu3LNXM', 'c---zaDCTaE',
                                   'fCZi6I6kPpU']
  assert 'OXvrQ0XIAeM' in read['test']


def test_a_header_line_is_skipped(tmp_path):
  root = tmp_path / 'manual' / 'AVE'
  av_fakes.write_copy(root, av_fakes.LAYOUTS['ave'])
  text = (root / 'testSet.txt').read_text()
  (root / 'testSet.txt').write_text(
      'Category&VideoID&Quality&StartTime&EndTime\n' + text)
  assert _build(tmp_path, 'ave', write=False).info.splits[
      'test'].num_examples == 2


@pytest.mark.parametrize(
    'remove, message',
    [('valSet.txt', 'validation split file not found: .*valSet.txt'),
     ('audio', 'folder not found: .*AVE/audio')],
)
def test_a_missing_file_is_named_with_the_layout(tmp_path, remove, message):
  root = tmp_path / 'manual' / 'AVE'
  av_fakes.write_copy(root, av_fakes.LAYOUTS['ave'])
  path = root / remove
  if path.is_dir():
    for name in os.listdir(path):
      os.remove(path / name)
    path.rmdir()
  else:
    path.unlink()
  with pytest.raises(FileNotFoundError, match=message) as error:
    _build(tmp_path, 'ave', write=False)
  assert 'trainSet.txt' in str(error.value)  # The layout is explained.


def test_an_empty_manual_dir_is_an_error(tmp_path):
  (tmp_path / 'manual').mkdir()
  with pytest.raises(FileNotFoundError, match='CREMAD/'):
    _build(tmp_path, 'crema_d', write=False)


def test_a_split_without_any_present_clip_is_an_error(tmp_path):
  root = tmp_path / 'manual' / 'CREMAD'
  av_fakes.write_copy(root, av_fakes.LAYOUTS['crema_d'])
  for clip_id, _ in av_fakes.LAYOUTS['crema_d'].clips['test']:
    os.remove(root / 'AudioWAV' / f'{clip_id}.wav')
  with pytest.raises(FileNotFoundError, match='every test clip'):
    _build(tmp_path, 'crema_d', write=False)


def test_an_unknown_label_names_the_file_and_line(tmp_path):
  root = tmp_path / 'manual' / 'CREMAD'
  av_fakes.write_copy(root, av_fakes.LAYOUTS['crema_d'])
  with open(root / 'test.csv', 'a') as file:
    file.write('1091_WSI_XYZ_XX,XYZ\n')
  with pytest.raises(ValueError, match=r"test.csv:3: unknown class 'XYZ'"):
    _build(tmp_path, 'crema_d', write=False)
