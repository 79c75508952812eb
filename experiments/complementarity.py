"""How much a weak view knows that a strong one does not, on held-out data.

OGM-GE's mechanism (Peng et al., CVPR 2022, §3) can only pay off when the
under-trained modality carries information the dominant one lacks: if the
weak view is right only where the strong one is right too, training it
better cannot help the fused model. This module measures that from two
single-view runs on the same held-out examples (the seeded, stratified
held-out split of the training data; never the test split).
"""

from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from gblend_jax import data
from gblend_jax import models
from gblend_jax.training import checkpointing
from gblend_jax.training import steps


def held_out_predictions(
    config: ml_collections.ConfigDict, run_dir: str
) -> tuple[np.ndarray, np.ndarray]:
  """The fused head's held-out predictions of a finished run.

  Args:
    config: the run's config (as it was trained).
    run_dir: its work directory; its latest checkpoint (the final state,
      which the grids report) is read.

  Returns:
    ``(labels, predicted)``: int arrays ``[N]`` over the held-out split, in
    its order (the same examples for every run with the same
    ``data.holdout_seed`` and data set, whatever the views).
  """
  splits = data.load_dataset(config.data)
  model = models.build_model(config.model, modalities=splits.modalities,
                             num_classes=splits.num_classes)
  state = checkpointing.Checkpointer(run_dir).restore_raw(best=False)
  params, batch_stats = state['params'], state.get('batch_stats') or {}

  @jax.jit
  def predict(inputs):
    out, _ = steps.forward(model, params, batch_stats, inputs, train=False)
    return out['logits'][steps.FUSED].argmax(-1)

  labels, predicted = [], []
  for batch in data.eval_batches(splits.holdout,
                                 batch_size=config.data.eval_batch_size):
    keep = np.asarray(batch['mask']) > 0
    predicted.append(np.asarray(predict(steps.model_inputs(
        {k: v for k, v in batch.items() if k != 'mask'})))[keep])
    labels.append(np.asarray(batch['label'])[keep])
  return np.concatenate(labels), np.concatenate(predicted)


def complementarity(labels: np.ndarray, strong: np.ndarray,
                    weak: np.ndarray) -> Mapping[str, float]:
  """What the weak view gets right that the strong one gets wrong.

  Args:
    labels: true classes ``[N]``.
    strong: the strong view's predictions ``[N]``.
    weak: the weak view's predictions ``[N]``.

  Returns:
    Fractions of the N examples: ``strong_right``, ``weak_right``,
    ``weak_only`` (weak right, strong wrong: what fusion could add),
    ``either`` (an oracle's accuracy: one of them right); and
    ``rescued``, the share of the strong view's errors that the weak
    view gets right (``weak_only / (1 - strong_right)``; NaN without
    errors).
  """
  labels, strong, weak = map(np.asarray, (labels, strong, weak))
  if not labels.shape == strong.shape == weak.shape:
    raise ValueError(f'Shapes differ: labels {labels.shape}, strong '
                     f'{strong.shape}, weak {weak.shape}.')
  strong_right = strong == labels
  weak_right = weak == labels
  weak_only = float(np.mean(weak_right & ~strong_right))
  errors = 1.0 - float(np.mean(strong_right))
  return {
      'strong_right': float(np.mean(strong_right)),
      'weak_right': float(np.mean(weak_right)),
      'weak_only': weak_only,
      'either': float(np.mean(strong_right | weak_right)),
      'rescued': weak_only / errors if errors > 0 else float('nan'),
  }
