"""Structural observables of periodic configurations: radial distribution functions.

Positions are (n, N, 3) in the length unit of an orthorhombic periodic box
(3,) (see `systems.box`); distances use the minimum-image convention, which
is exact for r below half the shortest box edge. `radial_distribution` is the
pair g(r); `distribution_about_point` is the density about a fixed point
(e.g. a solute) relative to the mean density.
"""

import numpy as np

from systems.box import minimum_image

_CHUNK_ELEMENTS = 1 << 22  # pair displacements (x 3) held at once


def _check_positions(positions, box) -> tuple[np.ndarray, np.ndarray]:
  """(n, N, 3) float64 positions with N >= 2 and a (3,) box of positive edges."""
  positions = np.asarray(positions, np.float64)
  box = np.asarray(box, np.float64)
  if positions.ndim != 3 or positions.shape[-1] != 3 or positions.shape[1] < 2:
    raise ValueError(
      f'positions must have shape (frames, N, 3) with N >= 2, got {positions.shape}.'
    )
  if not np.isfinite(positions).all():
    raise ValueError('positions contain non-finite entries.')
  if box.shape != (3,) or not np.all(np.isfinite(box) & (box > 0)):
    raise ValueError(f'box must be 3 positive finite edge lengths, got {box}.')
  return positions, box


def _bin_edges(box: np.ndarray, num_bins: int, r_max: float | None) -> np.ndarray:
  """num_bins + 1 equal-width edges on [0, r_max], r_max <= half the shortest edge."""
  half_edge = 0.5 * float(box.min())
  r_max = half_edge if r_max is None else float(r_max)
  if not 0 < r_max <= half_edge:
    raise ValueError(
      f'r_max={r_max} must be in (0, {half_edge}] (half the '
      'shortest box edge, the minimum-image limit).'
    )
  if int(num_bins) != num_bins or num_bins < 1:
    raise ValueError(f'num_bins={num_bins} must be a positive integer.')
  return np.linspace(0.0, r_max, int(num_bins) + 1)


def radial_distribution(
  positions, box, num_bins: int = 100, r_max: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
  r"""g(r) averaged over frames, normalised so an ideal gas gives 1.

  g in the shell [r_k, r_{k+1}) is the number of pairs i < j found there,
  divided by its ideal-gas expectation  n_frames · N(N−1)/2 · V_shell / V,
  so that the mean number of neighbours of a particle in the shell is
  ρ' · V_shell · g with the pair density ρ' = (N − 1)/V.

  Args:
    positions: (n, N, 3) configurations, length unit.
    box: (3,) box edges, length unit.
    num_bins: number of equal-width bins on [0, r_max].
    r_max: upper edge, at most (and by default) half the shortest box edge.

  Returns:
    edges (num_bins + 1,) in the length unit, and g (num_bins,), dimensionless.
  """
  positions, box = _check_positions(positions, box)
  edges = _bin_edges(box, num_bins, r_max)
  frames, n = positions.shape[:2]
  upper = np.triu_indices(n, k=1)
  counts = np.zeros(int(num_bins))
  chunk = max(1, _CHUNK_ELEMENTS // (n * n))
  for start in range(0, frames, chunk):
    x = positions[start : start + chunk]
    dx = minimum_image(x[:, None, :, :] - x[:, :, None, :], box)
    r = np.linalg.norm(dx, axis=-1)[:, upper[0], upper[1]]
    counts += np.histogram(r, bins=edges)[0]
  shell = 4.0 / 3.0 * np.pi * np.diff(edges**3)
  ideal = frames * n * (n - 1) / 2 * shell / np.prod(box)
  return edges, counts / ideal


def distribution_about_point(
  positions, box, point, num_bins: int = 100, r_max: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
  r"""Density of the particles about a fixed `point`, over the mean density N/V.

  g in the shell [r_k, r_{k+1}) about the point is the number of particles
  found there, divided by its ideal-gas expectation n_frames · N · V_shell / V,
  so uniform particles give 1 and a particle-free cavity gives 0.

  Args:
    positions: (n, N, 3) configurations, length unit.
    box: (3,) box edges, length unit.
    point: (3,) the fixed point (e.g. a solute's position), length unit.
    num_bins: number of equal-width bins on [0, r_max].
    r_max: upper edge, at most (and by default) half the shortest box edge.

  Returns:
    edges (num_bins + 1,) in the length unit, and g (num_bins,), dimensionless.
  """
  r = distances_to_point(positions, box, point)
  edges = _bin_edges(np.asarray(box, np.float64), num_bins, r_max)
  counts = np.histogram(r, bins=edges)[0]
  shell = 4.0 / 3.0 * np.pi * np.diff(edges**3)
  return edges, counts / (r.size * shell / np.prod(box))


def distances_to_point(positions, box, point) -> np.ndarray:
  """Minimum-image distances (n, N) of positions (n, N, 3) from `point` (3,)."""
  positions, box = _check_positions(positions, box)
  point = np.asarray(point, np.float64)
  if point.shape != (3,) or not np.isfinite(point).all():
    raise ValueError(f'point must be 3 finite coordinates, got {point}.')
  return np.linalg.norm(minimum_image(positions - point, box), axis=-1)


def coordination_number(edges, g, num_particles: int, volume: float, r_cut: float) -> float:
  r"""Mean number of neighbours within r_cut: Σ_k 4π∫r²dr ρ' g_k over bins below r_cut.

  Args:
    edges, g: output of `radial_distribution`.
    num_particles: N of the configurations (ρ' = (N − 1)/V).
    volume: box volume, length unit cubed.
    r_cut: a bin edge (length unit); bins whose upper edge is <= r_cut count.
  """
  edges, g = np.asarray(edges, np.float64), np.asarray(g, np.float64)
  if edges.shape != (g.size + 1,):
    raise ValueError(
      f'edges must have shape ({g.size + 1},) for g of shape {g.shape}, got {edges.shape}.'
    )
  shell = 4.0 / 3.0 * np.pi * np.diff(edges**3)
  inside = edges[1:] <= r_cut * (1 + 1e-12)
  return float(np.sum(shell[inside] * g[inside]) * (num_particles - 1) / volume)
