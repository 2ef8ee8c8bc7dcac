"""Fixed-capacity neighbour lists built inside a jitted call.

Each particle keeps the K nearest other particles within a cutoff (minimum
image), chosen with `jax.lax.top_k` over masked distances, so the list is
rebuilt from scratch at every call and works under jit, vmap and grad. The
build reads distances to M candidate slots per particle: the full (..., N, N)
matrix (O(N²)) or the cell-list candidates of `systems.cell_list` (O(N·C));
what the list saves is the three-body term, O(N·K²) instead of O(N³).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CAPACITY = 24


class NeighbourList(NamedTuple):
  """Neighbours of each particle, shapes (..., N, K) unless noted.

  indices: neighbour slots (int32) in the last axis of the distances the list
    was built from (particle indices for the full matrix); arbitrary where
    `mask` is False.
  mask: True for a real neighbour within the cutoff.
  count: (..., N) number of neighbours within the cutoff, possibly > K.
  """

  indices: jnp.ndarray
  mask: jnp.ndarray
  count: jnp.ndarray


def capacity_for(num_particles: int, capacity: int = DEFAULT_CAPACITY) -> int:
  """min(N - 1, capacity), the most neighbours any list needs to hold."""
  if capacity < 1:
    raise ValueError(f'Neighbour capacity must be >= 1, got {capacity}.')
  return max(1, min(num_particles - 1, capacity))


def build(
  r: jnp.ndarray, cutoff: float, capacity: int, others: jnp.ndarray | None = None
) -> NeighbourList:
  """Neighbour list from minimum-image distances r (..., N, M) to M slots per particle.

  Args:
    r: distances (..., N, M); by default the full matrix (M = N).
    cutoff: neighbours are closer than this.
    capacity: K before `capacity_for` (at most N - 1 and M).
    others: (..., N, M) True where a slot holds another particle (each once);
      by default every particle but itself (r the full matrix).

  When a particle has more than K neighbours within the cutoff, the K nearest
  are kept and `count` records the true number.
  """
  n, m = r.shape[-2:]
  capacity = min(capacity_for(n, capacity), m)
  if others is None:
    others = ~jnp.asarray(np.eye(n, dtype=bool))
  within = (r < cutoff) & others
  masked = jnp.where(within, jax.lax.stop_gradient(r), jnp.inf)
  neg_r, indices = jax.lax.top_k(-masked, capacity)
  return NeighbourList(indices, jnp.isfinite(neg_r), jnp.sum(within, axis=-1))


def within_capacity(total: jnp.ndarray, used: jnp.ndarray, capacity: int, overflow) -> jnp.ndarray:
  """`total` (...) where `used` (...) <= capacity; NaN value and gradient elsewhere.

  The contract of a fixed-capacity list that must not overflow: when `used`
  is concrete (eager) and exceeds `capacity` anywhere, raises
  ValueError(overflow(largest used)); when traced, marks those entries NaN.
  """
  if not isinstance(used, jax.core.Tracer) and np.any(used > capacity):
    raise ValueError(overflow(int(np.max(used))))
  return total * jnp.where(used > capacity, jnp.nan, 1.0)
