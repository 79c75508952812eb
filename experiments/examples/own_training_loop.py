r"""Gradient Blending and OGM-GE inside your own flax (linen) training loop.

The reference to copy: a researcher's own model, optimiser, ``jax.jit`` step
and loop, with gblend_jax's optax transforms dropped in and nothing else of
its trainer. It imports only ``gblend_jax`` (the installed package), so it
runs from anywhere:

  python own_training_loop.py --data synthetic       # this file, copied
  python -m experiments.examples.own_training_loop --data mfeat --views fou+kar

What it shows (`own_training_loop_nnx.py` is the same with ``flax.nnx``):

* A model with dropout and BatchNorm (RNG and mutable state), written in
  ``setup`` style so that ``classify`` (fusion + fused head) is a method of
  its own: `gblend_jax.unimodal_logits` splits the fused logits into each
  view's share through it, for any late fusion. (An ``nn.compact`` model has
  no such method; any callable ``features -> logits`` will do, e.g. one that
  applies ``nn.Dense`` to ``params['fused_head']``.)
* G-Blend: ``chain(gradient_blend(estimate_every=10), adam)`` fed by
  `gblend_jax.gradient_blend_grads`, the cheap path: per-loss gradients
  (``jax.jacrev``, H = 3 backward passes) and a held-out gradient on every
  10th step only, one gradient of ``Σ w L`` in between. ``estimate`` is
  static: two compiled steps, picked on the host by `is_estimate_step`.
* OGM-GE: ``chain(ogm_ge(alpha, window=...), sgd)`` with the scores from
  `gblend_jax.ogm_scores` of the unimodal logits, modulating only for the
  first 80% of the steps.
* Data parallelism over all devices: batches sharded over a 1-D mesh,
  parameters and optimiser state replicated, ``jax.jit`` inserts the
  reductions (no ``axis_name`` is needed outside ``pmap``/``shard_map``).
"""

import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gblend_jax
from gblend_jax.modulation import label_encoders

VIEWS = ('a', 'b')
HEADS = ('a', 'b', 'fused')  # Blend order: each view's head, then fused.
ESTIMATE_EVERY = 10  # The trainer's default blend.estimate_every_steps.
MFEAT_VIEWS = ('fac', 'fou', 'kar', 'mor', 'pix', 'zer')


class Encoder(nn.Module):
  """Dense, BatchNorm, ReLU, dropout."""

  hidden: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(
        nn.Dense(self.hidden)(x))
    return nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(h))


class TwoViewNet(nn.Module):
  """An encoder and a head per view; concatenation and a fused head."""

  num_classes: int
  hidden: int = 64
  dropout_rate: float = 0.2

  def setup(self):
    # ogm_ge's label_encoders finds the encoders by these names.
    self.encoder_a = Encoder(self.hidden, self.dropout_rate)
    self.encoder_b = Encoder(self.hidden, self.dropout_rate)
    self.head_a = nn.Dense(self.num_classes)
    self.head_b = nn.Dense(self.num_classes)
    self.fused_head = nn.Dense(self.num_classes)

  def classify(self, features):
    """Fusion and fused head: ``{view: [B, D]} -> [B, C]``."""
    return self.fused_head(jnp.concatenate([features[v] for v in VIEWS], -1))

  def __call__(self, x_a, x_b, train: bool):
    features = {'a': self.encoder_a(x_a, train),
                'b': self.encoder_b(x_b, train)}
    return {'a': self.head_a(features['a']), 'b': self.head_b(features['b']),
            'fused': self.classify(features), 'features': features}


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


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

  Needs the data sets of a gblend_jax checkout (the training stack).

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


def mfeat_prepared() -> bool:
  """Whether mfeat is prepared in $GBLEND_DATA_DIR (False without the stack)."""
  try:
    from gblend_jax.data import registry  # pylint: disable=g-import-not-at-top
    return registry.get_builder('mfeat').is_prepared()
  except Exception:  # pylint: disable=broad-except
    return False


def make_gblend_step(model, tx):
  """The G-Blend step; ``estimate`` (static) picks one of two programs."""

  @functools.partial(jax.jit, static_argnames='estimate')
  def step(state, batch, holdout, key, estimate):
    params, batch_stats, opt_state = state

    def head_losses(params):
      out, new = model.apply(
          {'params': params, 'batch_stats': batch_stats}, batch['a'],
          batch['b'], train=True, rngs={'dropout': key},
          mutable=['batch_stats'])
      losses = jnp.stack([cross_entropy(out[h], batch['label'])
                          for h in HEADS])
      return losses, new['batch_stats']

    def holdout_loss(params, new_batch_stats):  # Evaluation mode.
      out = model.apply({'params': params, 'batch_stats': new_batch_stats},
                        holdout['a'], holdout['b'], train=False)
      return cross_entropy(out['fused'], holdout['label'])

    grads = gblend_jax.gradient_blend_grads(
        head_losses, params, optax.tree.get(opt_state, 'weights'),
        estimate=estimate, holdout_loss=holdout_loss, has_aux=True)
    updates, opt_state = tx.update(grads.grads, opt_state, params,
                                   **grads.update_kwargs)
    return optax.apply_updates(params, updates), grads.aux, opt_state

  return step


def make_ogm_step(model, tx):
  """The OGM-GE step: the fused loss, scores from the unimodal logits."""

  @jax.jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def fused_loss(params):
      out, new = model.apply(
          {'params': params, 'batch_stats': batch_stats}, batch['a'],
          batch['b'], train=True, rngs={'dropout': key},
          mutable=['batch_stats'])
      return cross_entropy(out['fused'], batch['label']), (
          out, new['batch_stats'])

    grads, (out, new_batch_stats) = jax.grad(fused_loss, has_aux=True)(
        params)
    classify = lambda features: model.apply(
        {'params': params}, features, method=TwoViewNet.classify)
    shares = gblend_jax.unimodal_logits(classify, out['features'], VIEWS)
    scores = gblend_jax.ogm_scores(shares, batch['label'], VIEWS)
    updates, opt_state = tx.update(grads, opt_state, params, scores=scores)
    return optax.apply_updates(params, updates), new_batch_stats, opt_state

  return step


def train(method, model, variables, data, args):
  """Trains with G-Blend or OGM-GE on all devices (data parallel).

  Args:
    method: ``'gblend'`` (the three losses, blended) or ``'ogm_ge'`` (the
      fused loss, modulated).
    model: the TwoViewNet.
    variables: its initial ``{'params', 'batch_stats'}``.
    data: ``(a, b, labels)``; a quarter is the test split, 15% held out.
    args: the parsed flags.

  Returns:
    ``({head: test accuracy}, final optimiser state)``.
  """
  a, b, y = data
  perm = np.random.default_rng(args.seed).permutation(len(y))
  test, holdout, train_rows = np.split(perm, [len(y) // 4, len(y) * 2 // 5])
  mesh = jax.make_mesh((jax.device_count(),), ('batch',),
                       axis_types=(AxisType.Auto,))
  sharded = NamedSharding(mesh, P('batch'))
  replicated = NamedSharding(mesh, P())
  batch_size = args.batch_size - args.batch_size % jax.device_count()

  if method == 'gblend':
    tx = optax.chain(
        gblend_jax.gradient_blend(num_heads=len(HEADS),
                                  estimate_every=ESTIMATE_EVERY),
        optax.adam(1e-3))
    step = make_gblend_step(model, tx)
  else:
    tx = optax.chain(
        gblend_jax.ogm_ge(
            args.alpha, param_labels=label_encoders(VIEWS),
            modulated='matrices', window=(0, int(0.8 * args.steps))),
        optax.sgd(0.05, momentum=0.9))
    step = make_ogm_step(model, tx)
  params, batch_stats = variables['params'], variables['batch_stats']
  state = jax.device_put((params, batch_stats, tx.init(params)), replicated)

  def rows_to_batch(rows):
    return jax.device_put({'a': a[rows], 'b': b[rows], 'label': y[rows]},
                          sharded)

  rng = np.random.default_rng(args.seed)
  dropout_key = jax.random.key(args.seed)
  for i in range(args.steps):
    batch = rows_to_batch(rng.choice(train_rows, batch_size, replace=False))
    key = jax.random.fold_in(dropout_key, i)
    if method == 'gblend':
      estimate = gblend_jax.is_estimate_step(i, ESTIMATE_EVERY)
      # The held-out batch is drawn every step (the stream does not depend
      # on the period) but sent only when estimating.
      held = rng.choice(holdout, batch_size, replace=False)
      state = step(state, batch, rows_to_batch(held) if estimate else None,
                   key, estimate=estimate)
    else:
      state = step(state, batch, key)

  params, batch_stats, opt_state = state
  out = jax.jit(functools.partial(model.apply, train=False))(
      {'params': params, 'batch_stats': batch_stats}, a[test], b[test])
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
    args.data = 'mfeat' if mfeat_prepared() else 'synthetic'
  data = (synthetic_views(args.seed) if args.data == 'synthetic'
          else mfeat_views(views))
  classes = int(data[2].max()) + 1
  print(f'data: {args.data}, {len(data[2])} examples, {classes} classes, '
        f'chance {1 / classes:.3f}, {jax.device_count()} device(s)')

  # One model and one initialisation for both methods.
  model = TwoViewNet(num_classes=classes)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(args.seed), data[0][:1], data[1][:1])
  accuracy, state = train('gblend', model, variables, data, args)
  weights = np.asarray(optax.tree.get(state, 'weights'))
  print('gblend test accuracy: '
        + ' '.join(f'{h}={v:.3f}' for h, v in accuracy.items()))
  print('gblend weights [a, b, fused]: '
        f"[{', '.join(f'{w:.3f}' for w in weights)}] (sum {weights.sum():.3f})"
        f", {int(optax.tree.get(state, 'estimate_count'))} estimates")

  accuracy, state = train('ogm_ge', model, variables, data, args)
  coefficients = np.asarray(optax.tree.get(state, 'coefficients'))
  print(f"ogm_ge test accuracy: fused={accuracy['fused']:.3f}")
  print('ogm_ge last coefficients [a, b]: '
        f"[{', '.join(f'{k:.3f}' for k in coefficients)}]"
        f" (applied: {bool(optax.tree.get(state, 'active'))})")


if __name__ == '__main__':
  main()
