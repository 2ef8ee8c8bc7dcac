"""Solute in LJ solvent: WCA solute term, periodicity, starting configurations, configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import tfep_stages, validation
from experiments.configs import tfep_solid, tfep_solvation
from systems import solvation


def test_wca_solute_term_is_shifted_repulsive_lj():
  radius = 2.6
  r = jnp.linspace(0.8 * radius, 1.2 * radius, 200)  # < L/2: no other image
  x = jnp.stack([r, jnp.zeros_like(r), jnp.zeros_like(r)], -1)[:, None, :]
  energy = np.asarray(solvation.solute_energy(x, radius))
  s6 = (radius / np.asarray(r)) ** 6
  expected = np.where(np.asarray(r) < 2 ** (1 / 6) * radius, 4 * s6 * (s6 - 1) + 1, 0)
  np.testing.assert_allclose(energy, expected, rtol=1e-4, atol=1e-4)
  assert np.all(energy >= -1e-6)


def test_energy_is_periodic_and_grows_with_radius():
  x = solvation.initial_positions(jax.random.PRNGKey(0), 2, 2.597)
  shifted = x.copy()
  shifted[:, 7] += solvation.BOX_EDGE * np.array([1.0, 0.0, -1.0])
  np.testing.assert_allclose(
    solvation.energy(shifted, 2.597), solvation.energy(x, 2.597), rtol=1e-5
  )
  assert np.all(np.asarray(solvation.energy(x, 2.7)) >= np.asarray(solvation.energy(x, 2.597)))


def test_initial_positions_lie_outside_the_solute():
  x = solvation.initial_positions(jax.random.PRNGKey(1), 3, 2.75)
  assert x.shape == (3, solvation.NUM_SOLVENT, 3)
  assert np.min(np.linalg.norm(x, axis=-1)) > 2 ** (1 / 6) * 2.75
  assert np.all(np.isfinite(np.asarray(solvation.energy(x, 2.75))))


def test_non_finite_coordinates_give_nan_energies():
  x = solvation.initial_positions(jax.random.PRNGKey(2), 4, 2.6)
  for row, bad in zip(x[1:], (np.nan, np.inf, -np.inf)):
    row[5, 0] = bad
  finite = np.asarray(solvation.energy(x[:1], 2.6))
  for fn in (solvation.energy, solvation.solute_energy):
    for call in (fn, jax.jit(fn)):
      e = np.asarray(call(x, 2.6))
      assert np.isnan(e[1:]).all(), (fn.__name__, e)
  assert np.isnan(np.asarray(solvation.solvent_energy(x))[1:]).all()
  np.testing.assert_allclose(np.asarray(solvation.energy(x, 2.6))[:1], finite, rtol=1e-5)


def test_bad_input_raises():
  with pytest.raises(ValueError, match='radius'):
    solvation.solute_energy(jnp.zeros((5, 3)), -1.0)
  with pytest.raises(ValueError, match='125'):
    solvation.energy(jnp.ones((4, 3)), 2.6)
  with pytest.raises(ValueError, match='grid sites'):
    solvation.initial_positions(jax.random.PRNGKey(0), 1, 3.5)


@pytest.mark.parametrize(
  'module,variant',
  [
    *[(tfep_solvation, variant) for variant in tfep_solvation.VARIANTS],
    (tfep_solvation, 'cpu,rb275'),
    (tfep_solvation, 'cpu_1e3,rb275'),
    (tfep_solid, 'cpu'),
    (tfep_solid, 'cpu_1e4'),
    (tfep_solid, 'paper'),
    (tfep_solid, 'tiny'),
  ],
)
def test_configs_are_valid_and_build_ladders(module, variant):
  config = module.get_config(variant)
  validation.validate_config(config)
  ladder = tfep_stages.make_ladder(config)
  assert len(ladder.parameters) == config.states.num_states
  np.testing.assert_allclose(
    ladder.parameters[[0, -1]], [config.states.lambda_a, config.states.lambda_b]
  )
  assert tfep_stages.samples_per_state(config) % config.sampling.num_chains == 0
  extra = tfep_stages.num_held_out(config) - tfep_stages.num_ladder_held_out(config)
  assert extra >= 0 and extra % config.sampling.num_chains == 0  # endpoints.npz
  with pytest.raises(ValueError, match='variant'):
    module.get_config('nope')


def test_solvation_pairs_default_to_the_papers_and_keep_the_earlier_one():
  """The default pair is the paper's (R_A = 9.2/3.542 σ, its ΔF's R_B, 11 states, 45,000
  training samples per state); `rb275` is the 2.75 σ pair of the earlier records, with
  their 6 states and 20,000; a bad pair is named."""
  default, earlier = tfep_solvation.get_config('cpu'), tfep_solvation.get_config('cpu,rb275')
  assert default.states.lambda_a == earlier.states.lambda_a == pytest.approx(9.2 / 3.542, abs=5e-4)
  assert (default.states.lambda_b, default.states.num_states) == (2.8434, 11)
  assert (earlier.states.lambda_b, earlier.states.num_states) == (2.75, 6)
  assert earlier.variant == 'cpu,rb275'
  assert (default.sampling.num_train, earlier.sampling.num_train) == (45_000, 20_000)
  assert default.model == earlier.model and default.train == earlier.train
  with pytest.raises(ValueError, match="pair='rb2' .*expected one of paper, rb275"):
    tfep_solvation.get_config('cpu,rb2')


def test_cpu_variant_shares_samples_and_table_with_the_transformer_one():
  """`cpu` and `cpu_transformer` draw the same samples and make the same table, so one
  workdir's samples.npz and endpoints.npz serve both; only the map and its steps differ."""
  column, transformer = (tfep_solvation.get_config(v) for v in ('cpu', 'cpu_transformer'))
  for section in ('states', 'sampling', 'eval'):
    assert column[section] == transformer[section], section
  assert (column.model.conditioner, transformer.model.conditioner) == ('column', 'transformer')
  assert column.model.radial_bins == transformer.model.radial_bins == 8
  assert (column.train.num_steps, tuple(column.train.lr_decay_steps)) == (3000, (1500, 2250))
  assert column.train.batch_size == transformer.train.batch_size == 128
