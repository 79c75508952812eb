r"""Cost of `gradient_blend`'s estimating paths against a naive step.

One process, one model (two views, each encoder a 2 x 1024 ReLU MLP, a
linear head per view and a fused head on the concatenation: H = 3 losses),
batch 256, adam after the blend. The variants, timed in alternation (round
robin, so load changes hit them alike):

  naive          one backward pass of the fused loss (no blending);
  cheap/10       `gblend_jax.gradient_blend_grads` with
                 ``estimate=is_estimate_step(i, 10)``: per-loss and
                 held-out gradients every 10th step, one gradient of
                 ``Σ w L`` in between (the documented path; the trainer's);
  docstring/10   ``estimate_every=10`` fed per-loss gradients (jacrev) and
                 a held-out gradient on every step (the transform's count
                 picks the estimating steps);
  every step     per-loss and held-out gradients, estimating every step.

  python -m experiments.bench_cheap_path   # 3 rounds x 10 steps; ~2 min on CPU

Wall-clock time per step, and process CPU time (all threads), which a CPU
shared with other jobs inflates less.
"""

import argparse
import functools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gblend_jax

WIDTH, DEPTH, INPUT, CLASSES = 1024, 2, 256, 10
VIEWS = ('a', 'b')


def init_params(key):
  """Two encoders (DEPTH x WIDTH), a head per view, a fused head."""
  keys = iter(jax.random.split(key, 16))
  dense = lambda n_in, n_out: {
      'kernel': jax.random.normal(next(keys), (n_in, n_out)) / np.sqrt(n_in),
      'bias': jnp.zeros(n_out)}
  params = {}
  for v in VIEWS:
    sizes = [INPUT] + [WIDTH] * DEPTH
    params[f'encoder_{v}'] = [
        dense(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    params[f'head_{v}'] = dense(WIDTH, CLASSES)
  params['fused_head'] = dense(2 * WIDTH, CLASSES)
  return params


def head_losses(params, batch):
  """[H] mean cross-entropies: view a's head, view b's head, fused."""
  features = {}
  for v in VIEWS:
    h = batch[v]
    for layer in params[f'encoder_{v}']:
      h = jax.nn.relu(h @ layer['kernel'] + layer['bias'])
    features[v] = h
  fused = jnp.concatenate([features[v] for v in VIEWS], axis=-1)
  logits = [features[v] @ params[f'head_{v}']['kernel']
            + params[f'head_{v}']['bias'] for v in VIEWS]
  logits.append(fused @ params['fused_head']['kernel']
                + params['fused_head']['bias'])
  ce = optax.softmax_cross_entropy_with_integer_labels
  return jnp.stack([ce(x, batch['label']).mean() for x in logits])


def make_steps(tx_blend, tx_naive):
  """The four jitted steps; `estimate` is static."""

  @jax.jit
  def naive(params, opt_state, batch, holdout):
    del holdout
    grads = jax.grad(lambda p: head_losses(p, batch)[-1])(params)
    updates, opt_state = tx_naive.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @functools.partial(jax.jit, static_argnames='estimate')
  def cheap(params, opt_state, batch, holdout, estimate):
    out = gblend_jax.gradient_blend_grads(
        lambda p: head_losses(p, batch), params,
        optax.tree.get(opt_state, 'weights'), estimate=estimate,
        holdout_loss=lambda p: head_losses(p, holdout)[-1])
    updates, opt_state = tx_blend.update(out.grads, opt_state, params,
                                         **out.update_kwargs)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def docstring(params, opt_state, batch, holdout):
    per_loss = jax.jacrev(lambda p: head_losses(p, batch))(params)
    holdout_grads = jax.grad(lambda p: head_losses(p, holdout)[-1])(params)
    updates, opt_state = tx_blend.update(per_loss, opt_state, params,
                                         holdout_grads=holdout_grads)
    return optax.apply_updates(params, updates), opt_state

  return naive, cheap, docstring


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10,
                      help='steps per variant per round (a multiple of 10)')
  args = parser.parse_args(argv)

  rng = np.random.default_rng(0)
  def batch():
    return {**{v: jnp.asarray(rng.normal(size=(args.batch_size, INPUT)),
                              jnp.float32) for v in VIEWS},
            'label': jnp.asarray(rng.integers(0, CLASSES, args.batch_size))}
  data, holdout = batch(), batch()
  params = init_params(jax.random.key(0))
  tx_naive = optax.adam(1e-3)
  blend_every = {
      10: optax.chain(gblend_jax.gradient_blend(num_heads=3,
                                                estimate_every=10),
                      optax.adam(1e-3)),
      1: optax.chain(gblend_jax.gradient_blend(num_heads=3,
                                               estimate_every=1),
                     optax.adam(1e-3)),
  }
  naive, cheap10, docstring10 = make_steps(blend_every[10], tx_naive)
  _, every_step, _ = make_steps(blend_every[1], tx_naive)

  def runner(name):
    """(init state, one step(state, i) -> state) of a variant."""
    if name == 'naive':
      return tx_naive.init(params), lambda s, i: naive(*s, data, holdout)
    if name == 'cheap/10':
      return blend_every[10].init(params), lambda s, i: cheap10(
          *s, data, holdout, estimate=gblend_jax.is_estimate_step(i, 10))
    if name == 'docstring/10':
      return blend_every[10].init(params), lambda s, i: docstring10(
          *s, data, holdout)
    return blend_every[1].init(params), lambda s, i: every_step(
        *s, data, holdout, estimate=True)

  names = ('naive', 'cheap/10', 'docstring/10', 'every step')
  runners = {n: runner(n) for n in names}
  states = {n: (params, runners[n][0]) for n in names}
  for n in names:  # Compile (both variants of cheap/10) outside the clock.
    for i in range(2):
      states[n] = runners[n][1](states[n], i)
    jax.block_until_ready(states[n])
  seconds = {n: [] for n in names}
  cpu_seconds = {n: [] for n in names}
  for _ in range(args.rounds):
    for n in names:
      state, step = states[n], runners[n][1]
      start, cpu_start = time.perf_counter(), time.process_time()
      for i in range(args.steps):
        state = step(state, i)
      jax.block_until_ready(state)
      seconds[n].append((time.perf_counter() - start) / args.steps)
      cpu_seconds[n].append((time.process_time() - cpu_start) / args.steps)
      states[n] = state

  median = {n: float(np.median(seconds[n])) for n in names}
  cpu = {n: float(np.median(cpu_seconds[n])) for n in names}
  print(f'{jax.devices()[0].platform} ({platform.processor() or "cpu"}), '
        f'{jax.device_count()} device(s); two views, encoders '
        f'{DEPTH} x {WIDTH}, batch {args.batch_size}, H = 3; median of '
        f'{args.rounds} rounds x {args.steps} steps.\n')
  print('| variant | wall ms / step | × naive | min–max × naive '
        '| CPU ms / step | CPU × naive |')
  print('|---|---:|---:|---:|---:|---:|')
  for n in names:
    lo, hi = (min(seconds[n]) / median['naive'],
              max(seconds[n]) / median['naive'])
    print(f'| {n} | {1e3 * median[n]:.1f} | '
          f'{median[n] / median["naive"]:.2f} | {lo:.2f}–{hi:.2f} | '
          f'{1e3 * cpu[n]:.1f} | {cpu[n] / cpu["naive"]:.2f} |')


if __name__ == '__main__':
  main()
