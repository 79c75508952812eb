"""The method interface: registry, combination table, composed hooks, and a
new method plugged into the trainer without touching it."""

import sys
import types

import jax.numpy as jnp
import ml_collections
import optax
import pytest

from gblend_jax import config as config_lib
from gblend_jax.training import methods
from gblend_jax.training import metric_writer
from gblend_jax.training import trainer as train
from tests import train_utils


def test_every_registered_method_owns_its_config_block():
  classes = methods.method_classes()
  assert [c.block for c in classes] == ['blend', 'modulation', 'longtail',
                                        'mmpareto', 'mla', 'agm', 'pmr',
                                        'reconboost']
  config = config_lib.default_config()
  for cls in classes:
    assert config[cls.block].to_dict() == cls.default_config().to_dict()
    # The defaults turn nothing on: naive training.
    assert not cls.enabled(config)


@pytest.mark.parametrize('overrides, message', [
    ({'blend.mode': 'gradient', 'modulation.method': 'ogm_ge'},
     r'config\.blend \(per_loss_gradients\) cannot be combined with '
     r'config\.modulation \(gradient_transform\)'),
    ({'blend.mode': 'gradient', 'longtail.loss': 'focal'},
     r'config\.blend \(per_loss_gradients\) .* config\.longtail '
     r'\(objective\)'),
    ({'blend.mode': 'online', 'longtail.drw_epoch': 1},
     r'config\.blend \(model_copies\) .* config\.longtail \(objective\)'),
    ({'blend.mode': 'offline', 'longtail.sampler': 'class_balanced'},
     r'config\.blend \(model_copies\) .* config\.longtail \(resampling\)'),
    ({'blend.mode': 'gradient', 'mmpareto.enabled': True},
     r'config\.blend \(per_loss_gradients\) cannot be combined with '
     r'config\.mmpareto \(per_loss_gradients\)'),
    ({'mmpareto.enabled': True, 'modulation.method': 'ogm_ge'},
     r'config\.mmpareto \(per_loss_gradients\) .* config\.modulation '
     r'\(gradient_transform\)'),
    ({'modulation.method': 'ogm', 'longtail.mixup': 'input'},
     r'config\.longtail \(mixup\) cannot be combined with '
     r'config\.modulation \(modality_scores\)'),
    ({'mla.enabled': True, 'model.shared_head': True,
      'mmpareto.enabled': True},
     r'config\.mla \(alternating_steps\) cannot be combined with '
     r'config\.mmpareto \(per_loss_gradients\)'),
    ({'mla.enabled': True, 'model.shared_head': True, 'blend.mode': 'fixed',
      'blend.weights': (0.2, 0.3, 0.5)},
     r'config\.blend \(head_weights\) cannot be combined with '
     r'config\.mla \(alternating_steps\)'),
    ({'mla.enabled': True, 'model.shared_head': True,
      'longtail.loss': 'focal'},
     r'config\.longtail \(objective\) .* config\.mla '
     r'\(alternating_steps\)'),
    ({'reconboost.enabled': True, 'model.fusion': 'ensemble',
      'agm.enabled': True},
     r'config\.agm \(shapley_modulation\) cannot be combined with '
     r'config\.reconboost \(staged_training\)'),
    ({'reconboost.enabled': True, 'model.fusion': 'ensemble',
      'pmr.enabled': True},
     r'config\.pmr \(prototype_loss\) cannot be combined with '
     r'config\.reconboost \(staged_training\)'),
    ({'agm.enabled': True, 'mla.enabled': True, 'model.shared_head': True},
     r'config\.agm \(shapley_modulation\) cannot be combined with '
     r'config\.mla \(alternating_steps\)'),
    ({'agm.enabled': True, 'modulation.method': 'ogm_ge'},
     r'config\.agm \(shapley_modulation\) cannot be combined with '
     r'config\.modulation \(gradient_transform\)'),
    ({'agm.enabled': True, 'mmpareto.enabled': True},
     r'config\.agm \(shapley_modulation\) .* config\.mmpareto '
     r'\(per_loss_gradients\)'),
    ({'agm.enabled': True, 'longtail.mixup': 'input'},
     r'config\.agm \(shapley_modulation\) .* config\.longtail '
     r'\(objective\)'),
    ({'agm.enabled': True, 'blend.mode': 'offline'},
     r'config\.agm \(shapley_modulation\) .* config\.blend '
     r'\(model_copies\)'),
    ({'mmpareto.enabled': True, 'pmr.enabled': True},
     r'config\.mmpareto \(per_loss_gradients\) cannot be combined with '
     r'config\.pmr \(prototype_loss\)'),
    ({'pmr.enabled': True, 'longtail.mixup': 'manifold'},
     r'config\.longtail \(mixup\) cannot be combined with '
     r'config\.pmr \(prototype_loss\)'),
    ({'mla.enabled': True, 'model.shared_head': True, 'pmr.enabled': True},
     r'config\.mla \(alternating_steps\) cannot be combined with '
     r'config\.pmr \(prototype_loss\)'),
])
def test_incompatible_pairs_are_refused_naming_both_blocks(overrides,
                                                           message):
  config = config_lib.default_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    methods.check_config(config)


@pytest.mark.parametrize('overrides', [
    {'blend.mode': 'fixed', 'blend.weights': (0.2, 0.3, 0.5),
     'longtail.loss': 'focal', 'longtail.sampler': 'sqrt'},
    {'blend.mode': 'online', 'modulation.method': 'ogm_ge'},
    {'modulation.method': 'ogm', 'longtail.loss': 'cs_ce'},
    {'blend.mode': 'gradient', 'longtail.shot_metrics': True},
    {'mmpareto.enabled': True, 'longtail.shot_metrics': True},
    {'mla.enabled': True, 'model.shared_head': True,
     'longtail.sampler': 'sqrt'},
    {'agm.enabled': True, 'blend.mode': 'fixed',
     'blend.weights': (0.2, 0.3, 0.5)},
    {'agm.enabled': True, 'longtail.sampler': 'sqrt'},
    {'pmr.enabled': True, 'modulation.method': 'ogm_ge'},
    {'pmr.enabled': True, 'longtail.loss': 'focal'},
])
def test_compatible_pairs_pass(overrides):
  config = config_lib.default_config()
  config.update_from_flattened_dict(overrides)
  methods.check_config(config)
  enabled = [c.block for c in methods.method_classes() if c.enabled(config)]
  assert len(enabled) == 2


def test_every_incompatible_pair_names_a_feature_some_method_uses():
  # A pair whose features no method reports would never fire: a dead row.
  reported = set()
  probes = [{'blend.mode': m} for m in ('fixed', 'offline', 'online',
                                        'gradient')]
  probes += [{'modulation.method': 'ogm'}, {'longtail.loss': 'focal'},
             {'longtail.mixup': 'input'}, {'longtail.sampler': 'sqrt'},
             {'mmpareto.enabled': True},
             {'mla.enabled': True, 'model.shared_head': True},
             {'agm.enabled': True}, {'pmr.enabled': True},
             {'reconboost.enabled': True}]
  for overrides in probes:
    config = config_lib.default_config()
    config.update_from_flattened_dict(overrides)
    for cls in methods.method_classes():
      if cls.enabled(config):
        reported |= cls.features(config)
  for pair in methods.INCOMPATIBLE:
    assert pair <= reported, pair


class _Scales(methods.Method):
  """A method of one transform and one hook, as a user would add it."""

  block = 'scale_updates'
  metric_prefix = 'scale/'

  @staticmethod
  def default_config():
    return ml_collections.ConfigDict({'factor': 1.0})

  @classmethod
  def enabled(cls, config):
    return config.scale_updates.factor != 1.0

  def transform(self):
    return optax.scale(self.config.scale_updates.factor)

  def step_hooks(self):
    return methods.StepHooks(
        opt_state_metrics=lambda s: {'scale/factor': jnp.float32(
            self.config.scale_updates.factor)})

  def results(self, state):
    return {'scale_factor': self.config.scale_updates.factor}


@pytest.mark.slow
def test_a_new_method_plugs_in_through_the_registry(data_dir, tmp_path,
                                                    monkeypatch):
  module = types.ModuleType('scale_updates_method')
  module.METHOD = _Scales
  monkeypatch.setitem(sys.modules, 'scale_updates_method', module)
  monkeypatch.setattr(methods, 'METHOD_MODULES',
                      (*methods.METHOD_MODULES, 'scale_updates_method'))
  config = train_utils.tiny_synthetic_config(data_dir, steps=4)
  assert config.scale_updates.factor == 1.0  # The block is registered.
  plain = train.train_and_evaluate(config, str(tmp_path / 'plain'))
  config.scale_updates.factor = 0.0  # No update at all.
  frozen = train.train_and_evaluate(config, str(tmp_path / 'frozen'))
  assert frozen['scale_factor'] == 0.0 and 'scale_factor' not in plain
  rows = metric_writer.read_metrics(str(tmp_path / 'frozen'))
  # Logged under the method's prefix, not as train_step/scale/factor.
  assert [r['scale/factor'] for r in rows if 'scale/factor' in r] == [0.0] * 2
  # With the updates scaled to zero the model stays the initial one: a
  # shorter frozen run ends with the same metrics; the plain run learns.
  config.num_train_steps = 2
  shorter = train.train_and_evaluate(config, str(tmp_path / 'shorter'))
  assert shorter['final'] == frozen['final']
  assert plain['final']['train/fused/loss'] < (
      frozen['final']['train/fused/loss'])


def test_compose_hooks_merges_update_args_and_refuses_two_objectives():
  class A(methods.Method):
    block = 'a'

    def step_hooks(self):
      return methods.StepHooks(
          update_args=lambda *a: ({'x': 1}, {'a/m': 1.0}),
          objective=lambda *a: None)

  class B(methods.Method):
    block = 'b'

    def step_hooks(self):
      return methods.StepHooks(
          update_args=lambda *a: ({'y': 2}, {'b/m': 2.0}))

  run = methods.RunInfo(config=ml_collections.ConfigDict(), model=None,
                        modalities={}, heads=('fused',), steps_per_epoch=1,
                        total_steps=1)
  hooks = methods.compose_hooks([A(run), B(run)])
  assert hooks.update_args(None, None, None, None) == (
      {'x': 1, 'y': 2}, {'a/m': 1.0, 'b/m': 2.0})
  assert hooks.update_rule is None and hooks.opt_state_metrics is None
  class C(B):
    block = 'c'

    def step_hooks(self):
      return methods.StepHooks(objective=lambda *a: None)

  with pytest.raises(ValueError, match=r'config\.a and config\.c both '
                     r'replace the step\'s objective'):
    methods.compose_hooks([A(run), B(run), C(run)])
  assert methods.logged_name([A(run)], 'a/m') == 'train_step/a/m'


@pytest.mark.parametrize('overrides, message', [
    ({'longtail.posthoc_tau': -1.0}, r'config\.longtail\.posthoc_tau=-1\.0 '
     r'must be >= 0'),
    ({'longtail.logit_adjustment_tau': -0.5},
     r'config\.longtail\.logit_adjustment_tau=-0\.5 must be >= 0'),
    ({'mmpareto.enabled': True, 'mmpareto.gamma': 0.0},
     r'config\.mmpareto\.gamma=0\.0 must be > 0'),
    ({'mmpareto.enabled': True, 'model.modality_heads': False},
     r'config\.mmpareto\.enabled=True .*config\.model\.modality_heads=True'),
    ({'mla.projection': 'owm'},
     r"config\.mla\.projection='owm' must be one of"),
    ({'mla.enabled': True},
     r'config\.mla\.enabled=True .*set config\.model\.shared_head=True'),
    ({'model.shared_head': True, 'model.modality_heads': False},
     r'config\.model\.modality_heads=False must be True with '
     r'model\.shared_head=True'),
    ({'model.shared_head': True, 'model.fusion': 'se_gate'},
     r"config\.model\.fusion='se_gate' must be a late fusion"),
    ({'model.shared_head_fusion_weights': (0.5, -0.1)},
     r'config\.model\.shared_head_fusion_weights=\(0\.5, -0\.1\) must be'),
])
def test_new_method_keys_are_checked_before_training(overrides, message):
  config = config_lib.default_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    train.check_config(config)
