"""The local flow's parts: lattice graph, harmonic covariance, Gaussian base, LocalSolidFlow."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from experiments.configs import lennard_jones, monatomic_water
from flows.local.gaussian_base import GaussianDisplacementBase
from flows.local.lattice_graph import LatticeGraph
from flows.local.model import LocalSolidFlow
from systems import get_system, harmonic, make_system

# A small FCC Lennard-Jones crystal whose box exceeds twice the cutoff, so
# its energy is smooth at the lattice (no half-box ties).
SMALL_LJ = dict(
  potential='lennard_jones',
  lattice_name='fcc',
  num_particles=32,
  density=1.28,
  temperature=2.0,
  cutoff=1.4,
  linearize_below=0.8,
  min_distance=0.01,
)


def small_lj():
  return make_system('small_lj', **SMALL_LJ)


def graph(name, k, colour_shells=1):
  s = get_system(name)
  return LatticeGraph(s.lattice, s.box, s.basis_index, k, colour_shells)


# Shell radii in nearest-neighbour distances: diamond's second shell is at √(8/3).
@pytest.mark.parametrize(
  'name, k, shells, radius, num_colours',
  [
    ('mw_cubic_64', 16, 1, 1.0, 2),
    ('mw_hex_64', 12, 1, 1.0, 2),
    ('lj_256', 12, 1, 1.0, 4),
    ('mw_cubic_64', 16, 2, math.sqrt(8 / 3), 8),
    ('mw_cubic_216', 28, 2, math.sqrt(8 / 3), 8),
  ],
)
def test_colours_are_proper_and_neighbours_are_the_nearest_other_colours(
  name, k, shells, radius, num_colours
):
  g = graph(name, k, shells)
  s = get_system(name)
  sites = g.relative_sites
  d = sites[None] - sites[:, None]
  dist = np.linalg.norm(d - s.box * np.round(d / s.box), axis=-1)
  np.fill_diagonal(dist, np.inf)
  adjacent = dist < radius * g.nearest_distance * 1.001
  assert len(g.classes) == num_colours
  assert not np.any(adjacent & (g.colours[:, None] == g.colours[None, :]))
  for b in np.unique(s.basis_index):  # a colour per basis atom
    assert len(set(g.colours[s.basis_index == b])) == 1
  moved = np.concatenate([c.targets for c in g.classes])
  np.testing.assert_array_equal(np.sort(moved), np.arange(s.num_particles - 1))
  for colour, c in enumerate(g.classes):
    others = np.flatnonzero(g.colours != colour)
    for i, nbrs in zip(c.targets + 1, c.neighbours):
      assert set(nbrs) <= set(others)
      kth = np.sort(dist[i, others])[k - 1]
      assert np.all(dist[i, nbrs] <= kth + 1e-9) and len(set(nbrs)) == k


def test_colours_and_conditioner_shapes_do_not_depend_on_the_size():
  small, large = graph('mw_cubic_64', 16), graph('mw_cubic_216', 16)
  assert len(small.classes) == len(large.classes)
  for a, b in zip(small.classes, large.classes):
    assert a.neighbours.shape[1] == b.neighbours.shape[1] == 16
    # Every site of a family sees the same set of neighbour offsets.
    key = lambda offsets: sorted(map(tuple, np.round(offsets, 6)))
    assert key(a.offsets[0]) == key(b.offsets[0])


@pytest.mark.parametrize(
  'module, name',
  [(monatomic_water, s) for s in monatomic_water.SYSTEMS if s != 'mw_cubic_8']
  + [(lennard_jones, s) for s in lennard_jones.SYSTEMS],
)
def test_every_local_variant_closes_a_shell(module, name):
  k = module.get_config(f'{name},local').model.local.num_neighbours
  assert all(c.neighbours.shape[1] == k for c in graph(name, k).classes)


def test_hexagonal_neighbourhoods_agree_once_the_box_holds_the_shell():
  offsets = lambda g: [set(map(tuple, np.round(c.offsets[0], 6))) for c in g.classes]
  large = offsets(graph('mw_hex_216', 14))
  assert large == offsets(graph('mw_hex_512', 14))
  # At N = 64 (two cells in x) the minimum image merges two pairs of the
  # 1.915 d_nn shell: 12 of the 14 offsets remain.
  for small, whole in zip(offsets(graph('mw_hex_64', 12)), large):
    assert len(small) == 12 and small < whole


def test_with_two_colour_shells_a_diamond_particle_sees_both_shells_unmoved():
  for c in graph('mw_cubic_64', 16, colour_shells=2).classes:
    distances = np.linalg.norm(c.offsets, axis=-1)  # nearest-neighbour units
    np.testing.assert_allclose(np.sort(distances, axis=1)[:, :4], 1.0, rtol=1e-6)
    np.testing.assert_allclose(
      distances[np.argsort(distances, axis=1) >= 4].ravel(), math.sqrt(8 / 3), rtol=1e-6
    )


@pytest.mark.parametrize(
  'name, shells, message',
  [
    ('mw_hex_64', 2, 'share a basis index'),  # same-basis sites one cell edge apart
    ('lj_256', 2, 'share a basis index'),
    ('mw_cubic_64', 0, 'colour_shells=0 must be a positive integer'),
    ('mw_cubic_64', 99, 'colour_shells=99 exceeds the'),
  ],
)
def test_a_colouring_that_cannot_follow_the_basis_is_refused(name, shells, message):
  with pytest.raises(ValueError, match=message):
    graph(name, 4, shells)


def test_a_neighbour_count_that_splits_a_shell_is_refused():
  with pytest.raises(ValueError, match='num_neighbours=12 splits a shell.*4, 16'):
    graph('mw_cubic_64', 12)


def test_basin_test_agrees_with_the_nearest_site_assignment():
  s = get_system('mw_cubic_64')
  flow = LocalSolidFlow(
    s.lattice,
    s.box,
    s.basis_index,
    covariance=np.eye(189) * 0.7**2,
    num_layers=0,
    num_bins=4,
    num_neighbours=4,
    width=4,
    filter_width=4,
    spline_range=5.0,
    rngs=nnx.Rngs(0),
  )
  u = 1.6 * jax.random.normal(jax.random.key(0), (400, 63, 3))  # wide: many leave their cells
  sites = flow.graph.relative_sites
  y = np.asarray(u) + sites[1:]
  d = y[:, :, None, :] - sites
  d = d - s.box * np.round(d / s.box)
  nearest = np.argmin(np.sum(d * d, -1), -1)
  expected = nearest == np.arange(1, 64)
  assert 0.2 < expected.mean() < 0.8  # both outcomes occur
  np.testing.assert_array_equal(flow.in_own_cells(u), expected)
  np.testing.assert_array_equal(flow.in_basin(u), np.all(expected, axis=-1))


def test_hessian_by_cell_translations_equals_the_dense_hessian():
  s = small_lj()
  m = s.num_particles - 1
  with jax.enable_x64(True):
    sites = jnp.asarray(s.lattice, jnp.float64)
    dense = jax.hessian(lambda v: s.energy(sites.at[1:].add(v.reshape(m, 3))))(jnp.zeros(3 * m))
  np.testing.assert_allclose(harmonic.hessian(s), np.asarray(dense), atol=1e-9)


def test_empirical_covariance_recovers_the_covariance_of_its_samples():
  # Samples of the harmonic crystal (particle 0 on its site, the box shifted
  # by a random lattice-free offset): the moment-matched covariance, over the
  # 8 cell translations, converges to the harmonic one.
  s = small_lj()
  covariance = harmonic.covariance(s)
  rng = np.random.default_rng(3)
  n = 6000
  u = rng.multivariate_normal(np.zeros(len(covariance)), covariance, size=n).reshape(n, -1, 3)
  x = s.lattice + np.concatenate([np.zeros((n, 1, 3)), u], axis=1) + rng.uniform(0, 1, (n, 1, 3))
  x = x % s.box  # positions in the box, as samplers give them
  estimate = harmonic.empirical_covariance(s, x)
  scale = np.mean(np.diag(covariance))
  assert np.max(np.abs(estimate - covariance)) < 0.05 * scale
  np.testing.assert_allclose(np.diag(estimate), np.diag(covariance), rtol=0.06)
  with pytest.raises(ValueError, match=r'expected \(n, 32, 3\)'):
    harmonic.empirical_covariance(s, x[:, 1:])


def test_covariance_of_an_unstable_lattice_is_refused():
  unstable = make_system(
    'lj_simple_cubic', **dict(SMALL_LJ, lattice_name='simple_cubic', num_particles=64)
  )
  with pytest.raises(ValueError, match='not positive definite'):
    harmonic.covariance(unstable)


def test_gaussian_base_density_is_the_multivariate_normal():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  cov = a @ a.T + 0.5 * np.eye(6)
  base = GaussianDisplacementBase(cov)
  nnx.update(base, {'log_scale': nnx.Param(jnp.asarray(0.3))})
  with jax.enable_x64(True):
    u = jnp.asarray(rng.normal(size=(5, 2, 3)))
    expected = stats.multivariate_normal(np.zeros(6), np.exp(0.6) * cov).logpdf(
      np.asarray(u).reshape(5, 6)
    )
    np.testing.assert_allclose(base.log_prob(u), expected, rtol=1e-7)  # float32 Cholesky
  samples, log_q = base.sample_and_log_prob(jax.random.key(0), 20000)
  np.testing.assert_allclose(log_q, base.log_prob(samples), atol=1e-4)
  empirical = np.cov(np.asarray(samples).reshape(-1, 6).T)
  np.testing.assert_allclose(empirical, np.exp(0.6) * cov, atol=0.1 * np.abs(cov).max())


def test_gaussian_base_refuses_a_covariance_that_is_not_positive_definite():
  with pytest.raises(ValueError, match='positive definite.*-1'):
    GaussianDisplacementBase(np.diag([1.0, 2.0, -1.0]))


def local_flow(system, num_layers=2, seed=0, covariance=None, num_neighbours=12):
  m = system.num_particles - 1
  cov = np.eye(3 * m) * 0.05**2 if covariance is None else covariance
  return LocalSolidFlow(
    system.lattice,
    system.box,
    system.basis_index,
    covariance=cov,
    num_layers=num_layers,
    num_bins=4,
    num_neighbours=num_neighbours,
    width=8,
    filter_width=8,
    spline_range=4.0,
    rngs=nnx.Rngs(seed),
  )


@jax.jit
def _properties(graphdef, state, key, perm, shifts):
  """Everything the model tests check, in one compiled program (float64)."""
  flow = nnx.merge(graphdef, state)
  x, log_q, ok = flow.sample(key, 8)
  u, _ = flow.displacements(x)
  return dict(
    x=x,
    log_q=log_q,
    ok=ok,
    log_prob=flow.log_prob(x),
    permuted=flow.log_prob(x[:, perm]),
    shifted=flow.log_prob(x + shifts),
    translated=flow.log_prob(x + jnp.array([0.3, -1.1, 2.0])),
    base=flow.base.log_prob(u) - math.lgamma(flow.num_particles),
    round_trip=flow.inverse(flow.forward(u)[0])[0] - u,
  )


def properties(flow, seed=0):
  n = flow.num_particles
  perm = np.concatenate([[0], 1 + np.random.default_rng(seed).permutation(n - 1)])
  shifts = np.random.default_rng(seed + 1).integers(-2, 3, (n, 3)) * np.asarray(flow.box)
  graphdef, state = nnx.split(flow)
  with jax.enable_x64(True):
    state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state)
    return jax.tree.map(
      np.asarray, _properties(graphdef, state, jax.random.key(seed), perm, shifts)
    )


def test_local_flow_is_exact_invariant_and_periodic(perturb):
  p = properties(perturb(local_flow(small_lj()), 0.2, seed=1))
  assert p['x'].dtype == np.float64 and np.all(p['ok'])
  for key in ('log_prob', 'permuted', 'shifted', 'translated'):
    np.testing.assert_allclose(p[key], p['log_q'], atol=1e-9, err_msg=key)
  np.testing.assert_allclose(p['round_trip'], 0.0, atol=1e-10)
  assert np.abs(p['log_q'] - p['base']).max() > 0.1  # the layers do something


def test_fresh_local_flow_is_its_base():
  p = properties(local_flow(small_lj()))
  np.testing.assert_allclose(p['log_q'], p['base'], atol=1e-9)


def test_two_particles_in_one_cell_have_zero_density():
  flow = local_flow(small_lj())
  x, _, _ = flow.sample(jax.random.key(0), 2)
  crowded = x.at[:, 5].set(x[:, 6] + 0.05)
  log_prob = jax.jit(lambda y: flow.log_prob(y))
  assert np.all(np.isfinite(log_prob(x)))
  assert np.all(log_prob(crowded) == -np.inf)


def test_the_same_parameters_evaluate_at_two_sizes(perturb):
  small, large = get_system('mw_cubic_64'), get_system('mw_cubic_216')
  a = perturb(local_flow(small, covariance=np.eye(189) * 0.2**2, num_neighbours=16), 0.2, seed=1)
  b = local_flow(large, seed=5, covariance=np.eye(645) * 0.2**2, num_neighbours=16)
  nnx.update(b, nnx.state(a, nnx.Param))
  p = properties(b)
  np.testing.assert_allclose(p['log_prob'], p['log_q'], atol=1e-8)
  assert np.abs(p['log_q'] - p['base']).max() > 0.1


def tiny_flow(perturb, scale=0.25):
  """M = 2 flowed particles of 3 sites in a box of edge 2, randomised layers."""
  box = np.array([2.0, 2.0, 2.0])
  sites = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
  flow = LocalSolidFlow(
    sites,
    box,
    np.arange(3),
    covariance=np.eye(6) * scale**2,
    num_layers=2,
    num_bins=4,
    num_neighbours=2,
    width=8,
    filter_width=8,
    spline_range=4.0,
    rngs=nnx.Rngs(0),
  )
  return perturb(flow, 0.2, seed=1)


def test_log_det_is_the_log_det_of_the_autodiff_jacobian(perturb):
  flow = tiny_flow(perturb)
  graphdef, state = nnx.split(flow)
  with jax.enable_x64(True):
    state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state)
    u = 0.3 * jax.random.normal(jax.random.key(0), (4, 2, 3), jnp.float64)

    @jax.jit
    def both(state, u):
      f = nnx.merge(graphdef, state)
      jac = jax.vmap(jax.jacfwd(lambda v: f.forward(v.reshape(2, 3))[0].reshape(-1)))
      return f.forward(u)[1], jnp.linalg.slogdet(jac(u.reshape(4, 6)))[1]

    log_det, expected = both(state, u)
  np.testing.assert_allclose(log_det, expected, atol=1e-10)
  assert np.abs(log_det).min() > 1e-3


def test_density_integrates_to_one_over_the_torus(perturb, optimized_compilation):
  """∫ q over all labelled configurations of M = 2 particles, by uniform Monte Carlo.

  Independent of the flow's own bookkeeping: it checks the base normaliser,
  the Jacobians, the relabelling to sites and the ln M! together. The
  integral is the model's mass inside the basin (its samples' in-basin
  fraction), since samples outside it carry zero density.
  """
  flow = tiny_flow(perturb)
  box = np.asarray(flow.box)
  log_prob = jax.jit(lambda x: flow.log_prob(x))
  q = []
  for i in range(10):
    free = jax.random.uniform(jax.random.key(i), (200_000, 2, 3)) * box
    q.append(np.exp(np.asarray(log_prob(jnp.concatenate([jnp.zeros((200_000, 1, 3)), free], 1)))))
  q = np.concatenate(q)
  volume = np.prod(box) ** 2
  integral, error = volume * q.mean(), volume * q.std() / math.sqrt(q.size)
  in_basin = float(np.mean(flow.sample(jax.random.key(1), 100_000)[2]))
  assert error < 0.02
  assert abs(integral - in_basin) < 4 * error, (integral, error, in_basin)
  assert in_basin < 0.999  # some samples leave the basin: the test sees the indicator
