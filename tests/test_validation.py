"""Config validation: every shipped config passes, bad values are named with their key."""

import re

import pytest

from experiments import tfep_stages, training, validation
from experiments.configs import lennard_jones, monatomic_water, tfep_solid, tfep_solvation

FINE_TUNES = {
  'mw_cubic_216,local_from_64': 'runs/mw_cubic_64',
  'mw_hex_216,local_from_64': 'runs/mw_hex_64',
  'mw_cubic_512,local_from_216': 'runs/mw_cubic_216',
  'lj_500,local_from_256': 'runs/lj_256_local',
  'mw_cubic_216,flow_only_from_64': 'runs/mw_cubic_64_flow_only',
  'mw_hex_216,flow_only_from_64': 'runs/mw_hex_64_flow_only',
  'mw_cubic_512,flow_only_at_512': 'runs/mw_cubic_64_flow_only',
  'mw_hex_512,flow_only_at_512': 'runs/mw_hex_64_flow_only',
}
# Variants that start from another run, with the run they start from.
STARTS_FROM = {
  **FINE_TUNES,
  'lj_256,local_continued': 'runs/lj_256_local',
  'mw_hex_512,flow_only_at_512_continued': 'runs/mw_hex_512_flow_only_at_512',
  'mw_hex_512,flow_only_at_512_more': 'runs/mw_hex_512_flow_only_at_512_continued',
  'lj_256,path_gradient': 'experiments/pretrained/lj_256',
  'lj_256,path_gradient_batch8': 'runs/lj_256_path_gradient',
  'lj_256,path_gradient_batch8_continued': 'runs/lj_256_path_gradient_batch8',
}
# Variants for some sizes only: the fine-tunes and the first stage of `flow_only`.
ONE_SIZE_ARGS = {*STARTS_FROM, 'mw_cubic_64,flow_only', 'mw_hex_64,flow_only'}
ONE_SIZE_VARIANTS = {arg.split(',')[1] for arg in ONE_SIZE_ARGS}
SOLID_CONFIGS = [
  (module, f'{system},{variant}')
  for module in (monatomic_water, lennard_jones)
  for system in module.SYSTEMS
  for variant in module.VARIANTS
  if variant not in ONE_SIZE_VARIANTS or f'{system},{variant}' in ONE_SIZE_ARGS
]


def _set(config, dotted, value):
  *path, name = dotted.split('.')
  for part in path:
    config = config[part]
  config[name] = value


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
    ('init_from', None, 'a run directory'),
    ('model.transformer.num_layers', 0, 'a positive integer'),
    ('model.transformer.base', 'harmonic', "'lattice'"),
    ('model.transformer.compute_dtype', 'float16', "'float32' or 'bfloat16'"),
    ('model.transformer.noise_scale', 0.0, 'a finite number > 0'),
  ],
)
def test_bad_solid_value_is_named(key, value, expected):
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  _set(config, key, value)
  with pytest.raises(
    validation.ConfigError, match=re.escape(f'{key}={value!r}: expected ') + expected
  ):
    validation.validate_config(config)


@pytest.mark.parametrize(
  'key,value,expected',
  [
    ('model.local.num_layers', -1, 'an integer >= 0'),
    ('model.local.base', 'lattice', "'harmonic' or 'isotropic'"),
    ('model.local.num_neighbours', 0, 'a positive integer'),
    ('model.local.spline_range', float('inf'), 'a finite number > 0'),
  ],
)
def test_bad_local_value_is_named(key, value, expected):
  config = monatomic_water.get_config('mw_cubic_64,local_tiny')
  _set(config, key, value)
  with pytest.raises(
    validation.ConfigError, match=re.escape(f'{key}={value!r}: expected ') + expected
  ):
    validation.validate_config(config)


def test_only_the_chosen_family_is_checked_and_switching_family_works():
  config = monatomic_water.get_config('mw_cubic_64,tiny')
  config.model.local.num_layers = -1  # not read: the transformer is chosen
  validation.validate_config(config)
  config.model.conditioner = 'local'  # --config.model.conditioner=local
  with pytest.raises(validation.ConfigError, match=r'model.local.num_layers=-1'):
    validation.validate_config(config)
  config.model.local.num_layers = 4
  validation.validate_config(config)
  config.model.conditioner = 'mlp'
  known = r"model.conditioner='mlp': expected one of \('transformer', 'local'\)"
  with pytest.raises(validation.ConfigError, match=known):
    validation.validate_config(config)


@pytest.mark.parametrize('arg,init_from', FINE_TUNES.items())
def test_fine_tune_variants_carry_their_init_from(arg, init_from):
  module = lennard_jones if arg.startswith('lj') else monatomic_water
  config = module.get_config(arg)
  assert config.init_from == init_from
  assert config.train.forward_kl_weight == 0.0 and config.train.learning_rate == 2e-4
  assert config.model.conditioner == 'local'
  assert module.get_config(arg.split(',')[0] + ',local').init_from == ''


def test_continued_variant_is_the_local_run_longer_from_a_lower_learning_rate():
  local = lennard_jones.get_config('lj_256,local')
  continued = lennard_jones.get_config('lj_256,local_continued')
  assert continued.init_from == STARTS_FROM['lj_256,local_continued']
  assert continued.model == local.model and continued.hmc == local.hmc
  assert continued.train.forward_kl_weight == local.train.forward_kl_weight == 0.5
  assert continued.train.batch_size == local.train.batch_size == 32
  assert continued.train.learning_rate == 5e-4 and continued.train.num_steps == 10_000
  assert tuple(continued.train.lr_decay_steps) == (5000, 7500)
  with pytest.raises(ValueError, match="local_continued is for lj_256, not 'lj_500'"):
    lennard_jones.get_config('lj_500,local_continued')


def test_flow_only_is_the_local_variant_from_the_energy_alone_with_the_path_gradient():
  for lattice in ('cubic', 'hex'):
    local = monatomic_water.get_config(f'mw_{lattice}_64,local')
    first = monatomic_water.get_config(f'mw_{lattice}_64,flow_only')
    assert first.model == local.model and first.init_from == ''
    assert first.train.path_gradient and not local.train.path_gradient
    assert first.train.forward_kl_weight == 0.0 and first.train.batch_size == 32
    assert first.train.num_steps == 16_000
    assert tuple(first.train.lr_decay_steps) == (8000, 12_000)
    assert first.train.learning_rate == local.train.learning_rate
    tune = monatomic_water.get_config(f'mw_{lattice}_216,flow_only_from_64')
    assert tune.train.path_gradient and tune.train.batch_size == 32
    at_512 = monatomic_water.get_config(f'mw_{lattice}_512,flow_only_at_512')
    assert at_512.train.path_gradient and at_512.train.batch_size == 4
    assert at_512.train.learning_rate == 2e-4 and at_512.train.num_steps == 3000
  continued = monatomic_water.get_config('mw_hex_512,flow_only_at_512_continued')
  assert continued.init_from == STARTS_FROM['mw_hex_512,flow_only_at_512_continued']
  assert (
    continued.model == at_512.model
    and continued.train.learning_rate == 5e-4
    and continued.train.num_steps == 6000
  )
  assert continued.train.batch_size == 4 and continued.train.forward_kl_weight == 0.0
  # ... and `flow_only_at_512_more` continues that run at 2·10⁻⁴: the 4,114 steps its wall
  # limit allowed, before the first of the planned cuts.
  more = monatomic_water.get_config('mw_hex_512,flow_only_at_512_more')
  assert more.init_from == STARTS_FROM['mw_hex_512,flow_only_at_512_more']
  assert more.model == continued.model and more.train.learning_rate == 2e-4
  assert more.train.num_steps == 4114 and tuple(more.train.lr_decay_steps) == (4500, 6750)
  assert more.train.batch_size == 4 and more.train.path_gradient
  lj_local = lennard_jones.get_config('lj_256,local')
  lj_first = lennard_jones.get_config('lj_256,flow_only')
  assert lj_first.model == lj_local.model and lj_first.init_from == ''
  assert lj_first.train.path_gradient and lj_first.train.forward_kl_weight == 0.0
  assert lj_first.train.batch_size == 8 and lj_first.train.learning_rate == 5e-4
  assert tuple(lj_first.train.lr_decay_steps) == (13_000, 19_500)
  with pytest.raises(ValueError, match="flow_only trains at N = 64, not 'mw_cubic_216'"):
    monatomic_water.get_config('mw_cubic_216,flow_only')


def test_the_lj_path_gradient_chain_continues_each_run_from_the_energy_alone():
  """Each link starts from the run of the link before (the shipped lj_256 model,
  then runs/lj_256_<variant>), with the `local` model, reverse KL by its path
  gradient and no HMC samples."""
  local = lennard_jones.get_config('lj_256,local')
  chain = ('path_gradient', 'path_gradient_batch8', 'path_gradient_batch8_continued')
  runs = ('experiments/pretrained/lj_256', *(f'runs/lj_256_{variant}' for variant in chain))
  for run_before, variant in zip(runs, chain):
    config = lennard_jones.get_config(f'lj_256,{variant}')
    assert config.init_from == run_before == STARTS_FROM[f'lj_256,{variant}']
    assert config.model == local.model
    assert config.train.path_gradient and config.train.forward_kl_weight == 0.0
  assert config.train.batch_size == 8 and config.train.learning_rate == 1e-4
  assert tuple(config.train.lr_decay_steps) == (10_000, 15_000)
  with pytest.raises(ValueError, match="path-gradient continuations are for lj_256, not 'lj_500'"):
    lennard_jones.get_config('lj_500,path_gradient')


def test_fine_tune_variant_of_another_size_is_refused():
  message = "local_from_64 is for mw_cubic_216, mw_hex_216, not 'mw_cubic_64'"
  with pytest.raises(ValueError, match=message):
    monatomic_water.get_config('mw_cubic_64,local_from_64')
  with pytest.raises(ValueError, match="local_from_256 is for lj_500, not 'lj_256'"):
    lennard_jones.get_config('lj_256,local_from_256')


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
    ('model.conditioner', 'mlp', r"one of \('transformer', 'column'\)"),
    ('model.num_layers', -1, 'an integer >= 0'),
    ('model.radial_bins', -1, 'an integer >= 0'),
    ('model.transformer.embedding_size', 0, 'a positive integer'),
  ],
)
def test_bad_tfep_value_is_named_before_sampling(tmp_path, key, value, expected):
  config = tfep_solid.get_config('tiny')
  _set(config, key, value)
  with pytest.raises(
    validation.ConfigError, match=re.escape(f'{key}={value!r}: expected ') + expected
  ):
    tfep_stages.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('value', [0.0, -2.5])
def test_bad_column_cutoff_is_named(tmp_path, value):
  config = tfep_solvation.get_config('cpu_local')
  config.model.column.cutoff = value
  with pytest.raises(validation.ConfigError, match=rf'model.column.cutoff={value}: expected'):
    tfep_stages.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_column_tfep_map_refuses_centre_on_sites(tmp_path):
  config = tfep_solid.get_config('tiny')  # centre_on_sites=True
  config.model.conditioner = 'column'
  with pytest.raises(validation.ConfigError, match=r"model.centre_on_sites=True: .*'column'"):
    tfep_stages.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  config.model.centre_on_sites = False
  validation.validate_config(config)
  validation.validate_config(tfep_solvation.get_config('cpu_local'))


def test_tfep_map_called_local_is_refused_with_the_new_name():
  config = tfep_solid.get_config('tiny')
  config.model.conditioner = 'local'
  with pytest.raises(validation.ConfigError, match="'local' is now called 'column'"):
    validation.validate_config(config)
