"""MLA in the trainer: the ``config.mla`` block as a `Method`.

Zhang, Yoon, Bansal, Yao, "Multimodal Representation Learning by
Alternating Unimodal Adaptation", CVPR 2024. The model has one head shared
by all modalities (``config.model.shared_head=True``). Each training step
takes one batch and one optimiser step per modality in turn,
``L_m = CE(h(z_m), y)`` on modality m's encoder and the shared head
(`gblend_jax.mla.alternating_updates`), with the head's kernel gradient
modified by `gblend_jax.mla.head_gradient_projection` (the paper's
``∇W Pᵀ``; the released code never applies it). At test time the model's
``'fused'`` logits are the per-sample entropy-weighted fusion of the
modalities' logits (`gblend_jax.mla.entropy_weighted_fusion`), so
``<split>/fused/accuracy`` is MLA's prediction and ``<split>/<m>/accuracy``
each modality's through the shared head.

The authors' CREMA-D settings: SGD lr 1e-3, momentum 0.9, weight decay
1e-4, lr × 0.1 at epoch 70 of 100, batch 64 (``experiments/configs/
av_ogm.py:method=mla``).
"""

import jax
import jax.numpy as jnp
import ml_collections

from gblend_jax.mla import alternating
from gblend_jax.mla import projection as projection_lib
from gblend_jax.training import methods
from gblend_jax.training import steps

PROJECTIONS = ('paper', 'balance_benchmark', 'released')
SHARED_HEAD = 'shared_head'
# The shared head's kernel, whose gradient the projection modifies.
KERNEL_PATH = (SHARED_HEAD, 'output', 'kernel')


def default_mla_config() -> ml_collections.ConfigDict:
  """The ``config.mla`` block.

  Keys:
    enabled: train with MLA's alternating unimodal steps (needs
      ``model.shared_head=True`` and several modalities).
    projection: the shared head's gradient modification, one of
      ``PROJECTIONS``: ``'paper'`` (``∇W Pᵀ``, the paper's intent),
      ``'balance_benchmark'`` (``∇W + ∇W Pᵀ``, BalanceBenchmark's) or
      ``'released'`` (none: what the authors' code runs, whose projection
      never matches the head's parameter name).
  """
  return ml_collections.ConfigDict({
      'enabled': False,
      'projection': 'paper',
  })


def _trained_mask(params, modality: str):
  """True on ``encoder_<modality>`` and the shared head."""
  keep = (f'encoder_{modality}', SHARED_HEAD)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[0].key in keep, params)


def _is_kernel(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: tuple(p.key for p in path) == KERNEL_PATH, params)


class MLA(methods.Method):
  """MLA (``config.mla``) in the trainer."""

  block = 'mla'
  default_config = staticmethod(default_mla_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    block = config.mla
    if block.projection not in PROJECTIONS:
      raise ValueError(
          f'config.mla.projection={block.projection!r} must be one of '
          f'{list(PROJECTIONS)}.')
    if block.enabled and not config.model.get('shared_head', False):
      raise ValueError(
          'config.mla.enabled=True trains every modality through one shared '
          'head; set config.model.shared_head=True (config.model.'
          f'shared_head={config.model.get("shared_head", False)!r}).')

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return bool(config.mla.enabled)

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    del config
    return frozenset({'alternating_steps'})

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.modalities = methods.modalities_with_heads(
        run, 'mla', 'its logits through the shared head')

  def transform(self):
    mode = self.config.mla.projection
    if mode == 'released':
      return None
    return projection_lib.head_gradient_projection(_is_kernel, mode=mode)

  def step_hooks(self) -> methods.StepHooks:
    return methods.StepHooks(update_steps=self._update_steps)

  def _update_steps(self, tx, loss_vector, state, args, **variant):
    """`steps.UpdateSteps`: one optimiser step per modality."""
    del args, variant
    heads, modalities = self.run.heads, self.modalities
    batches_per_epoch = self.run.steps_per_epoch

    def modality_loss(params, m):
      per_head, aux = loss_vector(params)
      out = aux[0]
      return per_head[heads.index(m)], (
          jax.lax.stop_gradient(out['features'][m]), (per_head, *aux))

    params, opt_state, losses, grads, auxes = (
        alternating.alternating_updates(
            tx, modality_loss, state.params, state.opt_state,
            modalities=modalities,
            trained={m: _trained_mask(state.params, m) for m in modalities},
            batch_index=state.step % batches_per_epoch,
            batches_per_epoch=batches_per_epoch))
    # Each modality's loss and logits at its own step; the fused head's
    # (not trained) after the last.
    last_per_head, last_out, last_stats, objective_metrics = auxes[-1]
    per_head = last_per_head.at[jnp.arange(len(modalities))].set(losses)
    logits = {steps.FUSED: last_out['logits'][steps.FUSED]}
    batch_stats = dict(last_stats) if last_stats else last_stats
    for k, m in enumerate(modalities):
      _, out, stats, _ = auxes[k]
      logits[m] = out['logits'][m]
      # Each encoder's statistics from the forward pass of its own step.
      name = f'encoder_{m}'
      if batch_stats and name in stats:
        batch_stats[name] = stats[name]
    summed = jax.tree.map(lambda *g: sum(g), *grads)
    gradients = steps.Gradients(
        grads=summed, per_head=per_head, outputs={'logits': logits},
        batch_stats=batch_stats, objective_metrics=objective_metrics,
        update_kwargs={})
    return params, opt_state, gradients, lambda _: (jnp.sum(losses), summed)


METHOD = MLA
