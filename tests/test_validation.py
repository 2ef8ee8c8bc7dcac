"""Config validation: every shipped config passes, bad values are named with their key."""

import re

import pytest

from experiments import tfep_stages, training, validation
from experiments.configs import lennard_jones, monatomic_water, tfep_solid, tfep_solvation

SOLID_CONFIGS = [
  (module, f'{system},{variant}')
  for module in (monatomic_water, lennard_jones)
  for system in module.SYSTEMS
  for variant in module.VARIANTS
]


@pytest.mark.parametrize('module,arg', SOLID_CONFIGS)
def test_every_solid_config_is_valid(module, arg):
  validation.validate_config(module.get_config(arg))


@pytest.mark.parametrize(
  'key,value,expected',
  [
    ('train.learning_rate', -1.0, 'a finite number > 0'),
    ('train.batch_size', 0, 'a positive integer'),
    ('train.num_steps', 0, 'a positive integer'),
    ('train.lr_decay_steps', (500, 100), 'a strictly increasing'),
    ('train.lr_decay_steps', (0, 100), 'a strictly increasing'),
    ('train.ema_decay', 1.0, r'a number in \[0, 1\)'),
    ('train.max_gradient_norm', 0.0, 'a finite number > 0'),
    ('train.log_every_steps', 0, 'a positive integer'),
    ('train.checkpoint_every_steps', -5, 'an integer >= 0'),
    ('eval.every_steps', 0, 'a positive integer'),
    ('eval.num_samples', 0, 'a positive integer'),
    ('eval.batch_size', -4, 'a positive integer'),
    ('eval.stop_at_stderr', -0.1, 'a number >= 0'),
  ],
)
def test_bad_solid_value_is_named(key, value, expected):
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(
    validation.ConfigError, match=re.escape(f'{key}={value!r}: expected ') + expected
  ):
    validation.validate_config(config)


def test_training_refuses_a_bad_config_before_any_work(tmp_path):
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  config.train.learning_rate = -1.0
  config.train.batch_size = 0
  with pytest.raises(validation.ConfigError) as error:
    training.train(config, str(tmp_path / 'run'))
  assert 'train.learning_rate=-1.0' in str(error.value)  # every problem at once
  assert 'train.batch_size=0' in str(error.value)
  assert not (tmp_path / 'run').exists()


def test_batch_must_split_over_the_devices():
  config = monatomic_water.get_config('mw_cubic_8,tiny')  # batch 16
  validation.validate_config(config, num_devices=4)
  with pytest.raises(validation.ConfigError, match=r'train.batch_size=16: .*devices \(3\)'):
    validation.validate_config(config, num_devices=3)


@pytest.mark.parametrize(
  'key,value,expected',
  [
    ('train.loss', 'kl', "'lfep' or 'lbar'"),
    ('states.num_states', 1, 'an integer >= 2'),
    ('states.lambda_b', -0.35, 'a finite number > 0'),
    ('sampling.num_chains', 0, 'a positive integer'),
    ('sampling.thin', 0, 'a positive integer'),
    ('sampling.step_size', float('nan'), 'a finite number > 0'),
    ('eval.sample_sizes', (), 'a non-empty sequence'),
    ('eval.num_subsets', 1, 'an integer >= 2'),
    ('model.conditioner', 'mlp', "'transformer' or 'local'"),
    ('model.local_cutoff', 0.0, 'a finite number > 0'),
    ('model.local_cutoff', -2.5, 'a finite number > 0'),
  ],
)
def test_bad_tfep_value_is_named_before_sampling(tmp_path, key, value, expected):
  config = tfep_solid.get_config('tiny')
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(
    validation.ConfigError, match=re.escape(f'{key}={value!r}: expected ') + expected
  ):
    tfep_stages.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_local_tfep_map_refuses_centre_on_sites(tmp_path):
  config = tfep_solid.get_config('tiny')  # centre_on_sites=True
  config.model.conditioner = 'local'
  with pytest.raises(validation.ConfigError, match=r"model.centre_on_sites=True: .*'local'"):
    tfep_stages.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  config.model.centre_on_sites = False
  validation.validate_config(config)
  validation.validate_config(tfep_solvation.get_config('cpu_local'))
