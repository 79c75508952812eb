"""The OGM-GE mechanism search: the paper's schedule, complementarity, the
choices made on held-out data and the histories read from the runs."""

import json
import os

import numpy as np
import pytest

from experiments import complementarity
from experiments import mechanism
from experiments import runs
from experiments.configs import mfeat_ogm
from tests import train_utils

OGM_CONFIG = os.path.join(train_utils.REPO, 'experiments', 'configs',
                          'mfeat_ogm.py')


def test_paper_schedule_is_the_official_codes():
  config = mfeat_ogm.get_config('method=ogm_ge,schedule=paper')
  # OGM-GE's main.py: SGD lr 1e-3, momentum 0.9, wd 1e-4, StepLR(70, 0.1),
  # 100 epochs, batch 64, modulation epochs 0..50 inclusive = [0, 51).
  assert config.optimizer.name == 'sgd'
  assert config.optimizer.learning_rate == 1e-3
  assert config.optimizer.momentum == 0.9
  assert config.optimizer.weight_decay == 1e-4
  assert config.optimizer.schedule == 'step'
  assert tuple(config.optimizer.boundaries_epochs) == (70,)
  assert config.optimizer.decay_factor == 0.1
  assert config.num_epochs == 100
  assert config.data.batch_size == 64
  assert (config.modulation.start_epoch, config.modulation.end_epoch) == (
      0.0, 51.0)
  # The default keeps the short schedule of the existing tables.
  short = mfeat_ogm.get_config('method=ogm_ge')
  assert short.optimizer.learning_rate == 0.01
  assert tuple(short.optimizer.boundaries_epochs) == (42,)
  assert short.num_epochs == 60
  assert short.modulation.end_epoch == 30.0
  assert mfeat_ogm.get_config('method=ogm_ge,schedule=short') == short
  with pytest.raises(ValueError, match="schedule='fast'"):
    mfeat_ogm.get_config('schedule=fast')


def test_complementarity_counts_what_the_weak_view_adds():
  labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  strong = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 0])  # 8 right, 8 and 9 wrong.
  weak = np.array([0, 1, 0, 0, 0, 0, 0, 0, 8, 0])  # 0, 1 and 8 right.
  got = complementarity.complementarity(labels, strong, weak)
  assert got['strong_right'] == pytest.approx(0.8)
  assert got['weak_right'] == pytest.approx(0.3)
  assert got['weak_only'] == pytest.approx(0.1)  # Example 8.
  assert got['either'] == pytest.approx(0.9)
  assert got['rescued'] == pytest.approx(0.5)  # One of the two errors.
  assert np.isnan(complementarity.complementarity(
      labels, labels, weak)['rescued'])
  with pytest.raises(ValueError, match='Shapes differ'):
    complementarity.complementarity(labels, strong[:5], weak)


def test_pairs_are_ordered_and_chosen_by_weak_only_with_a_gap():
  labels = np.arange(10) % 2
  right = lambda n: np.where(np.arange(10) < n, labels, 1 - labels)
  wrong_first = lambda n: np.where(np.arange(10) >= 10 - n, labels,
                                   1 - labels)
  predicted = {
      'a': [right(9)],          # 90%, wrong on example 9.
      'b': [wrong_first(5)],    # 50%, right on 5..9: rescues 9.
      'c': [right(8)],          # 80%, wrong on 8 and 9.
  }
  pairs = {p['pair']: p for p in mechanism.pair_complementarity(
      labels, predicted)}
  assert set(pairs) == {'a+b', 'a+c', 'c+b'}  # Strong view first.
  assert pairs['a+b']['weak_only'] == pytest.approx(0.1)
  assert pairs['c+b']['weak_only'] == pytest.approx(0.2)
  assert pairs['a+c']['weak_only'] == 0.0
  # c+b adds most; with a 40-point lead required only a+b qualifies.
  assert mechanism.choose_pair(list(pairs.values()))['pair'] == 'c+b'
  assert mechanism.choose_pair(list(pairs.values()),
                               min_gap=0.4)['pair'] == 'a+b'
  with pytest.raises(ValueError, match='50% ahead'):
    mechanism.choose_pair(list(pairs.values()), min_gap=0.5)


def _result(holdout=0.5, test=0.5):
  return {'reported': {'holdout/fused/accuracy': holdout,
                       'test/fused/accuracy': test}}


def test_alpha_is_chosen_on_held_out_accuracy_only():
  rows = mechanism.sweep_rows('kar+mor', 'per_class=20,schedule=paper')
  assert rows['ogm_ge α=0.3'] == (
      'views=kar+mor,method=ogm_ge,alpha=0.3,per_class=20,schedule=paper')
  by_label = {label: [_result()] for label in rows}
  # The best test accuracy must not choose: α=2.0 tops the test split,
  # α=0.8 the held-out split.
  by_label['ogm α=2.0'] = [_result(holdout=0.6, test=0.99)]
  by_label['ogm α=0.8'] = [_result(holdout=0.7, test=0.1),
                           _result(holdout=0.7, test=0.1)]
  assert mechanism.choose_alpha(by_label, 'ogm') == '0.8'
  # A tie goes to the first α of ALPHAS.
  assert mechanism.choose_alpha(by_label, 'ogm_ge') == mechanism.ALPHAS[0]


def test_paired_difference_and_its_test():
  naive = [_result(test=t) for t in (0.90, 0.91, 0.92)]
  better = [_result(test=t) for t in (0.91, 0.93, 0.92)]
  # Differences +1, +2, 0 points: mean +1, std sqrt(2/3) = 0.82; paired t =
  # 1 / (1 / sqrt(3)) = 1.73 with 2 degrees of freedom: p = 0.225.
  assert mechanism.paired_difference(better, naive) == (
      '+1.00 ± 0.82 points (p = 0.225, paired t-test, n = 3)')
  assert mechanism.paired_difference(naive, naive) == (
      '+0.00 ± 0.00 points (identical on every seed, n = 3)')


def _write_metrics(run_dir, rows):
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')


def test_histories_read_from_the_metrics(tmp_path, monkeypatch):
  monkeypatch.setattr(mechanism, 'HISTORY_EPOCHS', (1, 2))
  monkeypatch.setattr(mechanism, 'COEFFICIENT_BINS',
                      ((0, 1), (1, 2), (2, 3)))
  dirs = []
  for seed, shift in enumerate((0.0, 0.2)):
    run_dir = str(tmp_path / f'seed_{seed}')
    dirs.append(run_dir)
    # Two steps per epoch: evaluations at steps 2 and 4, step means at
    # 1..4 (step 1 and 2 in epoch bin 0-1, 3 and 4 in 1-2).
    _write_metrics(run_dir, [
        {'step': s, 'ogm/coefficient/a': 0.1 * s + shift,
         'ogm/coefficient/b': 1.0, 'ogm/ratio/a': 1.0 + s}
        for s in (1, 2, 3, 4)] + [
        {'step': s, 'holdout/unimodal_a/accuracy': 0.4 * s / 4 + shift,
         'holdout/unimodal_b/accuracy': 0.1} for s in (2, 4)])
  shares = mechanism.metric_history(
      dirs, ['holdout/unimodal_a/accuracy', 'holdout/unimodal_b/accuracy'],
      steps_per_epoch=2)
  assert shares[1] == pytest.approx([30.0, 10.0])  # (20 + 40) / 2.
  assert shares[2] == pytest.approx([50.0, 10.0])  # (40 + 60) / 2.
  coefficients = mechanism.coefficient_history(dirs, ['a', 'b'],
                                               steps_per_epoch=2)
  # Bin 0-1: k_a of steps 1, 2 over both seeds: (0.1 + 0.2 + 0.3 + 0.4) / 4.
  assert coefficients[(0, 1)] == pytest.approx([0.25, 1.0, 2.5])
  assert coefficients[(1, 2)] == pytest.approx([0.45, 1.0, 4.5])
  assert coefficients[(2, 3)] is None  # No logged step in epoch 2-3.


@pytest.mark.slow
def test_held_out_predictions_match_the_runs_accuracy(
    data_dir, mfeat_manual_dir, tmp_path):
  overrides = [f'data.data_dir={data_dir}',
               f'data.manual_dir={mfeat_manual_dir}']
  row = 'views=kar+mor,method=single_b,per_class=20,runlocal'
  # Selection seeds: the run of seed 11 lives in seed_11, trained with it.
  results = runs.run_sweep(OGM_CONFIG, [row], [11], overrides,
                           str(tmp_path))
  run_dir = runs.run_directory(str(tmp_path), row, 11)
  assert run_dir == str(tmp_path / runs.row_directory(row) / 'seed_11')
  with open(os.path.join(run_dir, 'config.json')) as f:
    assert json.load(f)['seed'] == 11
  config = runs.run_config(OGM_CONFIG, row, 11, overrides)
  labels, predicted = complementarity.held_out_predictions(config, run_dir)
  # mfeat's held-out split: 10% of 1500 training digits, 15 per class.
  assert labels.shape == predicted.shape == (150,)
  assert np.array_equal(np.bincount(labels), np.full(10, 15))
  assert np.mean(predicted == labels) == pytest.approx(
      results[row][0]['final']['holdout/fused/accuracy'], abs=1e-6)
