"""Decoupled classifier learning: τ-normalisation (Kang et al., ICLR 2020).

Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
§4 (the authors' `facebookresearch/classifier-balancing`, ``tau_norm.py``).
A classifier trained jointly on long-tailed data gives the head classes
larger weight norms; τ-normalisation rescales each class's weight vector,
``w̃_c = w_c / ‖w_c‖^τ``, and drops the bias. It needs no training: it is a
transform of the trained parameters. (cRT and LWS, the retraining stages,
are not implemented yet.)
"""

import jax
import jax.numpy as jnp


def tau_normalize(kernel: jax.Array, tau: float) -> jax.Array:
  """τ-normalises a flax ``Dense`` kernel per class (Kang et al., §4).

  Args:
    kernel: ``[features, classes]``, a flax ``Dense`` kernel (the transpose
      of PyTorch's ``[classes, features]`` weight): column c is ``w_c``.
    tau: τ (0: unchanged; 1: unit-norm columns; the authors sweep 0 to 2).

  Returns:
    ``kernel / ‖w_c‖^τ`` column by column, in the kernel's dtype; a zero
    column stays zero. Use it with no bias: the logits are ``x @ w̃``.

  Examples:
    The spec's example, ``W = [[3, 4, 0], [1, 0, 0]]`` (rows: classes),
    as a flax kernel; column norms 5 and 1:

    >>> import jax.numpy as jnp
    >>> w = tau_normalize(jnp.array([[3.0, 1.0], [4.0, 0.0], [0.0, 0.0]]), 1.0)
    >>> print(w.T)
    [[0.6 0.8 0. ]
     [1.  0.  0. ]]
  """
  kernel = jnp.asarray(kernel)
  norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0, keepdims=True)
  scale = jnp.where(norms > 0, norms, 1.0) ** tau
  return (kernel / scale).astype(kernel.dtype)
