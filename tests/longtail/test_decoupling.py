"""τ-normalisation against the spec's numpy-verified example."""

import jax.numpy as jnp
import numpy as np

from gblend_jax.longtail import tau_normalize

# SPEC_METHODS §7(h): W = [[3, 4, 0], [1, 0, 0]] (rows: classes); flax
# kernels are [features, classes], its transpose.
KERNEL = jnp.array([[3.0, 1.0], [4.0, 0.0], [0.0, 0.0]])


def test_tau_normalize_scales_each_class_column():
  np.testing.assert_allclose(tau_normalize(KERNEL, 0.5).T,
                             [[1.341641, 1.788854, 0.0], [1.0, 0.0, 0.0]],
                             rtol=1e-6)
  np.testing.assert_allclose(tau_normalize(KERNEL, 1.0).T,
                             [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(tau_normalize(KERNEL, 0.0), KERNEL)
  # Logits of x = (1, 1, 1) at τ = 0.5, with the bias dropped.
  np.testing.assert_allclose(jnp.ones(3) @ tau_normalize(KERNEL, 0.5),
                             [3.130495, 1.0], rtol=1e-6)


def test_a_zero_column_stays_zero_and_dtype_is_kept():
  kernel = jnp.array([[0.0, 2.0], [0.0, 0.0]], jnp.bfloat16)
  out = tau_normalize(kernel, 1.0)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out, np.float32),
                                [[0.0, 1.0], [0.0, 0.0]])
