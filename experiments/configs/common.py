"""Parsing of the ``key=value,flag`` argument strings of config files."""


def parse_arg(arg: str | None, **defaults: str | bool) -> dict[str, str | bool]:
  """Parses ``'a=1,runlocal'`` into ``{'a': '1', 'runlocal': True}``.

  Args:
    arg: the text after ``:`` in ``--config file.py:arg``, or None.
    **defaults: every allowed key with its default.

  Returns:
    The defaults updated by the argument.

  Raises:
    ValueError: for a key that is not among the defaults.
  """
  values = dict(defaults)
  for part in filter(None, (arg or '').split(',')):
    key, sep, value = part.partition('=')
    if key not in defaults:
      raise ValueError(
          f'Unknown config argument {key!r} in {arg!r}; valid: '
          f'{sorted(defaults)}.'
      )
    values[key] = value if sep else True
  return values
