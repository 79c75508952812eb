"""The benchmark: its bookkeeping by hand, and a smoke run of its table."""

import os
import types

import jax
import jax.numpy as jnp
import pytest

from experiments import benchmark


def test_time_alternating_rotates_and_runs_every_step():
  calls = []

  def fake(name):
    return benchmark.TimedStep(run=lambda: calls.append(name),
                               sync=lambda: None, flops=0.0)

  seconds = benchmark.time_alternating(
      {'a': fake('a'), 'b': fake('b'), 'c': fake('c')}, rounds=3, calls=2)
  # Round r starts at the r-th step: a a b b c c | b b c c a a | c c a a b b.
  assert ''.join(calls) == 'aabbcc' 'bbccaa' 'ccaabb'
  assert sorted(seconds) == ['a', 'b', 'c']


def test_compiled_flops_of_a_matmul():
  compiled = jax.jit(jnp.matmul).lower(
      jnp.ones((2, 3)), jnp.ones((3, 4))).compile()
  # 2 * M * K * N multiply-adds counted as two FLOPs each.
  assert benchmark.compiled_flops(compiled) == 2 * 2 * 3 * 4


@pytest.mark.parametrize('method, ratio', [
    # mfeat_gblend: 200 training examples, batch 32: 6 steps an epoch, 360
    # steps in 60 epochs. Offline: one run of Algorithm 1 training 3 copies
    # 10 epochs (60 steps) each: 1 + 180 / 360.
    ('offline', 1.5),
    # Online: runs at epochs 5, 10, ..., 55 (11), 3 copies of 5 epochs
    # (30 steps) each: 1 + 11 * 90 / 360.
    ('online', 3.75),
])
def test_amortised_blend_cost_counts_the_schedule(method, ratio):
  splits = types.SimpleNamespace(train=range(200), holdout=range(20))
  got, why = benchmark.amortised_blend_cost(
      method, naive_seconds=1.0, eval_seconds=0.0, num_heads=3,
      splits=splits)
  assert got == pytest.approx(ratio)
  assert '360 steps' in why
  # Eval batches add their time: 4 measured states x 2 batches per run.
  with_eval, _ = benchmark.amortised_blend_cost(
      method, naive_seconds=1.0, eval_seconds=1.0, num_heads=3,
      splits=splits)
  runs = 1 if method == 'offline' else 11
  assert with_eval == pytest.approx(ratio + runs * 4 * 2 / 360)
  # Stacked: one step of the 3 copies (cost 2) per copy step of a head
  # (offline 60, online 11 x 30) and one measurement (cost 1.5) of the 4
  # states per eval batch (2 per run).
  stacked, why = benchmark.amortised_blend_cost(
      method, naive_seconds=1.0, eval_seconds=1.0, num_heads=3,
      splits=splits, stacked=(2.0, 1.5))
  copy_steps = 60 if method == 'offline' else 11 * 30
  assert stacked == pytest.approx(1 + (copy_steps * 2 + runs * 2 * 1.5) / 360)
  assert '3 stacked copies' in why


def _tables(text):
  """{header cells: [row cells]} of every markdown table in `text`."""
  tables, header = {}, None
  for line in text.splitlines():
    if not line.startswith('|'):
      header = None
      continue
    cells = [c.strip() for c in line.strip('|').split('|')]
    if header is None:
      header = tuple(cells)
      tables.setdefault(header, [])
    elif not set(line) <= set('|-:'):
      tables[header].append(cells)
  return tables


@pytest.mark.slow
def test_smoke_run_writes_the_table(tmp_path, data_dir, mfeat_manual_dir):
  output = tmp_path / 'bench.md'
  text = benchmark.main(['--tiny', '--methods', 'naive,gblend_fixed,ogm_ge',
                         '--av_batch', '0', '--resnet50_batch', '0',
                         '--no-compare',
                         '--data_dir', data_dir,
                         '--manual_dir', mfeat_manual_dir,
                         '--output', str(output)])
  assert output.read_text() == text
  assert 'Command: `python -m experiments.benchmark --tiny' in text
  tables = _tables(text)
  method_header = tuple(c.strip() for c in
                        benchmark.METHOD_HEADER[0].strip('|').split('|'))
  assert method_header == ('model', 'method', 'ms/step', 'examples/s',
                           '× naive', 'GFLOP/step', 'GFLOP/s',
                           '% matmul rate')
  methods_rows, scaling_rows = _method_sections(text, method_header)
  assert [r[1] for r in methods_rows] == ['naive', 'gblend_fixed', 'ogm_ge']
  assert methods_rows[0][4] == '1.00'
  assert all(len(r) == 8 and float(r[2]) > 0 for r in methods_rows)
  # Scaling: batch 4, then the kar+pix model at batch 32.
  assert [(r[0], r[1]) for r in scaling_rows] == [
      ('mfeat MLP kar+pix, batch 4', 'naive'),
      ('mfeat MLP kar+pix, batch 4', 'gblend_fixed'),
      ('mfeat MLP kar+pix, batch 32', 'naive'),
      ('mfeat MLP kar+pix, batch 32', 'gblend_fixed')]
  amortised = tables[('method', '× naive per epoch', 'how')]
  assert [r[0] for r in amortised] == [
      'offline (in turn)', 'offline (stacked)', 'offline (own models)',
      'online (in turn)', 'online (stacked)', 'online (own models)']
  streamed = tables[('path', 'workers', 'examples/s',
                     'examples/s per worker')]
  # The ImageNet-shaped JPEGs' table, then the CREMA-D-shaped clips'.
  paths = [['streamed, in process', '0'], ['streamed, one worker', '1'],
           ['streamed, all cores', str(os.cpu_count())]]
  assert [r[:2] for r in streamed] == [
      *paths, ['in memory (stored 224 crops, float32)', '0'],
      *paths, ['in memory (float32 arrays)', '0']]
  assert all(float(r[2]) > 0 for r in streamed)
  assert all(float(r[1]) > 1 for r in amortised)
  pipeline = tables[('data set', 'batch', 'pipeline examples/s',
                     'training examples/s', 'pipeline / training')]
  assert [r[0] for r in pipeline] == ['mfeat kar+pix (prepared)']


def _method_sections(text, header):
  """Rows of the method table and of the scaling table, in that order."""
  sections = []
  for block in text.split('\n## ')[1:]:
    rows = _tables(block).get(header)
    if rows is not None:
      sections.append(rows)
  return sections


def test_pmr_step_is_timed_with_its_step_arguments():
  setting = benchmark.mfeat_setting(('kar', 'pix'), batch_size=4)
  timed = benchmark.method_steps(setting, ['naive', 'pmr'])
  assert set(timed) == {'naive', 'pmr'}
  timed['pmr'].run()
  timed['pmr'].sync()
  # The prototype distances and the extra backward are compiled in.
  assert timed['pmr'].flops > timed['naive'].flops > 0


def test_reconboost_is_timed_over_its_phases():
  setting = benchmark.mfeat_setting(tiny=True)
  timed = benchmark.method_steps(setting, ['naive', 'reconboost'])
  # One call runs a stage per view: kar, rectify, pix, rectify.
  assert timed['reconboost'].steps_per_run == 4
  assert timed['naive'].steps_per_run == 1
  assert timed['reconboost'].flops > 0
  timed['reconboost'].run()
  timed['reconboost'].sync()


def test_variants_change_one_key_and_leave_the_setting_alone():
  setting = benchmark.mfeat_setting(tiny=True)
  assert benchmark.split_variants('ogm_ge_rbg_bf16noise') == (
      'ogm_ge', ('_rbg', '_bf16noise'))
  assert benchmark.split_variants('gradient_default_jacrev_bf16') == (
      'gradient_default_jacrev', ('_bf16',))
  config = benchmark.method_config(setting, 'ogm_ge_rbg_bf16noise')
  assert (config.modulation.method, config.modulation.noise_generator,
          config.modulation.noise_dtype) == ('ogm_ge', 'rbg', 'bfloat16')
  assert config.model.dtype == 'float32'
  half = benchmark.method_config(setting, 'naive_bf16')
  assert half.model.dtype == 'bfloat16'
  assert setting.model.dtype == 'float32'  # Copied, not changed.
  with pytest.raises(ValueError, match="'ogm_ge_fast'"):
    benchmark.method_steps(setting, ['naive', 'ogm_ge_fast'])

