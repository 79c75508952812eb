"""Tests of `gblend_jax.modulation.unimodal`: the Shapley split of the
fused logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gblend_jax.models import ClassifierHead
from gblend_jax.models import ConcatFusion
from gblend_jax.models import FiLMFusion
from gblend_jax.models import GatedFusion
from gblend_jax.models import SumFusion
from gblend_jax.modulation import unimodal

NUM_CLASSES = 3
BATCH = 4
DIMS = {'a': 5, 'b': 3, 'c': 2}


class FusedClassifier(nn.Module):
  """Late fusion then a linear fused head, as in MultiModalClassifier."""

  fusion: nn.Module

  @nn.compact
  def __call__(self, features):
    fused = self.fusion(features, train=False)
    head = ClassifierHead(NUM_CLASSES, hidden_sizes=(), name='fused_head')
    return head(fused, train=False)


def build(fusion_cls, modalities, seed=0, **kwargs):
  """(classify, features, params) with random params, biases included."""
  rng = np.random.default_rng(seed)
  features = {
      m: jnp.asarray(rng.normal(size=(BATCH, DIMS[m])), jnp.float32)
      for m in modalities
  }
  model = FusedClassifier(fusion_cls(modalities=modalities, **kwargs))
  shapes = jax.eval_shape(model.init, jax.random.key(0), features)
  # Flax initialises biases to zero; random ones make the bias split visible.
  params = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )['params']
  classify = lambda feats: model.apply({'params': params}, feats)
  return classify, features, params


def dense(params):
  return np.asarray(params['kernel']), np.asarray(params['bias'])


FUSIONS = [
    (ConcatFusion, {}),
    (SumFusion, {'fusion_dim': 4}),
    (FiLMFusion, {'fusion_dim': 4}),
    (GatedFusion, {'fusion_dim': 4}),
]


@pytest.mark.parametrize('modalities', [('a', 'b'), ('a', 'b', 'c')])
@pytest.mark.parametrize('fusion_cls, kwargs', FUSIONS)
def test_shares_sum_to_the_fused_logits(fusion_cls, kwargs, modalities):
  classify, features, _ = build(fusion_cls, modalities, **kwargs)
  shares = unimodal.unimodal_logits(classify, features, modalities)
  assert set(shares) == set(modalities)
  total = sum(shares[m] for m in modalities)
  np.testing.assert_allclose(total, classify(features), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('modalities', [('a', 'b'), ('b', 'c', 'a')])
def test_concat_linear_head_is_the_papers_split(modalities):
  classify, features, params = build(ConcatFusion, modalities)
  shares = unimodal.unimodal_logits(classify, features, modalities)
  kernel, bias = dense(params['fused_head']['output'])
  row = 0
  for m in modalities:
    w_m = kernel[row:row + DIMS[m]]
    row += DIMS[m]
    expected = np.asarray(features[m]) @ w_m + bias / len(modalities)
    np.testing.assert_allclose(shares[m], expected, rtol=1e-5, atol=1e-5)


def test_sum_fusion_is_own_projection_plus_equal_bias_share():
  modalities = ('a', 'b', 'c')
  classify, features, params = build(SumFusion, modalities, fusion_dim=4)
  head_v, head_c = dense(params['fused_head']['output'])
  fusion = params['fusion']
  biases = sum(dense(fusion[f'proj_{m}'])[1] for m in modalities)
  for m in modalities:
    w_m, _ = dense(fusion[f'proj_{m}'])
    expected = (np.asarray(features[m]) @ w_m) @ head_v + (
        biases @ head_v + head_c
    ) / 3
    shares = unimodal.unimodal_logits(classify, features, modalities)
    np.testing.assert_allclose(shares[m], expected, rtol=1e-5, atol=1e-5)


def test_film_gives_each_modality_half_the_interaction():
  # (G x_b + g0) * (P x_a + p) + B x_b + b0, then the head V h + c.
  classify, features, params = build(FiLMFusion, ('a', 'b'), fusion_dim=4)
  head_v, head_c = dense(params['fused_head']['output'])
  proj_p, proj_b = dense(params['fusion']['proj'])
  film_k, film_b = dense(params['fusion']['film'])
  g, b = film_k[:, :4], film_k[:, 4:]
  g0, b0 = film_b[:4], film_b[4:]
  x_a, x_b = np.asarray(features['a']), np.asarray(features['b'])
  interaction = (x_b @ g) * (x_a @ proj_p)
  baseline = (g0 * proj_b + b0) @ head_v + head_c
  expected_a = (g0 * (x_a @ proj_p) + interaction / 2) @ head_v + baseline / 2
  expected_b = (
      (x_b @ g) * proj_b + x_b @ b + interaction / 2
  ) @ head_v + baseline / 2
  shares = unimodal.unimodal_logits(classify, features, ('a', 'b'))
  np.testing.assert_allclose(shares['a'], expected_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(shares['b'], expected_b, rtol=1e-5, atol=1e-5)


def test_gated_two_modalities_match_the_shapley_formula():
  classify, features, _ = build(GatedFusion, ('a', 'b'), fusion_dim=4)
  zeros = {m: jnp.zeros_like(x) for m, x in features.items()}
  g_none = classify(zeros)
  g_a = classify({**zeros, 'a': features['a']})
  g_b = classify({**zeros, 'b': features['b']})
  g_ab = classify(features)
  shares = unimodal.unimodal_logits(classify, features, ('a', 'b'))
  expected_a = (g_a - g_none) / 2 + (g_ab - g_b) / 2 + g_none / 2
  expected_b = (g_b - g_none) / 2 + (g_ab - g_a) / 2 + g_none / 2
  np.testing.assert_allclose(shares['a'], expected_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(shares['b'], expected_b, rtol=1e-5, atol=1e-5)
  # Main effect plus half of the interaction g_ab - g_a - g_b + g_none.
  interaction = g_ab - g_a - g_b + g_none
  np.testing.assert_allclose(
      shares['a'] - shares['b'], (g_a - g_none) - (g_b - g_none),
      rtol=1e-5, atol=1e-5,
  )
  np.testing.assert_allclose(
      shares['a'], (g_a - g_none) + interaction / 2 + g_none / 2,
      rtol=1e-5, atol=1e-5,
  )


def test_zero_features_get_only_the_baseline_share():
  modalities = ('a', 'b', 'c')
  classify, features, _ = build(GatedFusion, modalities, fusion_dim=4)
  features = {**features, 'c': jnp.zeros_like(features['c'])}
  shares = unimodal.unimodal_logits(classify, features, modalities)
  zeros = {m: jnp.zeros_like(x) for m, x in features.items()}
  np.testing.assert_allclose(
      shares['c'], classify(zeros) / 3, rtol=1e-5, atol=1e-5
  )


def test_one_modality_is_the_fused_logits():
  classify, features, _ = build(ConcatFusion, ('a',))
  shares = unimodal.unimodal_logits(classify, features, ('a',))
  np.testing.assert_allclose(
      shares['a'], classify(features), rtol=1e-6, atol=1e-6
  )


def test_under_jit_and_extra_feature_keys_are_dropped():
  modalities = ('a', 'b')
  classify, features, _ = build(FiLMFusion, modalities, fusion_dim=4)
  seen = []

  def checked(feats):
    seen.append(sorted(feats))
    return classify(feats)

  eager = unimodal.unimodal_logits(classify, features, modalities)
  with_fused = {**features, 'fused': jnp.ones((BATCH, 7))}
  jitted = jax.jit(
      lambda f: unimodal.unimodal_logits(checked, f, modalities)
  )(with_fused)
  assert seen == [['a', 'b']]  # One batched call with only the modalities.
  for m in modalities:
    np.testing.assert_allclose(jitted[m], eager[m], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_modalities', [2, 3, 4])
def test_shapley_weights_rows(num_modalities):
  masks, weights = unimodal.shapley_weights(num_modalities)
  assert masks.shape == weights.shape == (2**num_modalities - 1,
                                          num_modalities)
  full = masks.all(axis=1)
  np.testing.assert_allclose(weights.sum(axis=1), np.where(full, 1.0, 0.0),
                             atol=1e-12)
  if num_modalities == 3:
    # |S| = 1 inside: 0! 2! / 3! = 1/3; |S| = 2 outside: -2! 0! / 3! = -1/3;
    # |S| = 1 outside: -1! 1! / 3! = -1/6.
    row = {tuple(r): w for r, w in zip(masks.tolist(), weights, strict=True)}
    np.testing.assert_allclose(row[(True, False, False)], [1/3, -1/6, -1/6])
    np.testing.assert_allclose(row[(False, True, True)], [-1/3, 1/6, 1/6])


def test_rejects_bad_modalities():
  classify, features, _ = build(ConcatFusion, ('a', 'b'))
  with pytest.raises(ValueError, match='at least one'):
    unimodal.unimodal_logits(classify, features, ())
  with pytest.raises(ValueError, match='duplicates'):
    unimodal.unimodal_logits(classify, features, ('a', 'a'))
  with pytest.raises(KeyError, match="'c'"):
    unimodal.unimodal_logits(classify, features, ('a', 'c'))
  many = {str(i): features['a'] for i in range(9)}
  with pytest.raises(ValueError, match='1 to 8 modalities.*got 9'):
    unimodal.unimodal_logits(classify, many, tuple(many))
