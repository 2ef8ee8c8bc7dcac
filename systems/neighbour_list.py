"""Fixed-capacity neighbour lists built inside a jitted call.

Each particle keeps the K nearest other particles within a cutoff (minimum
image), chosen with `jax.lax.top_k` over masked distances, so the list is
rebuilt from scratch at every call and works under jit, vmap and grad. The
build reads the full (..., N, N) distance matrix: O(N²) time and memory per
configuration (no cell list); what the list saves is the three-body term,
O(N·K²) instead of O(N³).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CAPACITY = 24


class NeighbourList(NamedTuple):
  """Neighbours of each particle, shapes (..., N, K) unless noted.

  indices: neighbour indices (int32); arbitrary where `mask` is False.
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


def build(r: jnp.ndarray, cutoff: float, capacity: int) -> NeighbourList:
  """Neighbour list from minimum-image distances r (..., N, N); self excluded.

  When a particle has more than `capacity` neighbours within the cutoff, the
  `capacity` nearest are kept and `count` records the true number.
  """
  n = r.shape[-1]
  capacity = capacity_for(n, capacity)
  within = (r < cutoff) & ~jnp.asarray(np.eye(n, dtype=bool))
  masked = jnp.where(within, jax.lax.stop_gradient(r), jnp.inf)
  neg_r, indices = jax.lax.top_k(-masked, capacity)
  return NeighbourList(indices, jnp.isfinite(neg_r), jnp.sum(within, axis=-1))
