"""Evaluation on a case with a known answer, and the config files' errors."""

import math

import jax
import numpy as np
import pytest

from experiments import evaluation, training
from experiments.configs import lennard_jones, monatomic_water
from flows import convention

from conftest import perturb


def test_flow_targeting_its_own_density_has_unit_ess_and_exact_log_z():
  """Target p̃(x) = e^c q(x): every weight is e^c, so ESS = 1 and ln Z = c.

  The energies come from `flow.log_prob` (inverse pass) and the log q from
  `sample_and_log_prob` (forward pass), so this also checks that the two
  agree on a trained-looking (randomised) flow.
  """
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  setup, state = training.build(config)
  flow = setup.flow(perturb(state['params'], 0.05))
  c = 3.7
  beta = setup.system.beta

  def sample_fn(key, n):
    x, log_q = flow.sample_and_log_prob(key, n)
    return x, log_q, -(flow.log_prob(x) + c) / beta

  samples = evaluation.draw_samples(sample_fn, jax.random.key(1), 300, 128)
  assert samples['log_q'].shape == (300,)
  row = evaluation.summarize(samples, setup.system)
  assert row['ess'] == pytest.approx(1.0, abs=1e-6)
  assert row['log_z'] == pytest.approx(c, abs=2e-3)
  assert row['log_z_stderr'] < 1e-3
  n, volume = setup.system.num_particles, setup.system.volume
  expected = (-(c + math.log(volume)) + math.lgamma(n + 1)) / n + 3 * math.log(
    setup.system.thermal_wavelength
  )
  assert row['beta_f_per_particle'] == pytest.approx(expected, abs=3e-4)
  assert expected == pytest.approx(
    convention.beta_f_per_particle(c, n, volume, setup.system.thermal_wavelength)
  )
  energies = samples['energy']
  assert row['mean_energy_flow'] == pytest.approx(np.mean(energies))


def test_draw_samples_rejects_bad_sizes():
  with pytest.raises(ValueError, match='num_samples=0'):
    evaluation.draw_samples(None, jax.random.key(0), 0, 10)


@pytest.mark.parametrize(
  'module, arg, message',
  [
    (monatomic_water, 'mw_cubic_9,cpu', "Unknown system 'mw_cubic_9'.*mw_cubic_8"),
    (monatomic_water, 'mw_cubic_8,gpu', "Unknown variant 'gpu'.*cpu"),
    (lennard_jones, 'mw_cubic_8', "Unknown system 'mw_cubic_8'.*lj_32"),
    (lennard_jones, '', 'must be "<system>\\[,<variant>\\]"'),
  ],
)
def test_config_errors_name_the_bad_value(module, arg, message):
  with pytest.raises(ValueError, match=message):
    module.get_config(arg)


def test_paper_variant_is_the_published_setup():
  config = lennard_jones.get_config('lj_256,paper')
  assert (
    config.model.num_layers,
    config.model.num_bins,
    config.model.embedding_size,
    config.model.num_heads,
    config.model.num_blocks,
    config.model.num_frequencies,
  ) == (24, 16, 256, 2, 2, 16)
  assert (
    config.train.batch_size,
    config.train.learning_rate,
    tuple(config.train.lr_decay_steps),
    config.train.lr_decay_factor,
    config.train.max_gradient_norm,
    config.train.num_steps,
  ) == (128, 7e-5, (250_000, 500_000), 0.1, 1e4, 1_000_000)
