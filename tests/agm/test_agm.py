"""AGM's pure pieces against SPEC_METHODS §2 (h) and hand-worked cases."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gblend_jax
from gblend_jax import agm

# §2 (h1): f(a,v), f(0,v), f(a,0); f(0,0) is never used.
F_AV = np.array([2.0, 0.0, 1.0])
F_0V = np.array([0.5, 0.5, 0.0])
F_A0 = np.array([1.5, -0.5, 1.0])


def _two_modality_net(x):
  """Fused logits of one example whose padding pattern picks h1's values.

  ``a, v`` are 1 (present) or 0 (padded): ``f = a f(a,0) + v f(0,v) + a v
  [f(a,v) - f(a,0) - f(0,v)]``, so ``f(0,0) = 0``.
  """
  a, v = x['a'][:, :1], x['v'][:, :1]
  return (a * F_A0 + v * F_0V + a * v * (F_AV - F_A0 - F_0V)).astype(
      jnp.float32)


def _inputs():
  return {'a': jnp.ones((1, 4)), 'v': jnp.ones((1, 2)), 'label': jnp.zeros(1)}


def test_spec_h1_mono_modal_responses_and_scores():
  responses = agm.mono_modal_responses(_two_modality_net, _inputs(),
                                       ('a', 'v'))
  np.testing.assert_allclose(responses['a'][0], [1.5, -0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(responses['v'][0], [0.5, 0.5, 0.0], atol=1e-6)
  np.testing.assert_allclose(responses['a'] + responses['v'], [F_AV],
                             atol=1e-6)
  scores = agm.agm_scores(responses, jnp.array([0]), ('a', 'v'))
  np.testing.assert_allclose(scores, [0.554957, 0.958020], atol=1e-6)


def test_full_logits_are_used_for_the_full_set():
  # The training-mode pass's logits stand in for f(a,v): only the padded
  # coalitions are evaluated, and the responses still sum to them.
  calls = []

  def net(x):
    calls.append(x)
    return _two_modality_net(x)

  full = jnp.array([[4.0, 0.0, 1.0]])
  responses = agm.mono_modal_responses(net, _inputs(), ('a', 'v'),
                                       full_logits=full)
  assert len(calls) == 2
  # m_a = ½[f(a,v) - f(0,v) + f(a,0)] with f(a,v) = (4, 0, 1).
  np.testing.assert_allclose(responses['a'][0], [2.5, -0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(responses['a'] + responses['v'], full,
                             atol=1e-6)
  # The label rides along untouched; padding zeroes only the modalities.
  assert all(float(c['label'][0]) == 0.0 for c in calls)
  assert sorted(float(c['a'].sum() > 0) + 2 * float(c['v'].sum() > 0)
                for c in calls) == [1.0, 2.0]


def test_three_modalities_by_hand_and_efficiency():
  # f(S) = Σ_{j∈S} c_j + d [a ∈ S and v ∈ S]: additive plus an a-v
  # interaction, which the Shapley value splits in halves.
  c = {'a': 1.0, 'v': -2.0, 't': 0.25}
  d = 3.0

  def net(x):
    on = {m: x[m][:, :1] for m in c}
    out = sum(c[m] * on[m] for m in c) + d * on['a'] * on['v']
    return jnp.concatenate([out, -out], axis=-1)

  inputs = {m: jnp.ones((1, 3)) for m in c}
  responses = agm.mono_modal_responses(net, inputs, ('a', 'v', 't'))
  np.testing.assert_allclose(responses['a'][0, 0], 1.0 + 1.5, atol=1e-6)
  np.testing.assert_allclose(responses['v'][0, 0], -2.0 + 1.5, atol=1e-6)
  np.testing.assert_allclose(responses['t'][0, 0], 0.25, atol=1e-6)

  # §2 (h3): random logits per coalition sum to f(avt).
  rng = np.random.default_rng(0)
  table = {mask: rng.normal(size=(2, 5)).astype(np.float32)
           for mask in itertools.product((0, 1), repeat=3)}

  def random_net(x):
    mask = tuple(int(float(x[m][0, 0]) != 0) for m in ('a', 'v', 't'))
    return jnp.asarray(table[mask])

  responses = agm.mono_modal_responses(random_net, inputs, ('a', 'v', 't'))
  np.testing.assert_allclose(sum(responses.values()), table[(1, 1, 1)],
                             atol=1e-5)
  # Against the Shapley formula written out for modality a.
  f = lambda s: table[s]  # noqa: E731
  expected_a = ((f((1, 0, 0)) - 0) / 3
                + (f((1, 1, 0)) - f((0, 1, 0))) / 6
                + (f((1, 0, 1)) - f((0, 0, 1))) / 6
                + (f((1, 1, 1)) - f((0, 1, 1))) / 3)
  np.testing.assert_allclose(responses['a'], expected_a, atol=1e-5)


def test_scores_floor_the_true_class_probability():
  responses = {'a': jnp.array([[0.0, 40.0], [0.0, 0.0]])}
  scores = agm.agm_scores(responses, jnp.array([0, 0]), ('a',))
  # Example 1: p = e^-40 < 1e-8 -> -log 1e-8; example 2: log 2.
  np.testing.assert_allclose(scores, [(np.log(1e8) + np.log(2)) / 2],
                             rtol=1e-6)


def test_spec_h2_ratios_coefficients_and_running_update():
  scores, running = jnp.array([0.5, 1.5]), jnp.array([0.8, 1.2])
  np.testing.assert_allclose(agm.strength_ratios(scores),
                             [2.718282, 0.367879], atol=1e-6)
  np.testing.assert_allclose(agm.strength_ratios(running),
                             [1.491825, 0.670320], atol=1e-6)
  kappa = gblend_jax.agm_coefficients(scores, running, alpha=0.5, cap=10.0)
  np.testing.assert_allclose(kappa, [0.541599, 1.163253], atol=1e-6)
  # BalanceBenchmark's flipped sign (exp(s_k - s̄)) is the same formula on
  # negated scores, and swaps the two: the audio, stronger now than on
  # average, would be sped up instead of slowed down.
  flipped = agm.agm_coefficients(-scores, -running, alpha=0.5, cap=10.0)
  np.testing.assert_allclose(flipped, [1.163253, 0.541599], atol=1e-6)
  # At t = 5 (4 steps averaged before).
  np.testing.assert_allclose(
      agm.update_running_scores(running, scores, 4), [0.74, 1.26],
      atol=1e-6)
  np.testing.assert_allclose(
      agm.update_running_scores(jnp.zeros(2), scores, 0), scores)


def test_cap_bounds_the_gap_and_none_leaves_it():
  scores, running = jnp.array([0.5, 1.5]), jnp.array([0.8, 1.2])
  # η_v - r_v = 0.670320 - 0.367879 = 0.302441.
  capped = agm.agm_coefficients(scores, running, alpha=0.5, cap=0.1)
  np.testing.assert_allclose(capped, [0.541599, np.exp(0.05)], rtol=1e-6)
  free = agm.agm_coefficients(scores, running, alpha=0.5, cap=None)
  np.testing.assert_allclose(free, [0.541599, 1.163253], rtol=1e-6)


def test_three_modality_ratio_uses_m_over_m_minus_one():
  scores = jnp.array([0.2, 0.5, 1.1])  # s̄ = 0.6
  np.testing.assert_allclose(
      agm.strength_ratios(scores),
      np.exp(1.5 * (0.6 - np.array([0.2, 0.5, 1.1]))), rtol=1e-6)
  with pytest.raises(ValueError, match='several modalities'):
    agm.strength_ratios(jnp.array([0.3]))


def test_gradient_scale_keeps_values_and_scales_gradients():
  x = jnp.array([0.1, -3.0, 7.25], jnp.float32)
  np.testing.assert_array_equal(agm.gradient_scale(x, 0.3), x)
  grad = jax.jit(jax.grad(
      lambda x: jnp.sum(agm.gradient_scale(x, 0.3) ** 2)))(x)
  np.testing.assert_allclose(grad, 0.6 * x, rtol=1e-6)
  # No gradient reaches the scale.
  assert float(jax.grad(
      lambda c: jnp.sum(agm.gradient_scale(x, c)))(2.0)) == 0.0


def test_modulated_logits_equal_the_sum_and_scale_each_response():
  responses = {'a': jnp.array([[1.0, 2.0]]), 'v': jnp.array([[0.5, -1.0]])}
  kappa = jnp.array([0.5, 2.0])
  logits = agm.modulated_logits(responses, kappa, ('a', 'v'))
  np.testing.assert_array_equal(logits, [[1.5, 1.0]])
  grads = jax.grad(lambda r: jnp.sum(
      agm.modulated_logits(r, kappa, ('a', 'v')) * jnp.array([1.0, 3.0])))(
          responses)
  np.testing.assert_allclose(grads['a'], [[0.5, 1.5]])
  np.testing.assert_allclose(grads['v'], [[2.0, 6.0]])


def test_agm_statistics_keeps_the_cumulative_mean_and_last_kappa():
  tx = optax.chain(agm.agm_statistics(2), optax.sgd(1.0))
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  assert optax.tree.get(state, 'num_steps') == 0
  np.testing.assert_array_equal(optax.tree.get(state, 'coefficients'),
                                [1.0, 1.0])
  update = jax.jit(tx.update)
  grads = {'w': jnp.array([1.0, 2.0, 3.0])}
  history = [jnp.array([1.0, 2.0]), jnp.array([3.0, 0.0]),
             jnp.array([2.0, 4.0])]
  for i, scores in enumerate(history):
    updates, state = update(grads, state, params, agm_scores=scores,
                            agm_coefficients=jnp.array([0.5, float(i)]))
    np.testing.assert_array_equal(updates['w'], -grads['w'])
  np.testing.assert_allclose(optax.tree.get(state, 'running_scores'),
                             [2.0, 2.0], rtol=1e-6)
  assert int(optax.tree.get(state, 'num_steps')) == 3
  np.testing.assert_array_equal(optax.tree.get(state, 'coefficients'),
                                [0.5, 2.0])
  with pytest.raises(ValueError, match=r'agm_scores has shape \(3,\)'):
    tx.update(grads, state, params, agm_scores=jnp.ones(3),
              agm_coefficients=jnp.ones(2))


def test_conditional_clip_fires_only_on_a_large_watched_element():
  clip = agm.clip_by_global_norm_if_exceeds(
      1.0, threshold=1.0, watched={'head': True, 'encoder': False})
  state = clip.init(None)
  # Watched within [-1, 1], a large encoder gradient: unchanged.
  grads = {'head': jnp.array([0.6, -0.8]), 'encoder': jnp.array([30.0])}
  out, state = clip.update(grads, state)
  np.testing.assert_array_equal(out['encoder'], [30.0])
  assert not bool(state.clipped)
  # A watched element at 1.5: the whole gradient to global norm 1.
  grads = {'head': jnp.array([1.5, 0.0]), 'encoder': jnp.array([2.0])}
  out, state = clip.update(grads, state)
  np.testing.assert_allclose(out['head'], [0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(out['encoder'], [0.8], rtol=1e-6)
  assert bool(state.clipped)
  # Large watched element but a norm already below max_norm: unchanged.
  loose = agm.clip_by_global_norm_if_exceeds(
      5.0, threshold=1.0, watched=lambda g: {'head': True, 'encoder': False})
  out, _ = loose.update(grads, loose.init(None))
  np.testing.assert_array_equal(out['head'], grads['head'])
