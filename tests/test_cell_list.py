"""The cell list against the dense O(N²) pairs: the same neighbour list to the bit,
the same energies and gradients, overflow caught, non-finite input, symmetries."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from systems import box as box_lib
from systems import cell_list, get_system, lennard_jones, make_system, neighbour_list, pair_terms
from systems import monatomic_water as mw

MW = get_system('mw_cubic_216')  # 4 x 4 x 4 cells, forced: 'auto' keeps it dense
# 108 fcc particles in 3 x 3 x 3 cells of edge > 2.7 (a dilute LJ solid, for speed).
LJ = make_system(
  'lj_dilute',
  'lennard_jones',
  'fcc',
  108,
  0.2,
  2.0,
  cutoff=2.7,
  linearize_below=0.8,
  min_distance=0.01,
)


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def _thermal(system, scale, seed=0, batch=()):
  noise = np.random.default_rng(seed).normal(size=(*batch, *system.lattice.shape))
  return jnp.asarray(system.lattice + scale * noise)


def _edge(system):
  grid = cell_list.choose('cell_list', system.box, system.cutoff, system.num_particles)
  return system.box / np.array(grid.cells)


def _configurations():
  """Thermal mW configurations, permuted, and with coordinates moved onto cell faces."""
  rng = np.random.default_rng(7)
  thermal = [_thermal(MW, scale, seed) for seed, scale in enumerate((0.15, 0.3, 0.5))]
  permuted = thermal[1][rng.permutation(MW.num_particles)]
  edge = _edge(MW)
  snap = rng.random(thermal[0].shape) < 0.3
  faces = (jnp.round(thermal[0] / edge + cell_list.FACE_OFFSET) - cell_list.FACE_OFFSET) * edge
  snapped = jnp.where(snap, faces, thermal[0])
  return jnp.stack([*thermal, permuted, snapped])


def _three_body(dx, r, nbrs):
  """Three-body energy per particle from the neighbour slots of displacements dx and distances r."""
  dx = jnp.take_along_axis(dx, nbrs.indices[..., None], axis=-2)
  return mw.triplet_sum(dx, jnp.take_along_axis(r, nbrs.indices, axis=-1), nbrs.mask)


@jax.jit
def _lists(x):
  """(dense, cell list) of (particle indices, mask, count, distances, three-body per particle)."""
  box = jnp.asarray(MW.box, x.dtype)
  capacity = MW.neighbour_capacity
  # Dense: the full distance matrix, as before the cell list.
  r = pair_terms.distances(x, box)
  nbrs = neighbour_list.build(r, mw.CUTOFF, capacity)
  three = _three_body(box_lib.pairwise_displacements(x, box), r, nbrs)
  dense = (nbrs.indices, nbrs.mask, nbrs.count, jnp.take_along_axis(r, nbrs.indices, -1), three)
  # Cell list: slots of the candidates, mapped back to particle indices.
  grid = cell_list.choose('cell_list', MW.box, mw.CUTOFF, MW.num_particles)
  pairs = cell_list.pairs(x, box, grid)
  r = pair_terms.safe_norm(pairs.displacements)
  nbrs = neighbour_list.build(r, mw.CUTOFF, capacity, pairs.mask)
  indices = jnp.take_along_axis(pairs.indices, nbrs.indices, axis=-1)
  three = _three_body(pairs.displacements, r, nbrs)
  cells = (indices, nbrs.mask, nbrs.count, jnp.take_along_axis(r, nbrs.indices, -1), three)
  return dense, cells


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_neighbour_list_and_three_body_term_equal_the_dense_build_bit_for_bit(dtype):
  x = _configurations().astype(dtype)
  (idx_d, mask_d, count_d, r_d, three_d), (idx_c, mask_c, count_c, r_c, three_c) = _lists(x)
  assert mask_d.any(axis=-1).all() and count_d.max() <= MW.neighbour_capacity
  np.testing.assert_array_equal(mask_c, mask_d)
  np.testing.assert_array_equal(count_c, count_d)
  np.testing.assert_array_equal(np.where(mask_c, r_c, 0.0), np.where(mask_d, r_d, 0.0))
  np.testing.assert_array_equal(
    np.sort(np.where(mask_c, idx_c, -1), axis=-1), np.sort(np.where(mask_d, idx_d, -1), axis=-1)
  )
  np.testing.assert_array_equal(three_c, three_d)


def _energy(potential, method, training=False, **kwargs):
  """Energy (...) of positions (..., N, 3) of MW or LJ, by `method`; training: linearised."""
  system = MW if potential == 'mw' else LJ
  linearization = system.linearization if training else None
  options = dict(method=method, linearization=linearization, strict=not training, **kwargs)
  if potential == 'mw':
    return lambda y: mw.energy(y, MW.box, **options)
  return lambda y: lennard_jones.energy(y, LJ.box, LJ.cutoff, **options)


def _value_and_grad(potential, method, training=False):
  """Jitted per-configuration (energies (B,), gradients (B, N, 3)); compiled once per file."""
  return _jitted_value_and_grad(potential, method, training)


@functools.cache
def _jitted_value_and_grad(potential, method, training):
  return jax.jit(jax.vmap(jax.value_and_grad(_energy(potential, method, training))))


def _system(potential):
  return MW if potential == 'mw' else LJ


def _batch(potential, *configurations, seed=0):
  """(4, N, 3): the given configurations, then thermal ones (one batch shape, one compile)."""
  system = _system(potential)
  scale = 0.3 if potential == 'mw' else 0.1
  thermal = _thermal(system, scale, seed, batch=(4 - len(configurations),))
  return jnp.concatenate([jnp.stack(configurations), thermal]) if configurations else thermal


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('potential', ['mw', 'lj'])
def test_energies_and_gradients_equal_the_dense_path(potential, training):
  x = _batch(potential, seed=3)
  e_dense, g_dense = _value_and_grad(potential, 'dense', training)(x)
  e_cells, g_cells = _value_and_grad(potential, 'cell_list', training)(x)
  assert np.abs(g_dense).max() > 1.0
  np.testing.assert_allclose(e_cells, e_dense, rtol=1e-12)
  np.testing.assert_allclose(g_cells, g_dense, rtol=1e-10, atol=1e-11 * np.abs(g_dense).max())
  if potential == 'mw':
    linearization = MW.linearization if training else None
    reference = mw.reference_energy(x, MW.box, linearization=linearization)
    np.testing.assert_allclose(e_cells, reference, rtol=1e-12)


@pytest.mark.parametrize('potential', ['mw', 'lj'])
def test_hessian_vector_products_equal_the_dense_path(potential):
  # Forward over reverse, as systems.harmonic.hessian takes it (LJ: through its custom VJP).
  x = _batch(potential, seed=4)[0]
  v = jnp.asarray(np.random.default_rng(5).normal(size=x.shape))
  products = [
    jax.jit(lambda y, w: jax.jvp(jax.grad(_energy(potential, method)), (y,), (w,))[1])(x, v)  # noqa: B023
    for method in ('dense', 'cell_list')
  ]
  assert np.abs(products[0]).max() > 1.0
  np.testing.assert_allclose(
    products[1], products[0], rtol=1e-9, atol=1e-9 * np.abs(products[0]).max()
  )


def _occupancy(system, x):
  """The most particles of x (N, 3) in one cell, counted in numpy."""
  cells = cell_list.cells_per_axis(system.box, system.cutoff)
  fraction = np.mod(x, system.box) * (np.array(cells) / system.box) + cell_list.FACE_OFFSET
  axis_cell = np.mod(np.floor(fraction).astype(int), cells)
  return np.bincount(np.ravel_multi_index(tuple(axis_cell.T), cells)).max()


def _piled(system, count, seed=0):
  """The lattice with `count` particles moved to random points of cell (0, 0, 0)."""
  rng = np.random.default_rng(seed)
  x = np.array(system.lattice)
  moved = rng.choice(np.arange(1, system.num_particles), count, replace=False)
  x[moved] = (0.5 - cell_list.FACE_OFFSET + rng.uniform(-0.45, 0.45, (count, 3))) * _edge(system)
  return jnp.asarray(x)


@pytest.mark.parametrize('potential', ['mw', 'lj'])
def test_a_cell_overflow_is_an_error_when_eager_and_nan_when_traced(potential):
  system = _system(potential)
  grid = cell_list.choose('cell_list', system.box, system.cutoff, system.num_particles)
  assert grid.capacity == cell_list.default_capacity(system.num_particles, grid.num_cells)
  piled = _piled(system, grid.capacity + 2)
  occupancy = _occupancy(system, piled)
  assert occupancy > grid.capacity >= _occupancy(system, system.lattice)
  x = _batch(potential, jnp.asarray(system.lattice), piled, seed=10)
  with pytest.raises(
    ValueError, match=f'a cell holds {occupancy} particles but the cell capacity is {grid.capacity}'
  ):
    _energy(potential, 'cell_list')(x)
  e, g = map(np.asarray, _value_and_grad(potential, 'cell_list')(x))
  e_dense = np.asarray(_value_and_grad(potential, 'dense')(x)[0])
  assert np.isnan(e[1]) and np.isnan(g[1]).all()
  assert np.isfinite(g[[0, 2, 3]]).all()
  np.testing.assert_allclose(e[[0, 2, 3]], e_dense[[0, 2, 3]], rtol=1e-12)
  # A capacity that holds the pile gives the dense energy.
  roomy = _energy(potential, 'cell_list', cell_capacity=occupancy)(x)
  np.testing.assert_allclose(roomy, e_dense, rtol=1e-12)
  # Training (not strict): finite, the extra particles left out of every pair.
  assert np.isfinite(_value_and_grad(potential, 'cell_list', training=True)(x)[0]).all()


def test_system_cell_capacity_reaches_the_energy():
  system = make_system(
    'mw_1000_tight',
    'monatomic_water',
    'cubic_diamond',
    1000,
    0.033567184,
    200.0,
    linearize_below=1.2,
    min_distance=0.01,
    cell_capacity=2,
  )
  occupancy = _occupancy(system, system.lattice)
  assert occupancy > 2
  with pytest.raises(
    ValueError, match=f'a cell holds {occupancy} particles but the cell capacity is 2'
  ):
    system.energy(system.lattice)


@pytest.mark.parametrize('potential', ['mw', 'lj'])
def test_a_non_finite_configuration_is_nan_alone_and_never_an_overflow(potential):
  x = _batch(potential, seed=6)[0]
  # The all-NaN configuration puts every particle in one cell: still no overflow.
  bad = [x.at[5, 1].set(jnp.nan), jnp.full_like(x, jnp.nan), x.at[0, 0].set(jnp.inf)]
  batch = jnp.stack([x, *bad])
  e = _energy(potential, 'cell_list')(batch)  # eager: no error
  assert np.isnan(e[1:]).all()
  e_dense, _ = _value_and_grad(potential, 'dense')(jnp.stack([x] * 4))
  np.testing.assert_allclose(e[0], e_dense[0], rtol=1e-12)
  for training in (False, True):
    e, g = _value_and_grad(potential, 'cell_list', training)(batch)
    assert np.isfinite(e[0]) and np.isfinite(g[0]).all() and np.isnan(e[1:]).all()


@pytest.mark.parametrize('potential', ['mw', 'lj'])
def test_invariant_under_permutation_translation_and_box_shifts(potential):
  system = _system(potential)
  x = _batch(potential, seed=8)[0]
  rng = np.random.default_rng(9)
  moved = [
    x[rng.permutation(system.num_particles)],
    x + jnp.asarray(rng.normal(size=3) * system.box),
    x + jnp.asarray(rng.integers(-3, 4, size=x.shape) * system.box),
  ]
  for training in (False, True):
    e, _ = _value_and_grad(potential, 'cell_list', training)(jnp.stack([x, *moved]))
    np.testing.assert_allclose(e[1:], e[0], rtol=1e-12)


def test_auto_uses_the_cell_list_where_it_pays():
  def grid(name):
    s = get_system(name)
    return cell_list.choose('auto', s.box, s.cutoff, s.num_particles)

  for name in ('mw_cubic_64', 'mw_cubic_216', 'mw_cubic_512', 'lj_500', 'lj_1372'):
    assert grid(name) is None, name
  assert grid('mw_cubic_1728') == cell_list.Grid((8, 8, 8), 11)  # mean occupancy 3.375
  assert grid('mw_hex_1000').cells == (5, 8, 8)
  assert cell_list.choose('cell_list', get_system('lj_864').box, 2.7, 864).cells == (3, 3, 3)


def test_bad_methods_are_refused():
  small = get_system('mw_cubic_64')
  with pytest.raises(ValueError, match=r'needs >= 3 cells.*gives \(2, 2, 2\)'):
    mw.energy(small.lattice, small.box, method='cell_list')
  with pytest.raises(ValueError, match="'cells'.*'auto', 'dense', 'cell_list'"):
    mw.energy(small.lattice, small.box, method='cells')
  with pytest.raises(ValueError, match='traced'):
    jax.jit(lambda b: mw.energy(MW.lattice, b, method='cell_list'))(MW.box)
  # A traced box cannot have a grid: 'auto' takes the dense pairs.
  traced = jax.jit(lambda b: mw.energy(MW.lattice, b))(MW.box)
  np.testing.assert_allclose(traced, mw.energy(MW.lattice, MW.box), rtol=1e-12)
