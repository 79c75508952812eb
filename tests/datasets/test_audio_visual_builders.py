"""CREMA-D, Kinetics-Sounds and AVE builders on tiny copies in their layouts.

Each test writes a few short wav files, small JPEG frames and the split files
into a temporary manual dir, in the on-disk layout its builder documents,
builds it and reads it back. Clip ``i`` of a copy holds a tone in STFT bin
``20 + 3 i`` and frames whose red level is ``25 i`` and green level
``20 k`` for frame k, so that every stored array can be traced to its clip.
"""

import glob
import logging
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader

from gblend_jax import data
from gblend_jax.data import audio_visual as av
from gblend_jax.data import streaming
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


def _clip_paths(tmp_path, layout, clip_id):
  root = tmp_path / 'manual' / layout.builder.FOLDER
  return (str(root / layout.builder.AUDIO_DIR / f'{clip_id}.wav'),
          str(root / layout.builder.FRAMES_DIR / clip_id))


def _streamed(builder, split):
  """A split as training reads it: `streaming.open_split`, decoded."""
  features = builder.info.features
  modalities = {'audio': features['audio'].shape,
                'visual': builder.gblend_encoded_images['visual'].shape}
  return streaming.open_split(
      builder, split, name=builder.name,
      num_classes=features['label'].num_classes, modalities=modalities)


@pytest.mark.parametrize(
    'name, audio_shape, visual_shape',
    [('crema_d', (257, 188), (1, 224, 224, 3)),
     ('kinetics_sounds', (257, 1004), (3, 224, 224, 3)),
     ('ave', (257, 1004), (3, 224, 224, 3))],
)
def test_official_config_stores_frame_bytes_and_float16(
    tmp_path, name, audio_shape, visual_shape):
  layout = av_fakes.LAYOUTS[name]
  builder = _build(tmp_path, name, config='official')
  assert str(builder.version) == '2.0.0'  # The small config stays 1.0.0.
  assert str(layout.builder(data_dir=str(tmp_path / 'other'),
                            config='small').version) == '1.0.0'
  features = builder.info.features
  assert features['audio'].shape == audio_shape
  assert features['audio'].np_dtype == np.float16
  assert features['visual'].shape == visual_shape[:1]  # T files' bytes.
  assert builder.gblend_encoded_images['visual'].shape == visual_shape
  clip_id, label = layout.clips['test'][0]
  example = _read_all(builder, 'official')['test'][clip_id]
  assert example['label'] == label
  assert example['audio'].shape == audio_shape
  assert example['audio'].dtype == np.float16
  _, frames_dir = _clip_paths(tmp_path, layout, clip_id)
  names = av.frame_files(frames_dir)
  picked = av.select_frames(len(names), visual_shape[0])
  for k, position in enumerate(picked):  # Each picked file, byte for byte.
    with open(os.path.join(frames_dir, names[position]), 'rb') as file:
      assert example['visual'][k] == file.read()
  # The spectrogram takes its own 2 bytes a value (TFDS writes a plain
  # float16 Tensor as a float32 list); the fake JPEGs are under 1 kB each.
  files = glob.glob(os.path.join(builder.data_dir, '*-test.array_record*'))
  sizes = [len(record) for f in files
           for record in ArrayRecordReader(f).read_all()]
  assert len(sizes) == len(layout.clips['test'])
  assert max(sizes) < 2 * np.prod(audio_shape) + 4096


@pytest.mark.parametrize('name', sorted(av_fakes.LAYOUTS))
def test_official_records_read_as_the_old_float32_records(tmp_path, name):
  # The eval path: each stored frame decoded and resized to 224 x 224 is
  # the old builder's uint8 frame exactly (`read_frames`, which the small
  # config still stores); the float16 spectrogram is the float32 one to
  # float16 rounding (half an ulp: 2^-11 relative, 2^-25 below 2^-14).
  layout = av_fakes.LAYOUTS[name]
  builder = _build(tmp_path, name, config='official')
  config = builder.builder_config
  for split, clips in layout.clips.items():
    source = _streamed(builder, split)
    batch = source.take(np.arange(len(source)))
    assert batch['visual'].dtype == batch['audio'].dtype == np.float32
    for k, example_id in enumerate(batch['id']):
      audio_path, frames_dir = _clip_paths(tmp_path, layout,
                                           example_id.decode())
      old_audio = av.audio_features(audio_path, config.num_samples,
                                    config.spectrogram)
      np.testing.assert_allclose(batch['audio'][k], old_audio,
                                 rtol=2.0**-11, atol=2.0**-25)
      assert not np.array_equal(batch['audio'][k], old_audio)  # Rounded.
      old_frames = av.read_frames(frames_dir, config.num_frames, 224)
      np.testing.assert_array_equal(batch['visual'][k], old_frames)
    assert sorted(batch['id'].astype(str).tolist()) == sorted(
        clip_id for clip_id, _ in clips)


def test_official_training_frames_get_the_train_transform(tmp_path):
  # With a generator (training batches under random_resized_crop_flip):
  # each frame its own RandomResizedCrop(224) + flip of the decoded file,
  # drawn in example then frame order.
  builder = _build(tmp_path, 'kinetics_sounds', config='official')
  source = _streamed(builder, 'train')
  batch = source.take(np.array([1, 0]), np.random.default_rng(7))
  rng = np.random.default_rng(7)
  layout = av_fakes.LAYOUTS['kinetics_sounds']
  for k in (1, 0):
    clip_id = source.ids[k].decode()
    _, frames_dir = _clip_paths(tmp_path, layout, clip_id)
    for frame, path in enumerate(av.frame_paths(frames_dir, 3)):
      with open(path, 'rb') as file:
        image = streaming.decode_image(file.read())
      expected = streaming.train_transform(image, 224, rng)
      np.testing.assert_array_equal(batch['visual'][1 - k, frame], expected)


def test_train_iterator_crops_only_the_named_encoded_frames(tmp_path):
  # av_ogm's setting: random_resized_crop_flip of 'visual' only. The frames
  # get the train transform as they are decoded (draws of batch 0:
  # default_rng((seed, process, 0, 1))); the [257, 1004] spectrogram, an
  # image-shaped array, is left as stored.
  builder = _build(tmp_path, 'ave', config='official')
  source = _streamed(builder, 'train')
  iterator = data.train_iterator(
      source, global_batch_size=2, seed=3, workers=0,
      augmentation='random_resized_crop_flip', augment_modalities=('visual',))
  batch = next(iterator)
  iterator.close()
  indices = np.array([source.ids.tolist().index(i) for i in batch['id']])
  plain = source.take(indices)
  np.testing.assert_array_equal(batch['audio'], plain['audio'])
  cropped = source.take(indices, np.random.default_rng((3, 0, 0, 1)))
  np.testing.assert_array_equal(batch['visual'], cropped['visual'])


@pytest.mark.parametrize('config', ['small', 'official'])
@pytest.mark.parametrize('what', ['frame', 'wav'])
def test_a_truncated_file_stops_the_build_naming_it(tmp_path, config, what):
  layout = av_fakes.LAYOUTS['ave']
  root = tmp_path / 'manual' / 'AVE'
  av_fakes.write_copy(root, layout)
  clip_id = layout.clips['validation'][0][0]
  audio_path, frames_dir = _clip_paths(tmp_path, layout, clip_id)
  path = (audio_path if what == 'wav'
          else av.frame_paths(frames_dir, 3)[1])  # A picked frame.
  with open(path, 'rb') as file:
    data = file.read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])
  message = 'truncated wav file' if what == 'wav' else 'unreadable frame'
  with pytest.raises(ValueError, match=re.escape(f'{path}: {message}')):
    _build(tmp_path, 'ave', config=config, write=False)


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
