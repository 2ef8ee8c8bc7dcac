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

That context is linear in the neighbours' displacements, so the MLP must
recover each neighbour's distance from a d-dimensional sketch. With
`pair_width` p > 0 the parameters of coordinate c also see p features of each
pair's relative displacement, a nonlinearity before the sum:

    g_i = (1/k) Σ_j gelu(A(e_ij) (v_j − v_i^{¬c}) + a(e_ij)),   A(e) ∈ R^{p×3}, a(e) ∈ R^p,

with v_i^{¬c} the particle's displacement with coordinate c set to 0 (the one
being moved is not seen), and (A, a) another filter of the offsets. The
neighbours' part A v_j + a is computed once per coupling; each coordinate adds
O(k·p) per particle. On a CPU that is memory-bound: a training step of
`lj_256` costs about 3× as much at p = 16, and at equal CPU time the
features do not pay (docs/standalone_flows.md).

The filters depend on the offsets only, so they are computed once per call
for all samples; a call costs O(n·M_c·(k + d)·d) for n samples. The parameters do
not depend on N, so one set of weights evaluates at every size of a lattice
family. Summing over the neighbours makes the conditioner equivariant under
permutations of the particles together with their sites. The output layer
starts at zero, so a fresh conditioner gives the identity spline.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from flows.bijector import zero_linear

NUM_COORDS = 3


class Context(NamedTuple):
  """A coupling's neighbour context (LocalConditioner.context); pair fields None if p = 0."""

  mean: jnp.ndarray
  pairs: jnp.ndarray | None = None
  pair_kernel: jnp.ndarray | None = None


def _contract(vectors: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """Σ_a vectors[..., a] kernel[..., a, :]: (..., M_c, k|1, A), (M_c, k, A, p) -> (..., M_c, k, p).

  A is 2 or 3: a sum of broadcast products, which XLA fuses, where a dot with
  batch axes (M_c, k) and a contraction of 2-3 would not.
  """
  return sum(vectors[..., a, None] * kernel[..., a, :] for a in range(vectors.shape[-1]))


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
    pair_width: p, features of each pair's relative displacement (0: none).
    rngs: parameter initialisation.
  """

  def __init__(
    self, num_params: int, *, width: int, filter_width: int, pair_width: int = 0, rngs: nnx.Rngs
  ):
    if width < 1 or filter_width < 1 or pair_width < 0:
      raise ValueError(
        f'width={width}, filter_width={filter_width} must be >= 1 and pair_width={pair_width} >= 0.'
      )
    self.width = int(width)
    self.pair_width = int(pair_width)
    self.filter_hidden = nnx.Linear(NUM_COORDS, filter_width, rngs=rngs)
    self.filter_out = nnx.Linear(filter_width, (NUM_COORDS + 1) * width, rngs=rngs)
    if self.pair_width:
      self.filter_pair = nnx.Linear(filter_width, (NUM_COORDS + 1) * pair_width, rngs=rngs)
      self.pair_out = nnx.List(
        [nnx.Linear(pair_width, width, use_bias=False, rngs=rngs) for _ in range(NUM_COORDS)]
      )
    self.own = nnx.List(
      [nnx.Linear(NUM_COORDS - 1, width, use_bias=False, rngs=rngs) for _ in range(NUM_COORDS)]
    )
    self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(NUM_COORDS)])
    self.heads = nnx.List([zero_linear(width, num_params, rngs=rngs) for _ in range(NUM_COORDS)])

  def context(self, neighbour_displacements: jnp.ndarray, offsets: jnp.ndarray) -> Context:
    """What the neighbours give a coupling, computed once per coupling.

    Args:
      neighbour_displacements: (..., M_c, k, 3) v_j of each particle's
        neighbours (the flow's unit).
      offsets: (M_c, k, 3) lattice offsets e_ij (nearest-neighbour distances).

    Returns:
      Context: h_i (..., M_c, d), the filter-weighted mean of the neighbours'
      displacements, and with pair_width p > 0 the pairs' A(e_ij) v_j + a(e_ij)
      (..., M_c, k, p) and A (M_c, k, 3, p).
    """
    hidden = jax.nn.gelu(self.filter_hidden(offsets))
    filters = self.filter_out(hidden)  # (M_c, k, 4d)
    num_targets, k = offsets.shape[:2]
    kernel = filters[..., : NUM_COORDS * self.width].reshape(
      num_targets, k * NUM_COORDS, self.width
    )
    bias = jnp.mean(filters[..., NUM_COORDS * self.width :], axis=-2)  # (M_c, d)
    flat = neighbour_displacements.reshape(neighbour_displacements.shape[:-2] + (k * NUM_COORDS,))
    mean = jnp.einsum('...mj,mjd->...md', flat, kernel) / k + bias
    if not self.pair_width:
      return Context(mean)
    pair = self.filter_pair(hidden)  # (M_c, k, 4p)
    pair_kernel = pair[..., : NUM_COORDS * self.pair_width].reshape(
      num_targets, k, NUM_COORDS, self.pair_width
    )
    pair_bias = pair[..., NUM_COORDS * self.pair_width :]
    neighbours = _contract(neighbour_displacements, pair_kernel)
    return Context(mean, neighbours + pair_bias, pair_kernel)

  def __call__(self, context: Context, own: jnp.ndarray, coordinate: int) -> jnp.ndarray:
    """Context of M_c particles and their (..., M_c, 2) other coordinates -> (..., M_c, P)."""
    pre = context.mean + self.own[coordinate](own)
    if self.pair_width:
      others = [a for a in range(NUM_COORDS) if a != coordinate]
      own_part = _contract(own[..., None, :], context.pair_kernel[:, :, others])
      pairs = jnp.mean(jax.nn.gelu(context.pairs - own_part), axis=-2)  # (..., M_c, p)
      pre = pre + self.pair_out[coordinate](pairs)
    h = jax.nn.gelu(pre)
    h = jax.nn.gelu(self.hidden[coordinate](h))
    return self.heads[coordinate](h)
