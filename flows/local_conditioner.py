"""Local conditioner: spline parameters of a particle from its lattice neighbours.

For a moving particle i with k conditioning neighbours j (a
flows.lattice_graph.ColourClass), the messages are continuous-filter
convolutions of the neighbours' displacements,

    m_ij = gelu(W(e_ij) v_j + b(e_ij)),     W(e) ∈ R^{d×3}, b(e) ∈ R^d,

where v_j is neighbour j's displacement from its site (in the flow's unit)
and the filter (W, b) is a small MLP of the fixed lattice offset e_ij (in
nearest-neighbour distances). The node feature is the mean message, and an
MLP maps it to the spline parameters of the particle's three coordinates.

The filters depend on the offsets only, so they are computed once per call
for all samples; a call costs O(n·M_c·k·d) for n samples. The parameters do
not depend on N, so one set of weights evaluates at every size of a lattice
family. Summing over the neighbours makes the conditioner equivariant under
permutations of the particles together with their sites. The output layer
starts at zero, so a fresh conditioner gives the identity spline.
"""

import jax
import jax.numpy as jnp
from flax import nnx

NUM_COORDS = 3


class LocalConditioner(nnx.Module):
  """(n, M_c, k, 3) neighbour displacements -> (n, M_c, 3, P) spline parameters.

  Args:
    num_params: P, raw spline parameters per coordinate.
    width: d, message and hidden width.
    filter_width: hidden width of the filter MLP of the offsets.
    rngs: parameter initialisation.
  """

  def __init__(self, num_params: int, *, width: int, filter_width: int, rngs: nnx.Rngs):
    if width < 1 or filter_width < 1:
      raise ValueError(f'width={width} and filter_width={filter_width} must be >= 1.')
    self.width = int(width)
    self.num_params = int(num_params)
    self.filter_hidden = nnx.Linear(NUM_COORDS, filter_width, rngs=rngs)
    self.filter_out = nnx.Linear(filter_width, (NUM_COORDS + 1) * width, rngs=rngs)
    self.hidden = nnx.Linear(width, width, rngs=rngs)
    self.head = nnx.Linear(
      width,
      NUM_COORDS * num_params,
      kernel_init=nnx.initializers.zeros,
      bias_init=nnx.initializers.zeros,
      rngs=rngs,
    )

  def __call__(self, neighbour_displacements: jnp.ndarray, offsets: jnp.ndarray) -> jnp.ndarray:
    """Spline parameters of the moving particles.

    Args:
      neighbour_displacements: (..., M_c, k, 3) v_j of each particle's
        neighbours (the flow's unit).
      offsets: (M_c, k, 3) lattice offsets e_ij (nearest-neighbour distances).

    Returns:
      (..., M_c, 3, P) raw spline parameters.
    """
    filters = self.filter_out(jax.nn.gelu(self.filter_hidden(offsets)))
    kernel = filters[..., : NUM_COORDS * self.width].reshape(
      offsets.shape[:-1] + (NUM_COORDS, self.width)
    )
    bias = filters[..., NUM_COORDS * self.width :]
    messages = jnp.einsum('...mkc,mkcd->...mkd', neighbour_displacements, kernel) + bias
    h = jnp.mean(jax.nn.gelu(messages), axis=-2)
    h = self.head(jax.nn.gelu(self.hidden(h)))
    return h.reshape(h.shape[:-1] + (NUM_COORDS, self.num_params))
