"""``model.dtype``: bfloat16 computation with float32 parameters, optimiser
state, BatchNorm statistics, outputs and method statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax import config as config_lib
from gblend_jax import models
from gblend_jax.models import encoders
from gblend_jax.training import methods
from gblend_jax.training import program
from gblend_jax.training import steps

NUM_CLASSES = 5
BATCH = 16


def _config(kind: str, dtype: str):
  config = config_lib.default_config()
  config.model.dtype = dtype
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  if kind == 'gblend_mlp':  # G-Blend's model: modality heads, MLP head.
    config.model.encoder.mlp.hidden_sizes = (64,)
    config.model.fused_head.hidden_sizes = (64, 64)
    config.blend.mode = 'fixed'
    config.blend.weights = (0.3, 0.3, 0.4)
  elif kind == 'ogm_resnet':  # OGM-GE's: conv encoders, concat, linear.
    config.model.encoder.name = 'cifar_resnet'
    config.model.encoder.cifar_resnet.depth = 8
    config.model.encoder.cifar_resnet.width = 4
    config.model.fused_head.hidden_sizes = ()
    config.model.modality_heads = False
    config.modulation.method = 'ogm_ge'
  else:
    raise ValueError(kind)
  return config


def _program(kind: str, dtype: str):
  config = _config(kind, dtype)
  shapes = ({'a': (12,), 'b': (20,)} if kind == 'gblend_mlp'
            else {'a': (8, 8, 1), 'b': (8, 8, 3)})
  model = models.build_model(config.model, modalities=shapes,
                             num_classes=NUM_CLASSES)
  heads = steps.head_order(tuple(shapes), config.model.modality_heads)
  run = methods.RunInfo(config=config, model=model, modalities=shapes,
                        heads=heads, steps_per_epoch=10, total_steps=100)
  active = methods.enabled_methods(run)
  prog = program.build_program(run, active)
  weights = (config.blend.weights if config.blend.mode == 'fixed'
             else [h == steps.FUSED for h in heads])
  args = {'head_weights': jnp.asarray(weights, jnp.float32)}
  step = prog.make_step(**dict(methods.step_variant(active, 0)))
  return prog, jax.jit(step), args, shapes


def _batches(shapes, count):
  rng = np.random.default_rng(0)
  for _ in range(count):
    batch = {m: rng.normal(size=(BATCH, *s)).astype(np.float32)
             for m, s in shapes.items()}
    batch['label'] = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
    yield batch


def _is_float32(tree) -> bool:
  return all(x.dtype == jnp.float32 for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.floating))


@pytest.mark.parametrize('kind, op', [('gblend_mlp', 'dot_general'),
                                      ('ogm_resnet', 'conv_general_dilated')])
def test_bfloat16_steps_follow_the_float32_steps(kind, op):
  """Three steps from the same initial parameters: the step's matrix
  products / convolutions take bfloat16 operands (float32 ones under
  float32), the losses agree to bfloat16's precision (relative 3e-2),
  every parameter, optimiser and BatchNorm leaf stays float32, and the
  method statistics (OGM-GE's scores and coefficients) come out float32
  and close to float32's."""
  results = {}
  for dtype in ('float32', 'bfloat16'):
    prog, step, args, shapes = _program(kind, dtype)
    state = prog.init(jax.random.PRNGKey(0))
    jaxpr = jax.make_jaxpr(step)(state, next(_batches(shapes, 1)), args)
    # The layers' products (matrices, feature maps); the blend's weighted
    # sum of the head losses, a product of vectors, stays float32.
    operand_dtypes = {
        str(v.aval.dtype) for eqn in _equations(jaxpr.jaxpr)
        if eqn.primitive.name == op
        and min(v.aval.ndim for v in eqn.invars) >= 2 for v in eqn.invars}
    assert operand_dtypes == {dtype}, operand_dtypes
    losses, metrics = [], None
    for batch in _batches(shapes, 3):
      state, metrics = step(state, batch, args)
      losses.append(float(metrics['loss']))
    assert _is_float32(state.params) and _is_float32(state.opt_state)
    assert _is_float32(state.batch_stats) and _is_float32(metrics)
    results[dtype] = (np.array(losses), state, metrics)
  losses32, state32, metrics32 = results['float32']
  losses16, state16, metrics16 = results['bfloat16']
  np.testing.assert_allclose(losses16, losses32, rtol=3e-2)
  # The first step starts from identical parameters: its loss differs only
  # by the rounding of the bfloat16 forward pass, which is not nothing.
  assert losses16[0] != losses32[0]
  # The parameter updates agree to within 10% of their size.
  initial = prog.init(jax.random.PRNGKey(0)).params
  update32 = jax.tree.map(jnp.subtract, state32.params, initial)
  update16 = jax.tree.map(jnp.subtract, state16.params, initial)
  gap = jax.tree.map(jnp.subtract, update16, update32)
  assert optax.global_norm(gap) <= 0.1 * optax.global_norm(update32)
  for name in metrics32:
    if name.startswith('ogm/'):
      np.testing.assert_allclose(metrics16[name], metrics32[name],
                                 rtol=5e-2, atol=2e-2)


def _equations(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      inner = getattr(param, 'jaxpr', param)
      if hasattr(inner, 'eqns'):
        yield from _equations(inner)


def test_outputs_are_float32_and_a_bad_dtype_is_named():
  config = config_lib.default_config()
  config.model.dtype = 'bfloat16'
  model = models.build_model(config.model, modalities={'a': (3,), 'b': (4,)},
                             num_classes=NUM_CLASSES)
  inputs = {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 4))}
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  assert _is_float32(variables)
  out = model.apply(variables, inputs, train=False)
  assert _is_float32(out) and out['logits']['fused'].shape == (2, 5)
  config.model.dtype = 'float16'
  with pytest.raises(ValueError, match=r"model\.dtype='float16'.*bfloat16"):
    models.build_model(config.model, modalities={'a': (3,)},
                       num_classes=NUM_CLASSES)


class _Float32Only(nn.Module):
  """A user's encoder written before ``model.dtype``: no dtype field."""

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train
    return nn.Dense(4)(x)


def test_an_encoder_without_dtype_builds_in_float32_only(monkeypatch):
  monkeypatch.setitem(encoders.ENCODERS, 'float32_only', _Float32Only)
  config = config_lib.default_config()
  config.model.encoder.name = 'float32_only'
  model = models.build_model(config.model, modalities={'a': (3,), 'b': (3,)},
                             num_classes=NUM_CLASSES)
  inputs = {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))}
  out = model.apply(model.init(jax.random.PRNGKey(0), inputs, train=False),
                    inputs, train=False)
  assert out['logits']['fused'].shape == (2, NUM_CLASSES)
  config.model.dtype = 'bfloat16'
  with pytest.raises(ValueError, match="encoder 'float32_only' has no dtype"):
    models.build_model(config.model, modalities={'a': (3,), 'b': (3,)},
                       num_classes=NUM_CLASSES)
