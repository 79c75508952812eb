"""Every module imports, every config builds, and the real-data experiment
and the sweep run end to end."""

import glob
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gblend_jax
from experiments import runs
from experiments import tables
from experiments.configs import mfeat_fusion
from experiments.configs import mfeat_gblend
from gblend_jax import data
from gblend_jax import models
from gblend_jax.training import methods
from gblend_jax.training import program
from gblend_jax.training import steps
from gblend_jax.training import trainer as train
from tests import train_utils

MFEAT_SHAPES = {'fac': (216,), 'fou': (76,), 'kar': (64,), 'mor': (6,),
                'pix': (240,), 'zer': (47,)}


def _module_names():
  names = [m.name for m in pkgutil.walk_packages(gblend_jax.__path__,
                                                 'gblend_jax.')]
  for path in glob.glob(os.path.join(train_utils.REPO, 'experiments', '**',
                                     '*.py'), recursive=True):
    names.append(os.path.relpath(path, train_utils.REPO)[:-3]
                 .replace(os.sep, '.'))
  for path in glob.glob(os.path.join(train_utils.REPO, 'data', '*',
                                     '*_dataset_builder.py')):
    names.append(os.path.relpath(path, train_utils.REPO)[:-3]
                 .replace(os.sep, '.'))
  return sorted(n for n in names if not n.endswith('__init__'))


# Launchers define absl flags at import time (--config, --workdir): each is
# imported in a process of its own, as it runs.
LAUNCHERS = ('experiments.main', 'experiments.sweep', 'experiments.demo',
             'experiments.gblend_grid', 'experiments.ogm_grid',
             'experiments.longtail_grid')


@pytest.mark.slow
@pytest.mark.parametrize('name', _module_names())
def test_module_imports(name):
  if name in LAUNCHERS:
    subprocess.run([sys.executable, '-c', f'import {name}'],
                   cwd=train_utils.REPO, check=True)
  else:
    importlib.import_module(name)


CONFIG_FILES = sorted(
    glob.glob(os.path.join(train_utils.REPO, 'experiments', 'configs', '*.py'))
)


@pytest.mark.slow
@pytest.mark.parametrize(
    'path', [p for p in CONFIG_FILES if not p.endswith(
        ('__init__.py', 'common.py', 'longtail_recipes.py'))])
@pytest.mark.parametrize('arg', [None, 'runlocal'])
def test_every_config_builds(path, arg, tmp_path):
  config = runs.load_config(path, arg)
  config.lock()  # As the launcher locks it: every key must already exist.
  train.check_config(config)
  # The data set's shapes from its builder (nothing prepared), then the
  # model, the optimiser with the methods' transforms, and one traced step.
  builder = data.get_builder(config.data.name, data_dir=str(tmp_path),
                             builder_config=config.data.builder_config)
  features = builder.info.features
  names = tuple(config.data.modalities) or tuple(
      k for k in features.keys() if k not in data.pipeline.RESERVED_KEYS)
  # Encoded images (JPEG bytes) come out of the pipeline decoded.
  encoded = data.streaming.encoded_images(builder)
  shapes = {m: encoded[m].shape if m in encoded else tuple(features[m].shape)
            for m in names}
  num_classes = features['label'].num_classes
  model = models.build_model(config.model, modalities=shapes,
                             num_classes=num_classes)
  heads = steps.head_order(names, config.model.modality_heads)
  splits = types.SimpleNamespace(
      modalities=shapes, num_classes=num_classes,
      train_class_counts=np.arange(num_classes, 0, -1) * 10)
  run = methods.RunInfo(config=config, model=model, modalities=shapes,
                        heads=heads, steps_per_epoch=10, total_steps=100,
                        splits=splits, global_batch_size=4)
  active = methods.enabled_methods(run)
  prog = program.build_program(run, active)
  state = prog.abstract_state(jax.random.PRNGKey(0))
  batch = {m: jax.ShapeDtypeStruct((4, *s), jnp.float32)
           for m, s in shapes.items()}
  batch['label'] = jax.ShapeDtypeStruct((4,), jnp.int32)
  args = {'head_weights': jax.ShapeDtypeStruct((len(heads),), jnp.float32),
          'holdout_batch': batch}
  for method in active:
    if hasattr(method, 'loss_args') and method.objective() is not None:
      args['loss_args'] = method.loss_args(0, None, state, None)
  variant = methods.step_variant(active, 0)
  new_state, metrics = jax.eval_shape(prog.make_step(**dict(variant)),
                                      state, batch, args)
  assert jax.tree.map(lambda x: x.shape, new_state.params) == (
      jax.tree.map(lambda x: x.shape, state.params))
  assert metrics['loss'].shape == ()


@pytest.mark.parametrize('baseline', mfeat_fusion.BASELINES)
def test_mfeat_baseline_models_build_and_run(baseline):
  config = mfeat_fusion.get_config(f'views=fou+mor,baseline={baseline}')
  shapes = {v: MFEAT_SHAPES[v] for v in config.data.modalities}
  model = models.build_model(config.model, modalities=shapes, num_classes=10)
  inputs = {v: np.ones((2, *s), np.float32) for v, s in shapes.items()}
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  out = model.apply(variables, inputs, train=False)
  assert out['logits']['fused'].shape == (2, 10)


def test_mfeat_gblend_sgd_option():
  adam = mfeat_gblend.get_config('method=online')
  # The default is the Adam grid's optimiser, unchanged.
  assert mfeat_gblend.get_config('method=online,optimizer=adam') == adam
  assert (adam.optimizer.name, adam.optimizer.learning_rate) == ('adam', 1e-3)
  sgd = mfeat_gblend.get_config('method=online,optimizer=sgd')
  assert (sgd.optimizer.name, sgd.optimizer.momentum,
          sgd.optimizer.learning_rate, sgd.optimizer.weight_decay,
          sgd.optimizer.schedule) == ('sgd', 0.9, 0.01, 0.0, 'constant')
  assert mfeat_gblend.get_config(
      'method=online,optimizer=sgd,lr=0.03').optimizer.learning_rate == 0.03
  # Only the optimiser differs from the Adam run.
  sgd.optimizer = adam.optimizer
  assert sgd == adam
  with pytest.raises(ValueError, match="optimizer='rmsprop'"):
    mfeat_gblend.get_config('optimizer=rmsprop')


def test_unknown_config_argument_is_named():
  with pytest.raises(ValueError, match="'view'.*valid"):
    mfeat_fusion.get_config('view=fou')
  with pytest.raises(ValueError, match=r"\['abc'\]"):
    mfeat_fusion.get_config('views=fou+abc')


@pytest.mark.slow
def test_mfeat_real_data_end_to_end(data_dir, mfeat_manual_dir, tmp_path):
  config = mfeat_fusion.get_config('views=fou+kar')
  config.data.data_dir = data_dir
  config.data.manual_dir = mfeat_manual_dir
  config.num_train_steps = 60
  config.eval_every_epochs = 100
  results = train.train_and_evaluate(config, str(tmp_path))
  final = results['final']
  # 2000 digits: 1500 train (1350 train + 150 held-out) and 500 test.
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['data']['modalities'] == ['fou', 'kar']
  # Three epochs of SGD already separate the ten digits well above chance.
  assert final['test/fused/accuracy'] > 0.5
  assert final['train/fused/loss'] < np.log(10)


@pytest.mark.slow
def test_sweep_table(data_dir, tmp_path):
  config_path = os.path.join(train_utils.REPO, 'experiments', 'configs',
                             'synthetic_fusion.py')
  overrides = [f'data.data_dir={data_dir!s}', 'num_train_steps=3',
               'data.batch_size=16']
  rows = ['builder=tiny,modalities=strong', 'builder=tiny']
  results = runs.run_sweep(config_path, rows, 2, overrides, str(tmp_path))
  assert [len(r) for r in results.values()] == [2, 2]
  table = runs.format_table('T', results, 2)
  accuracies = 100 * np.array(
      [r['reported']['test/fused/accuracy'] for r in results[rows[0]]])
  assert f'{accuracies.mean():.2f} ± {accuracies.std():.2f}' in table
  # Seeds differ, so the two runs of a row differ.
  first, second = results[rows[1]]
  assert first['final'] != second['final']
  # A rerun finds every run finished and trains nothing.
  again = runs.run_sweep(config_path, rows, 2, overrides, str(tmp_path))
  assert again[rows[1]][0]['final'] == first['final']


def test_gblend_table_format():
  def run(test, train, seconds, weights=None):
    result = {'reported': {'test/fused/accuracy': test,
                           'train/fused/accuracy': train},
              'train_seconds': seconds}
    if weights:
      result['blend_weights'] = weights
    return result

  runs_by_method = {
      'single_a': [run(0.9, 1.0, 2.0), run(0.8, 1.0, 2.0)],
      'naive': [run(0.7, 1.0, 4.0), run(0.7, 1.0, 4.0)],
      'online': [run(0.8, 1.0, 12.0, {'a': 1.0, 'b': 0.0, 'fused': 0.0}),
                 run(0.8, 1.0, 12.0, {'a': 0.5, 'b': 0.0, 'fused': 0.5})],
  }
  table = tables.gblend_setting('a+b', 'two views', runs_by_method)
  assert '| a alone | 85.00 ± 5.00 | 100.00 ± 0.00 | — | 2.0 | 0.5 |' in table
  assert ('| online | 80.00 ± 0.00 | 100.00 ± 0.00 | [0.750, 0.000, 0.250] '
          '| 12.0 | 3.0 |') in table


def test_ogm_table_format():
  def run(test, train, holdout):
    reported = {'test/fused/accuracy': test, 'train/fused/accuracy': train}
    reported.update({f'holdout/{k}/accuracy': v for k, v in holdout.items()})
    return {'reported': reported, 'train_seconds': 3.0}

  by_method = {
      'single_a': [run(0.9, 1.0, {'fused': 0.95}),
                   run(0.9, 1.0, {'fused': 0.85})],
      'single_b': [run(0.6, 0.7, {'fused': 0.5}),
                   run(0.6, 0.7, {'fused': 0.5})],
      'ogm': [run(0.9, 1.0, {'fused': 0.9, 'unimodal_a': 0.8,
                             'unimodal_b': 0.4}),
              run(0.9, 1.0, {'fused': 0.9, 'unimodal_a': 0.8,
                             'unimodal_b': 0.2})],
  }
  table = tables.ogm_setting('a+b', 'two views', by_method)
  # Single views fill their own column with their network's held-out score.
  assert ('| a alone | 90.00 ± 0.00 | 100.00 ± 0.00 | 90.00 ± 5.00 | — '
          '| 3.0 |') in table
  assert ('| b alone | 60.00 ± 0.00 | 70.00 ± 0.00 | — | 50.00 ± 0.00 '
          '| 3.0 |') in table
  assert ('| ogm | 90.00 ± 0.00 | 100.00 ± 0.00 | 80.00 ± 0.00 | '
          '30.00 ± 10.00 | 3.0 |') in table


def test_longtail_tables_format():
  def run(holdout, error, shots, seconds=5.0):
    reported = {'holdout/fused/accuracy': holdout,
                'test/fused/accuracy': 1 - error,
                'test/fused/top1_error': error}
    reported.update({f'test/fused/{g}_accuracy': v for g, v in zip(
        ('many_shot', 'medium_shot', 'few_shot'), shots, strict=True)})
    return {'reported': reported, 'train_seconds': seconds}

  selection = tables.longtail_selection(
      {'drw': run(0.6, 0.45, (0.9, 0.5, 0.1)),
       'drs': run(0.7, 0.35, (0.8, 0.6, 0.3))}, {'drs'})
  assert '| drw | 60.00 | 55.00 | 90.00 | 50.00 | 10.00 | 5 |' in selection
  assert '| **drs** | 70.00 | 65.00 | 80.00 | 60.00 | 30.00 | 5 |' in selection
  ce = [run(0.6, 0.4, (0.9, 0.5, 0.2), 4.0),
        run(0.6, 0.3, (0.7, 0.5, 0.0), 6.0)]
  table = tables.longtail_table({'CE': ce, 'mixup': ce}, {'CE': '28.05'})
  assert ('| CE | 35.00 ± 5.00 | 80.00 ± 10.00 | 50.00 ± 0.00 | '
          '10.00 ± 10.00 | 5 | 28.05 |') in table
  assert table.rstrip().endswith('| 5 | — |')
  by_recipe = {'pair': [run(0.5, 0.5, (0, 0, 0))],
               'a': [run(0.5, 0.4, (0, 0, 0))],
               'b': [run(0.5, 0.45, (0, 0, 0))],
               'm': [run(0.5, 0.42, (0, 0, 0))]}
  findings = tables.longtail_findings(by_recipe, [
      ('worse: the pair is worse than either', 'pair', ('a', 'b')),
      ('m beats a', 'm', ('a',)),
  ]).splitlines()
  assert findings == [
      '- the pair is worse than either: agrees (top-1 error %: pair 50.00 ± '
      '0.00, a 40.00 ± 0.00, b 45.00 ± 0.00).',
      '- m beats a: **disagrees** (top-1 error %: m 42.00 ± 0.00, a 40.00 ± '
      '0.00).']


def test_longtail_table_seeds_column_and_findings_not_yet_measured():
  def run(error):
    reported = {'test/fused/top1_error': error}
    reported.update({f'test/fused/{g}_accuracy': 0.5 for g in (
        'many_shot', 'medium_shot', 'few_shot')})
    return {'reported': reported, 'train_seconds': 10.0}

  table = tables.longtail_table({'CE': [run(0.4), run(0.3)]}, seeds=True)
  assert table.splitlines()[0].endswith('| s/run | seeds | paper error '
                                        '(CIFAR-10-LT) |')
  assert table.splitlines()[1].count('---:') == 7
  assert ('| CE | 35.00 ± 5.00 | 50.00 ± 0.00 | 50.00 ± 0.00 | 50.00 ± 0.00 '
          '| 10 | 2 | — |') in table
  # The bag's 1 seed (30.00) against CE's mean of 2 (35.00); remix has no
  # finished run yet.
  by_recipe = {'ce': [run(0.4), run(0.3)], 'bag': [run(0.3)], 'remix': []}
  findings = tables.longtail_findings(by_recipe, [
      ('bag beats CE', 'bag', ('ce',)),
      ('bag beats remix and CE', 'bag', ('remix', 'ce')),
      ('CE beats the bag', 'ce', ('bag',)),
  ], verdicts=('holds', '**disagrees**')).splitlines()
  assert findings == [
      '- bag beats CE: holds (top-1 error %: bag 30.00 ± 0.00, ce 35.00 ± '
      '5.00).',
      '- bag beats remix and CE: not measured yet (no finished run of '
      'remix).',
      '- CE beats the bag: **disagrees** (top-1 error %: ce 35.00 ± 5.00, '
      'bag 30.00 ± 0.00).']
