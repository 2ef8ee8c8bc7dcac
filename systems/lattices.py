"""Crystal lattices generated from a conventional cell tiled n x n x n times.

Positions are float64, shape (N, 3), in the length unit of the density; site 0
sits at the origin and all sites lie in the box [0, L).
"""

import dataclasses

import numpy as np

from systems.box import wrap

_SQRT3 = np.sqrt(3.0)
_C_OVER_A = np.sqrt(8.0 / 3.0)  # ideal hexagonal c/a


@dataclasses.dataclass(frozen=True)
class UnitCell:
  """A conventional cell: fractional basis (M, 3) and edge ratios (3,) to edge a."""

  basis: np.ndarray
  edge_ratios: np.ndarray
  sites_per_primitive_cell: int


def _hexagonal_ice_basis() -> np.ndarray:
  # Orthorhombic (a, √3 a, c) cell of hexagonal diamond: two hexagonal cells,
  # layers at z = 0 and 1/2, each bonded straight up to z + 3/8.
  layer_a = [(0.0, 1 / 3), (0.5, 5 / 6)]
  layer_b = [(0.5, 1 / 6), (0.0, 2 / 3)]
  sites = [
    (x, y, z + dz)
    for dz in (0.0, 3 / 8)
    for (x, y), z in [(p, 0.0) for p in layer_a] + [(p, 0.5) for p in layer_b]
  ]
  return np.array(sites)


_FCC_BASIS = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])

UNIT_CELLS = {
  'simple_cubic': UnitCell(np.zeros((1, 3)), np.ones(3), 1),
  'fcc': UnitCell(_FCC_BASIS, np.ones(3), 1),
  'cubic_diamond': UnitCell(np.concatenate([_FCC_BASIS, _FCC_BASIS + 0.25]), np.ones(3), 2),
  'hexagonal_ice': UnitCell(_hexagonal_ice_basis(), np.array([1.0, _SQRT3, _C_OVER_A]), 4),
}
LATTICE_NAMES = tuple(UNIT_CELLS)


@dataclasses.dataclass(frozen=True, eq=False)
class Lattice:
  """Sites (N, 3) float64 in a box (3,), plus the counting convention s.

  basis_index: (N,) int, the index of each site's basis atom in the
  conventional cell (sites of one index are translates of each other).
  """

  name: str
  positions: np.ndarray
  box: np.ndarray
  sites_per_primitive_cell: int
  basis_index: np.ndarray


def make_lattice(name: str, num_particles: int, density: float) -> Lattice:
  """Tiles the conventional cell of `name` n x n x n times to N sites at `density`.

  Args:
    name: one of LATTICE_NAMES.
    num_particles: N; must equal n^3 times the sites per conventional cell.
    density: number density N / V (length unit^-3), positive.

  Raises:
    ValueError: for an unknown name, a non-positive density, or an N that no
      n x n x n tiling gives.
  """
  if name not in UNIT_CELLS:
    raise ValueError(f'Unknown lattice {name!r}; known: {", ".join(LATTICE_NAMES)}.')
  if not (np.isfinite(density) and density > 0):
    raise ValueError(f'Density must be positive and finite, got {density}.')
  cell = UNIT_CELLS[name]
  sites_per_cell = len(cell.basis)
  n = round((num_particles / sites_per_cell) ** (1 / 3)) if num_particles > 0 else 0
  if n < 1 or n**3 * sites_per_cell != num_particles:
    raise ValueError(
      f'Lattice {name!r} cannot tile num_particles={num_particles}: expected '
      f'n^3 * {sites_per_cell} (n = 1, 2, ...), e.g. '
      f'{[k**3 * sites_per_cell for k in range(1, 6)]}.'
    )
  cell_volume = sites_per_cell / density
  a = (cell_volume / np.prod(cell.edge_ratios)) ** (1 / 3)
  cell_edges = a * cell.edge_ratios
  grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing='ij'), -1).reshape(-1, 1, 3)
  fractional = (grid + (cell.basis - cell.basis[0])[None]).reshape(-1, 3)
  box = n * cell_edges
  positions = wrap(fractional * cell_edges, 0.0, box)
  basis_index = np.tile(np.arange(sites_per_cell), n**3)
  return Lattice(name, positions, box, cell.sites_per_primitive_cell, basis_index)
