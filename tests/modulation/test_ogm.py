"""Tests of `gblend_jax.modulation.ogm`: ratios, coefficients, and the
ogm_ge transform."""

import functools
import inspect
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gblend_jax.modulation import method as modulation_method
from gblend_jax.modulation import ogm
from tests import train_utils

PMAP_SCRIPT = os.path.join(os.path.dirname(__file__), 'ogm_pmap_checks.py')
LABELS = ogm.label_encoders(('a', 'b'))
# The gradients here are mostly an MLP's (2-D kernels); `ogm_ge` modulates
# 4-D conv kernels only by default, as the official code does.
ogm_ge_mlp = functools.partial(ogm.ogm_ge, modulated='matrices')


def test_default_modulates_conv_kernels_as_the_config_does():
  default = inspect.signature(ogm.ogm_ge).parameters['modulated'].default
  assert default == 'conv_kernels'
  assert modulation_method.default_modulation_config().modulated == (
      default)


def k_of(alpha, rho):
  return 1.0 - math.tanh(alpha * rho)


# ---------------------------------------------------------------------------
# ogm_ratios / ogm_coefficients


@pytest.mark.parametrize(
    'scores, alpha, ratios, coefficients',
    [
        # Audio dominates: rho_a = 3 / 1.
        ([3.0, 1.0], 0.8, [3.0, 1 / 3], [k_of(0.8, 3.0), 1.0]),
        # Swapped: the other modality is modulated.
        ([1.0, 3.0], 0.8, [1 / 3, 3.0], [1.0, k_of(0.8, 3.0)]),
        # Equal scores: nobody dominates (the official code would give
        # audio 1 - tanh(alpha)).
        ([2.0, 2.0], 0.8, [1.0, 1.0], [1.0, 1.0]),
        # Just above 1: the jump to 1 - tanh(alpha * rho).
        ([2.5, 2.0], 0.1, [1.25, 0.8], [k_of(0.1, 1.25), 1.0]),
        # M = 3, rho_m = s_m / mean of the others: 4/2, 1/3.5, 3/2.5.
        (
            [4.0, 1.0, 3.0],
            0.5,
            [2.0, 1 / 3.5, 1.2],
            [k_of(0.5, 2.0), 1.0, k_of(0.5, 1.2)],
        ),
        # M = 3, two modalities with rho > 1 are each modulated.
        ([3.0, 3.0, 1.0], 0.8, [1.5, 1.5, 1 / 3], [k_of(0.8, 1.5)] * 2 + [1.0]),
        # alpha = 0: no modulation at all.
        ([3.0, 1.0], 0.0, [3.0, 1 / 3], [1.0, 1.0]),
    ],
)
def test_ratios_and_coefficients_match_hand_computed(
    scores, alpha, ratios, coefficients
):
  scores = jnp.array(scores)
  np.testing.assert_allclose(ogm.ogm_ratios(scores), ratios, rtol=1e-6)
  np.testing.assert_allclose(
      ogm.ogm_coefficients(scores, alpha), coefficients, rtol=1e-6
  )


def test_two_modality_ratio_is_exactly_the_quotient():
  scores = jnp.array([0.1, 0.7])
  rho = ogm.ogm_ratios(scores)
  assert rho[0] == scores[0] / scores[1]
  assert rho[1] == scores[1] / scores[0]


@pytest.mark.parametrize(
    'scores, alpha, ratios, coefficients',
    [
        ([0.0, 0.0], 0.8, [1.0, 1.0], [1.0, 1.0]),
        ([0.0, 5.0], 0.8, [0.0, np.inf], [1.0, 0.0]),
        ([0.0, 5.0], 0.0, [0.0, np.inf], [1.0, 1.0]),
        ([0.0, 0.0, 5.0], 0.8, [0.0, 0.0, np.inf], [1.0, 1.0, 0.0]),
        ([0.0, 0.0, 0.0], 0.8, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
    ],
)
def test_zero_scores_give_no_nan(scores, alpha, ratios, coefficients):
  k = ogm.ogm_coefficients(jnp.array(scores), alpha)
  assert not np.any(np.isnan(k))
  np.testing.assert_array_equal(k, coefficients)
  np.testing.assert_array_equal(ogm.ogm_ratios(jnp.array(scores)), ratios)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_scores_turn_modulation_off(bad):
  scores = jnp.array([bad, 1.0, 2.0])
  np.testing.assert_array_equal(ogm.ogm_coefficients(scores, 0.8), 1.0)
  assert np.all(np.isnan(ogm.ogm_ratios(scores)))


def test_coefficients_under_jit_with_traced_alpha():
  scores = jnp.array([3.0, 1.0])
  k = jax.jit(ogm.ogm_coefficients)(scores, jnp.float32(0.8))
  np.testing.assert_allclose(k, [k_of(0.8, 3.0), 1.0], rtol=1e-6)


@pytest.mark.parametrize('alpha', [-0.1, math.nan, math.inf])
def test_coefficients_reject_bad_alpha(alpha):
  with pytest.raises(ValueError, match=f'alpha.*{alpha}'):
    ogm.ogm_coefficients(jnp.array([1.0, 2.0]), alpha)


@pytest.mark.parametrize('shape', [(1,), (2, 2), ()])
def test_coefficients_reject_bad_scores_shape(shape):
  with pytest.raises(ValueError, match='M >= 2'):
    ogm.ogm_coefficients(jnp.ones(shape), 0.8)


def test_scores_sum_true_class_probabilities():
  probs_a = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
  logits = {'a': jnp.log(probs_a), 'b': jnp.zeros((3, 3))}
  labels = jnp.array([0, 2, 2])
  scores = ogm.ogm_scores(logits, labels, ('b', 'a'))
  np.testing.assert_allclose(scores, [1.0, 0.7 + 0.3 + 0.6], rtol=1e-6)
  weighted = ogm.ogm_scores(
      logits, labels, ('a', 'b'), weights=jnp.array([1.0, 1.0, 0.0])
  )
  np.testing.assert_allclose(weighted, [1.0, 2 / 3], rtol=1e-6)


# ---------------------------------------------------------------------------
# ogm_ge


def random_tree(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s), jnp.float32),
      shapes,
      is_leaf=lambda x: isinstance(x, tuple),
  )


SHAPES = {
    'encoder_a': {
        'conv': {'kernel': (3, 3, 2, 4), 'bias': (4,)},
        'dense': {'kernel': (8, 5), 'bias': (5,)},
    },
    'encoder_b': {'dense': {'kernel': (6, 5), 'bias': (5,)}},
    'fusion': {'kernel': (10, 4)},
    'fused_head': {'output': {'kernel': (4, 3), 'bias': (3,)}},
}


def assert_tree_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_scales_only_the_dominant_modalitys_matrices():
  grads = random_tree(SHAPES)
  tx = ogm_ge_mlp(0.8, param_labels=LABELS, noise=False)
  state = tx.init(grads)
  out, state = jax.jit(tx.update)(
      grads, state, scores=jnp.array([3.0, 1.0])
  )
  k = k_of(0.8, 3.0)
  a, b = out['encoder_a'], grads['encoder_a']
  np.testing.assert_allclose(a['dense']['kernel'], k * b['dense']['kernel'],
                             rtol=1e-6)
  np.testing.assert_allclose(a['conv']['kernel'], k * b['conv']['kernel'],
                             rtol=1e-6)
  # Biases (1-D), the non-dominant encoder and unlabelled leaves: untouched.
  np.testing.assert_array_equal(a['dense']['bias'], b['dense']['bias'])
  np.testing.assert_array_equal(a['conv']['bias'], b['conv']['bias'])
  assert_tree_equal(out['encoder_b'], grads['encoder_b'])
  assert_tree_equal(out['fusion'], grads['fusion'])
  assert_tree_equal(out['fused_head'], grads['fused_head'])
  np.testing.assert_allclose(state.coefficients, [k, 1.0], rtol=1e-6)
  np.testing.assert_allclose(state.ratios, [3.0, 1 / 3], rtol=1e-6)
  assert bool(state.active)
  assert int(state.count) == 1


def test_swapped_dominance_scales_the_other_encoder():
  grads = random_tree(SHAPES)
  tx = ogm_ge_mlp(0.8, param_labels=LABELS, noise=False)
  out, _ = jax.jit(tx.update)(
      grads, tx.init(grads), scores=jnp.array([1.0, 4.0])
  )
  assert_tree_equal(out['encoder_a'], grads['encoder_a'])
  np.testing.assert_allclose(
      out['encoder_b']['dense']['kernel'],
      k_of(0.8, 4.0) * grads['encoder_b']['dense']['kernel'],
      rtol=1e-6,
  )


@pytest.mark.parametrize(
    'modulated, scaled',
    [
        ('conv_kernels', {'conv/kernel'}),
        ('matrices', {'conv/kernel', 'dense/kernel'}),
        ('all', {'conv/kernel', 'dense/kernel', 'conv/bias', 'dense/bias'}),
        (
            lambda path, leaf: path[-2].key == 'dense',
            {'dense/kernel', 'dense/bias'},
        ),
    ],
)
def test_modulated_selects_the_tensors(modulated, scaled):
  grads = random_tree(SHAPES)
  tx = ogm.ogm_ge(0.5, param_labels=LABELS, noise=False, modulated=modulated)
  out, _ = jax.jit(tx.update)(
      grads, tx.init(grads), scores=jnp.array([2.0, 1.0])
  )
  k = k_of(0.5, 2.0)
  for layer in ('conv', 'dense'):
    for name in ('kernel', 'bias'):
      factor = k if f'{layer}/{name}' in scaled else 1.0
      np.testing.assert_allclose(
          out['encoder_a'][layer][name],
          factor * grads['encoder_a'][layer][name],
          rtol=1e-6,
      )


def test_label_pytree_prefix_and_params_collection_key():
  grads = random_tree(SHAPES)
  prefix = {
      'encoder_a': 'a', 'encoder_b': 'b', 'fusion': None, 'fused_head': None
  }
  by_fn = ogm_ge_mlp(0.8, param_labels=LABELS, noise=False)
  by_tree = ogm_ge_mlp(0.8, param_labels=prefix, noise=False)
  scores = jnp.array([3.0, 1.0])
  out_fn, _ = jax.jit(by_fn.update)(grads, by_fn.init(grads), scores=scores)
  out_tree, _ = jax.jit(by_tree.update)(
      grads, by_tree.init(grads), scores=scores
  )
  assert_tree_equal(out_fn, out_tree)
  labels = ogm.encoder_param_labels({'params': grads}, ('a', 'b'))
  assert labels['params']['encoder_a']['conv']['kernel'] == 'a'
  assert labels['params']['encoder_b']['dense']['bias'] == 'b'
  assert labels['params']['fused_head']['output']['kernel'] is None


def test_modalities_order_follows_the_argument():
  grads = random_tree(SHAPES)
  tx = ogm_ge_mlp(
      0.8, param_labels=LABELS, noise=False, modalities=('b', 'a')
  )
  # Scores in the order (b, a): a dominates.
  out, state = jax.jit(tx.update)(
      grads, tx.init(grads), scores=jnp.array([1.0, 3.0])
  )
  np.testing.assert_allclose(state.coefficients, [1.0, k_of(0.8, 3.0)],
                             rtol=1e-6)
  np.testing.assert_allclose(
      out['encoder_a']['dense']['kernel'],
      k_of(0.8, 3.0) * grads['encoder_a']['dense']['kernel'],
      rtol=1e-6,
  )


def test_window_in_steps():
  grads = random_tree(SHAPES)
  tx = ogm_ge_mlp(0.8, param_labels=LABELS, noise=True, window=(2, 4))
  update = jax.jit(tx.update)
  state = tx.init(grads)
  active = []
  for _ in range(6):
    out, state = update(grads, state, scores=jnp.array([3.0, 1.0]))
    active.append(bool(state.active))
    changed = not np.array_equal(
        out['encoder_b']['dense']['kernel'],
        grads['encoder_b']['dense']['kernel'],
    )
    # Inside the window even the non-dominant encoder gets noise.
    assert changed == active[-1]
    if not active[-1]:
      assert_tree_equal(out, grads)
  assert active == [False, False, True, True, False, False]


def test_noise_has_the_gradients_standard_deviation():
  rng = np.random.default_rng(0)
  grads = {
      'encoder_a': {'kernel': jnp.asarray(2.0 * rng.normal(size=(512, 512)))},
      'encoder_b': {
          'kernel': jnp.asarray(0.5 * rng.normal(size=(256, 256)) + 3.0),
          'bias': jnp.asarray(rng.normal(size=(256,))),
      },
      'fused_head': {'kernel': jnp.asarray(rng.normal(size=(64, 64)))},
  }
  grads = jax.tree.map(lambda x: x.astype(jnp.float32), grads)
  tx = ogm_ge_mlp(0.8, param_labels=LABELS, seed=3)
  out, _ = jax.jit(tx.update)(
      grads, tx.init(grads), scores=jnp.array([3.0, 1.0])
  )
  k = k_of(0.8, 3.0)
  for m, factor in (('encoder_a', k), ('encoder_b', 1.0)):
    g = np.asarray(grads[m]['kernel'], np.float64)
    added = np.asarray(out[m]['kernel'], np.float64) - factor * g
    # sigma is std of the original gradient (not of k * g): 2.0 and 0.5.
    np.testing.assert_allclose(added.std(), g.std(ddof=1) + 1e-8, rtol=0.03)
    assert abs(added.mean()) < 0.02 * g.std()
  np.testing.assert_array_equal(
      out['encoder_b']['bias'], grads['encoder_b']['bias']
  )
  assert_tree_equal(out['fused_head'], grads['fused_head'])


def test_key_advances_and_is_deterministic():
  grads = random_tree(SHAPES)
  scores = jnp.array([1.0, 1.0])
  tx = ogm_ge_mlp(0.8, param_labels=LABELS, seed=0)
  update = jax.jit(tx.update)

  def two_steps():
    state = tx.init(grads)
    first, state = update(grads, state, scores=scores)
    second, state = update(grads, state, scores=scores)
    return first, second

  first, second = two_steps()
  kernel = lambda t: np.asarray(t['encoder_a']['dense']['kernel'])
  assert not np.array_equal(kernel(first), kernel(second))
  again, _ = two_steps()
  assert_tree_equal(first, again)
  other_seed = ogm_ge_mlp(0.8, param_labels=LABELS, seed=1).init(grads)
  assert not np.array_equal(other_seed.key, tx.init(grads).key)


def test_resuming_from_a_saved_state_is_bit_exact():
  grads = random_tree(SHAPES)
  scores = [jnp.array([3.0, 1.0]), jnp.array([1.0, 2.0]), jnp.array([2.0, 2.0])]

  def make():
    return optax.chain(
        ogm_ge_mlp(0.8, param_labels=LABELS), optax.sgd(0.1, momentum=0.9)
    )

  tx = make()
  update = jax.jit(tx.update)
  state = tx.init(grads)
  straight = []
  for s in scores:
    out, state = update(grads, state, grads, scores=s)
    straight.append(out)
  # A fresh transform starts from the same state: nothing lives outside it.
  state = make().init(grads)
  assert_tree_equal(state, tx.init(grads))
  _, state = update(grads, state, grads, scores=scores[0])
  # Save and restore through host numpy arrays, as a checkpoint does.
  saved = jax.tree.map(np.array, jax.device_get(state))
  state = jax.tree.map(jnp.asarray, saved)
  for s, expected in zip(scores[1:], straight[1:], strict=True):
    out, state = update(grads, state, grads, scores=s)
    assert_tree_equal(out, expected)


def test_in_chain_with_sgd_under_jit_without_recompiling():
  grads = random_tree(SHAPES)
  tx = optax.chain(
      ogm_ge_mlp(0.8, param_labels=LABELS, noise=False), optax.sgd(0.1)
  )
  traces = []

  @jax.jit
  def step(grads, state, scores):
    traces.append(1)
    return tx.update(grads, state, grads, scores=scores)

  state = tx.init(grads)
  out, state = step(grads, state, jnp.array([3.0, 1.0]))
  np.testing.assert_allclose(
      out['encoder_a']['dense']['kernel'],
      -0.1 * k_of(0.8, 3.0) * grads['encoder_a']['dense']['kernel'],
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      out['fused_head']['output']['kernel'],
      -0.1 * grads['fused_head']['output']['kernel'],
      rtol=1e-6,
  )
  out, state = step(grads, state, jnp.array([1.0, 5.0]))
  assert len(traces) == 1
  np.testing.assert_allclose(
      optax.tree.get(state, 'coefficients'), [1.0, k_of(0.8, 5.0)], rtol=1e-6
  )
  np.testing.assert_allclose(
      optax.tree.get(state, 'ratios'), [0.2, 5.0], rtol=1e-6
  )


def test_alpha_can_be_injected():
  grads = random_tree(SHAPES)
  static = ('param_labels', 'noise', 'modulated', 'window', 'axis_name',
            'seed', 'modalities')
  tx = optax.inject_hyperparams(ogm.ogm_ge, static_args=static)(
      alpha=0.8, param_labels=LABELS, noise=False
  )
  state = tx.init(grads)
  state.hyperparams['alpha'] = jnp.float32(0.1)
  _, state = jax.jit(tx.update)(grads, state, scores=jnp.array([3.0, 1.0]))
  np.testing.assert_allclose(
      optax.tree.get(state, 'coefficients'), [k_of(0.1, 3.0), 1.0], rtol=1e-6
  )


@pytest.mark.parametrize(
    'kwargs, match',
    [
        ({'alpha': -0.5}, r'alpha.*-0\.5'),
        ({'window': (5, 2)}, r'window=\(5, 2\) is reversed'),
        ({'window': (-1, None)}, 'window start.*-1'),
        ({'window': (0,)}, 'pair'),
        ({'modulated': 'convs'}, "modulated='convs'.*conv_kernels"),
        ({'modulated': 4}, 'modulated must be'),
        ({'modalities': ('a', 'a')}, 'duplicates'),
    ],
)
def test_construction_rejects_bad_arguments(kwargs, match):
  args = {'alpha': 0.8, 'param_labels': LABELS, **kwargs}
  with pytest.raises(ValueError, match=match):
    ogm.ogm_ge(args.pop('alpha'), **args)


def test_labels_and_scores_are_checked():
  grads = random_tree(SHAPES)
  only_a = ogm_ge_mlp(0.8, param_labels=ogm.label_encoders(('a',)))
  with pytest.raises(ValueError, match='at least 2'):
    only_a.init(grads)
  unknown = ogm_ge_mlp(
      0.8, param_labels=ogm.label_encoders(('a', 'b')), modalities=('a', 'c')
  )
  with pytest.raises(ValueError, match="labelled 'b'"):
    unknown.init(grads)
  mlp = {'encoder_a': {'kernel': jnp.ones((3, 2))},
         'encoder_b': {'kernel': jnp.ones((3, 2))}}
  convs_only = ogm.ogm_ge(0.8, param_labels=LABELS, modulated='conv_kernels')
  with pytest.raises(ValueError, match='selects no labelled parameter'):
    convs_only.init(mlp)
  mismatched = ogm_ge_mlp(0.8, param_labels={'encoder_a': {'x': 'a'}})
  with pytest.raises(ValueError, match='do not match'):
    mismatched.init(grads)
  tx = ogm_ge_mlp(0.8, param_labels=LABELS)
  with pytest.raises(ValueError, match=r'scores has shape \(3,\)'):
    tx.update(grads, tx.init(grads), scores=jnp.ones(3))


@pytest.mark.slow
def test_pmap_with_axis_name_on_8_cpu_devices():
  result = train_utils.run_on_cpu_devices(PMAP_SCRIPT, 8)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'pmap: ok' in result.stdout


def test_misuse_messages():
  params = {'encoder_a': {'kernel': jnp.ones((3, 2))},
            'encoder_b': {'kernel': jnp.ones((3, 2))},
            'head': {'kernel': jnp.ones((4, 2))}}
  # No parameter named encoder_<m>: say so, not the conv-kernel hint.
  renamed = {'enc_a': params['encoder_a'], 'enc_b': params['encoder_b']}
  tx = ogm_ge_mlp(0.8, param_labels=LABELS)
  with pytest.raises(ValueError, match="label no parameter.*'enc_a'"):
    tx.init(renamed)
  # A labels dict lacking a key names it instead of a pytree dump.
  partial = ogm_ge_mlp(0.8, param_labels={'encoder_a': 'a',
                                          'encoder_b': 'b'})
  with pytest.raises(ValueError, match=r"no label for \['head'\]"):
    partial.init(params)
  # Per-loss gradients (ogm_ge before gradient_blend) are refused.
  state = tx.init(params)
  per_loss = jax.tree.map(lambda p: jnp.stack([p] * 3), params)
  with pytest.raises(ValueError, match='put ogm_ge after gradient_blend'):
    tx.update(per_loss, state, params, scores=jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match='scores must be >= 0'):
    tx.update(params, state, params, scores=jnp.array([-1.0, 2.0]))
  # Traced negative scores cannot raise: no modulation (NaN ratios).
  _, state = jax.jit(tx.update)(params, state, params,
                                scores=jnp.array([-1.0, 2.0]))
  assert np.isnan(optax.tree.get(state, 'ratios')).all()
  np.testing.assert_array_equal(optax.tree.get(state, 'coefficients'), 1.0)


@pytest.mark.slow
def test_missing_axis_name_raises_under_pmap_and_shard_map():
  script = os.path.join(os.path.dirname(__file__), 'mapped_misuse_checks.py')
  result = train_utils.run_on_cpu_devices(script, 8)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'ok' in result.stdout
