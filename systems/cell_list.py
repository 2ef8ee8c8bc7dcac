"""Candidate pairs of a periodic box in O(N), from a cell list built inside a jitted call.

The box (3,) is cut into n_x × n_y × n_z equal cells with edges at least the
cutoff (n_a = floor(L_a / cutoff), less a 1e-4 relative margin against
rounding; the faces shifted by FACE_OFFSET of an edge), so a pair closer than
the cutoff (minimum image) lies in one cell or in two adjacent ones. Each cell
keeps up to `capacity` particles in a fixed-size table, filled by sorting the
particles by cell (static shapes: the build works under jit, vmap and grad
and is redone at every call), and the candidates of a particle are the
C = 27 · capacity slots of its own cell and its 26 neighbours. With n_a >= 3
on every axis those 27 cells are distinct, so every pair within the cutoff is
listed once in each direction (j among i's candidates, i among j's); a
smaller box has no grid and uses all N² pairs.

Overflow: the particles beyond `capacity` in one cell (those of highest
index) are in no pair at all, so the energies that use the list are wrong for
that configuration. `Pairs.occupancy` (the most particles in one cell) lets
the caller detect it; see `neighbour_list.within_capacity`.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from systems import box as box_lib

METHODS = ('auto', 'dense', 'cell_list')
MIN_CELLS = 3  # per axis: fewer and the 27 neighbouring cells repeat
# Energy + gradient time of one candidate slot over one dense pair (mW, XLA:CPU,
# N = 216 to 1728: 1.5-2.2; LJ: 1.5): see docs/performance.md.
CANDIDATE_COST = 2
_EDGE_MARGIN = 1e-4  # cell edges >= cutoff (1 + margin): rounding never skips a cell
# Cell faces sit at (j - FACE_OFFSET) · edge, off the simple fractions of the box where
# lattice sites lie: no site of a perfect lattice is on a face, where rounding picks the cell.
FACE_OFFSET = 0.3819660112501051  # (3 - √5) / 2
_OFFSETS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing='ij'), -1).reshape(27, 3)


class Grid(NamedTuple):
  """Static layout of a cell list (hashable, a jit static argument).

  cells: cells per axis (n_x, n_y, n_z), each >= MIN_CELLS.
  capacity: the most particles one cell holds.
  """

  cells: tuple[int, int, int]
  capacity: int

  @property
  def num_cells(self) -> int:
    return math.prod(self.cells)

  @property
  def num_candidates(self) -> int:
    """C = 27 · capacity, candidate slots per particle."""
    return len(_OFFSETS) * self.capacity


class Pairs(NamedTuple):
  """Candidate pairs (i, j) of each particle i over M slots.

  indices: (..., N, M) int32 particle j of each slot; arbitrary where not `mask`.
  mask: (..., N, M) True where the slot holds a particle other than i.
  displacements: (..., N, M, 3) minimum-image x_j − x_i, length unit.
  occupancy: (...) int32, the most particles in one cell (0 without a grid).

  indices and mask may lack the leading batch axes (dense pairs).
  """

  indices: jnp.ndarray
  mask: jnp.ndarray
  displacements: jnp.ndarray
  occupancy: jnp.ndarray


def cells_per_axis(box, cutoff: float) -> tuple[int, int, int]:
  """floor(L_a / (cutoff (1 + 1e-4))) cells on each axis of box (3,)."""
  if not cutoff > 0:
    raise ValueError(f'Cutoff must be positive, got {cutoff}.')
  cells = np.floor(box_lib.check_box(box) / (cutoff * (1 + _EDGE_MARGIN)))
  return tuple(int(n) for n in cells)


def default_capacity(num_particles: int, num_cells: int) -> int:
  """ceil(2 n̄) + 4 particles per cell, n̄ = N / num_cells the mean occupancy.

  Twice the mean plus four: a thermal solid (a few particles per cell, each
  near its site) never comes close; a configuration that does is caught.
  """
  return math.ceil(2 * num_particles / num_cells) + 4


def grid_for(box, cutoff: float, num_particles: int, capacity: int | None = None) -> Grid | None:
  """The cell grid of box (3,) for `cutoff`, or None if an axis has < MIN_CELLS cells.

  Args:
    box: edge lengths (3,).
    cutoff: pair cutoff, the box's length unit.
    num_particles: N, for the default capacity.
    capacity: particles per cell; None for `default_capacity`.
  """
  cells = cells_per_axis(box, cutoff)
  if min(cells) < MIN_CELLS:
    return None
  if capacity is None:
    capacity = default_capacity(num_particles, math.prod(cells))
  if capacity < 1:
    raise ValueError(f'Cell capacity must be >= 1, got {capacity}.')
  return Grid(cells, int(capacity))


def choose(
  method: str, box, cutoff: float, num_particles: int, capacity: int | None = None
) -> Grid | None:
  """The grid that `method` asks for; None means all N² pairs.

  'dense': None. 'cell_list': the grid. 'auto': the grid when it exists and
  its C candidates cost less than the N - 1 dense pairs, counting a candidate
  as CANDIDATE_COST dense pairs; always None for a traced box.

  Raises:
    ValueError: for an unknown method, or 'cell_list' with a traced box or
      one with fewer than MIN_CELLS cells on an axis.
  """
  if method not in METHODS:
    raise ValueError(f'Unknown pair method {method!r}; expected one of {METHODS}.')
  if method == 'dense':
    return None
  if isinstance(box, jax.core.Tracer):
    if method == 'cell_list':
      raise ValueError('The cell list needs a concrete box (its grid is static); got a traced one.')
    return None
  grid = grid_for(box, cutoff, num_particles, capacity)
  if method == 'cell_list':
    if grid is None:
      raise ValueError(
        f'The cell list needs >= {MIN_CELLS} cells of edge >= the cutoff {cutoff:.4f} per axis; '
        f'box {np.round(box_lib.check_box(box), 4).tolist()} gives {cells_per_axis(box, cutoff)}.'
      )
    return grid
  pays = grid is not None and CANDIDATE_COST * grid.num_candidates < num_particles - 1
  return grid if pays else None


def _neighbour_cells(cells: tuple[int, int, int]) -> np.ndarray:
  """(num_cells, 27) flat indices of each cell's own and 26 adjacent cells (periodic)."""
  shape = np.array(cells)
  grid = np.stack(np.meshgrid(*[np.arange(n) for n in cells], indexing='ij'), -1).reshape(-1, 3)
  around = np.mod(grid[:, None, :] + _OFFSETS[None], shape)
  return np.ravel_multi_index(tuple(np.moveaxis(around, -1, 0)), cells).astype(np.int32)


def _cell_pairs(x: jnp.ndarray, box: jnp.ndarray, grid: Grid):
  """`Pairs` fields (N, C), (N, C), (N, C, 3) and () of one configuration x (N, 3).

  Slot c = o · capacity + b of a particle holds particle b of its o-th
  neighbouring cell (offset _OFFSETS[o]). A particle that its cell cannot
  hold (rank >= capacity) is in no pair at all, in either direction.
  """
  n = x.shape[0]
  shape = np.array(grid.cells)
  wrapped = box_lib.wrap(x, 0.0, box)
  wrapped = jnp.where(jnp.isfinite(wrapped), wrapped, 0.0)  # a NaN particle: any cell
  axis_cell = jnp.floor(wrapped * (shape / box) + FACE_OFFSET).astype(jnp.int32) % shape
  cell = (axis_cell[:, 0] * shape[1] + axis_cell[:, 1]) * shape[2] + axis_cell[:, 2]
  counts = jnp.zeros(grid.num_cells, jnp.int32).at[cell].add(1)
  starts = jnp.cumsum(counts) - counts
  order = jnp.argsort(cell, stable=True).astype(jnp.int32)
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32)) - starts[cell]
  table = order[jnp.minimum(starts[:, None] + jnp.arange(grid.capacity), n - 1)]
  filled = jnp.arange(grid.capacity) < counts[:, None]  # (cells, capacity)
  around = _neighbour_cells(grid.cells)
  indices = table[around].reshape(grid.num_cells, -1)[cell]
  mask = filled[around].reshape(grid.num_cells, -1)[cell]
  mask = mask & (indices != jnp.arange(n)[:, None]) & (rank < grid.capacity)[:, None]
  displacements = box_lib.minimum_image(x[indices] - x[:, None, :], box)
  return indices, mask, displacements, jnp.max(counts)


def pairs(x: jnp.ndarray, box: jnp.ndarray, grid: Grid | None) -> Pairs:
  """Candidate pairs of positions x (..., N, 3) in box (3,).

  With a grid, the cell-list candidates (M = C, O(N·C)); without, every other
  particle (M = N, O(N²)). The displacements are x_j − x_i mapped by
  `box.minimum_image` in both cases, so each pair's distance is the same to
  the bit whichever list it comes from.
  """
  n = x.shape[-2]
  if grid is None:
    indices = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (n, n))
    mask = ~jnp.asarray(np.eye(n, dtype=bool))
    occupancy = jnp.zeros(x.shape[:-2], jnp.int32)
    return Pairs(indices, mask, box_lib.pairwise_displacements(x, box), occupancy)
  build = jnp.vectorize(
    lambda y: _cell_pairs(y, box, grid), signature='(n,d)->(n,c),(n,c),(n,c,d),()'
  )
  return Pairs(*build(x))
