"""MMPareto in the trainer: the ``config.mmpareto`` block as a `Method`.

Trains ``L_mm + Σ_k L_k`` (the fused head's loss and one loss per modality
head, `gblend_jax.training.steps.make_per_loss_rule`) with each encoder's
gradient combined by `gblend_jax.mmpareto.mmpareto` (Wei & Hu, ICML 2024).
The authors' CREMA-D settings: SGD, lr 0.002, momentum 0.9, weight decay
1e-4, batch 64, 50 epochs, a constant learning rate (their StepLR is never
stepped), γ = 1.5.
"""

import ml_collections
import optax

from gblend_jax.blending import per_loss
from gblend_jax.mmpareto import transform
from gblend_jax.training import methods
from gblend_jax.training import steps


def default_mmpareto_config() -> ml_collections.ConfigDict:
  """The ``config.mmpareto`` block.

  Keys:
    enabled: train with MMPareto (needs several modalities and
      ``model.modality_heads=True``, one encoder per modality).
    gamma: γ, the magnitude factor (1.5, the authors' code).
    per_tensor: the authors' per-tensor magnitude rule (True) or the rule
      over each whole encoder (False).
  """
  return ml_collections.ConfigDict({
      'enabled': False,
      'gamma': 1.5,
      'per_tensor': True,
  })


class MMPareto(methods.Method):
  """MMPareto (``config.mmpareto``) in the trainer."""

  block = 'mmpareto'
  metric_prefix = 'mmpareto/'
  default_config = staticmethod(default_mmpareto_config)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    block = config.mmpareto
    if not block.enabled:
      return
    if not block.gamma > 0:
      raise ValueError(f'config.mmpareto.gamma={block.gamma} must be > 0.')
    if not config.model.modality_heads:
      raise ValueError(
          'config.mmpareto.enabled=True trains one loss per modality head; '
          'set config.model.modality_heads=True.'
      )

  @classmethod
  def enabled(cls, config: ml_collections.ConfigDict) -> bool:
    return bool(config.mmpareto.enabled)

  @classmethod
  def features(cls, config: ml_collections.ConfigDict) -> frozenset[str]:
    del config
    return frozenset({'per_loss_gradients'})

  def __init__(self, run: methods.RunInfo):
    super().__init__(run)
    self.modalities = methods.modalities_with_heads(run, 'mmpareto',
                                                    'its head')

  def transform(self) -> optax.GradientTransformation:
    block = self.config.mmpareto
    return transform.mmpareto(self.modalities, gamma=block.gamma,
                              per_tensor=block.per_tensor)

  def step_hooks(self) -> methods.StepHooks:
    modalities = self.modalities

    def state_metrics(opt_state):
      cosine = optax.tree.get(opt_state, 'cosine')
      joint_weight = optax.tree.get(opt_state, 'joint_weight')
      out = {}
      for i, m in enumerate(modalities):
        out[f'mmpareto/cosine/{m}'] = cosine[i]
        out[f'mmpareto/joint_weight/{m}'] = joint_weight[i]
      return out

    # Two backward passes for all per-loss gradients when each modality's
    # loss reaches only its own encoder and head (late fusion).
    rule = steps.make_per_loss_rule(
        per_loss.model_own_params(self.run.model, self.run.heads))
    return methods.StepHooks(update_rule=rule,
                             opt_state_metrics=state_metrics)


METHOD = MMPareto
