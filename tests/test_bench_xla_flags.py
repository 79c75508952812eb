"""Tests for experiments.bench_xla_flags (the workers are replaced)."""

import pytest

from experiments import bench_xla_flags


def _result(mlp: float, resnet: float) -> dict:
  return {'xla_flags': '', 'jax': '0.0',
          'seconds': {'MLP': mlp, 'ResNet': resnet},
          'flops': {'MLP': 2e6, 'ResNet': 4e9}}


def test_table_gives_each_attempts_median_over_its_workers():
  results = {'': [_result(0.002, 4.0), _result(0.004, 2.0),
                  _result(0.003, 3.0)],
             '--x': [_result(0.001, 1.5), _result(0.0015, 1.5)]}
  rows = [r.split(' | ') for r in bench_xla_flags.table(results)[2:]]
  # Medians: default 3 ms and 3 s; --x 1.25 ms and 1.5 s.
  assert rows == [
      ['| MLP', '`(default)`', '3.00', '0.7', '1.00 |'],
      ['| MLP', '`--x`', '1.25', '1.6', '0.42 |'],
      ['| ResNet', '`(default)`', '3000.00', '1.3', '1.00 |'],
      ['| ResNet', '`--x`', '1500.00', '2.7', '0.50 |']]


def test_main_interleaves_the_attempts_and_replaces_its_section(
    monkeypatch, tmp_path):
  calls = []

  def fake_run(attempt, args):
    calls.append(attempt)
    return _result(0.002 if attempt else 0.004, 1.0)

  monkeypatch.setattr(bench_xla_flags, 'run_attempt', fake_run)
  output = tmp_path / 'bench.md'
  output.write_text('# Benchmark\n\nkept\n')
  argv = ['--attempts', '|--x', '--rounds', '3', '--output', str(output)]
  bench_xla_flags.main(argv)
  assert calls == ['', '--x', '--x', '', '', '--x']
  bench_xla_flags.main(argv)  # A rerun replaces the section.
  text = output.read_text()
  assert text.startswith('# Benchmark\n\nkept\n')
  assert text.count(bench_xla_flags.SECTION_BEGIN) == 1
  assert '| MLP | `--x` | 2.00 | 1.0 | 0.50 |' in text


@pytest.mark.parametrize('flag', ['--rounds=0', '--av_batch=0',
                                  '--resnet50_batch=-1'])
def test_bad_flags_are_named(flag, capsys):
  with pytest.raises(SystemExit):
    bench_xla_flags.parse_args([flag])
  assert flag.split('=', maxsplit=1)[0] in capsys.readouterr().err
