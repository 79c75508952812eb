"""Decoupled classifier learning (Kang et al., ICLR 2020): τ-norm, cRT, LWS.

Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
§4 (the authors' `facebookresearch/classifier-balancing`). A classifier
trained jointly on long-tailed data gives the head classes larger weight
norms; once the representation is learned (stage one, instance-balanced),
the classifier alone is re-balanced:

* τ-normalisation: ``w̃_c = w_c / ‖w_c‖^τ``, bias dropped (`tau_normalize`,
  `tau_normalized_logits`): no training, a transform of the parameters;
* cRT (classifier re-training): the classifier re-initialised and trained
  with class-balanced sampling on the frozen backbone (`crt_classifier`);
* LWS (learnable weight scaling): ``z = s ⊙ (W x + b)``, ``s ∈ R^C`` from
  1, trained with class-balanced sampling while ``W``, ``b`` and the
  backbone stay frozen (`lws_logits`, `lws_classifier`).

cRT and LWS are a second training stage with an optimiser of their own:
`decoupled_stages` holds the stage-one optimiser's state and the
classifier stage's, applies one of them by the ``stage`` flag of its state,
and `start_classifier_stage` flips the flag and initialises the classifier
stage's state from the parameters of the stage boundary. The frozen
parameters receive updates that are exactly zero (`optax.set_to_zero`), so
they stay bit-identical.
"""

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

# The labels of `classifier_labels`.
CLASSIFIER, FROZEN = 'classifier', 'frozen'
# The fused head's prediction layer of `gblend_jax.models`: the classifier.
FUSED_CLASSIFIER = ('fused_head', 'output')
# τ values the authors' ``tau_norm.py`` sweeps: linspace(0, 2, 21).
TAU_GRID = tuple(float(t) for t in np.round(np.linspace(0.0, 2.0, 21), 6))
# flax Dense's kernel initialiser: cRT's new classifier starts as the
# model's did.
DENSE_KERNEL_INIT = jax.nn.initializers.lecun_normal()


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
  scale = _column_norms(kernel) ** tau
  return (kernel / scale).astype(kernel.dtype)


def _column_norms(kernel: jax.Array) -> jax.Array:
  """``‖w_c‖`` of each column, 1 where a column is zero."""
  norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0)
  return jnp.where(norms > 0, norms, 1.0)


def tau_normalized_logits(
    logits: jax.Array, kernel: jax.Array, bias: jax.Array, tau: float
) -> jax.Array:
  """The logits of the τ-normalised classifier from the trained ones.

  ``x @ w̃_c = (z_c - b_c) / ‖w_c‖^τ`` with ``z = x W + b`` (Kang et al.,
  §4, bias dropped): one forward pass of the trained model gives the
  τ-normalised logits of every τ.

  Args:
    logits: ``[..., C]`` logits ``x W + b`` of the trained linear classifier.
    kernel: its ``[features, C]`` kernel ``W``.
    bias: its ``[C]`` bias ``b``.
    tau: τ.

  Returns:
    ``[..., C]`` logits ``x @ tau_normalize(W, τ)``.
  """
  return (logits - bias) / _column_norms(kernel) ** tau


def lws_logits(
    features: jax.Array, kernel: jax.Array, bias: jax.Array,
    scales: jax.Array,
) -> jax.Array:
  """Learnable weight scaling's logits ``s ⊙ (x W + b)`` (Kang et al., §4).

  The authors' code (``models/TauNormClassifier.py``) scales the bias too;
  the paper writes ``w̃_c = f_c w_c``. This is the code's form.

  Args:
    features: ``[B, D]`` features ``x``.
    kernel: ``[D, C]`` flax kernel ``W``.
    bias: ``[C]`` bias ``b``.
    scales: ``[C]`` scales ``s``.

  Returns:
    ``[B, C]`` logits.
  """
  return scales * (features @ kernel + bias)


def classifier_labels(
    params: Any, classifier: Sequence[str] = FUSED_CLASSIFIER
) -> Any:
  """``CLASSIFIER`` on the leaves under ``classifier``, ``FROZEN`` elsewhere.

  Args:
    params: the model's parameters.
    classifier: the path of the classifier's module in ``params``.

  Returns:
    A pytree of labels of ``params``' structure (`optax.multi_transform`).

  Raises:
    ValueError: when ``params`` has no module at ``classifier``.
  """
  _module(params, classifier)
  prefix = tuple(classifier)

  def label(path, _):
    keys = tuple(getattr(k, 'key', getattr(k, 'name', k)) for k in path)
    return CLASSIFIER if keys[:len(prefix)] == prefix else FROZEN

  return jax.tree_util.tree_map_with_path(label, params)


def classifier_params(
    params: Any, classifier: Sequence[str] = FUSED_CLASSIFIER
) -> Any:
  """The classifier's ``{'kernel', 'bias'}`` in ``params``.

  Raises:
    ValueError: when ``params`` has no such module.
  """
  return _module(params, classifier)


def _module(params: Any, path: Sequence[str]) -> Any:
  node = params
  for i, key in enumerate(path):
    if not hasattr(node, 'keys') or key not in node:
      raise ValueError(
          f'The parameters have no classifier at {"/".join(path)!r} (no '
          f'{key!r} under {"/".join(path[:i]) or "the root"!r}); a linear '
          'Dense classifier with kernel and bias is needed.'
      )
    node = node[key]
  return node


def crt_classifier(
    optimizer: optax.GradientTransformation,
    classifier: Sequence[str] = FUSED_CLASSIFIER,
) -> optax.GradientTransformation:
  """cRT's stage: ``optimizer`` on the classifier, zero updates elsewhere.

  Kang et al., §4 "Classifier Re-training": the backbone is frozen and the
  re-initialised classifier trained (with class-balanced sampling, which
  the data pipeline provides). `optax.set_to_zero` gives the frozen
  parameters updates of exactly zero: weight decay or momentum inside
  ``optimizer`` never reach them.

  Args:
    optimizer: the classifier's optimiser (its own schedule, from step 0
      of the stage).
    classifier: the classifier's module path in the parameters.

  Returns:
    An optax transform over all parameters.
  """
  return optax.multi_transform(
      {CLASSIFIER: optimizer, FROZEN: optax.set_to_zero()},
      lambda params: classifier_labels(params, classifier))


class LwsState(NamedTuple):
  """State of `lws_classifier`."""

  scales: jax.Array  # shape=[C], dtype=float32: s, 1 at the boundary.
  kernel: jax.Array  # shape=[D, C]: W of the stage boundary (frozen).
  bias: jax.Array  # shape=[C]: b of the stage boundary (frozen).
  inner: optax.OptState  # ``optimizer``'s state of the scales.


def lws_classifier(
    optimizer: optax.GradientTransformation,
    classifier: Sequence[str] = FUSED_CLASSIFIER,
) -> optax.GradientTransformation:
  """LWS's stage: ``optimizer`` on per-class scales of a frozen classifier.

  Kang et al., §4 "Learnable weight scaling", in the code's form
  ``z = s ⊙ (x W₀ + b₀)`` (`lws_logits`): the model's classifier is kept
  at ``W = W₀ diag(s)``, ``b = s ⊙ b₀``, which gives exactly these logits,
  so the model needs no extra parameter. ``W₀``, ``b₀`` (the classifier of
  the stage boundary, when `init` runs) and ``s`` live in this state. The
  gradient of the scales is that of the logits through ``s``:
  ``∂L/∂s_c = Σ_d ∂L/∂W_dc W₀_dc + ∂L/∂b_c b₀_c``; ``optimizer`` (with its
  weight decay, as the authors' optimiser decays ``s``) updates ``s``, and
  the classifier's update is ``W₀ diag(s') - W``, ``s' ⊙ b₀ - b``. Every
  other parameter gets a zero update.

  Args:
    optimizer: the scales' optimiser.
    classifier: the classifier's module path in the parameters.

  Returns:
    An optax transform over all parameters; its state's ``scales`` are
    readable with ``optax.tree.get(state, 'scales')``.
  """
  path = tuple(classifier)

  def init_fn(params):
    module = _module(params, path)
    scales = jnp.ones(module['bias'].shape, jnp.float32)
    # Copies: a donated train state must not hold one buffer twice.
    return LwsState(scales=scales, kernel=jnp.copy(module['kernel']),
                    bias=jnp.copy(module['bias']),
                    inner=optimizer.init(scales))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('lws_classifier needs the parameters.')
    grads = _module(updates, path)
    scale_grads = (jnp.sum(grads['kernel'] * state.kernel, axis=0)
                   + grads['bias'] * state.bias).astype(jnp.float32)
    scale_updates, inner = optimizer.update(scale_grads, state.inner,
                                            state.scales)
    scales = optax.apply_updates(state.scales, scale_updates)
    module = _module(params, path)
    new = {'kernel': (state.kernel * scales).astype(module['kernel'].dtype),
           'bias': (state.bias * scales).astype(module['bias'].dtype)}
    classifier_updates = {k: new[k] - module[k] for k in new}
    zeros = jax.tree.map(jnp.zeros_like, updates)
    out = _replace_module(zeros, path, classifier_updates)
    return out, LwsState(scales=scales, kernel=state.kernel,
                         bias=state.bias, inner=inner)

  return optax.GradientTransformation(init_fn, update_fn)


def _replace_module(tree: Any, path: Sequence[str], value: Any) -> Any:
  tree = flax.core.unfreeze(tree) if isinstance(
      tree, flax.core.FrozenDict) else dict(tree)
  if len(path) == 1:
    tree[path[0]] = {**tree[path[0]], **value}
    return tree
  tree[path[0]] = _replace_module(tree[path[0]], path[1:], value)
  return tree


class DecoupledState(NamedTuple):
  """State of `decoupled_stages`."""

  stage: jax.Array  # shape=(), dtype=int32: 0 representation, 1 classifier.
  classifier_count: jax.Array  # shape=(), dtype=int32: classifier steps.
  representation: optax.OptState  # The stage-one optimiser's state.
  classifier: optax.OptState  # The classifier stage's (fresh at the flip).


def decoupled_stages(
    representation: optax.GradientTransformation,
    classifier: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """Two training stages in one optimiser: joint, then the classifier alone.

  Kang et al. (§3, §4) learn the representation with the run's optimiser,
  then re-balance the classifier with an optimiser and schedule of its own
  (cRT: `crt_classifier`, LWS: `lws_classifier`). Both states live in this
  transform's state, so the train state's structure is the same in both
  stages; `start_classifier_stage` flips ``stage`` and initialises the
  classifier's state at the boundary (the trainer does it in
  `gblend_jax.longtail.method.LongTail.before_step`).

  Args:
    representation: the optimiser of stage one.
    classifier: the optimiser of the classifier stage.

  Returns:
    An optax transform applying ``representation`` while ``stage`` is 0 and
    ``classifier`` once it is 1 (`jax.lax.cond`: one of them runs).
  """
  representation = optax.with_extra_args_support(representation)
  classifier = optax.with_extra_args_support(classifier)

  def init_fn(params):
    return DecoupledState(stage=jnp.zeros((), jnp.int32),
                          classifier_count=jnp.zeros((), jnp.int32),
                          representation=representation.init(params),
                          classifier=classifier.init(params))

  def update_fn(updates, state, params=None, **extra_args):

    def first(state):
      out, inner = representation.update(updates, state.representation,
                                         params, **extra_args)
      return out, state._replace(representation=inner)

    def second(state):
      out, inner = classifier.update(updates, state.classifier, params,
                                     **extra_args)
      return out, state._replace(classifier=inner,
                                 classifier_count=state.classifier_count + 1)

    return jax.lax.cond(state.stage > 0, second, first, state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def decoupled_state(opt_state: optax.OptState) -> DecoupledState:
  """The `DecoupledState` inside ``opt_state`` (alone or in a chain).

  Raises:
    ValueError: when there is none.
  """
  found = [n for n in jax.tree.leaves(
      opt_state, is_leaf=lambda n: isinstance(n, DecoupledState))
           if isinstance(n, DecoupledState)]
  if not found:
    raise ValueError('The optimiser state holds no decoupled_stages state.')
  return found[0]


def start_classifier_stage(
    opt_state: optax.OptState,
    params: Any,
    classifier: optax.GradientTransformation,
) -> optax.OptState:
  """Switches every `DecoupledState` in ``opt_state`` to the classifier.

  Args:
    opt_state: an optimiser state holding a `decoupled_stages` state
      (alone or inside a chain).
    params: the parameters at the stage boundary (after cRT's
      re-initialisation): LWS reads ``W₀`` and ``b₀`` from them.
    classifier: the classifier stage's transform given to
      `decoupled_stages`.

  Returns:
    ``opt_state`` with ``stage = 1``, ``classifier_count = 0`` and a fresh
    ``classifier.init(params)``.

  Raises:
    ValueError: when ``opt_state`` holds no `DecoupledState`.
  """
  found = []

  def switch(node):
    if isinstance(node, DecoupledState):
      found.append(node)
      return node._replace(stage=jnp.ones_like(node.stage),
                           classifier_count=jnp.zeros_like(
                               node.classifier_count),
                           classifier=classifier.init(params))
    return node

  out = jax.tree.map(switch, opt_state,
                     is_leaf=lambda n: isinstance(n, DecoupledState))
  if not found:
    raise ValueError('The optimiser state holds no decoupled_stages state.')
  return out


def reinitialized_classifier(
    params: Any,
    key: jax.Array,
    classifier: Sequence[str] = FUSED_CLASSIFIER,
    kernel_init: Callable[..., jax.Array] = DENSE_KERNEL_INIT,
) -> Any:
  """``params`` with the classifier re-initialised (cRT, Kang et al., §4).

  The authors skip the classifier when loading stage one's weights
  (``run_networks.py``), so it starts from its initialiser: here flax
  ``Dense``'s (LeCun-normal kernel, zero bias), the model's own.

  Args:
    params: the parameters at the stage boundary.
    key: the key of the new kernel.
    classifier: the classifier's module path.
    kernel_init: the kernel's initialiser.

  Returns:
    The parameters with a new kernel and a zero bias under ``classifier``.
  """
  module = _module(params, classifier)
  kernel = kernel_init(key, module['kernel'].shape, module['kernel'].dtype)
  return _replace_module(params, tuple(classifier), {
      'kernel': kernel, 'bias': jnp.zeros_like(module['bias'])})
