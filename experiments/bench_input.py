r"""The streaming input pipeline: peak memory and examples/s.

Fake ImageNet-LT copies in the builder's real layout (list files and JPEG
files under ``train/<wnid>/`` and ``val/<wnid>/``), prepared with the
``full`` config (the JPEG bytes), then read as training reads them
(`gblend_jax.data.train_iterator`: decode, random-resized-crop 224, flip).
The audio-visual part: a fake CREMA-D copy in the builder's layout
(``AudioWAV/``, ``Image-01-FPS/<clip>/`` JPEG frames at the videos'
480 x 360, the split files), prepared with the ``official`` config (each
clip's frame file bytes and a float16 [257, 188] spectrogram), read as
``av_ogm.py:dataset=crema_d`` trains on it, beside the in-memory path on
float32 arrays of the same shapes; and the stored bytes per clip.

  python -m experiments.bench_input \
      --output experiments/results/streaming_input_cpu.md    # every part
  python -m experiments.bench_input --parts av \
      --output experiments/results/streaming_input_cpu.md    # AV only
  python -m experiments.bench_input --tiny                   # a smoke run

With ``--parts`` naming some parts and ``--output`` an existing file, the
file keeps its other parts (each with the command that made it).

``make bench`` (`experiments.benchmark`) adds ``input_section``'s table to
its report; ``tests/test_streaming_memory.py`` checks ``peak_rss_mb``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ImageNet's median image: 500 x 375 (width x height), JPEG quality 90.
IMAGENET_SHAPE = (500, 375)
CROP = 224
FLOAT32_EXAMPLE_MB = CROP * CROP * 3 * 4 / 2**20
PARTS = ('imagenet', 'av')
AV_TITLE = '## Streaming input (CREMA-D-shaped audio-visual clips)'
# CREMA-D's videos (VideoFlash/*.flv) are 480 x 360; its clips last about
# 2.5 s (16 kHz wav files), so 3 frames at 1 fps.
CREMA_D_FRAME = (480, 360)
CREMA_D_SECONDS = 2.5
CREMA_D_SHAPES = {'audio': (257, 188), 'visual': (1, CROP, CROP, 3)}


def write_imagenet_lt_files(root: str, train_per_class: int, *,
                            num_classes: int = 4, test_per_class: int = 2,
                            size: tuple[int, int] = (160, 120),
                            seed: int = 0) -> None:
  """Writes a fake ImageNet-LT (list files and JPEGs) into ``root``.

  Each image is smooth random colour (a natural image's JPEG cost, not a
  flat one's), ``size`` = (width, height); class ``c``'s images are
  brighter in channel ``c % 3``.

  Args:
    root: The manual dir.
    train_per_class: Training images per class.
    num_classes: Classes (at most 1000).
    test_per_class: Validation and test images per class.
    size: Image width and height.
    seed: Seed of the pixels.
  """
  rng = np.random.default_rng(seed)
  width, height = size
  lines = {'train': [], 'val': [], 'test': []}
  counts = {'train': train_per_class, 'val': test_per_class,
            'test': test_per_class}
  for split, count in counts.items():
    for label in range(num_classes):
      wnid = f'n{label:08d}'
      for k in range(count):
        if split == 'test':
          path = f'val/{wnid}/ILSVRC2012_val_{label:04d}{k:04d}.JPEG'
        else:
          path = f'train/{wnid}/{wnid}_{k}{"v" if split == "val" else ""}' \
                 '.JPEG'
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        smooth_image(rng, size, label % 3).save(full, quality=90)
        lines[split].append(f'{path} {label}\n')
  for split, split_lines in lines.items():
    with open(os.path.join(root, f'ImageNet_LT_{split}.txt'), 'w') as f:
      f.writelines(split_lines)


def smooth_image(rng: np.random.Generator, size: tuple[int, int],
                 channel: int) -> Image.Image:
  """Smooth random colour of ``size`` = (width, height), brighter in
  ``channel``: random 8 x 8 cells, bilinearly enlarged."""
  width, height = size
  coarse = rng.integers(0, 200, (height // 8 + 1, width // 8 + 1, 3))
  coarse[..., channel] += 55
  return Image.fromarray(coarse.astype(np.uint8)).resize(
      (width, height), Image.Resampling.BILINEAR)


def write_crema_d_files(root: str, train_per_class: int, *,
                        test_per_class: int = 2, seed: int = 0) -> None:
  """Writes a fake CREMA-D into ``root`` (the manual dir), in the layout
  of the ``crema_d_av`` builder: ``CREMAD/{train,test}.csv``,
  ``AudioWAV/<clip>.wav`` (16 kHz int16, ``CREMA_D_SECONDS`` of noise) and
  ``Image-01-FPS/<clip>/000{00,30,60}.jpg`` (``smooth_image`` at
  ``CREMA_D_FRAME``, quality 90).

  Args:
    root: The manual dir.
    train_per_class: Training clips of each of the 6 emotions.
    test_per_class: Test clips of each.
    seed: Seed of the samples and pixels.
  """
  import scipy.io.wavfile  # pylint: disable=g-import-not-at-top

  from gblend_jax.datasets.crema_d import crema_d_dataset_builder  # pylint: disable=g-import-not-at-top

  builder = crema_d_dataset_builder.Builder
  rng = np.random.default_rng(seed)
  folder = os.path.join(root, builder.FOLDER)
  for name in (builder.AUDIO_DIR, builder.FRAMES_DIR):
    os.makedirs(os.path.join(folder, name), exist_ok=True)
  samples = int(16000 * CREMA_D_SECONDS)
  for split, count in (('train', train_per_class), ('test', test_per_class)):
    lines = []
    for label, emotion in enumerate(builder.CLASS_NAMES):
      for k in range(count):
        clip = f'{1001 + k:04d}_{split.upper()}_{emotion}_XX'
        wave = 0.1 * rng.standard_normal(samples)
        scipy.io.wavfile.write(
            os.path.join(folder, builder.AUDIO_DIR, clip + '.wav'), 16000,
            (np.clip(wave, -1, 1) * (2**15 - 1)).astype(np.int16))
        frames = os.path.join(folder, builder.FRAMES_DIR, clip)
        os.makedirs(frames, exist_ok=True)
        for frame in ('00000.jpg', '00030.jpg', '00060.jpg'):
          smooth_image(rng, CREMA_D_FRAME, label % 3).save(
              os.path.join(frames, frame), quality=90)
        lines.append(f'{clip},{emotion}\n')
    with open(os.path.join(folder, builder.SPLIT_FILES[split]), 'w') as f:
      f.writelines(lines)


def _python(args: Sequence[str], timeout: int) -> dict:
  """Runs this module in a fresh process; its last stdout line (json)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (REPO, env.get('PYTHONPATH')) if p)
  env.setdefault('JAX_PLATFORMS', 'cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.bench_input', *args], env=env,
      capture_output=True, text=True, timeout=timeout, check=False)
  if result.returncode:
    raise RuntimeError(f'experiments.bench_input {" ".join(args)} failed:\n'
                       f'{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def peak_rss_mb(folder: str, train_per_class: int, *, steps: int = 4,
                timeout: int = 600) -> float:
  """Peak RSS of a short ``imagenet_lt.py:size=full,runlocal`` run.

  Writes the fake files and prepares them in one child process, then
  trains ``steps`` steps in another (data.workers=0: everything in that
  process, so its own peak is the input pipeline's), which reports its
  ``ru_maxrss``.

  Args:
    folder: Where the files, the prepared data and the run go.
    train_per_class: Training images of each of the 4 classes.
    steps: Training steps.
    timeout: Seconds each child may take.

  Returns:
    The training process's peak resident set, MB.
  """
  _python(['--worker', 'prepare', '--folder', folder,
           '--train_per_class', str(train_per_class)], timeout)
  return _python(['--worker', 'train', '--folder', folder,
                  '--steps', str(steps)], timeout)['peak_rss_mb']


def _data_config(folder: str):
  from experiments.configs import imagenet_lt  # pylint: disable=g-import-not-at-top

  config = imagenet_lt.get_config('size=full,runlocal')
  config.data.data_dir = os.path.join(folder, 'tfds')
  config.data.manual_dir = os.path.join(folder, 'manual')
  # Enough held-out batches that even the small copy fills every prefetch
  # buffer: the peak then differs only by what grows with the data.
  config.data.holdout_fraction = 0.2
  return config


def _prepare_worker(folder: str, train_per_class: int) -> dict:
  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  write_imagenet_lt_files(os.path.join(folder, 'manual'), train_per_class)
  config = _data_config(folder)
  builder = data.get_builder(config.data.name,
                             data_dir=config.data.data_dir,
                             builder_config=config.data.builder_config)
  data.prepare(builder, manual_dir=config.data.manual_dir)
  return {'train': builder.info.splits['train'].num_examples}


def _train_worker(folder: str, steps: int) -> dict:
  import resource  # pylint: disable=g-import-not-at-top

  from gblend_jax.training import trainer  # pylint: disable=g-import-not-at-top

  config = _data_config(folder)
  config.num_train_steps = steps
  config.data.workers = 0
  config.data.batch_size = 8
  config.data.eval_batch_size = 8
  config.eval_train_examples = 8
  config.eval_every_epochs = 1000.0  # Evaluate at the end only.
  trainer.train_and_evaluate(config, os.path.join(folder, 'run'))
  return {'peak_rss_mb':
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def streaming_rate(folder: str, *, workers: int, batch_size: int,
                   batches: int) -> float:
  """Examples/s of training batches of the prepared fake ImageNet-LT.

  Decode, random-resized-crop 224 and flip, ``workers`` grain processes
  (0: in this process, one read thread); the first batch (worker start)
  is not timed.
  """
  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  config = _data_config(folder)
  config.data.standardize = False
  splits = data.load_dataset(config.data)
  iterator = data.train_iterator(
      splits.train, global_batch_size=batch_size, seed=0,
      augmentation='random_resized_crop_flip', workers=workers)
  return _rate(iterator, batch_size, batches)


def _rate(iterator, batch_size: int, batches: int) -> float:
  """Examples/s of ``batches`` batches after the first (not timed: worker
  start and first reads); closes the iterator."""
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  iterator.close()
  return batches * batch_size / seconds


def in_memory_rate(*, batch_size: int, batches: int) -> float:
  """Examples/s of the in-memory path on stored 224 x 224 uint8 crops
  (the s<side> configs' records): gather, float32, random-resized-crop
  and flip of the batch in numpy."""
  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  count = 4 * batch_size
  source = data.ArraySource({
      'image': rng.integers(0, 256, (count, CROP, CROP, 3)).astype(
          np.float32),
      'label': np.arange(count) % 4, 'id': np.arange(count)})
  iterator = data.train_iterator(
      source, global_batch_size=batch_size, seed=0,
      augmentation='random_resized_crop_flip')
  return _rate(iterator, batch_size, batches)


def _av_config(folder: str):
  from experiments.configs import av_ogm  # pylint: disable=g-import-not-at-top

  config = av_ogm.get_config('dataset=crema_d')  # builder config official.
  config.data.data_dir = os.path.join(folder, 'tfds')
  config.data.manual_dir = os.path.join(folder, 'manual')
  config.data.standardize = False
  return config


def av_streaming_rate(folder: str, *, workers: int, batch_size: int,
                      batches: int) -> float:
  """Examples/s of training batches of the prepared fake CREMA-D (config
  ``official``), read as ``av_ogm.py:dataset=crema_d`` reads them: the
  frame decoded, random-resized-crop 224 and flip; the float16 spectrogram
  cast to float32; ``workers`` grain processes (0: in this process)."""
  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  config = _av_config(folder)
  splits = data.load_dataset(config.data)
  iterator = data.train_iterator(
      splits.train, global_batch_size=batch_size, seed=0,
      augmentation=config.data.augmentation,
      augment_modalities=tuple(config.data.augment_modalities),
      workers=workers)
  return _rate(iterator, batch_size, batches)


def av_in_memory_rate(*, batch_size: int, batches: int) -> float:
  """Examples/s of the in-memory path on CREMA-D-shaped float32 arrays
  (``CREMA_D_SHAPES``, as it holds the ``small`` configs' records):
  gather; no augmentation (it cannot crop ``[T, S, S, 3]`` frames)."""
  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  count = 4 * batch_size
  arrays = {name: rng.standard_normal((count, *shape), np.float32)
            for name, shape in CREMA_D_SHAPES.items()}
  source = data.ArraySource({**arrays, 'label': np.arange(count) % 6,
                             'id': np.arange(count)})
  iterator = data.train_iterator(source, global_batch_size=batch_size,
                                 seed=0)
  return _rate(iterator, batch_size, batches)


def input_section(*, tiny: bool = False, memory: bool = True,
                  consumed: dict[str, float] | None = None,
                  folder: str | None = None,
                  parts: Sequence[str] = PARTS) -> list[str]:
  """The markdown section: ImageNet-shaped throughput, then the peak RSS at
  N and 5N; then the CREMA-D-shaped audio-visual throughput and sizes.

  Args:
    tiny: Few images and batches (a smoke run).
    memory: Whether to measure the peak RSS (two short training runs).
    consumed: Training examples/s to compare against (name -> rate).
    folder: Scratch folder (default: a temporary one).
    parts: Which of ``PARTS`` to measure.

  Returns:
    Markdown lines.
  """
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise ValueError(f'Unknown parts {unknown}; valid: {list(PARTS)}.')
  lines = []
  with tempfile.TemporaryDirectory() as scratch:
    folder = folder or scratch
    if 'imagenet' in parts:
      lines += _imagenet_section(tiny, memory, consumed, folder)
    if 'av' in parts:
      lines += av_section(tiny=tiny, folder=os.path.join(folder, 'av'))
  return lines


def _imagenet_section(tiny: bool, memory: bool,
                      consumed: dict[str, float] | None,
                      folder: str) -> list[str]:
  batch, batches = (4, 2) if tiny else (32, 8)
  rates = _python(['--worker', 'rates', '--folder',
                   os.path.join(folder, 'rates'), '--batch_size',
                   str(batch), '--batches', str(batches)]
                  + (['--tiny'] if tiny else []), 1800)
  n = 10 if tiny else 50
  peaks = {count: peak_rss_mb(os.path.join(folder, f'peak{count}'), count,
                              steps=2)
           for count in ((n, 5 * n) if memory else ())}
  cores = os.cpu_count()
  lines = [
      '## Streaming input (ImageNet-shaped JPEGs)', '',
      f'Fake ImageNet-LT in the builder\'s layout, config `full` (the JPEG '
      f'bytes, {IMAGENET_SHAPE[0]}x{IMAGENET_SHAPE[1]}, quality 90); '
      '`data.train_iterator` with `random_resized_crop_flip`: decode, '
      f'random-resized-crop {CROP}, flip, float32; batch {batch}. '
      f'This host: {cores} cores.', '',
      '| path | workers | examples/s | examples/s per worker |',
      '|---|---:|---:|---:|']
  for name, (workers, rate) in rates.items():
    per = rate / max(workers, 1)
    lines.append(f'| {name} | {workers} | {rate:.0f} | {per:.0f} |')
  if consumed:
    lines += ['', '| training step (this CPU) | examples/s |', '|---|---:|']
    lines += [f'| {name} | {rate:.1f} |' for name, rate in consumed.items()]
  per_worker = rates['streamed, one worker'][1]
  lines += [
      '', f'Host cores a GPU needs: a step rate of R examples/s needs about '
      f'R / {per_worker:.0f} worker cores at this rate per core (e.g. R = '
      f'2000 images/s, a ResNet-50 on one recent GPU, needs about '
      f'{2000 / per_worker:.0f} cores; R is not measured here).', '']
  if not peaks:
    return lines
  lines += [
      'Peak RSS of `imagenet_lt.py:size=full,runlocal` (2 steps, '
      'data.workers=0) on fake copies of N and 5N training images:', '',
      '| training images | peak RSS (MB) |', '|---:|---:|']
  lines += [f'| {4 * count} | {peak:.0f} |' for count, peak in peaks.items()]
  extra = 4 * 4 * n * FLOAT32_EXAMPLE_MB
  growth = peaks[5 * n] - peaks[n]
  lines += ['', f'Growth {growth:.0f} MB for {16 * n} more images, whose '
            f'float32 size is {extra:.0f} MB ({100 * growth / extra:.1f} %).',
            '']
  return lines


def av_section(*, tiny: bool, folder: str) -> list[str]:
  """The audio-visual part: examples/s of the streamed CREMA-D-shaped
  records (in process, one worker, all cores) and of the in-memory path,
  and the stored bytes per clip (see the module docstring)."""
  batch, batches = (4, 2) if tiny else (32, 8)
  load = os.getloadavg()
  result = _python(['--worker', 'av_rates', '--folder', folder,
                    '--batch_size', str(batch), '--batches', str(batches)]
                   + (['--tiny'] if tiny else []), 1800)
  load_after = os.getloadavg()
  shapes = CREMA_D_SHAPES
  float32_bytes = 4 * sum(int(np.prod(s)) for s in shapes.values())
  old_bytes = 4 * int(np.prod(shapes['audio'])) + int(
      np.prod(shapes['visual']))
  lines = [
      AV_TITLE, '',
      f'Fake CREMA-D in the builder\'s layout ({result["clips"]} clips; '
      f'3 JPEG frames of {CREMA_D_FRAME[0]}x{CREMA_D_FRAME[1]}, smooth '
      f'random colour, quality 90, and {CREMA_D_SECONDS} s of 16 kHz noise '
      'a clip), config `official` (version 2.0.0: the picked frame file\'s '
      'bytes and a float16 spectrogram); `data.train_iterator` as '
      '`av_ogm.py:dataset=crema_d` trains: decode the frame, '
      f'random-resized-crop {CROP} + flip, float32; spectrogram float16 to '
      f'float32 ({list(shapes["audio"])}); batch {batch}. In memory: '
      f'float32 arrays {list(shapes["audio"])} and {list(shapes["visual"])} '
      'gathered (no augmentation: the in-memory path cannot crop frames). '
      f'This host: {os.cpu_count()} cores; load average (1, 5, 15 min) '
      f'{_load(load)} before, {_load(load_after)} after (other users\' '
      'jobs: the rates are comparable only with each other).', '',
      '| path | workers | examples/s | examples/s per worker |',
      '|---|---:|---:|---:|']
  for name, (workers, rate) in result['rates'].items():
    per = rate / max(workers, 1)
    lines.append(f'| {name} | {workers} | {rate:.0f} | {per:.0f} |')
  lines += [
      '', '| stored per clip | bytes |', '|---|---:|',
      f'| `official` 2.0.0: array_record files (zstd) / clips | '
      f'{result["bytes_per_clip"]:.0f} |',
      f'| `official` 2.0.0: serialized record (mean) | '
      f'{result["record_bytes"]:.0f} |',
      f'| of which the frame JPEG (mean) | {result["frame_bytes"]:.0f} |',
      f'| of which the float16 spectrogram | '
      f'{2 * int(np.prod(shapes["audio"]))} |',
      f'| `official` 1.0.0 (float32 spectrogram + uint8 frame): serialized '
      f'record (mean of the test clips) | {result["old_record_bytes"]:.0f} |',
      f'| of which the arrays | {old_bytes} |',
      f'| float32, as the in-memory path holds a clip | {float32_bytes} |',
      '', 'Synthetic frames: real CREMA-D frames compress differently, so '
      'the JPEG sizes (and the 2.0.0 bytes per clip) of a real copy differ.',
      '']
  return lines


def _load(averages: Sequence[float]) -> str:
  return ', '.join(f'{a:.1f}' for a in averages)


def _old_record_bytes(builder, manual_dir: str) -> float:
  """Mean serialized size of the test clips as the 1.0.0 ``official``
  config wrote them: its features (float32 spectrogram, uint8 frames,
  `audio_visual.clip_features` of a config that is not compact) serialize
  the arrays its builder computed (`audio_features`, `read_frames`)."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from gblend_jax.data import audio_visual as av  # pylint: disable=g-import-not-at-top

  config = dataclasses.replace(builder.builder_config, compact=False)
  features = tfds.features.FeaturesDict({
      'id': tfds.features.Text(),
      'label': tfds.features.ClassLabel(names=list(builder.CLASS_NAMES)),
      **av.clip_features(config)})
  root = os.path.join(manual_dir, builder.FOLDER)
  sizes = []
  with open(os.path.join(root, builder.SPLIT_FILES['test'])) as f:
    for line in f:
      clip, emotion = line.strip().split(',')
      example = {
          'id': clip, 'label': builder.CLASS_NAMES.index(emotion),
          'audio': av.audio_features(
              os.path.join(root, builder.AUDIO_DIR, clip + '.wav'),
              config.num_samples, config.spectrogram),
          'visual': av.read_frames(
              os.path.join(root, builder.FRAMES_DIR, clip),
              config.num_frames, config.image_size)}
      sizes.append(len(features.serialize_example(example)))
  return float(np.mean(sizes))


def _av_rates_worker(folder: str, batch_size: int, batches: int,
                     tiny: bool) -> dict:
  import glob  # pylint: disable=g-import-not-at-top

  from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=g-import-not-at-top

  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  write_crema_d_files(os.path.join(folder, 'manual'), 4 if tiny else 16)
  config = _av_config(folder)
  builder = data.get_builder(config.data.name,
                             data_dir=config.data.data_dir,
                             builder_config=config.data.builder_config)
  data.prepare(builder, manual_dir=config.data.manual_dir)
  clips = sum(split.num_examples for split in builder.info.splits.values())
  files = glob.glob(os.path.join(os.fspath(builder.data_dir),
                                 '*.array_record*'))
  serialized = sum(len(record) for f in files
                   for record in ArrayRecordReader(f).read_all())
  records = builder.as_data_source(split='test')
  frames = [len(records[i]['visual'][0]) for i in range(len(records))]
  old_records = _old_record_bytes(builder, os.path.join(folder, 'manual'))
  rates = _streamed_rates(av_streaming_rate, folder, batch_size, batches)
  rates['in memory (float32 arrays)'] = (0, av_in_memory_rate(
      batch_size=batch_size, batches=batches))
  return {'rates': rates, 'clips': clips,
          'bytes_per_clip': sum(os.path.getsize(f) for f in files) / clips,
          'record_bytes': serialized / clips,
          'old_record_bytes': old_records,
          'frame_bytes': float(np.mean(frames))}


def _streamed_rates(rate: Callable[..., float], folder: str,
                    batch_size: int, batches: int) -> dict:
  """``{row: (workers, examples/s)}`` of ``rate`` in process, with one
  worker and with one worker per core (the table's streamed rows)."""
  rows = {}
  for name, workers in (('streamed, in process', 0),
                        ('streamed, one worker', 1),
                        ('streamed, all cores', os.cpu_count() or 1)):
    rows[name] = (workers, rate(folder, workers=workers,
                                batch_size=batch_size, batches=batches))
  return rows


def _rates_worker(folder: str, batch_size: int, batches: int,
                  tiny: bool) -> dict:
  from gblend_jax import data  # pylint: disable=g-import-not-at-top

  per_class = 8 if tiny else 64
  write_imagenet_lt_files(os.path.join(folder, 'manual'), per_class,
                          size=IMAGENET_SHAPE)
  config = _data_config(folder)
  builder = data.get_builder(config.data.name,
                             data_dir=config.data.data_dir,
                             builder_config=config.data.builder_config)
  data.prepare(builder, manual_dir=config.data.manual_dir)
  rates = _streamed_rates(streaming_rate, folder, batch_size, batches)
  rates['in memory (stored 224 crops, float32)'] = (0, in_memory_rate(
      batch_size=batch_size, batches=batches))
  return rates


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.bench_input')
  parser.add_argument('--worker', default='',
                      choices=('', 'prepare', 'train', 'rates', 'av_rates'))
  parser.add_argument('--parts', default=','.join(PARTS),
                      help=f'Comma-separated parts of {list(PARTS)}.')
  parser.add_argument('--folder', default='')
  parser.add_argument('--train_per_class', type=int, default=50)
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--batches', type=int, default=8)
  parser.add_argument('--tiny', action='store_true')
  parser.add_argument('--scratch', default='',
                      help='Folder for the fake data (default: temporary).')
  parser.add_argument('--output', default='',
                      help='Markdown file to write the section to.')
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(argv)
  if args.worker == 'prepare':
    result = _prepare_worker(args.folder, args.train_per_class)
  elif args.worker == 'train':
    result = _train_worker(args.folder, args.steps)
  elif args.worker == 'rates':
    result = _rates_worker(args.folder, args.batch_size, args.batches,
                           args.tiny)
  elif args.worker == 'av_rates':
    result = _av_rates_worker(args.folder, args.batch_size, args.batches,
                              args.tiny)
  else:
    parts = tuple(p for p in args.parts.split(',') if p)
    body = '\n'.join(input_section(tiny=args.tiny, parts=parts,
                                   folder=args.scratch or None))
    if args.output:
      from experiments import runs  # pylint: disable=g-import-not-at-top
      body = runs.write_report(
          args.output, _kept_parts(args.output, parts) + body,
          'experiments.bench_input', argv)
    print(body)
    return
  print(json.dumps(result))


def _kept_parts(path: str, parts: Sequence[str]) -> str:
  """The text of ``path`` that a run of only ``parts`` keeps: with the AV
  part alone, everything before its heading (the ImageNet part and the
  command that made it, each part followed by its own command), then a
  blank line; otherwise nothing (the file is rewritten)."""
  if tuple(parts) != ('av',) or not os.path.exists(path):
    return ''
  with open(path) as f:
    text = f.read()
  return text.split(AV_TITLE)[0].rstrip('\n') + '\n\n'


if __name__ == '__main__':
  main()
