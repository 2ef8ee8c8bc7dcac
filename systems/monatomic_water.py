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
from systems import neighbour_list, pair_terms

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


def _pair_term(r, linearization):
  phi = two_body if linearization is None else linearization(two_body)
  return pair_terms.pair_sum(r, phi, CUTOFF)


@functools.partial(jax.jit, static_argnames=('capacity', 'linearization'))
def _energy_and_count(x, box, capacity, linearization):
  """Neighbour-list energy (...) and the largest neighbour count (...).

  A configuration with a non-finite coordinate gets energy NaN and count 0:
  its distances mean nothing, so it never counts as an overflow.
  """
  dx = box_lib.pairwise_displacements(x, box)
  r = pair_terms.safe_norm(dx)
  nbrs = neighbour_list.build(r, CUTOFF, capacity)
  dx_nbrs = jnp.take_along_axis(dx, nbrs.indices[..., None], axis=-2)
  r_nbrs = jnp.take_along_axis(r, nbrs.indices, axis=-1)
  three = jnp.sum(triplet_sum(dx_nbrs, r_nbrs, nbrs.mask), axis=-1)
  finite = pair_terms.finite_configurations(x)
  return (
    jnp.where(finite, _pair_term(r, linearization) + three, jnp.nan),
    jnp.where(finite, jnp.max(nbrs.count, axis=-1), 0),
  )


def energy(
  x,
  box,
  *,
  capacity: int = neighbour_list.DEFAULT_CAPACITY,
  linearization: pair_terms.Linearization | None = None,
  strict: bool = True,
) -> jnp.ndarray:
  """mW energy (...) of positions x (..., N, 3) with a neighbour-list three-body term.

  The three-body term uses each particle's K = min(N - 1, capacity) nearest
  neighbours within aσ, costing O(N K^2) instead of O(N^3); the pair term and
  the list itself come from the full (..., N, N) distance matrix, O(N^2).
  NaN for a configuration with a non-finite coordinate, which is never
  reported as an overflow.

  Args:
    x: positions (..., N, 3), Å.
    box: edge lengths (3,), Å.
    capacity: neighbour-list capacity.
    linearization: if given, the training form of the two-body term.
    strict: on neighbour-list overflow of a finite configuration, raise
      ValueError when called eagerly and give NaN energies (and gradients)
      when traced (jit/vmap/grad). If False, keep the K nearest neighbours
      (an approximation only for overflowing configurations).

  Raises:
    ValueError: if strict, not traced, and some particle of a finite
      configuration has more than K neighbours within aσ.
  """
  x = pair_terms.as_positions(x)
  capacity = neighbour_list.capacity_for(x.shape[-2], capacity)
  total, count = _energy_and_count(x, box_lib.as_array(box, x.dtype), capacity, linearization)
  if not strict:
    return total
  if not isinstance(count, jax.core.Tracer) and np.any(count > capacity):
    raise ValueError(
      f'mW neighbour list overflow: a particle has {int(np.max(count))} '
      f'neighbours within {CUTOFF:.4f} Å but the capacity is {capacity}; '
      f'raise the capacity.'
    )
  return total * jnp.where(count > capacity, jnp.nan, 1.0)  # NaN energy and gradient


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
  total = _pair_term(pair_terms.distances(x, box), linearization) + three
  return jnp.where(pair_terms.finite_configurations(x), total, jnp.nan)
