"""Shared pair-potential machinery: gradient-safe distances, the pair sum over a
periodic box, and the training linearisation of a pair potential.

A pair potential is an elementwise function φ(r) of distances (any shape) that
returns energies of the same shape and dtype.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from systems import box as box_lib

PairPotential = Callable[[jnp.ndarray], jnp.ndarray]


def as_positions(x) -> jnp.ndarray:
  """Positions (..., N, 3) as a floating jax array (float32 unless already float).

  Raises:
    ValueError: if the last axis is not 3 or there is no particle axis.
  """
  x = jnp.asarray(x)
  if x.ndim < 2 or x.shape[-1] != 3:
    raise ValueError(f'Positions must have shape (..., N, 3), got {x.shape}.')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def finite_configurations(x: jnp.ndarray) -> jnp.ndarray:
  """(...) True where every coordinate of positions x (..., N, 3) is finite (no NaN, no ±inf).

  Energies are NaN where this is False (see `systems.System`).
  """
  return jnp.all(jnp.isfinite(x), axis=(-2, -1))


def safe_norm(dx: jnp.ndarray) -> jnp.ndarray:
  """|dx| over the last axis, with a zero (not NaN) gradient at dx = 0."""
  r2 = jnp.sum(dx * dx, axis=-1)
  positive = r2 > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)


def where_safe(
  condition: jnp.ndarray, fn: PairPotential, r: jnp.ndarray, safe_r: float
) -> jnp.ndarray:
  """fn(r) where `condition`, else 0; fn only ever sees r where `condition`.

  The double where keeps the gradient finite even if fn(r) or its derivative is
  inf/NaN outside `condition`; `safe_r` must be a point where fn is finite.
  """
  return jnp.where(condition, fn(jnp.where(condition, r, safe_r)), 0.0)


def distances(x: jnp.ndarray, box) -> jnp.ndarray:
  """Minimum-image distances (..., N, N) of positions x (..., N, 3); zero on the diagonal."""
  return safe_norm(box_lib.pairwise_displacements(as_positions(x), box))


def _masked_sum(r, pairs, phi, cutoff):
  return jnp.sum(where_safe(pairs & (r < cutoff), phi, r, cutoff / 2), axis=(-2, -1))


def pair_sum(r: jnp.ndarray, phi: PairPotential, cutoff: float) -> jnp.ndarray:
  """Σ_{i<j, r_ij < cutoff} φ(r_ij) over a distance matrix r (..., N, N) -> (...).

  phi must be finite at cutoff / 2 (the placeholder for masked pairs).
  """
  n = r.shape[-1]
  return _masked_sum(r, jnp.asarray(np.triu(np.ones((n, n), dtype=bool), k=1)), phi, cutoff)


def listed_pair_sum(
  r: jnp.ndarray, pairs: jnp.ndarray, phi: PairPotential, cutoff: float
) -> jnp.ndarray:
  """½ Σ φ(r) over the listed slots with r < cutoff -> (...).

  r: distances (..., N, M) from each particle to M slots; pairs (..., N, M):
  True for a slot that lists a pair, each unordered pair listed twice (j among
  i's slots and i among j's), as in `cell_list.Pairs`. phi must be finite at
  cutoff / 2.
  """
  return 0.5 * _masked_sum(r, pairs, phi, cutoff)


def pair_energy(x, box, phi: PairPotential, cutoff: float) -> jnp.ndarray:
  """Truncated pair energy (...) of positions x (..., N, 3) in box (3,), minimum image.

  In the unit of phi and the dtype of x.
  """
  return pair_sum(distances(x, box), phi, cutoff)


@dataclasses.dataclass(frozen=True)
class Linearization:
  """Training-time replacement of a pair potential near the origin.

  Distances are clipped from below at `min_distance`, and below
  `linearize_below` = r0 the potential is its tangent at r0:
  φ(r0) + (r - r0) φ'(r0). Both in the length unit; 0 < min_distance < r0.
  """

  linearize_below: float
  min_distance: float

  def __post_init__(self):
    if not 0 < self.min_distance < self.linearize_below:
      raise ValueError(
        f'Expected 0 < min_distance < linearize_below, got min_distance='
        f'{self.min_distance}, linearize_below={self.linearize_below}.'
      )

  def __call__(self, phi: PairPotential) -> PairPotential:
    """Returns the linearised potential, finite with finite gradient for r >= 0."""

    def linearized(r):
      r0 = jnp.asarray(self.linearize_below, dtype=r.dtype)
      phi0, slope = jax.jvp(phi, (r0,), (jnp.ones_like(r0),))
      r = jnp.maximum(r, self.min_distance)
      above = r >= r0
      return jnp.where(above, phi(jnp.where(above, r, r0)), phi0 + (r - r0) * slope)

    return linearized
