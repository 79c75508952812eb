r"""Gradient Blending and OGM-GE inside your own ``flax.nnx`` training loop.

`own_training_loop.py` with ``flax.nnx``: a stateful module (Dropout with
its own RNG stream, BatchNorm), ``nnx.Optimizer`` and ``nnx.jit``. It
imports only ``gblend_jax``, so it runs from anywhere:

  python own_training_loop_nnx.py --steps 300           # this file, copied
  python -m experiments.examples.own_training_loop_nnx

What differs from linen:

* Per-loss gradients: `gblend_jax.nnx_gradient_blend_grads` (the cheap
  path for nnx) splits off the ``nnx.Param`` variables, differentiates a
  copy of the module and writes the new BatchNorm statistics and RNG counts
  back once; ``jax.jacrev`` on the module itself fails on the RNG keys.
* ``optimizer.update(model, grads, **update_kwargs)`` passes the extra args
  (``holdout_grads``, ``estimate``, ``scores``) on to the transforms.
* Reading the state back: ``optax.tree.get(optimizer.opt_state,
  'weights')`` returns an ``nnx.OptArray``; `gblend_jax.opt_state_value`
  returns the array.
* The shares for OGM-GE: ``unimodal_logits(model.classify, features,
  views)``: ``classify`` (fusion + fused head) has no dropout or BatchNorm,
  so calling it under ``jax.vmap`` mutates nothing.
"""

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gblend_jax
from gblend_jax.modulation import label_encoders

VIEWS = ('a', 'b')
HEADS = ('a', 'b', 'fused')
ESTIMATE_EVERY = 10


class Encoder(nnx.Module):
  """Linear, BatchNorm, ReLU, dropout."""

  def __init__(self, d_in, hidden, dropout_rate, rngs):
    self.linear = nnx.Linear(d_in, hidden, rngs=rngs)
    self.norm = nnx.BatchNorm(hidden, momentum=0.9, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x):
    return self.dropout(nnx.relu(self.norm(self.linear(x))))


class TwoViewNet(nnx.Module):
  """An encoder and a head per view; concatenation and a fused head."""

  def __init__(self, d_a, d_b, num_classes, rngs, hidden=64,
               dropout_rate=0.2):
    # ogm_ge's label_encoders finds the encoders by these names.
    self.encoder_a = Encoder(d_a, hidden, dropout_rate, rngs)
    self.encoder_b = Encoder(d_b, hidden, dropout_rate, rngs)
    self.head_a = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.head_b = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.fused_head = nnx.Linear(2 * hidden, num_classes, rngs=rngs)

  def classify(self, features):
    """Fusion and fused head: ``{view: [B, D]} -> [B, C]``."""
    return self.fused_head(jnp.concatenate([features[v] for v in VIEWS], -1))

  def __call__(self, x_a, x_b):
    features = {'a': self.encoder_a(x_a), 'b': self.encoder_b(x_b)}
    return {'a': self.head_a(features['a']), 'b': self.head_b(features['b']),
            'fused': self.classify(features), 'features': features}


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def synthetic_views(seed, n=1200, classes=4):
  """View a: well-separated class means; view b: weak means, more noise."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  a = rng.normal(size=(classes, 16))[y] * 1.5 + rng.normal(size=(n, 16))
  b = rng.normal(size=(classes, 32))[y] * 0.3 + rng.normal(size=(n, 32))
  return a.astype(np.float32), b.astype(np.float32), y.astype(np.int32)


@nnx.jit(static_argnames='estimate')
def gblend_step(model, optimizer, batch, holdout, estimate):
  def head_losses(model):
    out = model(batch['a'], batch['b'])
    return jnp.stack([cross_entropy(out[h], batch['label']) for h in HEADS])

  def holdout_loss(model):  # A copy: switching it to eval mode is local.
    model.eval()
    return cross_entropy(model(holdout['a'], holdout['b'])['fused'],
                         holdout['label'])

  grads = gblend_jax.nnx_gradient_blend_grads(
      head_losses, model, gblend_jax.opt_state_value(optimizer, 'weights'),
      estimate=estimate, holdout_loss=holdout_loss)
  optimizer.update(model, grads.grads, **grads.update_kwargs)


@nnx.jit
def ogm_step(model, optimizer, batch):
  def fused_loss(model):
    out = model(batch['a'], batch['b'])
    return cross_entropy(out['fused'], batch['label']), out['features']

  grads, features = nnx.grad(fused_loss, has_aux=True)(model)
  shares = gblend_jax.unimodal_logits(model.classify, features, VIEWS)
  scores = gblend_jax.ogm_scores(shares, batch['label'], VIEWS)
  optimizer.update(model, grads, scores=scores)


def train(method, data, args):
  """Trains a fresh TwoViewNet; returns (test accuracies, optimizer)."""
  a, b, y = data
  perm = np.random.default_rng(args.seed).permutation(len(y))
  test, holdout, train_rows = np.split(perm, [len(y) // 4, len(y) * 2 // 5])
  model = TwoViewNet(a.shape[1], b.shape[1], int(y.max()) + 1,
                     nnx.Rngs(args.seed, dropout=args.seed + 1))
  if method == 'gblend':
    tx = optax.chain(
        gblend_jax.gradient_blend(num_heads=len(HEADS),
                                  estimate_every=ESTIMATE_EVERY),
        optax.adam(1e-3))
  else:
    tx = optax.chain(
        gblend_jax.ogm_ge(args.alpha, param_labels=label_encoders(VIEWS),
                          modulated='matrices',
                          window=(0, int(0.8 * args.steps))),
        optax.sgd(0.05, momentum=0.9))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rows = lambda r: {'a': a[r], 'b': b[r], 'label': y[r]}
  rng = np.random.default_rng(args.seed)
  for i in range(args.steps):
    batch = rows(rng.choice(train_rows, args.batch_size, replace=False))
    if method == 'gblend':
      estimate = gblend_jax.is_estimate_step(i, ESTIMATE_EVERY)
      held = rows(rng.choice(holdout, args.batch_size, replace=False))
      gblend_step(model, optimizer, batch, held if estimate else None,
                  estimate=estimate)
    else:
      ogm_step(model, optimizer, batch)
  model.eval()
  out = nnx.jit(lambda m, x_a, x_b: m(x_a, x_b))(model, a[test], b[test])
  accuracy = {h: float((out[h].argmax(-1) == y[test]).mean()) for h in HEADS}
  return accuracy, optimizer


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--alpha', type=float, default=0.8)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  data = synthetic_views(args.seed)
  print(f'data: synthetic, {len(data[2])} examples')

  accuracy, optimizer = train('gblend', data, args)
  weights = np.asarray(gblend_jax.opt_state_value(optimizer, 'weights'))
  estimates = int(gblend_jax.opt_state_value(optimizer, 'estimate_count'))
  print('gblend test accuracy: '
        + ' '.join(f'{h}={v:.3f}' for h, v in accuracy.items()))
  print('gblend weights [a, b, fused]: '
        f"[{', '.join(f'{w:.3f}' for w in weights)}] (sum {weights.sum():.3f})"
        f', {estimates} estimates')

  accuracy, optimizer = train('ogm_ge', data, args)
  coefficients = np.asarray(
      gblend_jax.opt_state_value(optimizer, 'coefficients'))
  print(f"ogm_ge test accuracy: fused={accuracy['fused']:.3f}")
  print('ogm_ge last coefficients [a, b]: '
        f"[{', '.join(f'{k:.3f}' for k in coefficients)}]")


if __name__ == '__main__':
  main()
