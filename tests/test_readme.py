"""The user guide's examples work: README.md's code blocks and the names in it.

Every ``python`` block of README.md runs as written (each in a namespace of
its own) and its results are checked against hand-worked values; the
multi-host command runs as a one-process ``jax.distributed`` job. The shell
commands are checked for what can be checked without training: every
``--config FILE:ARGS`` builds with its ``--config.KEY=VALUE`` overrides,
every ``python -m`` module exists, every ``make`` target is in the Makefile,
and every relative link points at a file.
"""

import contextlib
import io
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from experiments import runs
from tests import train_utils

README = os.path.join(train_utils.REPO, 'README.md')
MAKEFILE = os.path.join(train_utils.REPO, 'Makefile')
# A fenced block, possibly indented (inside a list item): its language and
# its text, dedented.
FENCE = re.compile(r'^( *)```(\w*)\n(.*?)^\1```$', re.MULTILINE | re.DOTALL)


def _readme() -> str:
  with open(README, encoding='utf-8') as f:
    return f.read()


def code_blocks(text: str, language: str) -> list[str]:
  """The dedented text of every fenced block of ``language`` in ``text``.

  Args:
    text: markdown.
    language: the info string of the fence, e.g. ``'python'``.

  Returns:
    The blocks' contents, in order.
  """
  return [textwrap.dedent(body) for _, lang, body in FENCE.findall(text)
          if lang == language]


def shell_commands(block: str) -> list[list[str]]:
  """The commands of a shell block: continuation lines joined, comments cut.

  Args:
    block: the text of a ``sh`` block.

  Returns:
    One argument list per command.
  """
  joined = block.replace('\\\n', ' ')
  return [shlex.split(line, comments=True) for line in joined.splitlines()
          if shlex.split(line, comments=True)]


def _is_script(block: str) -> bool:
  return "if __name__ == '__main__':" in block


PYTHON_BLOCKS = code_blocks(_readme(), 'python')
SNIPPETS = [b for b in PYTHON_BLOCKS if not _is_script(b)]
SHELL_COMMANDS = [c for b in code_blocks(_readme(), 'sh')
                  for c in shell_commands(b)]


def _snippet(marker: str) -> str:
  (block,) = [b for b in SNIPPETS if marker in b]
  return block


def run_snippet(block: str) -> tuple[dict, str]:
  """Executes a README block in a fresh namespace.

  Args:
    block: Python source.

  Returns:
    ``(namespace, stdout)`` after running it.
  """
  namespace = {'__name__': 'readme_snippet'}
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  return namespace, out.getvalue()


def test_readme_has_the_blocks_this_file_checks():
  assert len(SNIPPETS) == 11, [b.splitlines()[0] for b in SNIPPETS]
  assert len(PYTHON_BLOCKS) == len(SNIPPETS)  # No scripts to save first.
  # Each snippet is self-contained: it imports what it uses.
  for block in PYTHON_BLOCKS:
    assert block.lstrip().startswith(('import', '"""')), block[:80]


def test_quick_start_is_two_commands():
  text = _readme()
  start = text.index('## Quick start')
  block = code_blocks(text[start:], 'sh')[0]
  assert shell_commands(block) == [['make', 'demo'], ['make', 'test']]


def test_model_example_prints_the_shapes_it_claims():
  _, out = run_snippet(_snippet('hidden_sizes = (32,)'))
  assert out.splitlines() == [
      "{'fused': (4, 10), 'a': (4, 10), 'b': (4, 10)}",
      "{'a': (4, 32), 'b': (4, 32), 'fused': (4, 64)}",
  ]


def test_cheap_path_example_estimates_every_10th_step():
  _, out = run_snippet(_snippet('gblend_jax.gradient_blend_grads('))
  assert out.splitlines() == ['2']


def test_nnx_example_reads_the_weights_back():
  namespace, out = run_snippet(_snippet('nnx_gradient_blend_grads('))
  # Dropout drew once per step: the state was written back once.
  assert out.splitlines() == ['(3,) 3']
  weights = np.asarray(namespace['weights'])
  assert abs(weights.sum() - 1) < 1e-5 and not np.allclose(weights, 1 / 3)


def test_gradient_blend_example_blends_the_per_loss_gradients():
  block = _snippet('blend_weights(')
  namespace, out = run_snippet(block)
  # Algorithm 1 by hand: G / O² = [20, 0.4, 0 (G < 0)], normalised by 20.4.
  np.testing.assert_allclose(namespace['weights'], [20 / 20.4, 0.4 / 20.4, 0],
                             rtol=1e-5)
  assert out.strip() == '[0.98 0.02 0.  ]'
  # The first SGD step (momentum starts at 0) is -lr Σ_k w_k g_k.
  w = np.array([0.3, 0.1, 0.6])
  leaf = namespace['per_loss_grads']['fused_head']['output']['kernel']
  update = namespace['updates']['fused_head']['output']['kernel']
  np.testing.assert_allclose(update, -0.01 * np.tensordot(w, leaf, 1),
                             rtol=1e-5, atol=1e-8)
  assert leaf.shape[0] == 3


def test_ogm_ge_example_scales_the_dominant_encoder():
  namespace, out = run_snippet(_snippet('ogm_ge('))
  scores = np.asarray(namespace['scores'])
  assert scores.shape == (2,)
  # s_m = Σ_i p_m(y_i | x_i) over 8 examples; ρ_m = s_m / s_other.
  assert 0 < scores.min() and scores.max() < 8
  rho = scores / scores[::-1]
  expected = np.where(rho > 1, 1 - np.tanh(0.8 * rho), 1.0)
  coefficients = np.asarray(
      namespace['optax'].tree.get(namespace['opt_state'], 'coefficients'))
  np.testing.assert_allclose(coefficients, expected, rtol=1e-5)
  assert str(coefficients.round(4))[:8] in out.replace('\n', ' ')
  # The fused head is not an encoder: its update is -lr g, unmodulated.
  np.testing.assert_allclose(
      namespace['updates']['fused_head']['output']['kernel'],
      -1e-3 * namespace['grads']['fused_head']['output']['kernel'],
      rtol=1e-5, atol=1e-9)


def test_mla_example_takes_one_step_per_modality_and_fuses():
  namespace, out = run_snippet(_snippet('alternating_updates('))
  assert out.splitlines() == ['(2, 3) 4']
  params = namespace['params']
  logits = [np.asarray(namespace['features_and_logits'](params, m)[1])
            for m in 'ab']
  # λ_m = softmax_m(-H_m) per example, by hand.
  entropy = []
  for o in logits:
    p = np.exp(o) / np.exp(o).sum(1, keepdims=True)
    entropy.append(-(p * np.log(p)).sum(1))
  weights = np.exp(-np.array(entropy)) / np.exp(-np.array(entropy)).sum(0)
  np.testing.assert_allclose(
      namespace['fused'], weights[0][:, None] * logits[0]
      + weights[1][:, None] * logits[1], rtol=1e-5)
  # Both encoders trained, each on its own steps.
  assert not np.allclose(params['encoder_a'], np.eye(2))
  assert not np.allclose(params['encoder_b'], -np.eye(2))


def test_agm_example_scales_by_its_first_step_coefficients():
  namespace, out = run_snippet(_snippet('agm_coefficients('))
  scores = np.asarray(namespace['scores'])
  kappa = np.asarray(namespace['kappa'])
  # Two modalities, S = 0 at the first step: η = 1, r_a = exp(s_v - s_a).
  ratios = np.exp([scores[1] - scores[0], scores[0] - scores[1]])
  np.testing.assert_allclose(kappa, np.exp(1.0 - ratios), rtol=1e-5)
  assert not np.allclose(kappa, 1.0, atol=1e-4)
  running = namespace['optax'].tree.get(namespace['opt_state'],
                                        'running_scores')
  np.testing.assert_allclose(running, scores, rtol=1e-6)
  assert f'{kappa[0]:.4f}' in out
  # Biases start at 0, so φ_m(0) = 0: the linear case, where each view's
  # rows of the fused kernel get κ_m times the plain fused loss's gradient.
  model = namespace['model']

  def plain(p):
    logits = model.apply({'params': p}, namespace['inputs'],
                         train=False)['logits']['fused']
    return namespace['optax'].softmax_cross_entropy_with_integer_labels(
        logits, namespace['labels']).mean()

  start = namespace['model'].init(namespace['jax'].random.key(0),
                                  namespace['inputs'], train=False)['params']
  plain_grads = namespace['jax'].grad(plain)(start)
  agm_grads = namespace['grads']
  kernel = 'fused_head', 'output', 'kernel'
  get = lambda t: t[kernel[0]][kernel[1]][kernel[2]]  # noqa: E731
  width = get(plain_grads).shape[0] // 2  # Two encoders of equal width.
  np.testing.assert_allclose(get(agm_grads)[:width],
                             kappa[0] * get(plain_grads)[:width],
                             rtol=1e-4, atol=1e-8)
  np.testing.assert_allclose(get(agm_grads)[width:],
                             kappa[1] * get(plain_grads)[width:],
                             rtol=1e-4, atol=1e-8)


def test_pmr_example_gives_the_slower_modality_the_prototypical_loss():
  namespace, out = run_snippet(_snippet('pmr_rebalance_loss'))
  gblend_jax, jax = namespace['gblend_jax'], namespace['jax']
  aux = namespace['aux']
  # The audio carries the label: ρ > 1, so α = 2 goes to the visual PCE.
  assert float(aux['ratio']) > 1
  np.testing.assert_array_equal(aux['coefficients'], [0.0, 2.0])
  assert out.split()[0] == str(aux['ratio'])
  # μ = 0.2 against zero prototypes: 0.8 of the class means.
  np.testing.assert_allclose(namespace['protos']['audio'],
                             0.8 * namespace['new']['audio'], rtol=1e-6)
  # The PCE's gradient reaches the visual encoder only: the audio encoder
  # and the fused head get the fused loss's gradient alone.
  plain = jax.grad(namespace['loss_fn'], has_aux=True)(
      namespace['params'], 1e-30)[0]
  grads = namespace['grads']
  for name in ('encoder_audio', 'fused_head'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7),
                 grads[name], plain[name])
  visual = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(a - b).max()), grads['encoder_visual'],
      plain['encoder_visual']))
  assert max(visual) > 1e-4
  term = 2.0 * gblend_jax.pmr_loss(
      namespace['model'].apply({'params': namespace['params']},
                               namespace['inputs'],
                               train=False)['features']['visual'],
      namespace['labels'], namespace['protos']['visual'])
  assert float(namespace['loss_fn'](namespace['params'], 2.0)[0]) == (
      pytest.approx(float(namespace['loss_fn'](namespace['params'], 1e-30)[0]
                          + term), rel=1e-6))


def test_longtail_example_counts_losses_and_samplers():
  namespace, out = run_snippet(_snippet('longtail import'))
  assert [int(100 * 10 ** (-c / 3)) for c in range(4)] == [100, 46, 21, 10]
  assert namespace['counts'].tolist() == [100, 46, 21, 10]
  lines = out.splitlines()
  assert lines[0] == '[100, 46, 21, 10]'
  assert lines[1] == '(3,)'
  assert lines[3] == '[100, 100, 100, 100]'
  # Zero logits: p = 1/4, so focal (γ = 1) is (1 - 1/4) log 4 times the
  # class-balanced weight (1 - β) / (1 - β^n_c), normalised to sum to C.
  raw = np.array([(1 - 0.99) / (1 - 0.99 ** n) for n in (100, 46, 21, 10)])
  weights = raw / raw.sum() * 4
  loss = namespace['loss_fn'](namespace['logits'], np.array([0, 2, 3]))
  np.testing.assert_allclose(
      loss, weights[[0, 2, 3]] * 0.75 * math.log(4), rtol=1e-5)
  # Class-balanced draws: 64 of them, every class about a quarter.
  drawn = np.bincount(namespace['labels'][namespace['batch']], minlength=4)
  assert drawn.sum() == 64 and drawn.min() >= 6


def test_reconboost_example_trains_one_learner_per_phase():
  namespace, out = run_snippet(_snippet('reconboost.StageSchedule('))
  # Steps 0-1 audio, 2-3 rectify, 4-5 visual, 6-7 rectify: both joined.
  assert out.splitlines() == ['rectify [1. 1.]']
  params = namespace['params']
  # beta trains in the rectifications only; it moved from 1.
  assert float(params['beta']) != 1.0
  # A phase 1 step changes no parameter but the learner's and the head's.
  grads = namespace['grad_fn'](params, namespace['batch_stats'], 'visual')
  np.testing.assert_array_equal(grads['beta'], 0.0)
  for leaf in namespace['jax'].tree.leaves(grads['encoder_audio']):
    np.testing.assert_array_equal(leaf, 0.0)
  assert any(np.any(leaf != 0) for leaf in
             namespace['jax'].tree.leaves(grads['encoder_visual']))


def test_decoupling_example_normalises_and_freezes():
  namespace, out = run_snippet(_snippet('decoupled_stages'))
  lines = out.splitlines()
  # Column norms 5 and 1: (3, 4, 0) / 5 and (1, 0, 0).
  assert lines[0] == '[[0.6 0.8 0. ]' and lines[1].strip() == '[1.  0.  0. ]]'
  assert lines[2] == '0.0'
  # The classifier's first stage step is -lr · g (fresh momentum).
  updates = namespace['updates']
  np.testing.assert_allclose(updates['fused_head']['output']['kernel'], -0.1)
  np.testing.assert_array_equal(
      namespace['params']['fused_head']['output']['bias'], 0.0)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_multihost_command_runs_as_a_one_process_job(data_dir, tmp_path):
  (command,) = [c for c in SHELL_COMMANDS
                if any(w.startswith('--coordinator_address=') for w in c)]
  assert command[:3] == ['python', '-m', 'experiments.main']
  assert '--num_processes=2' in command and '--process_id=0' in command
  # The README's command, as one process of one on localhost, on the tiny
  # builder config of the same experiment.
  workdir = tmp_path / 'run'
  replace = {
      '--coordinator_address': f'127.0.0.1:{_free_port()}',
      '--num_processes': '1', '--workdir': str(workdir),
      '--config': command[command.index('--config') + 1].replace(
          ':', ':builder=tiny,'),
  }
  args = []
  words = iter(command[1:])
  for word in words:
    key, sep, _ = word.partition('=')
    if key in replace:
      args.append(f'{key}={replace[key]}')
      if not sep:
        next(words)
    else:
      args.append(word)
  env = train_utils.subprocess_env(JAX_PLATFORMS='cpu',
                                   PYTHONPATH=train_utils.REPO)
  completed = subprocess.run(
      [sys.executable, *args, f'--config.data.data_dir={data_dir}',
       '--config.data.batch_size=16', '--config.num_train_steps=2'],
      cwd=train_utils.REPO, env=env, capture_output=True, text=True,
      timeout=300,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert 'Process 0 of 1; 1 local of 1 devices.' in completed.stderr
  with open(workdir / 'results.json') as f:
    results = json.load(f)
  assert results['step'] == 2
  accuracy = results['final']['test/fused/accuracy']
  assert f'fused test accuracy {accuracy:.4f}' in completed.stderr


def _config_commands() -> list[tuple[str, str | None, list[str]]]:
  """(config file, its argument, overrides) of every README command."""
  found = []
  for command in SHELL_COMMANDS:
    for i, word in enumerate(command[:-1]):
      if word != '--config':
        continue
      path, _, arg = command[i + 1].partition(':')
      overrides = [w[len('--config.'):] for w in command
                   if w.startswith('--config.')]
      overrides += [command[j + 1] for j, w in enumerate(command[:-1])
                    if w == '--set']
      found.append((path, arg or None, overrides))
  return found


def test_every_config_command_builds_with_its_overrides():
  commands = _config_commands()
  assert len(commands) >= 7
  for path, arg, overrides in commands:
    full = os.path.join(train_utils.REPO, path)
    assert os.path.isfile(full), path
    config = runs.load_config(full, arg)
    config.lock()
    runs.apply_overrides(config, overrides)
    assert isinstance(config, ml_collections.ConfigDict)


def test_every_inline_config_reference_names_a_config_file():
  refs = set(re.findall(r'experiments/configs/(\w+\.py)', _readme()))
  assert {'mfeat_fusion.py', 'cifar_lt.py', 'longtail_recipes.py'} <= refs
  for name in refs:
    assert os.path.isfile(
        os.path.join(train_utils.REPO, 'experiments', 'configs', name)), name
  # Every `--config experiments/configs/X.py:ARGS` in the text builds too.
  for name, arg in re.findall(
      r'--config experiments/configs/(\w+\.py):([\w=+,.]+)', _readme()):
    runs.load_config(os.path.join(train_utils.REPO, 'experiments', 'configs',
                                  name), arg)


def test_every_make_target_exists():
  with open(MAKEFILE) as f:
    targets = set(re.findall(r'^([\w-]+):', f.read(), re.MULTILINE))
  named = set(re.findall(r'\bmake ([a-z][\w-]*)', _readme()))
  assert {'demo', 'test', 'gblend', 'ogm', 'longtail', 'bench'} <= named
  assert not named - targets, named - targets


def test_every_python_module_exists():
  modules = {c[c.index('-m') + 1] for c in SHELL_COMMANDS if '-m' in c}
  modules |= set(re.findall(r'python -m ([\w.]+)', _readme()))
  assert {'experiments.main', 'experiments.sweep', 'experiments.plot',
          'experiments.benchmark'} <= modules
  for module in modules:
    path = os.path.join(train_utils.REPO, *module.split('.')) + '.py'
    assert os.path.isfile(path), module


def test_every_relative_link_and_named_file_exists():
  text = _readme()
  links = set(re.findall(r'\]\(([^)#:]+)\)', text))
  paths = set(re.findall(
      r'`((?:experiments|tests|gblend_jax|data)/[\w/.-]+\.(?:py|md|ipynb))',
      text))
  assert 'experiments/results/gblend_mfeat.md' in links
  assert 'experiments/colab/gblend_tpu.ipynb' in paths
  for path in links | paths:
    if '<' in path:
      continue
    assert os.path.exists(os.path.join(train_utils.REPO, path)), path


@pytest.mark.parametrize('anchor', re.findall(r'\]\(#([\w-]+)\)', _readme()))
def test_contents_links_point_at_headings(anchor):
  headings = re.findall(r'^#+ (.+)$', _readme(), re.MULTILINE)
  slugs = {re.sub(r'[^\w -]', '', h).strip().lower().replace(' ', '-')
           for h in headings}
  assert anchor in slugs
