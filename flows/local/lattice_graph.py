"""The fixed neighbour structure of a lattice, for local couplings and the solid's basin.

Site 0 carries the pinned particle; the flow moves the other M = N − 1
particles, particle i (1..M) labelled by its site i. Everything here is static
numpy, computed once from the sites, the box and each site's basis index:

* colours: a proper colouring of the graph joining sites within the first
  `colour_shells` neighbour shells, in which a site's colour depends only on
  its basis index in the conventional cell, so every N of one lattice family
  has the same colours. With one shell (nearest neighbours): 2 for cubic
  diamond and hexagonal ice, 4 for FCC; with two: 8 for cubic diamond
  (hexagonal ice and FCC have same-basis second neighbours, so no such
  colouring). A colour class is moved with every site of those shells fixed,
  so two particles moved together are never closer than the next shell.
* per colour class c: its M_c moving particles and, for each, its k nearest
  sites of other colours (the pinned site 0 included when its colour
  differs) with their minimum-image offsets r_j − r_i in units of the
  nearest-neighbour distance. Permuting the sites together with their
  particles permutes these lists accordingly, so a conditioner that sums over
  them is permutation equivariant; k must close a shell of equal distances.
* the basin test: a particle at displacement u_i from its site is in its own
  Voronoi cell iff |u_i|² < |u_i − d|² for every offset d to another site or
  periodic image. The images within 2·d_nn suffice for |u_i| < d_nn (any
  farther one is then farther from the particle than its own site), so the
  basin is S = {every |u_i| < d_nn and u_i nearer its own site than to those
  images}, exact for any box.
"""

import dataclasses

import numpy as np

from systems.box import minimum_image

SHELL_TOLERANCE = 1e-6  # relative difference of two distances in one shell


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class ColourClass:
  """The particles of one colour and their conditioning neighbours.

  targets: (M_c,) indices of the moving particles among the M flowed ones.
  neighbours: (M_c, k) indices of their k neighbour sites among all N sites
    (0 is the pinned particle, i ≥ 1 the flowed particle i − 1).
  offsets: (M_c, k, 3) r_neighbour − r_target, minimum image, in units of
    the nearest-neighbour distance.
  """

  targets: np.ndarray
  neighbours: np.ndarray
  offsets: np.ndarray


def colour_by_basis(basis_index: np.ndarray, adjacent: np.ndarray) -> np.ndarray:
  """Colours (N,) of a proper colouring of `adjacent` (N, N) that depend only on
  each site's basis index (greedy over the graph of adjacent basis indices).

  Raises:
    ValueError: if two adjacent sites share a basis index (no such colouring).
  """
  pairs = {(int(basis_index[i]), int(basis_index[j])) for i, j in zip(*np.nonzero(adjacent))}
  if any(a == b for a, b in pairs):
    raise ValueError(
      'Two sites to be coloured apart share a basis index; their colours cannot '
      'depend on the basis index alone (use fewer colour shells).'
    )
  colour_of = {}
  for b in sorted(set(int(i) for i in basis_index)):
    used = {colour_of[o] for a, o in pairs if a == b and o in colour_of}
    colour_of[b] = min(set(range(len(used) + 1)) - used)
  return np.array([colour_of[int(b)] for b in basis_index])


def _shell_distances(distances: np.ndarray, tolerance: float) -> np.ndarray:
  """The distinct values (ascending) of `distances`, merging those within `tolerance`."""
  values = np.sort(distances.ravel())
  return values[np.concatenate([[True], np.diff(values) > tolerance])]


class LatticeGraph:
  """Colour classes, conditioning neighbours and the basin test of N lattice sites.

  Args:
    lattice: (N, 3) sites (length units); site 0 carries the pinned particle.
    box: (3,) box edge lengths.
    basis_index: (N,) basis-atom index of each site (systems.System.basis_index).
    num_neighbours: k, conditioning neighbours per moving particle; must close
      a shell of the other colours' sites.
    colour_shells: sites within this many neighbour shells (distinct site
      distances) get different colours; >= 1.

  Attributes:
    relative_sites: (N, 3) r_i = minimum image of site i − site 0 (r_0 = 0).
    nearest_distance: d_nn (length units).
    colours: (N,) colour of each site; classes: one ColourClass per colour.
    basin_offsets: (M, K, 3) offsets (length units) from each flowed
      particle's site to the site images within 2·d_nn, for the basin test.
  """

  def __init__(self, lattice, box, basis_index, num_neighbours: int, colour_shells: int = 1):
    lattice = np.asarray(lattice, np.float64)
    box = np.asarray(box, np.float64)
    basis_index = np.asarray(basis_index)
    n = lattice.shape[0]
    if lattice.shape != (n, 3) or n < 2:
      raise ValueError(f'lattice has shape {lattice.shape}; expected (N, 3) with N >= 2.')
    if basis_index.shape != (n,):
      raise ValueError(f'basis_index has shape {basis_index.shape}; expected ({n},).')
    if int(num_neighbours) != num_neighbours or num_neighbours < 1:
      raise ValueError(f'num_neighbours={num_neighbours} must be a positive integer.')
    if int(colour_shells) != colour_shells or colour_shells < 1:
      raise ValueError(f'colour_shells={colour_shells} must be a positive integer.')
    self.relative_sites = minimum_image(lattice - lattice[0], box)
    offsets = minimum_image(self.relative_sites[None] - self.relative_sites[:, None], box)
    distance = np.linalg.norm(offsets, axis=-1)
    np.fill_diagonal(distance, np.inf)
    self.nearest_distance = float(distance.min())
    tolerance = SHELL_TOLERANCE * self.nearest_distance
    shells = _shell_distances(distance[np.isfinite(distance)], tolerance)
    if colour_shells > len(shells):
      raise ValueError(
        f'colour_shells={colour_shells} exceeds the {len(shells)} shells of the box.'
      )
    self.colours = colour_by_basis(basis_index, distance < shells[colour_shells - 1] + tolerance)
    classes = (
      self._colour_class(c, offsets, distance, int(num_neighbours), tolerance)
      for c in range(int(self.colours.max()) + 1)
    )
    self.classes = tuple(c for c in classes if c.targets.size)
    self.basin_offsets = self._basin_offsets(box, tolerance)

  def _basin_offsets(self, box, tolerance) -> np.ndarray:
    """(M, K, 3) offsets from each flowed particle's site to every site image
    (own periodic images included) within 2·d_nn; rows padded with far offsets."""
    reach = 2 * self.nearest_distance + tolerance
    repeats = int(np.ceil(reach / box.min()))
    shifts = (
      np.stack(np.meshgrid(*[np.arange(-repeats, repeats + 1)] * 3, indexing='ij'), -1).reshape(
        -1, 3
      )
      * box
    )
    rows = []
    for r in self.relative_sites[1:]:
      d = (self.relative_sites[None, :, :] + shifts[:, None, :] - r).reshape(-1, 3)
      length = np.linalg.norm(d, axis=-1)
      rows.append(d[(length > tolerance) & (length < reach)])
    width = max(len(r) for r in rows)
    far = 1e3 * reach  # padding: never nearer than the own site
    return np.stack([np.concatenate([r, np.full((width - len(r), 3), far)]) for r in rows])

  def _colour_class(self, colour, offsets, distance, k, tolerance) -> ColourClass:
    targets = np.flatnonzero(self.colours[1:] == colour) + 1  # sites of the moving particles
    candidates = np.flatnonzero(self.colours != colour)
    if candidates.size < k:
      raise ValueError(f'num_neighbours={k} exceeds the {candidates.size} sites of other colours.')
    d = distance[np.ix_(targets, candidates)]
    order = np.argsort(d, axis=1, kind='stable')
    sorted_d = np.take_along_axis(d, order, axis=1)
    if k < candidates.size and np.any(sorted_d[:, k] - sorted_d[:, k - 1] < tolerance):
      closing = sorted(
        {
          int(j)
          for j in range(1, candidates.size + 1)
          if j == candidates.size or np.all(sorted_d[:, j] - sorted_d[:, j - 1] >= tolerance)
        }
      )
      raise ValueError(
        f'num_neighbours={k} splits a shell of equidistant neighbours; '
        f'shell-closing values: {closing[:8]}.'
      )
    neighbours = candidates[order[:, :k]]
    return ColourClass(
      targets=targets - 1,
      neighbours=neighbours,
      offsets=offsets[targets[:, None], neighbours] / self.nearest_distance,
    )
