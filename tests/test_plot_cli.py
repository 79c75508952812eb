"""`python -m experiments.plot` and `gblend_jax.plots` on work directories
written by hand, with known values.

No real training run here: the smallest one costs about 20 s on 2 shared
cores; the trainer tests check the figures it writes itself."""

import json
import math
import os

import pytest
from PIL import Image

from experiments import plot
from gblend_jax import plots

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

# A G-Blend run of heads a, b, fused: two estimates, two logged steps, one
# evaluation. train_step/loss is the total loss, not a head.
GBLEND_ROWS = [
    {'step': 0, 'blend/weight/a': 0.6, 'blend/weight/b': 0.1,
     'blend/weight/fused': 0.3, 'blend/ogr/a': 0.5, 'blend/ogr/b': 2.0,
     'blend/ogr/fused': 1.0, 'blend/gain/a': 0.4, 'blend/gain/b': 0.05,
     'blend/gain/fused': 0.2},
    {'step': 1, 'train_step/a/loss': 2.0, 'train_step/b/loss': 2.2,
     'train_step/fused/loss': 1.9, 'train_step/loss': 2.03},
    {'step': 2, 'train_step/a/loss': 1.5, 'train_step/b/loss': 2.1,
     'train_step/fused/loss': 1.4, 'train_step/loss': 1.6},
    {'step': 2, 'train/a/loss': 1.4, 'holdout/a/loss': 1.7,
     'train/b/loss': 2.0, 'holdout/b/loss': 2.3, 'train/fused/loss': 1.3,
     'holdout/fused/loss': 1.6, 'holdout/fused/accuracy': 0.5},
    {'step': 2, 'blend/weight/a': 0.5, 'blend/weight/b': 0.2,
     'blend/weight/fused': 0.3, 'blend/ogr/a': 0.25, 'blend/ogr/b': 4.0,
     'blend/ogr/fused': 0.5, 'blend/gain/a': 0.3, 'blend/gain/b': 0.04,
     'blend/gain/fused': 0.1},
]

# An OGM-GE run of modalities x, y: three steps, one evaluation.
OGM_ROWS = [
    {'step': s, 'ogm/active': 1.0, 'ogm/ratio/x': r, 'ogm/ratio/y': 1 / r,
     'ogm/coefficient/x': k, 'ogm/coefficient/y': 1.0, 'ogm/score/x': 0.5 * s,
     'ogm/score/y': 0.25 * s, 'train_step/fused/loss': 1.0 / s}
    for s, r, k in [(1, 2.0, 0.1), (2, 4.0, 0.05), (3, 0.5, 1.0)]
] + [{'step': 3, 'holdout/unimodal_x/accuracy': 0.7,
      'holdout/unimodal_y/accuracy': 0.3, 'holdout/fused/accuracy': 0.75,
      'holdout/unimodal_x/loss': 0.9, 'holdout/fused/loss': 0.8}]


def _workdir(path, rows, **json_files):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  for name, content in json_files.items():
    with open(os.path.join(path, f'{name}.json'), 'w') as f:
      json.dump(content, f)
  return str(path)


def _assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.width >= 400 and image.height >= 300


def test_gblend_run_writes_losses_and_blend_with_the_logged_values(
    tmp_path, capsys
):
  workdir = _workdir(tmp_path / 'run', GBLEND_ROWS, results={'final': {}})
  assert plot.main(['--workdir', workdir]) == 0
  out = capsys.readouterr().out
  assert f'Wrote 2 figure(s) to {workdir}:' in out
  for name in ('losses.png', 'blend.png'):
    assert os.path.join(workdir, name) in out
    _assert_png(os.path.join(workdir, name))
  assert 'Skipped ogm.png: no ogm/... metric' in out
  assert "Skipped per_class_accuracy.png: results.json has no " \
         "'test_per_class_accuracy'" in out
  assert not os.path.exists(os.path.join(workdir, 'ogm.png'))

  report = plot.plot_run(workdir)
  losses = report.written['losses.png']
  # Modality heads, then fused; the total loss is no head.
  assert list(losses) == ['head: a', 'head: b', 'head: fused']
  assert losses['head: a'] == {
      'train batches': ([1.0, 2.0], [2.0, 1.5]),
      'train split (evaluation)': ([2.0], [1.4]),
      'held-out split (evaluation)': ([2.0], [1.7]),
  }
  assert losses['head: fused']['held-out split (evaluation)'] == (
      [2.0], [1.6])
  blend = report.written['blend.png']
  # Gradient mode's σ² was not logged: no panel for it.
  assert list(blend) == ['blend weights',
                         'overfitting-to-generalisation ratio',
                         'generalisation gain']
  assert blend['blend weights'] == {
      'a': ([0.0, 2.0], [0.6, 0.5]), 'b': ([0.0, 2.0], [0.1, 0.2]),
      'fused': ([0.0, 2.0], [0.3, 0.3])}
  assert blend['overfitting-to-generalisation ratio']['b'] == (
      [0.0, 2.0], [2.0, 4.0])


def test_ogm_run_writes_coefficients_and_unimodal_accuracies(tmp_path):
  workdir = _workdir(tmp_path, OGM_ROWS)
  report = plot.plot_run(workdir)
  assert set(report.written) == {'losses.png', 'ogm.png'}
  assert set(report.skipped) == {'blend.png', 'per_class_accuracy.png'}
  assert 'no results.json' in report.skipped['per_class_accuracy.png']
  _assert_png(os.path.join(workdir, 'ogm.png'))
  ogm = report.written['ogm.png']
  assert ogm['discrepancy ratio'] == {
      'x': ([1.0, 2.0, 3.0], [2.0, 4.0, 0.5]),
      'y': ([1.0, 2.0, 3.0], [0.5, 0.25, 2.0])}
  assert ogm['modulation coefficient']['x'] == ([1.0, 2.0, 3.0],
                                               [0.1, 0.05, 1.0])
  assert ogm['unimodal score']['y'] == ([1.0, 2.0, 3.0], [0.25, 0.5, 0.75])
  assert ogm['held-out accuracy'] == {
      'unimodal x': ([3.0], [0.7]), 'unimodal y': ([3.0], [0.3]),
      'fused': ([3.0], [0.75])}
  # OGM's unimodal shares are heads of their own, after the fused head.
  assert list(report.written['losses.png']) == [
      'head: fused', 'head: unimodal_x']
  assert report.written['losses.png']['head: fused']['train batches'] == (
      [1.0, 2.0, 3.0], [1.0, 0.5, 1 / 3])


def test_per_class_accuracy_against_training_images(tmp_path):
  workdir = _workdir(
      tmp_path, GBLEND_ROWS[1:3],
      results={'final': {}, 'test_per_class_accuracy': [1.0, 0.5, math.nan]},
      class_counts={'train': [200, 50, 5], 'test': [10, 10, 0]},
  )
  report = plot.plot_run(workdir)
  assert set(report.written) == {'losses.png', 'per_class_accuracy.png'}
  _assert_png(os.path.join(workdir, 'per_class_accuracy.png'))
  drawn = report.written['per_class_accuracy.png']['per-class accuracy']
  # Class 2 has no test example (NaN): not drawn.
  assert drawn['classes'] == ([200.0, 50.0], [100.0, 50.0])
  assert drawn['few | medium shot (20 images)'][0] == [20.0, 20.0]
  assert drawn['medium | many shot (100 images)'][0] == [100.0, 100.0]
  with pytest.raises(ValueError, match='3 class counts but 2 per-class'):
    plots.draw_per_class_accuracy([1, 2, 3], [0.5, 0.5],
                                  str(tmp_path / 'x.png'))


def _spy_on_scales(monkeypatch):
  """Records the y scale of every panel drawn: {panel title: scale}."""
  scales = {}
  save = plots._save  # pylint: disable=protected-access

  def recording_save(figure, path):
    scales.update({a.get_title(): a.get_yscale() for a in figure.axes})
    return save(figure, path)

  monkeypatch.setattr(plots, '_save', recording_save)
  return scales


def test_out_directory_and_log_scale_fallback(tmp_path, monkeypatch):
  scales = _spy_on_scales(monkeypatch)
  plots.draw_blend(GBLEND_ROWS, str(tmp_path / 'positive.png'))
  assert scales['overfitting-to-generalisation ratio'] == 'log'
  assert scales['blend weights'] == 'linear'
  # A zero OGR cannot go on a log axis: that panel is drawn linear.
  # Gradient mode logs the heads in name order: fused is put last.
  rows = [{'step': 0, 'blend/weight/fused': 0.0, 'blend/weight/a': 1.0,
           'blend/ogr/a': 0.0},
          {'step': 5, 'blend/weight/fused': 0.5, 'blend/weight/a': 0.5,
           'blend/ogr/a': 0.5}]
  workdir = _workdir(tmp_path / 'run', rows)
  out = str(tmp_path / 'figures')
  report = plot.plot_run(workdir, out)
  assert report.out == out
  assert os.listdir(out) == ['blend.png']
  assert sorted(os.listdir(workdir)) == ['metrics.jsonl']
  assert report.skipped['losses.png'] == (
      'no <split>/<head>/loss metric in metrics.jsonl')
  blend = report.written['blend.png']
  assert list(blend['blend weights']) == ['a', 'fused']
  assert scales['overfitting-to-generalisation ratio'] == 'linear'
  assert blend['overfitting-to-generalisation ratio'] == {
      'a': ([0.0, 5.0], [0.0, 0.5])}


def test_not_a_run_is_named_and_a_sweep_lists_its_runs(tmp_path, capsys):
  sweep = tmp_path / 'sweep'
  for row in ('views_a', 'views_b'):
    _workdir(sweep / row / 'seed_0', GBLEND_ROWS)
  assert plot.main(['--workdir', str(sweep)]) == 2
  error = capsys.readouterr().err
  assert f"error: '{sweep}' is not a run's work directory" in error
  assert f"'{sweep / 'metrics.jsonl'}' does not exist" in error
  assert f'It holds 2 runs, e.g. {sweep / "views_a" / "seed_0"}' in error
  assert not os.path.exists(sweep / 'losses.png')
  # One of its runs is a run.
  assert plot.main(['--workdir', str(sweep / 'views_b' / 'seed_0')]) == 0
  _assert_png(sweep / 'views_b' / 'seed_0' / 'blend.png')

  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(plot.NotARunError, match=f"'{empty}' is not a run"):
    plot.plot_run(str(empty))


def test_empty_or_damaged_metrics(tmp_path, capsys):
  started = _workdir(tmp_path / 'started', [])
  assert plot.main(['--workdir', started]) == 1
  out = capsys.readouterr().out
  assert f'Wrote no figure to {started}.' in out
  assert out.count('Skipped') == 4
  assert os.listdir(started) == ['metrics.jsonl']

  damaged = _workdir(tmp_path / 'damaged', GBLEND_ROWS[:2])
  with open(os.path.join(damaged, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 3, "train_st')
  assert plot.main(['--workdir', damaged]) == 2
  assert 'metrics.jsonl\' is not JSON lines' in capsys.readouterr().err


def test_trainer_entry_points_keep_their_contract(tmp_path):
  workdir = _workdir(tmp_path, GBLEND_ROWS)
  assert plots.plot_blend(workdir, ['a', 'b', 'fused']) == os.path.join(
      workdir, 'blend.png')
  assert plots.plot_modulation(workdir, ['a', 'b']) is None
  assert not os.path.exists(os.path.join(workdir, 'ogm.png'))

