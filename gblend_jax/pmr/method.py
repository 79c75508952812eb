"""PMR in the trainer: the ``config.pmr`` block as a `Method`.

Prototypical Modal Rebalance (Fan et al., CVPR 2023) as the authors'
``main_Prototype_grad.py`` trains it:

* before epoch 0 and after every epoch (here: before the first step of each
  epoch, `PMR.before_step`), a pass in evaluation mode over the first
  ``max(1, ⌊N/10⌋)`` batches of a fresh shuffle of the training data gives
  each modality's class prototypes; from the third pass on (the code's
  epoch index ``> 0``: the pass after epoch 0 is not smoothed) they are
  averaged with the previous ones, ``c ← (1 - μ) c_new + μ c_old``;
* every step inside the window adds ``β_a L_p^a + β_v L_p^v`` to the
  weighted sum of head losses (naive: the fused head's cross-entropy), with
  the binary switch on the prototype ratio ρ of the same forward pass
  (`gblend_jax.pmr.prototypes.rebalance_loss`).

The prototypes and the epoch they belong to are host state, checkpointed
with the train state, so a resumed run trains on the same prototypes.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gblend_jax.pmr import prototypes as prototypes_lib
from gblend_jax.training import methods
from gblend_jax.training import steps


def default_pmr_config() -> ml_collections.ConfigDict:
  """The ``config.pmr`` block.

  Keys:
    enabled: train with PMR (exactly two modalities).
    alpha: α, the coefficient of the slower modality's prototypical loss
      (1.0, the authors' argparse default; their CREMA-D scripts use 2.0).
    momentum: μ of ``c ← (1 - μ) c_new + μ c_old`` (0.2, the argparse
      default ``momentum_coef``; the CREMA-D scripts use 0.0).
    start_epoch, end_epoch: the window ``[start_epoch, end_epoch)`` in
      epochs, half-open, where the prototypical loss is added;
      ``end_epoch < 0`` (the default) runs to the end. The authors'
      ``modulation_starts <= epoch <= modulation_ends`` is inclusive:
      their 0-70 is ``start_epoch=0, end_epoch=71`` here.
    prototype_fraction: the share of an epoch's batches each prototype
      pass reads (the authors' ``len(dataloader) // 10``; at least one
      batch).
  """
  return ml_collections.ConfigDict({
      'enabled': False,
      'alpha': 1.0,
      'momentum': 0.2,
      'start_epoch': 0.0,
      'end_epoch': -1.0,
      'prototype_fraction': 0.1,
  })


class PMR(methods.Method):
  """PMR (``config.pmr``) in the trainer."""

  block = 'pmr'
  metric_prefix = 'pmr/'
  default_config = staticmethod(default_pmr_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    block = config.pmr
    if not block.enabled:
      return
    if not block.alpha > 0:
      raise ValueError(f'config.pmr.alpha={block.alpha} must be > 0.')
    if not 0 <= block.momentum < 1:
      raise ValueError(
          f'config.pmr.momentum={block.momentum} must be in [0, 1).')
    if not 0 < block.prototype_fraction <= 1:
      raise ValueError(
          f'config.pmr.prototype_fraction={block.prototype_fraction} must '
          'be in (0, 1].')
    if block.start_epoch < 0 or (
        block.end_epoch >= 0 and block.end_epoch <= block.start_epoch):
      raise ValueError(
          'config.pmr window [start_epoch, end_epoch) = '
          f'[{block.start_epoch}, {block.end_epoch}) is empty or reversed; '
          'need 0 <= start_epoch < end_epoch (end_epoch < 0: to the end).')
    requested = tuple(config.data.modalities or ())
    if requested and len(requested) != 2:
      raise ValueError(
          f'config.pmr.enabled=True balances two modalities; '
          f'config.data.modalities={requested}.')

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return bool(config.pmr.enabled)

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    del config
    return frozenset({'prototype_loss'})

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.modalities = tuple(run.modalities)
    if len(self.modalities) != 2:
      raise ValueError(
          'config.pmr.enabled=True balances two modalities; the data have '
          f'{list(self.modalities)} (set config.data.modalities).')
    block = self.config.pmr
    spe = run.steps_per_epoch
    self.window = (int(round(block.start_epoch * spe)),
                   None if block.end_epoch < 0
                   else int(round(block.end_epoch * spe)))
    self.num_classes = run.model.num_classes
    self.epoch = -1  # The epoch whose prototypes `self.protos` are.
    self.protos = self._zero_prototypes()
    self._placed = None  # The prototypes on the devices.
    self._flags = None  # The window flag on the devices: {open: 0. or 1.}.
    self.services = None

  def _zero_prototypes(self) -> dict[str, np.ndarray]:
    shapes = {m: jnp.zeros((1, *s), jnp.float32)
              for m, s in self.run.modalities.items()}
    out = jax.eval_shape(
        lambda x: self.run.model.init(jax.random.PRNGKey(0), x, train=False),
        shapes)
    features = jax.eval_shape(
        lambda v, x: self.run.model.apply(v, x, train=False)['features'],
        out, shapes)
    return {m: np.zeros((self.num_classes, features[m].shape[-1]),
                        np.float32) for m in self.modalities}

  # ---- The step.

  def step_hooks(self) -> methods.StepHooks:
    return methods.StepHooks(update_rule=make_update_rule(
        self.modalities, alpha=self.config.pmr.alpha))

  def _active(self, step: int) -> bool:
    start, end = self.window
    return start <= step and (end is None or step < end)

  def step_args(self, step: int, state: Any) -> dict[str, Any]:
    del state
    put = self.services.put if self.services else jax.device_put
    if self._placed is None:
      self._placed = put(self.protos)
    if self._flags is None:
      self._flags = {a: put(np.float32(a)) for a in (False, True)}
    return {'pmr': {'prototypes': self._placed,
                    'active': self._flags[self._active(step)]}}

  # ---- The prototype pass.

  def start(self, services: methods.Services) -> None:
    super().start(services)
    self.source = methods.training_source(self.config, self.run.splits.train)
    model, modalities, num_classes = (self.run.model, self.modalities,
                                      self.num_classes)

    @jax.jit
    def batch_sums(params, batch_stats, batch):
      out, _ = steps.forward(model, params, batch_stats,
                             steps.model_inputs(batch), train=False)
      return {m: prototypes_lib.class_sums(out['features'][m],
                                           batch['label'], num_classes)
              for m in modalities}

    self._batch_sums = batch_sums

  def before_step(self, step: int, state: Any) -> None:
    epoch, offset = divmod(step, self.run.steps_per_epoch)
    end = self.window[1]
    if offset or epoch == self.epoch or (end is not None and step >= end):
      return None
    self.protos = self.prototype_pass(epoch, state)
    self.epoch = epoch
    self._placed = None
    return None

  def prototype_pass(self, epoch: int, state: Any) -> dict[str, np.ndarray]:
    """The prototypes epoch ``epoch`` trains with.

    The authors' ``calculate_prototype``: class means of each modality's
    features (evaluation mode) over the first ``max(1, ⌊f N⌋)`` batches of
    a fresh shuffle of the training source (its own seed per epoch), then
    smoothed with the previous prototypes from epoch 2 on.
    """
    block = self.config.pmr
    spe = self.run.steps_per_epoch
    num_batches = max(1, int(spe * block.prototype_fraction))
    seed = int(np.random.SeedSequence(
        [self.config.data.shuffle_seed, epoch, 0x504D52]).generate_state(1)[0])
    batches = self.services.train_iterator(self.source, seed)
    totals = None
    for _ in range(num_batches):
      batch = self.services.to_global(next(batches))
      sums = self._batch_sums(state.params, state.batch_stats, batch)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    new = {m: np.asarray(jax.device_get(prototypes_lib.prototypes_from_sums(
        *totals[m], previous=jnp.asarray(self.protos[m]))))
           for m in self.modalities}
    if epoch >= 2:
      new = prototypes_lib.update_prototypes(new, self.protos, block.momentum)
    return {m: np.asarray(p, np.float32) for m, p in new.items()}

  # ---- Checkpointed host state.

  def host_state(self) -> dict[str, Any]:
    return {'epoch': self.epoch,
            'prototypes': {m: p.tolist() for m, p in self.protos.items()}}

  def restore(self, host_state) -> None:
    if not host_state:
      return
    self.epoch = int(host_state['epoch'])
    self.protos = {m: np.asarray(host_state['prototypes'][m], np.float32)
                   for m in self.modalities}
    self._placed = None


def make_update_rule(modalities, *, alpha: float):
  """The `steps.UpdateRule` of PMR: one backward pass of
  ``Σ_i w_i L_i + a (β_0 L_p^0 + β_1 L_p^1)``.

  ``w = args['head_weights']``; ``args['pmr']`` holds ``prototypes``
  (``{modality: [C, D_m]}``) and ``active`` (``a``, 1 inside the window,
  else 0); the labels are ``args['label']``. Logs ``pmr/ratio``,
  ``pmr/active`` and per modality ``pmr/coefficient/<m>`` (β),
  ``pmr/score/<m>`` (the mean true-class prototype probability) and
  ``pmr/prototype_loss/<m>``.
  """

  def rule(loss_vector, state, args):
    head_weights = args['head_weights']
    pmr_args = args['pmr']
    labels = args['label']

    def objective(params):
      per_head, (out, batch_stats, metrics) = loss_vector(params)
      term, aux = prototypes_lib.rebalance_loss(
          out['features'], labels, pmr_args['prototypes'], modalities,
          alpha=alpha)
      active = pmr_args['active']
      total = jnp.dot(head_weights, per_head) + active * term
      logged = {'pmr/ratio': aux['ratio'], 'pmr/active': active}
      for i, m in enumerate(modalities):
        logged[f'pmr/coefficient/{m}'] = active * aux['coefficients'][i]
        logged[f'pmr/score/{m}'] = aux['scores'][i] / labels.shape[0]
        logged[f'pmr/prototype_loss/{m}'] = aux['losses'][i]
      return total, (per_head, out, batch_stats, {**metrics, **logged})

    (total, (per_head, out, batch_stats, metrics)), grads = (
        jax.value_and_grad(objective, has_aux=True)(state.params))
    gradients = steps.Gradients(
        grads=grads, per_head=per_head, outputs=out, batch_stats=batch_stats,
        objective_metrics=metrics, update_kwargs={},
    )
    return gradients, lambda opt_state: (total, grads)

  return rule


METHOD = PMR
