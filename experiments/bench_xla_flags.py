r"""XLA:CPU flags against the default on the naive step of each model.

Each flag set must be in ``XLA_FLAGS`` before JAX starts, so every attempt
runs in a worker process of its own, at the default threading (all cores,
as a user trains). The workers alternate (``--rounds`` processes of each
attempt, the attempts interleaved), so a slow phase of a shared machine
falls on all of them; each worker times every model's naive step in
alternating rounds of its own. A model's time is the median over all its
workers' medians; × default is that time over the default's, so below 1
is faster.

The models are the benchmark's (`experiments.benchmark`): the mfeat MLP of
`mfeat_gblend` (kar+pix, batch 32), OGM-GE's audio-visual ResNet-18 pair at
CREMA-D shapes, CIFAR ResNet-32 and ResNet-50 at 224 x 224. The table goes
into its own section of ``--output`` (replaced on a rerun):

  python -m experiments.bench_xla_flags --rounds 2 \
      --output experiments/results/benchmark_cpu.md
"""

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence

SECTION_BEGIN = '<!-- bench_xla_flags: begin -->'
SECTION_END = '<!-- bench_xla_flags: end -->'
DEFAULT_ATTEMPTS = ('', '--xla_cpu_use_xnnpack=true')


def worker(args) -> None:
  """Prints JSON: seconds and FLOPs of each model's naive step."""
  import jax  # pylint: disable=g-import-not-at-top

  from experiments import benchmark  # pylint: disable=g-import-not-at-top

  settings = [benchmark.mfeat_setting(tiny=args.tiny),
              benchmark.av_setting(args.av_batch, args.tiny)]
  timed = {s.name: benchmark.method_steps(s, ['naive'])['naive']
           for s in settings}
  cifar = benchmark.reference_steps(2, args.cifar_batch,
                                    args.tiny)['cifar_resnet32']
  depth = 8 if args.tiny else 32  # `reference_steps`' depths.
  timed[f'CIFAR ResNet-{depth}, batch {args.cifar_batch}'] = cifar
  if args.resnet50_batch:
    setting = benchmark.resnet50_setting(args.resnet50_batch, args.tiny)
    timed[setting.name] = benchmark.method_steps(setting, ['naive'])['naive']
  seconds = benchmark.time_alternating(timed, args.worker_rounds, 1,
                                       min_seconds=0.3)
  print(json.dumps({
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'jax': jax.__version__,
      'seconds': seconds,
      'flops': {name: t.flops for name, t in timed.items()},
  }))


def run_attempt(attempt: str, args) -> dict:
  """One worker process under ``XLA_FLAGS=<attempt>``."""
  env = dict(os.environ)
  flags = ' '.join(f for f in (env.get('XLA_FLAGS', ''), attempt) if f)
  env['XLA_FLAGS'] = flags
  command = [sys.executable, '-m', 'experiments.bench_xla_flags', '--worker',
             '--av_batch', str(args.av_batch),
             '--cifar_batch', str(args.cifar_batch),
             '--resnet50_batch', str(args.resnet50_batch),
             '--worker_rounds', str(args.worker_rounds)]
  if args.tiny:
    command.append('--tiny')
  from experiments import benchmark  # pylint: disable=g-import-not-at-top

  return benchmark.run_json(command, env)


def table(results: dict[str, list[dict]]) -> list[str]:
  """Markdown rows: each attempt's median ms/step per model, × default."""
  attempts = list(results)
  models = list(results[attempts[0]][0]['seconds'])
  median = {a: {m: statistics.median(r['seconds'][m] for r in runs)
                for m in models} for a, runs in results.items()}
  lines = ['| model | XLA_FLAGS | ms/step | GFLOP/s | × default |',
           '|---|---|---:|---:|---:|']
  flops = results[attempts[0]][0]['flops']
  for model in models:
    for attempt in attempts:
      seconds = median[attempt][model]
      lines.append(
          f'| {model} | `{attempt or "(default)"}` | {1e3 * seconds:.2f} | '
          f'{flops[model] / seconds / 1e9:.1f} | '
          f'{seconds / median[attempts[0]][model]:.2f} |')
  return lines


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m experiments.bench_xla_flags')
  parser.add_argument('--attempts', default='|'.join(DEFAULT_ATTEMPTS),
                      help='XLA flag sets separated by |; the first is the '
                      'baseline (empty: the default).')
  parser.add_argument('--rounds', type=int, default=2,
                      help='Worker processes per attempt, interleaved.')
  parser.add_argument('--worker_rounds', type=int, default=3,
                      help='Alternating rounds inside each worker.')
  parser.add_argument('--av_batch', type=int, default=16)
  parser.add_argument('--cifar_batch', type=int, default=128)
  parser.add_argument('--resnet50_batch', type=int, default=2,
                      help='0: no ResNet-50 row.')
  parser.add_argument('--tiny', action='store_true',
                      help='Tiny models (smoke runs).')
  parser.add_argument('--output', default='',
                      help='Markdown file whose section to replace; empty: '
                      'print only.')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  for name in ('rounds', 'worker_rounds', 'av_batch', 'cifar_batch'):
    if getattr(args, name) < 1:
      parser.error(f'--{name}={getattr(args, name)} must be >= 1.')
  if args.resnet50_batch < 0:
    parser.error(f'--resnet50_batch={args.resnet50_batch} must be >= 0.')
  return args


def main(argv: Sequence[str] | None = None) -> str:
  """Runs the workers; writes and returns the section."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.worker:
    worker(args)
    return ''
  from experiments import runs  # pylint: disable=g-import-not-at-top

  attempts = args.attempts.split('|')
  results = {a: [] for a in attempts}
  for round_index in range(args.rounds):
    order = attempts if round_index % 2 == 0 else attempts[::-1]
    for attempt in order:
      print(f'round {round_index + 1}/{args.rounds}: '
            f'XLA_FLAGS={attempt or "(default)"}', flush=True)
      results[attempt].append(run_attempt(attempt, args))
  first = results[attempts[0]][0]
  lines = [SECTION_BEGIN, '## XLA:CPU flags on the naive step of each model',
           '',
           f'Each flag set in {args.rounds} worker processes, interleaved '
           'with the default\'s, at the default threading; median over the '
           f'workers of each worker\'s median of {args.worker_rounds} '
           f'alternating rounds. jax {first["jax"]}, {os.cpu_count()} cores. '
           'Command: `python -m experiments.bench_xla_flags '
           f'{" ".join(argv)}`.', '', *table(results), '', SECTION_END]
  text = '\n'.join(lines)
  print(text, flush=True)
  if args.output:
    runs.write_section(args.output, text, begin=SECTION_BEGIN,
                       end=SECTION_END, before='\0')  # New: at the end.
  return text


if __name__ == '__main__':
  main()
