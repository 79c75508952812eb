r"""The streaming input pipeline: peak memory and examples/s.

Fake ImageNet-LT copies in the builder's real layout (list files and JPEG
files under ``train/<wnid>/`` and ``val/<wnid>/``), prepared with the
``full`` config (the JPEG bytes), then read as training reads them
(`gblend_jax.data.train_iterator`: decode, random-resized-crop 224, flip).

  python -m experiments.bench_input \
      --output experiments/results/streaming_input_cpu.md    # both parts
  python -m experiments.bench_input --tiny                   # a smoke run

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
from collections.abc import Sequence

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ImageNet's median image: 500 x 375 (width x height), JPEG quality 90.
IMAGENET_SHAPE = (500, 375)
CROP = 224
FLOAT32_EXAMPLE_MB = CROP * CROP * 3 * 4 / 2**20


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
        coarse = rng.integers(0, 200, (height // 8 + 1, width // 8 + 1, 3))
        coarse[..., label % 3] += 55
        image = Image.fromarray(coarse.astype(np.uint8)).resize(
            (width, height), Image.Resampling.BILINEAR)
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        image.save(full, quality=90)
        lines[split].append(f'{path} {label}\n')
  for split, split_lines in lines.items():
    with open(os.path.join(root, f'ImageNet_LT_{split}.txt'), 'w') as f:
      f.writelines(split_lines)


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
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def input_section(*, tiny: bool = False, memory: bool = True,
                  consumed: dict[str, float] | None = None,
                  folder: str | None = None) -> list[str]:
  """The markdown section: throughput, then the peak RSS at N and 5N.

  Args:
    tiny: Few images and batches (a smoke run).
    memory: Whether to measure the peak RSS (two short training runs).
    consumed: Training examples/s to compare against (name -> rate).
    folder: Scratch folder (default: a temporary one).

  Returns:
    Markdown lines.
  """
  with tempfile.TemporaryDirectory() as scratch:
    folder = folder or scratch
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
  cores = os.cpu_count() or 1
  rates = {}
  for name, workers in (('streamed, in process', 0),
                        ('streamed, one worker', 1),
                        ('streamed, all cores', cores)):
    rates[name] = (workers, streaming_rate(
        folder, workers=workers, batch_size=batch_size, batches=batches))
  rates['in memory (stored 224 crops, float32)'] = (0, in_memory_rate(
      batch_size=batch_size, batches=batches))
  return rates


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.bench_input')
  parser.add_argument('--worker', default='',
                      choices=('', 'prepare', 'train', 'rates'))
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
  else:
    body = '\n'.join(input_section(tiny=args.tiny,
                                   folder=args.scratch or None))
    if args.output:
      from experiments import runs  # pylint: disable=g-import-not-at-top
      body = runs.write_report(args.output, body, 'experiments.bench_input',
                               argv)
    print(body)
    return
  print(json.dumps(result))


if __name__ == '__main__':
  main()
