r"""PyTorch reference steps for `experiments.benchmark` (optional; not a
project dependency).

The same two training steps as the benchmark's JAX reference, written the
way the official PyTorch code writes them (NCHW, ``torch.nn``):

  av_resnet18     OGM-GE's audio-visual pair (Peng et al., CVPR 2022): a
                  ResNet-18 over the [1, 257, 188] spectrogram, a ResNet-18
                  over each [3, 224, 224] frame (mean over frames), concat
                  fusion, one linear layer; SGD lr 1e-3, momentum 0.9, weight
                  decay 1e-4.
  cifar_resnet32  He et al.'s CIFAR ResNet-32 (option-A shortcuts) on
                  [3, 32, 32] images, 10 classes, the same SGD.

Run with an interpreter that has torch (``torch==2.13.0``, CPU wheel):

  .venv-torch/bin/python experiments/bench_torch.py --threads 1 \
      --av_batch 16 --cifar_batch 128 --steps 3

It prints one JSON object: seconds per step (median over timed steps) of
each model, and the float32 matmul rate measured in the same process.
"""

import argparse
import json
import os
import statistics
import time


def define_models():
  """The torch modules (defined here so that the module imports without
  torch, as every experiments module must).

  Returns:
    ``(AudioVisual, CifarResNet)``: the two model classes.
  """
  import torch  # noqa: PLC0415 (optional dependency)
  from torch import nn  # noqa: PLC0415
  from torch.nn import functional  # noqa: PLC0415

  class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; 1x1 projection when needed."""

    def __init__(self, cin: int, cout: int, stride: int):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
      y = functional.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return functional.relu(y + (x if self.proj is None else self.proj(x)))


  class ResNet18(nn.Module):
    """ImageNet ResNet-18 trunk (7x7 stem, max-pool, 4 stages), pooled."""

    def __init__(self, in_channels: int, width: int = 64):
      super().__init__()
      self.stem = nn.Sequential(
          nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
          nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
      blocks, cin = [], width
      for stage in range(4):
        cout = width * 2**stage
        for block in range(2):
          blocks.append(BasicBlock(cin, cout, 2 if stage and not block else 1))
          cin = cout
      self.blocks = nn.Sequential(*blocks)
      self.out_features = cin

    def forward(self, x):
      return self.blocks(self.stem(x)).mean(dim=(2, 3))


  class AudioVisual(nn.Module):
    """OGM-GE's model: audio and frame ResNet-18s, concat, one linear layer."""

    def __init__(self, num_classes: int = 6):
      super().__init__()
      self.audio = ResNet18(1)
      self.visual = ResNet18(3)
      self.head = nn.Linear(2 * self.audio.out_features, num_classes)

    def forward(self, audio, frames):
      batch, num_frames = frames.shape[:2]
      v = self.visual(frames.flatten(0, 1)).view(batch, num_frames, -1)
      return self.head(torch.cat([self.audio(audio), v.mean(1)], dim=1))


  class CifarBlock(nn.Module):
    """Basic block with the subsample-and-zero-pad (option A) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.stride, self.missing = stride, cout - cin

    def forward(self, x):
      y = functional.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      r = x[:, :, ::self.stride, ::self.stride]
      if self.missing:
        half = self.missing // 2
        r = functional.pad(r, (0, 0, 0, 0, half, self.missing - half))
      return functional.relu(y + r)


  class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2), width 16, with a linear classifier."""

    def __init__(self, depth: int = 32, num_classes: int = 10):
      super().__init__()
      n = (depth - 2) // 6
      layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                nn.ReLU()]
      cin = 16
      for stage in range(3):
        cout = 16 * 2**stage
        for block in range(n):
          layers.append(CifarBlock(cin, cout, 2 if stage and not block else 1))
          cin = cout
      self.trunk = nn.Sequential(*layers)
      self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
      return self.head(self.trunk(x).mean(dim=(2, 3)))

  return AudioVisual, CifarResNet


def time_step(model, inputs, labels, steps: int) -> float:
  """Median seconds of one SGD step (forward, cross-entropy, backward)."""
  import torch  # noqa: PLC0415 (optional dependency)
  from torch.nn import functional  # noqa: PLC0415

  optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                              weight_decay=1e-4)
  model.train()

  def step():
    optimizer.zero_grad()
    loss = functional.cross_entropy(model(*inputs), labels)
    loss.backward()
    optimizer.step()

  step()  # Warm-up: allocations, first-call overheads.
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
  """Float32 matmul FLOP/s of this process (best of `repeats`)."""
  import torch  # noqa: PLC0415 (optional dependency)

  a, b = torch.randn(n, n), torch.randn(n, n)
  a @ b
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--av_batch', type=int, default=16)
  parser.add_argument('--cifar_batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--models', default='av_resnet18,cifar_resnet32')
  args = parser.parse_args()
  if args.threads == 1 and hasattr(os, 'sched_setaffinity'):
    # One core, as the JAX side of the comparison (benchmark._one_core).
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  import torch  # noqa: PLC0415 (optional dependency)

  audio_visual, cifar_resnet = define_models()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  result = {'torch': torch.__version__, 'threads': args.threads,
            'matmul_flops': matmul_rate(), 'seconds': {}}
  for name in args.models.split(','):
    if name == 'av_resnet18':
      b = args.av_batch
      model = audio_visual()
      inputs = (torch.randn(b, 1, 257, 188), torch.randn(b, 1, 3, 224, 224))
      labels = torch.randint(0, 6, (b,))
    elif name == 'cifar_resnet32':
      b = args.cifar_batch
      model = cifar_resnet()
      inputs = (torch.randn(b, 3, 32, 32),)
      labels = torch.randint(0, 10, (b,))
    else:
      raise ValueError(f'Unknown model {name!r}; valid: av_resnet18, '
                       'cifar_resnet32.')
    result['seconds'][name] = time_step(model, inputs, labels, args.steps)
  print(json.dumps(result))


if __name__ == '__main__':
  main()
