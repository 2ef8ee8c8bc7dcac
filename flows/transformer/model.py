"""SolidFlow: the flows-for-atomic-solids model with the translation mode removed.

The target density is invariant under global translations. Following the
paper, particle 0 is pinned at lattice site 0 and the flow models the other
M = N − 1 particles by their positions y relative to it, wrapped into
[−L/2, L/2). The flow q(y) is the push-forward of a LatticeBase over the
relative sites by a chain of `num_layers` CouplingLayers. The chain acts on
box-scaled coordinates y/L ∈ [−1/2, 1/2)³ (as the published code does for
non-cubic boxes); the rescaling contributes no net log-det.

log_q is the normalised density of the N − 1 relative coordinates, including
−ln((N−1)!); see systems.convention for turning its importance-sampling
normaliser into free energies.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flows.bijector import run_chain, stack_layers
from flows.solid_flow import SolidFlowBase
from flows.transformer.couplings import CouplingLayer, undo_axis_rolls
from flows.transformer.lattice_base import LatticeBase, wigner_seitz_half_width
from systems.box import minimum_image, wrap


class SolidFlow(SolidFlowBase):
  """Normalizing flow over N particles in a periodic orthorhombic box.

  Args:
    lattice: (N, 3) lattice sites in the box frame [0, L) (site 0 at the origin
      by convention; particle 0 is pinned to it). N >= 2.
    box: (3,) box edge lengths (length units).
    num_layers: flow layers; each is shift + two spline couplings.
    num_bins: bins per rational-quadratic spline.
    embedding_size, num_heads, num_blocks: transformer width, heads, blocks.
    num_frequencies: circular Fourier frequencies per conditioning coordinate.
    noise_scale: σ of the base noise (length units).
    use_layernorm: layer norms in the transformer (published model: False).
    remat: rematerialise each layer in the backward pass (saves memory).
    compute_dtype: 'float32', or 'bfloat16' for the transformers' matrix
      products (mixed precision; splines, log-dets and the base stay in the
      input's dtype, so the flow is still an exact bijection with an exact
      log-det).
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    lattice,
    box,
    *,
    num_layers: int,
    num_bins: int,
    embedding_size: int,
    num_heads: int,
    num_blocks: int,
    num_frequencies: int,
    noise_scale: float,
    use_layernorm: bool = False,
    remat: bool = False,
    compute_dtype: str = 'float32',
    rngs: nnx.Rngs,
  ):
    lattice = np.asarray(lattice, np.float64)
    box = np.asarray(box, np.float64)
    if lattice.ndim != 2 or lattice.shape[1] != 3 or lattice.shape[0] < 2:
      raise ValueError(f'lattice has shape {lattice.shape}; expected (N, 3) with N >= 2.')
    if box.shape != (3,) or not np.all(box > 0):
      raise ValueError(f'box={box} must be three positive edge lengths.')
    if num_layers < 1:
      raise ValueError(f'num_layers={num_layers} must be >= 1.')
    self.num_particles = lattice.shape[0]
    self.num_layers = int(num_layers)
    self.remat = bool(remat)
    self.box = tuple(float(b) for b in box)  # static, exact period
    self.origin = tuple(float(o) for o in lattice[0])  # site of particle 0
    offsets = lattice[1:] - lattice[0]
    relative_sites = minimum_image(offsets, box)
    self.base = LatticeBase(
      relative_sites, box, noise_scale, half_width=wigner_seitz_half_width(lattice, box)
    )

    self.layers = stack_layers(  # parameters stacked on a leading layer axis
      lambda layer_rngs: CouplingLayer(
        lower=-0.5,
        upper=0.5,
        num_bins=num_bins,
        embedding_size=embedding_size,
        num_frequencies=num_frequencies,
        num_heads=num_heads,
        num_blocks=num_blocks,
        use_layernorm=use_layernorm,
        compute_dtype=compute_dtype,
        rngs=layer_rngs,
      ),
      num_layers,
      rngs,
    )

  def _check_relative(self, y):
    expected = (self.num_particles - 1, 3)
    if y.shape[-2:] != expected:
      raise ValueError(f'input has shape {y.shape}; expected (..., {expected[0]}, 3).')

  def _chain(self, y, method: str):
    """Scans the stacked layers over scaled coordinates y/L.

    Each layer ends with a cyclic roll of (x, y, z); the chain undoes the net
    roll of its `num_layers` layers, so a fresh flow is the identity for any
    depth and every box shape (a roll does not map a hexagonal-ice lattice
    onto itself).
    """
    box = jnp.asarray(self.box, y.dtype)
    u = y / box
    if method == 'inverse':
      u = undo_axis_rolls(u, self.num_layers, method)
    u, log_det = run_chain(self.layers, u, method, remat=self.remat)
    if method == 'forward':
      u = undo_axis_rolls(u, self.num_layers, method)
    return u * box, log_det

  def forward(self, z):
    """Base -> model: (..., N−1, 3) in [−L/2, L/2) -> (y, log|dy/dz| (...))."""
    self._check_relative(z)
    return self._chain(z, 'forward')

  def inverse(self, y):
    """Model -> base: (..., N−1, 3) in [−L/2, L/2) -> (z, log|dz/dy| (...))."""
    self._check_relative(y)
    return self._chain(y, 'inverse')

  def sample_and_log_prob(self, key, num_samples: int, sharding=None):
    """Draws x (n, N, 3) in the box frame [0, L) and log_q (n,).

    Particle 0 sits at lattice[0]. `sharding`, if given, constrains the batch
    layout of the base samples (e.g. NamedSharding over a 'batch' axis).
    """
    z, log_base = self.base_sample(key, num_samples, sharding)
    y, log_det = self.forward(z)
    box = jnp.asarray(self.box, y.dtype)
    origin = jnp.asarray(self.origin, y.dtype)
    pinned = jnp.broadcast_to(origin, (num_samples, 1, 3))
    x = jnp.concatenate([pinned, wrap(origin + y, 0.0, box)], axis=-2)
    return x, log_base - log_det

  def sample(self, key, num_samples: int, sharding=None):
    """(x, log q, in_basin) as sample_and_log_prob, the protocol of every solid flow.

    The density of this flow is exact on the whole torus, so every sample is
    counted (in_basin all True; see flows.LocalSolidFlow for a flow whose
    samples outside the solid's basin carry zero weight).
    """
    x, log_q = self.sample_and_log_prob(key, num_samples, sharding)
    return x, log_q, jnp.ones(log_q.shape, bool)

  def log_prob(self, x):
    """ln q of positions x (..., N, 3) (any real values; periodic) -> (...)."""
    if x.shape[-2:] != (self.num_particles, 3):
      raise ValueError(f'x has shape {x.shape}; expected (..., {self.num_particles}, 3).')
    box = jnp.asarray(self.box, x.dtype)
    y = wrap(x[..., 1:, :] - x[..., :1, :], -box / 2, box / 2)
    z, log_det = self.inverse(y)
    return self.base.log_prob(z) + log_det
