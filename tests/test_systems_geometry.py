"""Periodic box and lattice geometry, checked against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from systems import box as box_lib
from systems import lattices

MW_DENSITY = 0.033567184


def _neighbour_shells(lattice, num_shells):
  """(distance, count) of the first shells around every site; asserts all sites agree."""
  dx = lattice.positions[None] - lattice.positions[:, None]
  r = np.linalg.norm(dx - lattice.box * np.round(dx / lattice.box), axis=-1)
  rows = np.sort(np.round(r, 9), axis=1)[:, 1:]
  np.testing.assert_array_equal(rows, np.broadcast_to(rows[0], rows.shape))
  values, counts = np.unique(rows[0], return_counts=True)
  return values[:num_shells], counts[:num_shells]


def test_wrap_and_minimum_image_by_hand():
  box = np.array([2.0, 3.0, 4.0])
  x = jnp.array([[-0.5, 7.0, 4.0], [2.0, -3.0, 1.5]])
  np.testing.assert_allclose(box_lib.wrap(x, box), [[1.5, 1.0, 0.0], [0.0, 0.0, 1.5]])
  dx = jnp.array([[1.5, -2.0, 9.0], [0.4, 1.4, -1.9]])
  np.testing.assert_allclose(
    box_lib.minimum_image(dx, box), [[-0.5, 1.0, 1.0], [0.4, 1.4, -1.9]], atol=1e-6
  )
  assert box_lib.volume(box) == 24.0


@pytest.mark.parametrize('bad', [[1.0, 0.0, 1.0], [1.0, -2.0, 1.0], [1.0, 1.0], [np.inf, 1, 1]])
def test_bad_box_is_rejected(bad):
  with pytest.raises(ValueError, match='Box'):
    box_lib.check_box(bad)
  with pytest.raises(ValueError, match='Box'):
    box_lib.minimum_image(jnp.zeros((2, 3)), bad)


@pytest.mark.parametrize(
  'name, n, cells, density',
  [
    ('simple_cubic', 27, 3, 1.0),
    ('fcc', 32, 2, 1.28),
    ('fcc', 256, 4, 1.28),
    ('fcc', 500, 5, 1.28),
    ('cubic_diamond', 8, 1, MW_DENSITY),
    ('cubic_diamond', 512, 4, MW_DENSITY),
    ('hexagonal_ice', 64, 2, MW_DENSITY),
    ('hexagonal_ice', 216, 3, MW_DENSITY),
    ('hexagonal_ice', 512, 4, MW_DENSITY),
  ],
)
def test_lattice_counts_density_and_placement(name, n, cells, density):
  lattice = lattices.make_lattice(name, n, density)
  assert lattice.positions.shape == (n, 3) and lattice.positions.dtype == np.float64
  np.testing.assert_array_equal(lattice.positions[0], 0.0)
  assert np.all((lattice.positions >= 0) & (lattice.positions < lattice.box))
  np.testing.assert_allclose(n / np.prod(lattice.box), density, rtol=1e-12)
  a = lattice.box[0] / cells  # edge of the conventional cell
  if name == 'hexagonal_ice':
    np.testing.assert_allclose(lattice.box / cells, a * np.array([1, np.sqrt(3), np.sqrt(8 / 3)]))
  else:
    np.testing.assert_allclose(lattice.box, lattice.box[0])
  # No two sites coincide modulo the box.
  assert len(np.unique(np.round(lattice.positions, 6), axis=0)) == n


def test_sites_per_primitive_cell():
  assert [lattices.UNIT_CELLS[k].sites_per_primitive_cell for k in lattices.LATTICE_NAMES] == [
    1,
    1,
    2,
    4,
  ]


def test_fcc_shells():
  lattice = lattices.make_lattice('fcc', 256, 1.28)
  a = (4 / 1.28) ** (1 / 3)
  r, counts = _neighbour_shells(lattice, 3)
  np.testing.assert_allclose(r, a * np.array([1 / np.sqrt(2), 1, np.sqrt(1.5)]))
  np.testing.assert_array_equal(counts, [12, 6, 24])


@pytest.mark.parametrize('name', ['cubic_diamond', 'hexagonal_ice'])
def test_ice_shells_are_tetrahedral(name):
  # Both ices at the same density: 4 nearest neighbours at 3/4 of the cubic
  # diamond cell's body diagonal / 2, then 12 second neighbours at a/√2.
  lattice = lattices.make_lattice(name, 512 if name == 'cubic_diamond' else 216, MW_DENSITY)
  a = (8 / MW_DENSITY) ** (1 / 3)
  r, counts = _neighbour_shells(lattice, 2)
  np.testing.assert_allclose(r, [a * np.sqrt(3) / 4, a / np.sqrt(2)], rtol=1e-9)
  np.testing.assert_array_equal(counts, [4, 12])
  # Bond angles about site 0 are all tetrahedral: cos θ = -1/3.
  dx = lattice.positions - lattice.positions[0]
  dx -= lattice.box * np.round(dx / lattice.box)
  bonds = dx[np.isclose(np.linalg.norm(dx, axis=1), r[0])]
  cosines = (bonds @ bonds.T)[np.triu_indices(4, 1)] / r[0] ** 2
  np.testing.assert_allclose(cosines, -1 / 3, atol=1e-12)


def test_simple_cubic_positions_by_hand():
  lattice = lattices.make_lattice('simple_cubic', 8, 1 / 8)
  np.testing.assert_allclose(lattice.box, [4.0, 4.0, 4.0])
  assert {tuple(p) for p in lattice.positions} == {
    (i, j, k) for i in (0, 2) for j in (0, 2) for k in (0, 2)
  }


@pytest.mark.parametrize(
  'name, n',
  [('fcc', 31), ('fcc', 64), ('cubic_diamond', 16), ('hexagonal_ice', 8 * 5), ('simple_cubic', 0)],
)
def test_lattice_must_tile(name, n):
  with pytest.raises(ValueError, match=f'num_particles={n}'):
    lattices.make_lattice(name, n, 1.0)


@pytest.mark.parametrize('density', [0.0, -1.0, np.nan])
def test_lattice_density_must_be_positive(density):
  with pytest.raises(ValueError, match='Density'):
    lattices.make_lattice('fcc', 32, density)


def test_unknown_lattice():
  with pytest.raises(ValueError, match="'bcc'.*fcc"):
    lattices.make_lattice('bcc', 16, 1.0)
