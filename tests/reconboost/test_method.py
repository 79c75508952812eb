"""config.reconboost in the trainer: refusals, and the phase switch of
`ReconBoost.before_step` on a real train state."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import config as config_lib
from gblend_jax import models
from gblend_jax.reconboost import method as method_lib
from gblend_jax.training import methods
from gblend_jax.training import program as program_lib
from gblend_jax.training import steps
from gblend_jax.training import trainer as train

ON = {'reconboost.enabled': True, 'model.fusion': 'ensemble'}


def test_defaults_turn_nothing_on():
  config = config_lib.default_config()
  assert not method_lib.ReconBoost.enabled(config)
  assert config.reconboost.to_dict() == {
      'enabled': False, 'learner_epochs': 4.0, 'rectify_epochs': 4.0,
      'weight1': 5.0, 'weight2': 1.0, 'weight_decay': 5e-4}
  method_lib.ReconBoost.check_config(config)


@pytest.mark.parametrize('overrides, message', [
    ({'reconboost.learner_epochs': 0.0},
     r'config\.reconboost\.learner_epochs=0\.0 must be > 0'),
    ({'reconboost.rectify_epochs': -1.0},
     r'config\.reconboost\.rectify_epochs=-1\.0 must be > 0'),
    ({'reconboost.weight2': -0.5},
     r'config\.reconboost\.weight2=-0\.5 must be >= 0'),
    ({'reconboost.weight1': 1.0},
     r'config\.reconboost\.weight1=1\.0 must exceed '
     r'config\.reconboost\.weight2=1\.0'),
    ({'reconboost.weight_decay': -1e-4},
     r'config\.reconboost\.weight_decay=-0\.0001 must be >= 0'),
    ({'model.fusion': 'concat'},
     r"config\.model\.fusion='ensemble' \(got 'concat'\)"),
    ({'model.modality_heads': False},
     r'config\.model\.modality_heads=True'),
    ({'optimizer.weight_decay': 1e-4},
     r'config\.optimizer\.weight_decay=0\.0001 would also decay'),
    ({'blend.mode': 'fixed', 'blend.weights': (0.2, 0.3, 0.5)},
     r"config\.blend\.mode='fixed'"),
])
def test_bad_values_are_named_before_training(overrides, message, tmp_path):
  config = config_lib.default_config()
  config.update_from_flattened_dict({**ON, **overrides})
  with pytest.raises(ValueError, match=message):
    train.check_config(config)


@pytest.mark.parametrize('overrides, message', [
    ({'modulation.method': 'ogm_ge'},
     r'config\.modulation \(gradient_transform\) cannot be combined with '
     r'config\.reconboost \(staged_training\)'),
    ({'mmpareto.enabled': True},
     r'config\.mmpareto \(per_loss_gradients\) cannot be combined with '
     r'config\.reconboost \(staged_training\)'),
    ({'blend.mode': 'online'},
     r'config\.blend \(model_copies\) cannot be combined with '
     r'config\.reconboost \(staged_training\)'),
    ({'longtail.loss': 'focal'},
     r'config\.longtail \(objective\) cannot be combined with '
     r'config\.reconboost \(staged_training\)'),
])
def test_incompatible_methods_are_refused(overrides, message):
  config = config_lib.default_config()
  config.update_from_flattened_dict({**ON, **overrides})
  with pytest.raises(ValueError, match=message):
    methods.check_config(config)


def _run(config, steps_per_epoch=4, total_steps=40):
  modalities = {'a': (5,), 'b': (3,)}
  model = models.build_model(config.model, modalities=modalities,
                             num_classes=3)
  return methods.RunInfo(
      config=config, model=model, modalities=modalities,
      heads=steps.head_order(tuple(modalities), True),
      steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def _config(**overrides):
  config = config_lib.default_config()
  config.update_from_flattened_dict({
      **ON, 'model.encoder.mlp.hidden_sizes': (6,),
      'model.fused_head.hidden_sizes': (4,), 'optimizer.name': 'sgd',
      'optimizer.learning_rate': 0.1, 'optimizer.schedule': 'step',
      'optimizer.boundaries_epochs': (1.5,),
      'reconboost.learner_epochs': 0.5, 'reconboost.rectify_epochs': 0.5,
      **overrides})
  return config


def test_phases_shorter_than_a_step_are_named():
  with pytest.raises(ValueError, match=r'learner_epochs=0\.1 is 0 steps'):
    method_lib.ReconBoost(_run(_config(**{'reconboost.learner_epochs': 0.1})))


def test_phase_starts_reset_the_optimiser_and_set_the_members():
  run = _run(_config())
  recon = method_lib.ReconBoost(run)
  recon.start(types.SimpleNamespace(put=lambda tree: tree))
  program = program_lib.build_program(run, [recon])
  state = program.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {'a': rng.normal(size=(8, 5)).astype(np.float32),
           'b': rng.normal(size=(8, 3)).astype(np.float32),
           'label': rng.integers(0, 3, size=8).astype(np.int32)}
  # Phases of 2 steps: a a R R b b R R ...
  seen = []
  for step in range(6):
    changed = recon.before_step(step, state)
    assert (changed is not None) == (step in (0, 2, 4))
    if changed is not None:
      trace = optax.tree.get(changed.opt_state, 'trace')
      assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(trace))
      # The schedule's count is the global step: the lr decays at 1.5
      # epochs = step 6 whatever the phase.
      assert int(optax.tree.get(changed.opt_state, 'count')) == step
      seen.append(np.asarray(changed.batch_stats['members']).tolist())
      state = changed
    before = state.params
    args = {'head_weights': jnp.zeros(3),
            **recon.step_args(step, state)}
    variant = methods.step_variant([recon], step)
    state, metrics = jax.jit(program.make_step(**dict(variant)))(
        state, batch, args)
    trained = {k for k in before if any(
        not np.array_equal(x, y) for x, y in zip(
            jax.tree.leaves(before[k]), jax.tree.leaves(state.params[k]),
            strict=True))}
    expected = {0: {'encoder_a', 'shared_head'},
                2: {'encoder_a', 'shared_head', 'beta'},
                4: {'encoder_b', 'shared_head'}}[step - step % 2]
    assert trained == expected, step
    assert float(metrics['reconboost/stage']) == step // 4
  assert seen == [[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
