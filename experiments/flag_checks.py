"""Checks a command's numeric flags once, before any work, naming every bad flag and value.

A script declares each flag's value and rule at the top of its main, before it
loads a model or compiles anything (flags left unset, None, are skipped):

  from experiments import flag_checks

  args = parser.parse_args(argv)
  flag_checks.check(
    {
      '--steps': (args.steps, flag_checks.POSITIVE_INT),
      '--burn_in': (args.burn_in, flag_checks.NON_NEGATIVE_INT),
      '--thin': (args.thin, flag_checks.POSITIVE_INT),
      '--min_overlap': (args.min_overlap, flag_checks.between(0, 1)),
      '--seed': (args.seed, flag_checks.SEED),
    },
    # systems.sampler: thin divides steps, at least two stored samples per chain.
    [lambda: flag_checks.multiple_of('--steps', args.steps, '--thin', args.thin, minimum=2)],
  )

With absl flags, read `.value` of each flag at the top of the function that
app.run calls. A bad value ends the command with exit status 2 and ONE line on
stderr, in experiments.validation's wording, e.g.

  Bad flag values: --steps=-1: expected a positive integer; --thin=0: expected a positive integer

A rule is a (test, what is expected) pair, as in experiments.validation
(whose POSITIVE_INT, NON_NEGATIVE_INT and POSITIVE this module re-exports). A
value of None (a flag left unset, whose default comes from elsewhere) is not
checked. Relations between flags are callables returning a problem or None,
asked only once every single flag passed (so they may divide by a flag).
"""

import sys
from collections.abc import Callable, Iterable, Mapping

from experiments.validation import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT

__all__ = [
  'NON_NEGATIVE_INT',
  'POSITIVE',
  'POSITIVE_INT',
  'SEED',
  'FlagError',
  'at_least',
  'between',
  'check',
  'multiple_of',
  'problems',
  'validate',
]

Rule = tuple[Callable, str]


class FlagError(ValueError):
  """A command-line flag value is out of range or breaks a relation with another flag."""


def at_least(minimum: int) -> Rule:
  """The rule 'an integer >= `minimum`' (minimum >= 0)."""
  if not NON_NEGATIVE_INT[0](minimum):
    raise ValueError(f'minimum={minimum!r}: expected an integer >= 0')
  return (lambda v: NON_NEGATIVE_INT[0](v) and v >= minimum, f'an integer >= {minimum}')


def between(low: float, high: float) -> Rule:
  """The rule 'a number in (low, high)' (open interval; NaN never passes)."""
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  return (lambda v: number(v) and low < v < high, f'a number in ({low}, {high})')


# jax.random.key keeps the low 32 bits (without x64): -1 and 2**32 - 1 would seed alike.
SEED = (lambda v: NON_NEGATIVE_INT[0](v) and v < 2**32, 'an integer in [0, 2**32)')


def problems(values: Mapping[str, tuple[object, Rule]]) -> list[str]:
  """'--flag=value: expected ...' for every flag whose value breaks its rule (None: unset)."""
  return [
    f'{flag}={value!r}: expected {expected}'
    for flag, (value, (test, expected)) in values.items()
    if value is not None and not test(value)
  ]


def multiple_of(
  name: str, value: int, of_name: str, of: int, factor: int = 1, minimum: int = 1
) -> str | None:
  """The problem if `value` is not a multiple of factor·`of`, at least minimum·factor·`of`.

  E.g. "--hmc_steps=100: expected a multiple of 30 (10·--hmc_thin=3), at least 60".
  Names are how the message shows the values: a flag ('--hmc_steps') or where
  a value came from ("the run's hmc.num_steps"). Returns None if it is.
  """
  step = factor * of
  if value % step == 0 and value >= minimum * step:
    return None
  times = f'{factor}·' if factor != 1 else ''
  floor = f', at least {minimum * step}' if minimum != 1 else ''
  return f'{name}={value!r}: expected a multiple of {step} ({times}{of_name}={of!r}){floor}'


def validate(
  values: Mapping[str, tuple[object, Rule]], relations: Iterable[Callable[[], str | None]] = ()
) -> None:
  """Raises FlagError naming every bad flag on one line ('Bad flag values: a; b').

  Args:
    values: flag ('--steps') -> (its value, its rule).
    relations: callables returning a problem (str) or None; asked only if
      every flag passed its rule.
  """
  found = problems(values)
  if not found:
    found = [p for p in (relation() for relation in relations) if p]
  if found:
    raise FlagError('Bad flag values: ' + '; '.join(found))


def check(
  values: Mapping[str, tuple[object, Rule]], relations: Iterable[Callable[[], str | None]] = ()
) -> None:
  """`validate`, but a bad flag exits (status 2) with its one line on stderr, no traceback."""
  try:
    validate(values, relations)
  except FlagError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
