"""Monatomic water (mW; Molinero & Moore 2009) energy in a periodic box.

Positions in Å, energies in kcal/mol. Two-body term, for r < aσ:
  φ2(r) = A ε [B (σ/r)^4 - 1] exp(σ / (r - aσ)),
three-body term, over each particle i and pairs j < k of its neighbours within aσ:
  λ ε (cos θ_jik - cos θ0)^2 exp(γσ / (r_ij - aσ)) exp(γσ / (r_ik - aσ)).
All distances use the minimum-image convention.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from systems import box as box_lib
from systems import cell_list, neighbour_list, pair_terms

EPSILON = 6.189  # kcal/mol
SIGMA = 2.3925  # Å
A_CUT = 1.8  # a: cutoff in units of σ
LAMBDA = 23.15
GAMMA = 1.2
A = 7.049556277
B = 0.6022245584
COS_THETA0 = float(np.cos(np.deg2rad(109.47)))
CUTOFF = A_CUT * SIGMA  # Å
# Distances in cos θ are floored here (Å), so coincident particles give a finite
# three-body term and gradient; no physical configuration comes this close.
_COSINE_MIN_DISTANCE = 1e-6


def two_body(r: jnp.ndarray) -> jnp.ndarray:
  """φ2(r) in kcal/mol for distances r < aσ (Å), elementwise."""
  return A * EPSILON * (B * (SIGMA / r) ** 4 - 1) * jnp.exp(SIGMA / (r - CUTOFF))


def _radial(r: jnp.ndarray) -> jnp.ndarray:
  return jnp.exp(GAMMA * SIGMA / (r - CUTOFF))


def triplet_sum(dx: jnp.ndarray, r: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Three-body energy of central particles from their neighbour slots.

  Args:
    dx: displacements to the slots (..., K, 3), Å.
    r: their lengths (..., K), Å.
    valid: (..., K), True for a neighbour within aσ.

  Returns:
    (...) Σ_{j<k} λε (cos θ_jk - cos θ0)^2 g(r_j) g(r_k) in kcal/mol.
  """
  valid = valid & (r < CUTOFF)
  g = pair_terms.where_safe(valid, _radial, r, 0.0)
  u = dx / jnp.maximum(r, _COSINE_MIN_DISTANCE)[..., None]
  cos = jnp.einsum('...jd,...kd->...jk', u, u)
  k = r.shape[-1]
  upper = jnp.asarray(np.triu(np.ones((k, k), dtype=bool), k=1))
  terms = (cos - COS_THETA0) ** 2 * g[..., :, None] * g[..., None, :]
  return LAMBDA * EPSILON * jnp.sum(jnp.where(upper, terms, 0.0), axis=(-2, -1))


def _two_body(linearization):
  return two_body if linearization is None else linearization(two_body)


@functools.partial(jax.jit, static_argnames=('capacity', 'linearization', 'grid'))
def _energy_and_usage(x, box, capacity, linearization, grid):
  """Energy (...), the largest neighbour count (...) and cell occupancy (...).

  A configuration with a non-finite coordinate gets energy NaN and count and
  occupancy 0: its distances mean nothing, so it never counts as an overflow.
  """
  pairs = cell_list.pairs(x, box, grid)
  r = pair_terms.safe_norm(pairs.displacements)
  nbrs = neighbour_list.build(r, CUTOFF, capacity, pairs.mask)
  dx_nbrs = jnp.take_along_axis(pairs.displacements, nbrs.indices[..., None], axis=-2)
  r_nbrs = jnp.take_along_axis(r, nbrs.indices, axis=-1)
  three = jnp.sum(triplet_sum(dx_nbrs, r_nbrs, nbrs.mask), axis=-1)
  two = pair_terms.listed_pair_sum(r, pairs.mask, _two_body(linearization), CUTOFF)
  finite = pair_terms.finite_configurations(x)
  return (
    jnp.where(finite, two + three, jnp.nan),
    jnp.where(finite, jnp.max(nbrs.count, axis=-1), 0),
    jnp.where(finite, pairs.occupancy, 0),
  )


def energy(
  x,
  box,
  *,
  capacity: int = neighbour_list.DEFAULT_CAPACITY,
  linearization: pair_terms.Linearization | None = None,
  strict: bool = True,
  method: str = 'auto',
  cell_capacity: int | None = None,
) -> jnp.ndarray:
  """mW energy (...) of positions x (..., N, 3) with a neighbour-list three-body term.

  The three-body term uses each particle's K = min(N - 1, capacity) nearest
  neighbours within aσ, costing O(N K^2) instead of O(N^3). The list and the
  pair term read each particle's candidate pairs: from a cell list, O(N·C)
  with C = 27 · cell_capacity (`systems.cell_list`), when the box has at
  least 3 cells of edge aσ per axis and that is cheaper (`cell_list.choose`:
  N >= 1000 at the ice density); otherwise every pair, from the full
  (..., N, N) distance matrix, O(N^2). Both give the same neighbour list and
  the same energy up to the order of the pair sum. NaN for a configuration
  with a non-finite coordinate, which is never reported as an overflow.

  Args:
    x: positions (..., N, 3), Å.
    box: edge lengths (3,), Å.
    capacity: neighbour-list capacity.
    linearization: if given, the training form of the two-body term.
    strict: on an overflow of the neighbour list or of a cell of a finite
      configuration, raise ValueError when called eagerly and give NaN
      energies (and gradients) when traced (jit/vmap/grad). If False, keep
      the K nearest neighbours among the particles the cells hold (an
      approximation only for overflowing configurations).
    method: 'auto' (as above), 'dense' (every pair) or 'cell_list' (forced;
      ValueError if the box has fewer than 3 cells per axis).
    cell_capacity: particles per cell; None for `cell_list.default_capacity`.

  Raises:
    ValueError: if strict, not traced, and a cell of a finite configuration
      holds more than cell_capacity particles or a particle has more than K
      neighbours within aσ; for a bad method.
  """
  x = pair_terms.as_positions(x)
  n = x.shape[-2]
  capacity = neighbour_list.capacity_for(n, capacity)
  grid = cell_list.choose(method, box, CUTOFF, n, cell_capacity)
  total, count, occupancy = _energy_and_usage(
    x, box_lib.as_array(box, x.dtype), capacity, linearization, grid
  )
  if not strict:
    return total
  if grid is not None:
    total = neighbour_list.within_capacity(
      total,
      occupancy,
      grid.capacity,
      lambda most: (
        f'mW cell list overflow: a cell holds {most} particles but the cell capacity is '
        f'{grid.capacity}; raise cell_capacity.'
      ),
    )
  return neighbour_list.within_capacity(
    total,
    count,
    capacity,
    lambda most: (
      f'mW neighbour list overflow: a particle has {most} neighbours within {CUTOFF:.4f} Å '
      f'but the capacity is {capacity}; raise the capacity.'
    ),
  )


def reference_energy(
  x, box, *, linearization: pair_terms.Linearization | None = None
) -> jnp.ndarray:
  """mW energy (...) of x (..., N, 3) summing all N^3 triplets (dense reference).

  Loops over central particles with `lax.map`, so memory is O(N^2) per config.
  NaN for a configuration with a non-finite coordinate.
  """
  x = pair_terms.as_positions(x)
  return _reference_energy(x, box_lib.as_array(box, x.dtype), linearization)


@functools.partial(jax.jit, static_argnames=('linearization',))
def _reference_energy(x, box, linearization):
  n = x.shape[-2]
  not_self = ~jnp.asarray(np.eye(n, dtype=bool))

  def central(i):
    dx = box_lib.minimum_image(x - x[..., i, None, :], box)
    return triplet_sum(dx, pair_terms.safe_norm(dx), not_self[i])

  three = jnp.sum(jax.lax.map(central, jnp.arange(n)), axis=0)
  two = pair_terms.pair_sum(pair_terms.distances(x, box), _two_body(linearization), CUTOFF)
  return jnp.where(pair_terms.finite_configurations(x), two + three, jnp.nan)
