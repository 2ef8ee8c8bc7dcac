"""Tests of config values, as (test, what is expected) pairs.

Shared by the model families' rules (flows.registry) and the experiment
configs' rules (experiments.validation).
"""

import math


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def one_of(*choices) -> tuple:
  """(test, expected) of a value among `choices`."""
  return (lambda v: v in choices, ' or '.join(repr(c) for c in choices))


POSITIVE_INT = (lambda v: is_int(v) and v > 0, 'a positive integer')
NON_NEGATIVE_INT = (lambda v: is_int(v) and v >= 0, 'an integer >= 0')
POSITIVE = (lambda v: is_number(v) and v > 0, 'a finite number > 0')
NON_NEGATIVE = (lambda v: is_number(v) and v >= 0, 'a finite number >= 0')
BOOL = (lambda v: isinstance(v, bool), 'True or False')
