"""OGM-GE's noise drawn by a cheaper generator or in bfloat16 has the same
per-tensor distribution: N(0, σ²) with σ the tensor's gradient std."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gblend_jax import config as config_lib
from gblend_jax.modulation import method as modulation_method
from gblend_jax.modulation import ogm

SHAPE = (40, 40, 3, 3)  # A conv kernel of 14,400 entries.


def _noise(generator: str, dtype, steps: int = 2):
  """The GE noise of `steps` updates (α = 0: k = 1, the update is
  ``g + σ z``), and σ of the gradient."""
  grads = {'encoder_a': {'kernel': jnp.asarray(
      np.random.default_rng(0).normal(0.5, 2.0, SHAPE), jnp.float32)},
           'encoder_b': {'kernel': jnp.ones(SHAPE)}}
  tx = ogm.ogm_ge(0.0, param_labels=ogm.label_encoders(('a', 'b')),
                  modalities=('a', 'b'), noise_generator=generator,
                  noise_dtype=dtype, seed=3)
  state = tx.init(grads)
  update = jax.jit(lambda g, s: tx.update(g, s, scores=jnp.ones(2)))
  draws = []
  for _ in range(steps):
    out, state = update(grads, state)
    draws.append(np.asarray(out['encoder_a']['kernel']
                            - grads['encoder_a']['kernel']).ravel())
  sigma = float(jnp.std(grads['encoder_a']['kernel'], ddof=1) + ogm.NOISE_EPS)
  return draws, sigma


@pytest.mark.parametrize('generator, dtype', [
    ('threefry', jnp.float32), ('rbg', jnp.float32),
    ('threefry', jnp.bfloat16), ('rbg', jnp.bfloat16)])
def test_noise_is_normal_with_the_gradients_std(generator, dtype):
  draws, sigma = _noise(generator, dtype)
  for z in draws:
    n = z.size
    # Mean 0 within 4 standard errors; std σ within 4 of its standard
    # errors (σ / sqrt(2n)); a Kolmogorov-Smirnov test against N(0, σ²).
    assert abs(z.mean()) < 4 * sigma / np.sqrt(n)
    assert abs(z.std(ddof=1) / sigma - 1) < 4 / np.sqrt(2 * n)
    assert stats.kstest(z / sigma, 'norm').pvalue > 1e-3
  # Each step draws afresh: the two steps' noise is uncorrelated.
  assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 4 / np.sqrt(z.size)


def test_generators_draw_other_numbers_and_repeat_themselves():
  threefry, _ = _noise('threefry', jnp.float32, steps=1)
  rbg, _ = _noise('rbg', jnp.float32, steps=1)
  assert not np.allclose(threefry[0], rbg[0])
  again, _ = _noise('rbg', jnp.float32, steps=1)
  np.testing.assert_array_equal(again[0], rbg[0])


def test_unknown_generator_or_dtype_is_named():
  labels = ogm.label_encoders(('a', 'b'))
  with pytest.raises(ValueError, match=r"noise_generator='philox'.*rbg"):
    ogm.ogm_ge(0.8, param_labels=labels, noise_generator='philox')
  with pytest.raises(ValueError, match='noise_dtype.*bfloat16'):
    ogm.ogm_ge(0.8, param_labels=labels, noise_dtype=jnp.float16)


@pytest.mark.parametrize('key, value', [('noise_generator', 'philox'),
                                        ('noise_dtype', 'float16')])
def test_bad_noise_config_is_refused_naming_the_key(key, value):
  config = config_lib.default_config()
  config.modulation.method = 'ogm_ge'
  config.modulation[key] = value
  with pytest.raises(ValueError, match=rf'config\.modulation\.{key}='):
    modulation_method.check_modulation_config(config)
