"""Local conditioner: spline parameters of a particle from its lattice neighbours.

For a moving particle i with k conditioning neighbours j (a
flows.local.lattice_graph.ColourClass), the node feature is a continuous-filter
convolution of the neighbours' displacements (its context),

    h_i = (1/k) Σ_j [W(e_ij) v_j + b(e_ij)],     W(e) ∈ R^{d×3}, b(e) ∈ R^d,

where v_j is neighbour j's displacement from its site (in the flow's unit)
and the filter (W, b) is a small MLP of the fixed lattice offset e_ij (in
nearest-neighbour distances). For each coordinate in turn, an MLP of h_i and
the particle's other two coordinates gives that coordinate's spline
parameters; the nonlinearity acts after the sum, so the sum is one
(n, 3k) × (3k, d) product per particle.

The filters depend on the offsets only, so they are computed once per call
for all samples; a call costs O(n·M_c·(k + d)·d) for n samples. The parameters do
not depend on N, so one set of weights evaluates at every size of a lattice
family. Summing over the neighbours makes the conditioner equivariant under
permutations of the particles together with their sites. The output layer
starts at zero, so a fresh conditioner gives the identity spline.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flows.bijector import zero_linear

NUM_COORDS = 3


class LocalConditioner(nnx.Module):
  """Spline parameters of a moving particle's coordinates, one coordinate at a time.

  `context` aggregates the neighbours once per coupling, (..., M_c, k, 3) ->
  (..., M_c, d); `__call__` gives the parameters of coordinate c from the
  context and the particle's two other coordinates (..., M_c, 2), through an
  MLP of its own per coordinate, so a coupling can move the three
  coordinates in turn (each given the other two: non-separable densities).

  Args:
    num_params: P, raw spline parameters per coordinate.
    width: d, context and hidden width.
    filter_width: hidden width of the filter MLP of the offsets.
    rngs: parameter initialisation.
  """

  def __init__(self, num_params: int, *, width: int, filter_width: int, rngs: nnx.Rngs):
    if width < 1 or filter_width < 1:
      raise ValueError(f'width={width} and filter_width={filter_width} must be >= 1.')
    self.width = int(width)
    self.filter_hidden = nnx.Linear(NUM_COORDS, filter_width, rngs=rngs)
    self.filter_out = nnx.Linear(filter_width, (NUM_COORDS + 1) * width, rngs=rngs)
    self.own = nnx.List(
      [nnx.Linear(NUM_COORDS - 1, width, use_bias=False, rngs=rngs) for _ in range(NUM_COORDS)]
    )
    self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(NUM_COORDS)])
    self.heads = nnx.List([zero_linear(width, num_params, rngs=rngs) for _ in range(NUM_COORDS)])

  def context(self, neighbour_displacements: jnp.ndarray, offsets: jnp.ndarray) -> jnp.ndarray:
    """Filter-weighted mean of the neighbours' displacements.

    Args:
      neighbour_displacements: (..., M_c, k, 3) v_j of each particle's
        neighbours (the flow's unit).
      offsets: (M_c, k, 3) lattice offsets e_ij (nearest-neighbour distances).

    Returns:
      (..., M_c, d) h_i.
    """
    filters = self.filter_out(jax.nn.gelu(self.filter_hidden(offsets)))  # (M_c, k, 4d)
    num_targets, k = offsets.shape[:2]
    kernel = filters[..., : NUM_COORDS * self.width].reshape(
      num_targets, k * NUM_COORDS, self.width
    )
    bias = jnp.mean(filters[..., NUM_COORDS * self.width :], axis=-2)  # (M_c, d)
    flat = neighbour_displacements.reshape(neighbour_displacements.shape[:-2] + (k * NUM_COORDS,))
    return jnp.einsum('...mj,mjd->...md', flat, kernel) / k + bias

  def __call__(self, context: jnp.ndarray, own: jnp.ndarray, coordinate: int) -> jnp.ndarray:
    """(..., M_c, d) context and (..., M_c, 2) other coordinates -> (..., M_c, P)."""
    h = jax.nn.gelu(context + self.own[coordinate](own))
    h = jax.nn.gelu(self.hidden[coordinate](h))
    return self.heads[coordinate](h)
