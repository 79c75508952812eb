"""Input and manifold mixup, Remix and the mixed loss."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gblend_jax.longtail import losses
from gblend_jax.longtail import mixup


def test_lambda_follows_beta_and_partners_are_permutations():
  alphas = (1.0, 0.2)
  keys = jax.random.split(jax.random.key(0), 2000)

  def draw(key, alpha):
    return mixup.sample_mixup(key, 5, alpha)

  # One compilation for both alphas.
  draws = jax.jit(lambda k: [
      jax.vmap(functools.partial(draw, alpha=a))(k) for a in alphas
  ])(keys)
  for alpha, (lams, perms) in zip(alphas, draws, strict=True):
    lams = np.asarray(lams)
    assert np.all((lams >= 0) & (lams <= 1))
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)), over 2000 draws
    # (the variances are 1/12 and 5/28: the tolerance tells them apart).
    assert abs(lams.mean() - 0.5) < 0.04
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.03
    np.testing.assert_array_equal(np.sort(np.asarray(perms), axis=1),
                                  np.tile(np.arange(5), (2000, 1)))


def test_alpha_zero_does_not_mix():
  lam, _ = mixup.sample_mixup(jax.random.key(1), 4, 0.0)
  assert float(lam) == 1.0


def test_mix_hand_values():
  x = jnp.array([[0.0, 1.0], [10.0, 3.0], [4.0, 5.0]])
  mixed = mixup.mix(x, 0.75, jnp.array([1, 2, 0]))
  np.testing.assert_allclose(
      mixed, [[2.5, 1.5], [8.5, 3.5], [3.0, 4.0]], rtol=1e-6)


INPUTS = {'a': jnp.arange(12.0).reshape(4, 3), 'b': jnp.arange(4.0)}
LABELS = jnp.array([0, 1, 0, 1])
COUNTS = np.array([100, 5])


@functools.cache
def _jitted_batches():
  """Mixup and Remix of the same batch with the same key, jitted once."""
  return jax.jit(lambda key, x, y: (
      mixup.mixup(key, x, y, alpha=1.0),
      mixup.remix(key, x, y, COUNTS, alpha=1.0),
  ))(jax.random.key(3), INPUTS, LABELS)


def test_mixup_batch_mixes_every_modality_and_the_labels():
  batch, _ = _jitted_batches()
  lam, perm = float(batch.lam), np.asarray(batch.permutation)
  assert 0.0 < lam < 1.0
  for name, x in INPUTS.items():
    np.testing.assert_allclose(batch.inputs[name],
                               lam * x + (1 - lam) * np.asarray(x)[perm],
                               rtol=1e-5)
  np.testing.assert_array_equal(batch.labels_b, np.asarray(LABELS)[perm])
  np.testing.assert_allclose(batch.label_lam, np.full(4, lam))


def test_remix_keeps_the_mixed_inputs_and_rebalances_the_labels():
  plain, rebalanced = _jitted_batches()
  for name in INPUTS:
    np.testing.assert_allclose(rebalanced.inputs[name], plain.inputs[name])
  lam = float(plain.lam)
  own, partner = np.asarray(plain.labels_a), np.asarray(plain.labels_b)
  # Counts 100 and 5 (ratio 20 >= kappa = 3), tau = 1/2.
  expected = np.where((own == 0) & (partner == 1) & (lam < 0.5), 0.0,
                      np.where((own == 1) & (partner == 0) & (lam > 0.5),
                               1.0, lam))
  assert np.any(expected != lam)  # The rule fires for this key.
  np.testing.assert_allclose(rebalanced.label_lam, expected, rtol=1e-6)


def test_mixed_targets():
  targets = mixup.mixed_targets(jnp.array([0, 1]), jnp.array([2, 1]),
                                jnp.array([0.25, 0.6]), 3)
  np.testing.assert_allclose(targets, [[0.25, 0.0, 0.75], [0.0, 1.0, 0.0]])


def test_remix_label_rule_hand_cases():
  counts = np.array([100, 10, 40, 30])
  kappa, tau = 3.0, 0.5
  cases = [
      # (own label, partner label, lambda, expected label lambda)
      (0, 1, 0.3, 0.0),  # n_i/n_j = 10 >= kappa, lam < tau: to the rare j.
      (0, 1, 0.7, 0.7),  # lam >= tau: unchanged.
      (1, 0, 0.7, 1.0),  # n_i/n_j = 0.1 <= 1/kappa, 1 - lam < tau: to i.
      (1, 0, 0.3, 0.3),  # 1 - lam >= tau: unchanged.
      (0, 2, 0.3, 0.3),  # n_i/n_j = 2.5 < kappa: plain mixup.
      (3, 1, 0.3, 0.0),  # n_i/n_j = 3 = kappa: the rule includes equality.
      (1, 3, 0.8, 1.0),  # n_i/n_j = 1/3 = 1/kappa.
      (2, 2, 0.1, 0.1),  # Same class.
  ]
  own, partner, lam, expected = (np.array(c) for c in zip(*cases, strict=True))
  got = mixup.remix_label_lambda(jnp.asarray(lam, jnp.float32), own, partner,
                                 counts, kappa=kappa, tau=tau)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_mixed_loss_hand_value_and_soft_targets():
  logits = jnp.array([[0.0, math.log(3.0)]])  # p = (1/4, 3/4).
  batch = mixup.MixupBatch(
      inputs=None, labels_a=jnp.array([1]), labels_b=jnp.array([0]),
      lam=jnp.float32(0.25), label_lam=jnp.array([0.25]),
      permutation=jnp.array([0]))
  loss = mixup.mixed_loss(losses.cross_entropy, logits, batch)
  expected = 0.25 * math.log(4 / 3) + 0.75 * math.log(4.0)
  np.testing.assert_allclose(loss, [expected], rtol=1e-6)
  soft = mixup.soft_cross_entropy(
      logits, mixup.mixed_targets(batch.labels_a, batch.labels_b,
                                  batch.label_lam, 2))
  np.testing.assert_allclose(soft, [expected], rtol=1e-6)
