"""LJ and mW energies in float64: reference values, hand-computed cases,
symmetries, forces, the neighbour list against the dense sum, and the training
linearisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from systems import SYSTEM_NAMES, get_system, lennard_jones, make_system, pair_terms
from systems import monatomic_water as mw

BIG_BOX = np.array([20.0, 20.0, 20.0])


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def _perturbed(system, scale, seed=0, compress=1.0):
  """Lattice plus Gaussian noise of std `scale`, optionally scaled by `compress`."""
  noise = np.random.default_rng(seed).normal(size=system.lattice.shape)
  return jnp.asarray(compress * system.lattice + scale * noise)


@pytest.mark.parametrize(
  'name, expected',
  [
    ('lj_32', -4.735996),
    *[(f'lj_{n}', -6.303226) for n in (256, 500, 864, 1372)],
    *[(n, -12.377985) for n in SYSTEM_NAMES if n.startswith('mw_')],
  ],
)
def test_perfect_lattice_energy_per_particle(name, expected):
  system = get_system(name)
  x = jnp.asarray(system.lattice)
  assert x.dtype == jnp.float64
  for fn in (system.energy, system.training_energy):
    np.testing.assert_allclose(fn(x) / system.num_particles, expected, atol=1e-5)


def test_lennard_jones_pair_by_hand():
  # Two particles 1.1 apart directly, and 1.3 apart across the boundary.
  for x, r in [
    ([[1.0, 1.0, 1.0], [2.1, 1.0, 1.0]], 1.1),
    ([[0.2, 5.0, 5.0], [8.9, 5.0, 5.0]], 1.3),
  ]:
    shift = 4 * (2.7**-12 - 2.7**-6)
    expected = 4 * (r**-12 - r**-6) - shift
    np.testing.assert_allclose(
      lennard_jones.energy(jnp.array(x), [10.0, 10.0, 10.0], 2.7), expected, rtol=1e-12
    )
  # Beyond the cutoff: zero.
  assert lennard_jones.energy(jnp.array([[0.0, 0, 0], [2.8, 0, 0]]), BIG_BOX, 2.7) == 0.0


def test_lennard_jones_is_zero_at_cutoff_and_continuous():
  r = jnp.array([2.7 - 1e-9])
  np.testing.assert_allclose(lennard_jones.potential(r, 2.7), 0.0, atol=1e-9)


def test_monatomic_water_three_particles_by_hand():
  # i at the origin, j and k at distance d along x and y: angles 90°, 45°, 45°.
  d = 2.8
  x = jnp.array([[5.0, 5.0, 5.0], [5.0 + d, 5.0, 5.0], [5.0, 5.0 + d, 5.0]])
  a_sigma = 1.8 * 2.3925
  eps, sig = 6.189, 2.3925
  cos0 = np.cos(np.deg2rad(109.47))

  def phi2(r):
    return 7.049556277 * eps * (0.6022245584 * (sig / r) ** 4 - 1) * np.exp(sig / (r - a_sigma))

  def g(r):
    return np.exp(1.2 * sig / (r - a_sigma))

  lam_eps = 23.15 * eps
  expected = (
    2 * phi2(d)
    + phi2(d * np.sqrt(2))
    + lam_eps * (0 - cos0) ** 2 * g(d) ** 2
    + 2 * lam_eps * (np.sqrt(0.5) - cos0) ** 2 * g(d) * g(d * np.sqrt(2))
  )
  np.testing.assert_allclose(mw.energy(x, BIG_BOX), expected, rtol=1e-12)
  np.testing.assert_allclose(mw.reference_energy(x, BIG_BOX), expected, rtol=1e-12)


SYMMETRY_SYSTEMS = ['lj_32', 'mw_cubic_64', 'mw_hex_64']


@pytest.mark.parametrize('name', SYMMETRY_SYSTEMS)
def test_permutation_translation_and_box_shift_invariance(name):
  system = get_system(name)
  x = _perturbed(system, 0.05 * system.thermal_wavelength)
  rng = np.random.default_rng(1)
  moved = [
    x[rng.permutation(system.num_particles)],
    x + jnp.asarray(rng.normal(size=3) * system.box),
    x + jnp.asarray(rng.integers(-3, 4, size=x.shape) * system.box),
  ]
  for fn in (system.energy, system.training_energy):
    np.testing.assert_allclose(fn(jnp.stack(moved)), fn(x), rtol=1e-10)


@pytest.mark.parametrize('name', ['lj_32', 'mw_cubic_64'])
def test_forces_match_central_finite_differences(name):
  system = get_system(name)
  x = _perturbed(system, 0.05 * system.thermal_wavelength, seed=2)
  rng = np.random.default_rng(3)
  h = 1e-5 * system.thermal_wavelength
  directions = jnp.asarray(rng.normal(size=(3, *x.shape)))
  for fn in (system.energy, system.training_energy):
    forces = -jax.grad(fn)(x)
    fd = -(fn(x + h * directions) - fn(x - h * directions)) / (2 * h)
    np.testing.assert_allclose(jnp.sum(forces * directions, axis=(1, 2)), fd, rtol=1e-6)


@pytest.mark.parametrize(
  'name, scale, compress',
  [
    ('mw_cubic_64', 0.2, 1.0),
    ('mw_cubic_64', 0.6, 1.0),
    ('mw_hex_64', 0.3, 1.0),
    ('mw_cubic_64', 0.4, 0.85),
    ('mw_cubic_8', 0.3, 1.0),
  ],
)
def test_neighbour_list_matches_dense_reference(name, scale, compress):
  system = get_system(name)
  box = compress * system.box
  x = _perturbed(system, scale, seed=4, compress=compress)
  e_nl, g_nl = jax.value_and_grad(lambda y: mw.energy(y, box))(x)
  e_dense, g_dense = jax.value_and_grad(lambda y: mw.reference_energy(y, box))(x)
  np.testing.assert_allclose(e_nl, e_dense, rtol=1e-11)
  np.testing.assert_allclose(g_nl, g_dense, rtol=1e-9, atol=1e-9)


def test_neighbour_list_overflow_is_detected():
  system = get_system('mw_cubic_64')
  x = jnp.asarray(system.lattice)  # every particle has exactly 4 neighbours
  with pytest.raises(ValueError, match='4 neighbours.*capacity is 3'):
    mw.energy(x, system.box, capacity=3)
  assert np.isnan(jax.jit(lambda y: mw.energy(y, system.box, capacity=3))(x))
  assert np.isnan(jax.jit(jax.grad(lambda y: mw.energy(y, system.box, capacity=3)))(x)).all()
  # Capacity 4 suffices on the lattice but not when compressed (16 neighbours);
  # under vmap only the overflowing configuration becomes NaN.
  batch = jnp.stack([x, 0.85 * x])
  energies = jax.vmap(lambda y: mw.energy(y, system.box, capacity=4))(batch)
  np.testing.assert_allclose(energies[0], mw.reference_energy(x, system.box), rtol=1e-12)
  assert np.isnan(energies[1])
  # Non-strict keeps the 3 nearest of 4 neighbours: 3 of the 6 equal angles.
  pair = pair_terms.pair_sum(pair_terms.distances(x, system.box), mw.two_body, mw.CUTOFF)
  kept = mw.energy(x, system.box, capacity=3, strict=False) - pair
  np.testing.assert_allclose(
    kept, 0.5 * (mw.reference_energy(x, system.box) - pair), rtol=1e-6, atol=1e-12
  )


def test_system_overflow_with_small_capacity():
  system = make_system(
    'tiny',
    'monatomic_water',
    'cubic_diamond',
    64,
    0.033567184,
    200.0,
    linearize_below=1.2,
    min_distance=0.01,
    neighbour_capacity=2,
  )
  x = jnp.asarray(system.lattice)
  with pytest.raises(ValueError, match='capacity is 2'):
    system.energy(x)
  assert np.isnan(jax.jit(system.energy)(x))
  assert np.isfinite(jax.jit(system.training_energy)(x))


def _two_particles(r):
  return jnp.array([[1.0, 1.0, 1.0], [1.0 + r, 1.0, 1.0]])


@pytest.mark.parametrize('name', ['lj_256', 'mw_cubic_64'])
def test_training_energy_equals_energy_above_threshold(name):
  system = get_system(name)
  x = _perturbed(system, 0.05 * system.thermal_wavelength, seed=5)
  r = pair_terms.distances(x, system.box)
  assert np.min(r + jnp.eye(system.num_particles) * 99) > system.linearization.linearize_below
  np.testing.assert_allclose(system.training_energy(x), system.energy(x), rtol=1e-14)


@pytest.mark.parametrize(
  'potential, phi, cutoff, r0, dmin',
  [
    ('lj', lambda r: 4 * (r**-12 - r**-6) - 4 * (2.7**-12 - 2.7**-6), 2.7, 0.8, 0.01),
    ('mw', mw.two_body, mw.CUTOFF, 1.2, 0.01),
  ],
)
def test_training_pair_energy_is_tangent_below_r0(potential, phi, cutoff, r0, dmin):
  linearization = pair_terms.Linearization(r0, dmin)
  if potential == 'lj':

    def energy(x):
      return lennard_jones.energy(x, BIG_BOX, cutoff, linearization=linearization)

    dphi0 = 4 * (-12 * r0**-13 + 6 * r0**-7)
  else:

    def energy(x):
      return mw.energy(x, BIG_BOX, linearization=linearization)

    dphi0 = (phi(r0 + 1e-6) - phi(r0 - 1e-6)) / 2e-6
  for r in (0.3, 0.7 * r0, r0 - 1e-3):
    np.testing.assert_allclose(energy(_two_particles(r)), phi(r0) + (r - r0) * dphi0, rtol=1e-8)
  # Above r0 the physical potential; below min_distance, clipped to it.
  np.testing.assert_allclose(energy(_two_particles(r0 + 0.1)), phi(r0 + 0.1), rtol=1e-12)
  np.testing.assert_allclose(
    energy(_two_particles(dmin / 2)), energy(_two_particles(dmin)), rtol=1e-12
  )


@pytest.mark.parametrize('name', ['lj_256', 'mw_cubic_64'])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_training_energy_finite_for_coincident_particles(name, dtype):
  system = get_system(name)
  x = jnp.asarray(system.lattice, dtype=dtype)
  x = x.at[1].set(x[0]).at[2].set(x[0] + 1e-7)
  e, g = jax.value_and_grad(system.training_energy)(x)
  assert e.dtype == dtype and np.isfinite(e) and np.all(np.isfinite(g))
  assert e > system.energy(jnp.asarray(system.lattice, dtype=dtype))
  assert np.isinf(system.energy(x.at[2].set(x[0])))


def test_lennard_jones_analytic_force_equals_autodiff_of_the_pair_sum():
  # energy() differentiates through a custom VJP (the analytic force); the
  # generic pair sum of pair_terms, differentiated by autodiff, must agree.
  rng = np.random.default_rng(3)
  box = np.array([4.0, 4.4, 3.8])
  x = jnp.asarray(rng.uniform(0.0, 1.0, (3, 12, 3)) * box)
  cutoff, epsilon, sigma = 1.9, 0.7, 1.1
  phi = lambda r: lennard_jones.potential(r, cutoff, epsilon, sigma)
  reference = lambda x: pair_terms.pair_energy(x, jnp.asarray(box), phi, cutoff)
  fast = lambda x: lennard_jones.energy(x, box, cutoff, epsilon=epsilon, sigma=sigma)
  np.testing.assert_allclose(fast(x), reference(x), rtol=1e-12, atol=1e-10)
  grad_fast = jax.grad(lambda x: jnp.sum(fast(x) * jnp.arange(1.0, 4.0)))(x)
  grad_reference = jax.grad(lambda x: jnp.sum(reference(x) * jnp.arange(1.0, 4.0)))(x)
  assert np.abs(grad_reference).max() > 1.0  # some pairs are close
  np.testing.assert_allclose(grad_fast, grad_reference, rtol=1e-10, atol=1e-9)
