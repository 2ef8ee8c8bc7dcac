"""Reference HMC sampler: exact Gaussian moments, equipartition with and without a
fixed centre of mass, acceptance behaviour, per-chain energy arguments and the
statistical-inefficiency estimate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from systems import sampler

BETA = 1.5


def _harmonic(sites, spring):
  sites = jnp.asarray(sites, jnp.float32)
  return lambda x: 0.5 * spring * jnp.sum((x - sites) ** 2)


def test_gaussian_mean_and_variance_are_exact():
  centre, spring = np.array([[0.3, -1.0, 2.0]]), 4.0
  x0 = jnp.zeros((32, 1, 3))
  run = sampler.sample(
    _harmonic(centre, spring),
    x0,
    jax.random.PRNGKey(0),
    beta=BETA,
    num_steps=600,
    burn_in=200,
    step_size=0.3,
    num_leapfrog=2,
  )
  flat = run.samples.reshape(-1, 3)
  variance = 1.0 / (BETA * spring)
  stderr = np.sqrt(variance * np.max(run.statistical_inefficiency) / flat.shape[0])
  np.testing.assert_allclose(flat.mean(0), centre[0], atol=5 * stderr)
  np.testing.assert_allclose(flat.var(0), variance, rtol=0.05)
  assert run.samples.shape == (32, 600, 1, 3) and run.energies.shape == (32, 600)


@pytest.mark.parametrize('fix_centre_of_mass', [False, True])
def test_harmonic_crystal_equipartition(fix_centre_of_mass):
  n = 6
  sites = np.random.default_rng(1).uniform(0, 5, size=(n, 3))
  x0 = jnp.broadcast_to(jnp.asarray(sites, jnp.float32), (16, n, 3))
  run = sampler.sample(
    _harmonic(sites, 2.0),
    x0,
    jax.random.PRNGKey(1),
    beta=BETA,
    num_steps=800,
    burn_in=200,
    thin=2,
    step_size=0.2,
    fix_centre_of_mass=fix_centre_of_mass,
  )
  dof = 3 * (n - 1) if fix_centre_of_mass else 3 * n
  per_chain = run.energies.mean(axis=1)
  stderr = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
  assert abs(per_chain.mean() - dof / (2 * BETA)) < 4 * stderr + 1e-3
  if fix_centre_of_mass:
    drift = run.samples.mean(axis=2) - sites.mean(axis=0)
    assert np.max(np.abs(drift)) < 1e-5


def test_acceptance_tends_to_one_for_small_steps():
  energy = _harmonic(np.zeros((4, 3)), 10.0)
  x0 = 0.1 * jax.random.normal(jax.random.PRNGKey(2), (24, 4, 3))
  steps = np.repeat([1e-3, 0.1, 0.5], 8)
  run = sampler.sample(energy, x0, jax.random.PRNGKey(3), beta=1.0, num_steps=200, step_size=steps)
  acceptance = run.acceptance.reshape(3, 8).mean(axis=1)
  np.testing.assert_array_equal(run.step_size, steps.astype(np.float32))
  assert acceptance[0] > 0.999
  assert acceptance[0] > acceptance[1] > acceptance[2]


def test_burn_in_adapts_step_toward_target_acceptance():
  energy = _harmonic(np.zeros((4, 3)), 10.0)
  x0 = jnp.zeros((8, 4, 3))
  run = sampler.sample(
    energy,
    x0,
    jax.random.PRNGKey(4),
    beta=1.0,
    num_steps=400,
    burn_in=400,
    step_size=1e-3,
    target_acceptance=0.7,
  )
  assert np.all(run.step_size > 0.05)
  assert abs(run.acceptance.mean() - 0.7) < 0.08


def test_energy_args_are_per_chain():
  def energy(x, spring):
    return 0.5 * spring * jnp.sum(x**2)

  springs = jnp.array([1.0, 1.0, 16.0, 16.0])
  run = sampler.sample(
    energy,
    jnp.zeros((4, 2, 3)),
    jax.random.PRNGKey(5),
    beta=1.0,
    num_steps=1000,
    burn_in=200,
    step_size=0.1,
    energy_args=(springs,),
  )
  variance = run.samples.reshape(4, -1).var(axis=1)
  np.testing.assert_allclose(variance, 1.0 / np.asarray(springs), rtol=0.2)


def test_statistical_inefficiency_of_ar1_and_constant_series():
  phi, rng = 0.8, np.random.default_rng(0)
  noise = rng.normal(size=(4, 50_000))
  series = np.zeros_like(noise)
  for t in range(1, noise.shape[1]):
    series[:, t] = phi * series[:, t - 1] + noise[:, t]
  g = sampler.statistical_inefficiency(series)
  np.testing.assert_allclose(g, (1 + phi) / (1 - phi), rtol=0.15)
  assert sampler.statistical_inefficiency(np.ones(10)) == 1.0


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(x0=jnp.zeros((2, 3))), 'x0'),
    (dict(num_steps=10, thin=3), 'thin'),
    (dict(step_size=-0.1), 'step_size'),
    (dict(step_size=np.ones(3)), 'step_size'),
    (dict(target_acceptance=1.0), 'target_acceptance'),
    (dict(energy_args=(jnp.ones(3),)), 'energy_args'),
  ],
)
def test_bad_arguments_raise(kwargs, match):
  args = dict(x0=jnp.zeros((2, 2, 3)), num_steps=10, step_size=0.1)
  args.update(kwargs)
  x0 = args.pop('x0')
  with pytest.raises(ValueError, match=match):
    sampler.sample(lambda x, *a: jnp.sum(x**2), x0, jax.random.PRNGKey(0), beta=1.0, **args)
