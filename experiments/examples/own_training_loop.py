r"""Gradient Blending and OGM-GE inside your own training loop.

Neither method needs gblend_jax's trainer: both are optax transforms that go
first in an ``optax.chain`` and take what they need as extra update args.
Everything else here is a researcher's own code (a flax model, optimisers, a
``jax.jit`` step, a loop) with one of the two transforms dropped in:

* `gblend_jax.gradient_blend` takes per-loss gradients (a leading axis of
  H = 3 losses: view a's head, view b's head, the fused head; ``jax.jacrev``
  of the loss vector) and returns ``Σ_k w_k g_k``. With ``estimate_every=1``
  it re-estimates ``w_k ∝ gain_k / σ_k²`` (G-Blend's Proposition 1) every
  step from the fused loss's gradient on a held-out batch.
* `gblend_jax.ogm_ge` scales the dominant view's encoder gradients by
  ``1 - tanh(α ρ)`` and adds Gaussian noise (OGM-GE, Eq. 9 and 10), given
  each view's score ``s_m = Σ_i softmax(f_m(x_i))[y_i]``, where ``f_m`` is
  the view's share of the fused logits (for a linear fused head on
  concatenated features, ``W_m h_m + b / 2``).

  python -m experiments.examples.own_training_loop --data synthetic
  python -m experiments.examples.own_training_loop --data mfeat --views fou+kar
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gblend_jax

HEADS = ('a', 'b', 'fused')
MFEAT_VIEWS = ('fac', 'fou', 'kar', 'mor', 'pix', 'zer')


class TwoViewNet(nn.Module):
  """An MLP encoder per view, a linear head per view, a linear fused head."""

  num_classes: int
  hidden: int = 64

  @nn.compact
  def __call__(self, x_a, x_b):
    h_a = nn.relu(nn.Dense(self.hidden, name='encoder_a')(x_a))
    h_b = nn.relu(nn.Dense(self.hidden, name='encoder_b')(x_b))
    fused_head = nn.Dense(self.num_classes, name='fused_head')
    fused = fused_head(jnp.concatenate([h_a, h_b], axis=-1))
    kernel = fused_head.variables['params']['kernel']
    bias = fused_head.variables['params']['bias']
    return {
        'a': nn.Dense(self.num_classes, name='head_a')(h_a),
        'b': nn.Dense(self.num_classes, name='head_b')(h_b),
        'fused': fused,
        # Each view's share of the fused logits (OGM-GE's unimodal logits).
        'share_a': h_a @ kernel[:self.hidden] + bias / 2,
        'share_b': h_b @ kernel[self.hidden:] + bias / 2,
    }


def synthetic_views(seed, n=1200, classes=4):
  """View a: well-separated class means; view b: weak means, more noise.

  Returns:
    ``(a [n, 16], b [n, 32], labels [n])``.
  """
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  a = rng.normal(size=(classes, 16))[y] * 1.5 + rng.normal(size=(n, 16))
  b = rng.normal(size=(classes, 32))[y] * 0.3 + rng.normal(size=(n, 32))
  return a.astype(np.float32), b.astype(np.float32), y.astype(np.int32)


def mfeat_views(views, data_dir=None, manual_dir=None):
  """Two standardised views of UCI Multiple Features (all 2000 digits).

  Args:
    views: two names of `MFEAT_VIEWS`.
    data_dir, manual_dir: as `gblend_jax.data.registry.get_builder`'s.

  Returns:
    ``(a, b, labels)`` as float32, float32 and int32 arrays.
  """
  from gblend_jax.data import registry  # Needs gblend_jax[train].
  builder = registry.get_builder('mfeat', data_dir=data_dir,
                                 manual_dir=manual_dir)
  registry.prepare(builder)
  rows = [ex for split in ('train', 'test')
          for ex in builder.as_data_source(split=split)]
  standardise = lambda x: (x - x.mean(0)) / (x.std(0) + 1e-6)
  a, b = (standardise(np.stack([ex[v] for ex in rows])) for v in views)
  y = np.array([ex['label'] for ex in rows], np.int32)
  return a.astype(np.float32), b.astype(np.float32), y


def train(method, model, params, data, args):
  """Trains a TwoViewNet with G-Blend or OGM-GE in a plain loop.

  Args:
    method: ``'gblend'`` (all three losses, blended) or ``'ogm_ge'`` (the
      fused loss, modulated).
    model: the TwoViewNet.
    params: its initial parameters.
    data: ``(a, b, labels)``; a quarter is the test split, 15% held out.
    args: the parsed flags (steps, batch_size, alpha, seed).

  Returns:
    ``({head: test accuracy}, final optimiser state)``.
  """
  a, b, y = data
  perm = np.random.default_rng(args.seed).permutation(len(y))
  test, holdout, train_rows = np.split(perm, [len(y) // 4, len(y) * 2 // 5])

  if method == 'gblend':
    tx = optax.chain(
        gblend_jax.gradient_blend(num_heads=3, estimate_every=1, decay=0.9),
        optax.adam(1e-3))
  else:  # Label the encoders by view (a prefix of params); None: untouched.
    labels = {name: {'encoder_a': 'a', 'encoder_b': 'b'}.get(name)
              for name in params}
    tx = optax.chain(
        gblend_jax.ogm_ge(args.alpha, param_labels=labels,
                          modulated='matrices', modalities=('a', 'b')),
        optax.sgd(0.05, momentum=0.9))
  opt_state = tx.init(params)

  def head_losses(params, x_a, x_b, labels):
    out = model.apply({'params': params}, x_a, x_b)
    return jnp.stack([
        optax.softmax_cross_entropy_with_integer_labels(out[h], labels).mean()
        for h in HEADS]), out

  def fused_loss(params, *batch):
    losses, out = head_losses(params, *batch)
    return losses[HEADS.index('fused')], out

  @jax.jit
  def gblend_step(params, opt_state, batch, holdout_batch):
    per_loss_grads = jax.jacrev(lambda p: head_losses(p, *batch)[0])(params)
    holdout_grads, _ = jax.grad(fused_loss, has_aux=True)(
        params, *holdout_batch)
    updates, opt_state = tx.update(per_loss_grads, opt_state, params,
                                   holdout_grads=holdout_grads)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def ogm_step(params, opt_state, batch, holdout_batch):
    del holdout_batch  # OGM-GE needs no held-out data.
    grads, out = jax.grad(fused_loss, has_aux=True)(params, *batch)
    p_true = lambda logits: jnp.take_along_axis(
        jax.nn.softmax(logits), batch[2][:, None], axis=-1).sum()
    scores = jnp.stack([p_true(out['share_a']), p_true(out['share_b'])])
    updates, opt_state = tx.update(grads, opt_state, params, scores=scores)
    return optax.apply_updates(params, updates), opt_state

  step = gblend_step if method == 'gblend' else ogm_step
  rng = np.random.default_rng(args.seed)
  for _ in range(args.steps):
    i = rng.choice(train_rows, args.batch_size, replace=False)
    j = rng.choice(holdout, args.batch_size, replace=False)
    params, opt_state = step(params, opt_state, (a[i], b[i], y[i]),
                             (a[j], b[j], y[j]))

  out = jax.jit(model.apply)({'params': params}, a[test], b[test])
  accuracy = {h: float((out[h].argmax(-1) == y[test]).mean()) for h in HEADS}
  return accuracy, opt_state


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', choices=('auto', 'synthetic', 'mfeat'),
                      default='auto',
                      help='auto: mfeat if prepared in $GBLEND_DATA_DIR')
  parser.add_argument('--views', default='kar+pix',
                      help=f'two mfeat views a+b among {MFEAT_VIEWS}')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--alpha', type=float, default=0.8)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  views = args.views.split('+')
  if len(views) != 2 or not set(views) <= set(MFEAT_VIEWS):
    parser.error(f'--views={args.views!r} must be two of {MFEAT_VIEWS}, a+b.')
  if args.data == 'auto':
    from gblend_jax.data import registry
    prepared = registry.get_builder('mfeat').is_prepared()
    args.data = 'mfeat' if prepared else 'synthetic'
  data = (synthetic_views(args.seed) if args.data == 'synthetic'
          else mfeat_views(views))
  classes = int(data[2].max()) + 1
  print(f'data: {args.data}, {len(data[2])} examples, {classes} classes, '
        f'chance {1 / classes:.3f}')

  # One model and one initialisation for both methods.
  model = TwoViewNet(num_classes=classes)
  params = jax.jit(model.init)(jax.random.key(args.seed), data[0][:1],
                               data[1][:1])['params']
  accuracy, state = train('gblend', model, params, data, args)
  weights = np.asarray(optax.tree.get(state, 'weights'))
  print('gblend test accuracy: '
        + ' '.join(f'{h}={v:.3f}' for h, v in accuracy.items()))
  print('gblend weights [a, b, fused]: '
        f"[{', '.join(f'{w:.3f}' for w in weights)}] (sum {weights.sum():.3f})")

  accuracy, state = train('ogm_ge', model, params, data, args)
  coefficients = np.asarray(optax.tree.get(state, 'coefficients'))
  print(f"ogm_ge test accuracy: fused={accuracy['fused']:.3f}")
  print('ogm_ge last coefficients [a, b]: '
        f"[{', '.join(f'{k:.3f}' for k in coefficients)}]")


if __name__ == '__main__':
  main()
