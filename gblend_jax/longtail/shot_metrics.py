"""Many-, medium- and few-shot accuracy, and top-1 error.

Long-tailed benchmarks report accuracy on three groups of classes split by
their number of training images (Liu et al., CVPR 2019; Zhang et al.,
AAAI 2021, §"Evaluation"): many-shot (more than 100), medium-shot (20 to 100)
and few-shot (fewer than 20). A group's accuracy is the mean of its classes'
accuracies, as in Liu et al.'s ``shot_acc``; on a balanced test set this is
also the pooled accuracy of its examples.

`per_class_correct` counts, inside a jitted evaluation step, the correct and
the real examples of each class over a batch; sum them over batches (and
processes) and pass the totals to `shot_accuracies` on the host.

References:
  Liu, Miao, Zhan, Wang, Gong, Yu, "Large-Scale Long-Tailed Recognition in an
  Open World", CVPR 2019, https://arxiv.org/abs/1904.05160.
  Zhang, Wei, Zhou, Wu, "Bag of Tricks for Long-Tailed Visual Recognition
  with Deep Convolutional Neural Networks", AAAI 2021.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = (
    'per_class_correct',
    'shot_accuracies',
    'shot_groups',
    'top1_error',
)


def per_class_correct(
    logits: jax.Array,
    labels: jax.Array,
    num_classes: int,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Top-1 correct and total examples of each class over a batch.

  Args:
    logits: ``[B, C]`` scores.
    labels: ``[B]`` integer labels.
    num_classes: ``C`` (static).
    mask: optional ``[B]``, 1 for real examples and 0 for padding.

  Returns:
    ``(correct, total)``: float32 ``[C]`` sums over the real examples of each
    true class.

  Examples:
    >>> logits = jnp.array([[2.0, 1.0], [2.0, 1.0], [0.0, 1.0]])
    >>> correct, total = per_class_correct(logits, jnp.array([0, 1, 1]), 2)
    >>> correct.tolist(), total.tolist()
    ([1.0, 1.0], [1.0, 2.0])
  """
  if mask is None:
    mask = jnp.ones(labels.shape, jnp.float32)
  mask = mask.astype(jnp.float32)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * mask
  zeros = jnp.zeros((num_classes,), jnp.float32)
  return zeros.at[labels].add(hit), zeros.at[labels].add(mask)


def shot_groups(
    train_counts: np.ndarray,
    *,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, np.ndarray]:
  """Which classes are many-, medium- and few-shot.

  Args:
    train_counts: ``[C]`` training images per class.
    many_threshold: many-shot means more than this many.
    few_threshold: few-shot means fewer than this many; medium-shot is
      ``[few_threshold, many_threshold]``.

  Returns:
    ``{'many_shot', 'medium_shot', 'few_shot'}`` to bool ``[C]`` masks that
    partition the classes.

  Examples:
    >>> groups = shot_groups(np.array([101, 100, 20, 19]))
    >>> for name, members in groups.items():
    ...   print(name, members.tolist())
    many_shot [True, False, False, False]
    medium_shot [False, True, True, False]
    few_shot [False, False, False, True]
  """
  train_counts = np.asarray(train_counts)
  many = train_counts > many_threshold
  few = train_counts < few_threshold
  return {'many_shot': many, 'medium_shot': ~many & ~few, 'few_shot': few}


def top1_error(correct: np.ndarray, total: np.ndarray) -> float:
  """``1 - Σ correct / Σ total``, a fraction (NaN without examples)."""
  count = float(np.sum(total))
  return 1.0 - float(np.sum(correct)) / count if count else float('nan')


def shot_accuracies(
    correct: np.ndarray,
    total: np.ndarray,
    train_counts: np.ndarray,
    *,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, float]:
  """Accuracy overall and on the many-, medium- and few-shot classes.

  Args:
    correct: ``[C]`` correct test predictions per class.
    total: ``[C]`` test examples per class.
    train_counts: ``[C]`` training images per class.
    many_threshold: see `shot_groups`.
    few_threshold: see `shot_groups`.

  Returns:
    ``{'accuracy', 'top1_error', 'many_shot_accuracy',
    'medium_shot_accuracy', 'few_shot_accuracy'}`` as fractions. A group's
    accuracy is the mean over its classes that have test examples, NaN if
    it has none.

  Examples:
    >>> accuracies = shot_accuracies(
    ...     correct=np.array([9, 5, 1]), total=np.array([10, 10, 10]),
    ...     train_counts=np.array([500, 50, 5]))
    >>> for name, value in accuracies.items():
    ...   print(name, round(value, 2))
    accuracy 0.5
    top1_error 0.5
    many_shot_accuracy 0.9
    medium_shot_accuracy 0.5
    few_shot_accuracy 0.1
  """
  correct = np.asarray(correct, np.float64)
  total = np.asarray(total, np.float64)
  if not correct.shape == total.shape == np.shape(train_counts):
    raise ValueError(
        f'correct {correct.shape}, total {total.shape} and train_counts '
        f'{np.shape(train_counts)} must all be [C].'
    )
  error = top1_error(correct, total)
  result = {'accuracy': 1.0 - error, 'top1_error': error}
  tested = total > 0
  per_class = np.divide(correct, total, out=np.zeros_like(correct),
                        where=tested)
  groups = shot_groups(train_counts, many_threshold=many_threshold,
                       few_threshold=few_threshold)
  for name, members in groups.items():
    members = members & tested
    result[f'{name}_accuracy'] = (
        float(per_class[members].mean()) if members.any() else float('nan')
    )
  return result
