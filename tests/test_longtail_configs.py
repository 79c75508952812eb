"""The long-tail experiment configs: values against the paper's recipes.

Zhang et al. (AAAI 2021) as SPEC §3 gives them. ``fashion_mnist_lt`` is
also checked against the values it produced before its recipe logic moved to
``longtail_recipes`` (recorded by running the old file once, for every
recipe x imbalance x budget x profile x runlocal).
"""

import itertools

import pytest

from experiments.configs import fashion_mnist_lt
from experiments.configs import longtail_recipes
from gblend_jax import config as config_lib

# Recipe -> the config.longtail values it sets; 'S' stands for the switch
# epoch, 'N' for the epochs without mixup at the end.
RECIPE_LONGTAIL = {
    'ce': {},
    'cs_ce': {'loss': 'cs_ce', 'focal_gamma': 1.0},
    'focal': {'loss': 'focal', 'focal_gamma': 1.0},
    'cb_focal': {'loss': 'cb_focal', 'focal_gamma': 1.0},
    'cb_ce': {'loss': 'cb_ce', 'focal_gamma': 1.0},
    'balanced_softmax': {'loss': 'balanced_softmax', 'focal_gamma': 1.0},
    'ldam_drw': {'loss': 'ldam', 'ldam_scale': 1.0, 'drw_epoch': 'S'},
    'drw': {'drw_epoch': 'S'},
    'cb_sampling': {'sampler': 'class_balanced'},
    'sqrt_sampling': {'sampler': 'sqrt'},
    'progressive': {'sampler': 'progressive'},
    'drs': {'sampler': 'class_balanced', 'drs_epoch': 'S'},
    'cs_ce_cb_sampling': {'loss': 'cs_ce', 'sampler': 'class_balanced'},
    'mixup': {'mixup': 'input'},
    'remix': {'mixup': 'remix'},
    'mixup_ft': {'mixup': 'input', 'mixup_off_last_epochs': 'N'},
    'best_bag': {'mixup': 'input', 'sampler': 'class_balanced',
                 'drs_epoch': 'S', 'mixup_off_last_epochs': 'N'},
}

# Every key fashion_mnist_lt.py set before the refactor, whatever the args.
FMNIST_COMMON = {
    'data.name': 'fashion_mnist',
    'data.modalities': ('image',),
    'data.holdout_fraction': 0.1,
    'data.standardize': True,
    'data.batch_size': 128,
    'data.eval_batch_size': 1000,
    'model.encoder.name': 'cifar_resnet',
    'model.fused_head.hidden_sizes': (),
    'model.modality_heads': False,
    'optimizer.name': 'sgd',
    'optimizer.learning_rate': 0.1,
    'optimizer.momentum': 0.9,
    'optimizer.weight_decay': 2e-4,
    'optimizer.schedule': 'step',
    'optimizer.decay_factor': 0.1,
    'log_every_steps': 50,
    'longtail.shot_metrics': True,
}
FMNIST_BUDGETS = {
    'paper': {'data.longtail.max_count': 0,
              'model.encoder.cifar_resnet.depth': 32,
              'optimizer.warmup_epochs': 5.0,
              'optimizer.boundaries_epochs': (160.0, 180.0),
              'num_epochs': 200, 'eval_every_epochs': 20, 'S': 160,
              'N': 20},
    'cpu': {'data.longtail.max_count': 1000,
            'model.encoder.cifar_resnet.depth': 8,
            'optimizer.warmup_epochs': 1.0,
            'optimizer.boundaries_epochs': (24.0, 27.0),
            'num_epochs': 30, 'eval_every_epochs': 3, 'S': 24, 'N': 3},
}
FMNIST_RUNLOCAL = {'num_epochs': 2, 'eval_every_epochs': 1,
                   'log_every_steps': 5, 'optimizer.warmup_epochs': 0.0,
                   'optimizer.boundaries_epochs': (), 'S': 1, 'N': 1}
# The recipes fashion_mnist_lt.py had when its values were recorded.
FMNIST_RECORDED_RECIPES = tuple(RECIPE_LONGTAIL)


def _flat(tree: dict, prefix: str = '') -> dict:
  """A nested dict as {'a.b.c': value}, lists as tuples."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else (
          value)
  return flat


def _expected(settings: dict) -> dict:
  """The default config, flattened, with ``settings`` set on it."""
  expected = _flat(config_lib.default_config().to_dict())
  for key, value in settings.items():
    assert key in expected, key  # A key the defaults lack is a typo here.
    expected[key] = value
  return expected


def _recipe_longtail(recipe: str, switch: int, no_mixup: int) -> dict:
  values = {'S': switch, 'N': no_mixup}
  return {f'longtail.{key}': values.get(value, value) if isinstance(
      value, str) else value
          for key, value in RECIPE_LONGTAIL[recipe].items()}


@pytest.mark.parametrize('budget', ['paper', 'cpu'])
@pytest.mark.parametrize('runlocal', [False, True])
def test_fashion_mnist_lt_values_unchanged_by_refactor(budget, runlocal):
  for recipe, imbalance, profile in itertools.product(
      FMNIST_RECORDED_RECIPES, ('100', '50'), ('exponential', 'step')):
    arg = f'recipe={recipe},imbalance={imbalance},budget={budget},' \
          f'profile={profile}' + (',runlocal' if runlocal else '')
    settings = dict(FMNIST_COMMON)
    settings.update(FMNIST_BUDGETS[budget])
    if runlocal:
      settings.update(FMNIST_RUNLOCAL)
    switch, no_mixup = settings.pop('S'), settings.pop('N')
    settings.update(_recipe_longtail(recipe, switch, no_mixup))
    settings['data.longtail.profile'] = profile
    settings['data.longtail.imbalance_factor'] = float(imbalance)
    got = _flat(fashion_mnist_lt.get_config(arg).to_dict())
    want = _expected(settings)
    assert got == want, (arg, {k: (got.get(k), want.get(k))
                               for k in set(got) | set(want)
                               if got.get(k) != want.get(k)})


def test_recipe_list_is_documented_beside_recipes():
  doc = longtail_recipes.__doc__
  listed = doc[doc.index('Recipes ('):]
  for recipe in longtail_recipes.RECIPES:
    assert f' {recipe} ' in listed.replace('|', ' '), recipe


def test_unknown_recipe_is_named():
  with pytest.raises(ValueError, match="recipe='bogus'"):
    fashion_mnist_lt.get_config('recipe=bogus')
  config = config_lib.default_config()
  with pytest.raises(ValueError, match="recipe='bogus'"):
    longtail_recipes.apply_recipe(config.longtail, 'bogus', switch_epoch=1,
                                  no_mixup_epochs=1)
