"""The long-tail grid's stage 3 rows merge into the table file in place."""

from experiments import longtail_grid
from experiments.configs import longtail_recipes

SECTION = (f'{longtail_grid.SECTION_BEGIN}\n## new rows\n| a | 1 |\n'
           f'{longtail_grid.SECTION_END}\n')


def test_section_goes_before_the_notes_and_replaces_itself():
  text = ('# Table\n\n| ce | 47.58 |\n\nCommand: `x`\n\n'
          '## What it shows\n\nnotes\n')
  merged = longtail_grid.merge_section(text, SECTION)
  head, notes = text.split('## What it shows')
  assert merged == head + SECTION + '\n## What it shows' + notes
  # A rerun replaces its own section and nothing else.
  again = longtail_grid.merge_section(
      merged, SECTION.replace('| a | 1 |', '| a | 2 |'))
  assert again == merged.replace('| a | 1 |', '| a | 2 |')
  # Without notes the section goes at the end.
  assert longtail_grid.merge_section('# T\n', SECTION) == '# T\n\n' + SECTION


def test_every_stage_three_row_is_a_recipe_with_a_known_prefix():
  for recipe, prefix in longtail_grid.DECOUPLING_ROWS.values():
    assert recipe in longtail_recipes.RECIPES
    assert prefix in ('', 'posthoc_', 'tau_norm_')
