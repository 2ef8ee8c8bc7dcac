"""Checks an experiment config once, before any work, naming every bad key and value.

One set of rules serves the solid-flow configs (experiments/configs/common.py)
and the TFEP configs (experiments/configs/tfep_solvation.py): each rule
applies to the keys a config has, so a section that only one kind of config
has (`states`, `sampling`; `eval.num_samples` or `eval.sample_sizes`) is
checked where present. The model family's own keys (model.<conditioner>.*)
are checked by its rules in flows.registry; the generic tests of values are
flows.rules.
"""

from collections.abc import Callable

import ml_collections

from flows import registry
from flows.rules import (
  BOOL,
  NON_NEGATIVE,
  NON_NEGATIVE_INT,
  POSITIVE,
  POSITIVE_INT,
  is_int,
  is_number,
)


class ConfigError(ValueError):
  """A config value is out of range or of the wrong kind."""


def _fraction(value) -> bool:
  return is_number(value) and 0 <= value < 1


def _increasing_positive_ints(value) -> bool:
  if not isinstance(value, (tuple, list)) or not all(POSITIVE_INT[0](v) for v in value):
    return False
  return all(a < b for a, b in zip(value, value[1:]))


def _non_empty_positive_ints(value) -> bool:
  return isinstance(value, (tuple, list)) and bool(value) and all(POSITIVE_INT[0](v) for v in value)


# Dotted key -> (test, what is expected). Keys a config lacks are skipped.
RULES: dict[str, tuple[Callable, str]] = {
  'seed': (is_int, 'an integer'),
  'init_from': (lambda v: isinstance(v, str), 'a run directory (empty: none)'),
  'train.batch_size': POSITIVE_INT,
  'train.num_steps': POSITIVE_INT,
  'train.learning_rate': POSITIVE,
  'train.lr_decay_steps': (
    _increasing_positive_ints,
    'a strictly increasing sequence of positive integers (may be empty)',
  ),
  'train.lr_decay_factor': POSITIVE,
  'train.lr_warmup_steps': NON_NEGATIVE_INT,
  'train.adam_b2': (_fraction, 'a number in [0, 1)'),
  'train.max_gradient_norm': POSITIVE,
  'train.ema_decay': (_fraction, 'a number in [0, 1)'),
  'train.max_consecutive_nonfinite': POSITIVE_INT,
  'train.log_every_steps': POSITIVE_INT,
  'train.checkpoint_every_seconds': POSITIVE,
  'train.checkpoint_every_steps': (NON_NEGATIVE_INT[0], 'an integer >= 0 (0: off)'),
  'train.max_checkpoints_to_keep': POSITIVE_INT,
  'train.max_wall_seconds': (NON_NEGATIVE[0], 'a number >= 0 (0: off)'),
  'train.loss': (lambda v: v in ('lfep', 'lbar'), "'lfep' or 'lbar'"),
  'train.forward_kl_weight': (lambda v: is_number(v) and 0 <= v <= 1, 'a number in [0, 1]'),
  'train.path_gradient': BOOL,
  'train.renyi2_weight': (lambda v: is_number(v) and v >= 0, 'a number >= 0'),
  'model.remat': BOOL,
  'model.num_layers': NON_NEGATIVE_INT,  # TFEP maps (solid flows: model.<conditioner>)
  'model.radial_bins': NON_NEGATIVE_INT,
  'model.centre_on_sites': BOOL,
  'hmc.num_chains': POSITIVE_INT,
  'hmc.num_steps': POSITIVE_INT,
  'hmc.burn_in': NON_NEGATIVE_INT,
  'hmc.thin': POSITIVE_INT,
  'hmc.num_leapfrog': POSITIVE_INT,
  'hmc.step_size': POSITIVE,
  'eval.every_steps': POSITIVE_INT,
  'eval.num_samples': POSITIVE_INT,
  'eval.batch_size': POSITIVE_INT,
  'eval.stop_at_stderr': (NON_NEGATIVE[0], 'a number >= 0 (0: never)'),
  'eval.sample_sizes': (_non_empty_positive_ints, 'a non-empty sequence of positive integers'),
  'eval.num_subsets': (lambda v: is_int(v) and v >= 2, 'an integer >= 2'),
  'states.lambda_a': POSITIVE,
  'states.lambda_b': POSITIVE,
  'states.num_states': (lambda v: is_int(v) and v >= 2, 'an integer >= 2'),
  'sampling.num_chains': POSITIVE_INT,
  'sampling.num_train': POSITIVE_INT,
  'sampling.num_ladder_held_out': NON_NEGATIVE_INT,
  'sampling.burn_in': NON_NEGATIVE_INT,
  'sampling.thin': POSITIVE_INT,
  'sampling.num_leapfrog': POSITIVE_INT,
  'sampling.step_size': POSITIVE,
}


def _lookup(config: ml_collections.ConfigDict, dotted: str):
  """(True, value) of a dotted key, (False, None) if the config lacks it."""
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False, None
    node = node[part]
  return True, node


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raises ConfigError listing every key of `config` whose value breaks RULES.

  Args:
    config: a solid-flow or TFEP experiment config.
    num_devices: devices the batch is sharded over; train.batch_size must be
      a multiple of it.
  """
  problems = []
  for dotted, (test, expected) in RULES.items():
    present, value = _lookup(config, dotted)
    if present and not test(value):
      problems.append(f'{dotted}={value!r}: expected {expected}')
  if 'model' in config:  # the family's own keys (flows.registry)
    problems += registry.problems(config.model.to_dict())
  present, thin = _lookup(config, 'hmc.thin')
  steps = config.hmc.num_steps if present else None
  if (
    present
    and POSITIVE_INT[0](thin)
    and POSITIVE_INT[0](steps)
    and (steps % (10 * thin) or steps < 20 * thin)
  ):
    problems.append(
      f'hmc.num_steps={steps!r}: expected a multiple of 10·hmc.thin={10 * thin}, at least '
      f'{20 * thin}'
    )
  present, batch_size = _lookup(config, 'train.batch_size')
  if present and POSITIVE_INT[0](batch_size) and batch_size % num_devices:
    problems.append(
      f'train.batch_size={batch_size}: expected a multiple of the number of devices ({num_devices})'
    )
  if problems:
    raise ConfigError('Bad config values:\n  ' + '\n  '.join(problems))
