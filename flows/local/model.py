r"""LocalSolidFlow: a flow of a crystal's displacements with local, size-transferable layers.

The variant of flows.SolidFlow with `model.conditioner = 'local'` (the
successor of the paper's model in Schebek, Noé & Rogal, Nat. Commun. 17,
5010, 2026, in a form whose estimates stay exact). As in SolidFlow particle
0 is pinned at site 0 and the flow models the relative positions of the
other M = N − 1 particles; unlike it, particles are labelled by their
lattice sites and the flow acts on their displacements u_i from their sites:

    u⁰ ~ N(0, s²C)  (flows.local.gaussian_base)  ->  u = σ·f(u⁰/σ)  ->  y_i = r_i + u_i,

with C the harmonic crystal's covariance (or σ²I), f a chain of LocalLayers
(flows.local.couplings) and σ the base's mean per-coordinate
standard deviation. The layers' parameters do not depend on N: one set of
weights runs at every size of a lattice family (the covariance is the
system's own).

Density and exactness. Let S (the solid's basin) be the configurations in
which every particle lies in the Voronoi cell of a different site
(flows.local.lattice_graph gives the exact test), and S_id ⊂ S those in which
particle i sits in the cell of site i. Every configuration in S has exactly
one labelling in S_id, so for x in S

    ln q(x) = ln q_u(u(x)) − ln M!,

u(x) the displacements after relabelling each particle to its site; the
M! counts the labellings, as in SolidFlow. Flow samples whose u leaves S_id
(a particle pushed out of its cell; rare) carry zero weight: with that
indicator, E_q[1_S e^{−βU}/q] = ∫_S e^{−βU}, so importance sampling, and BAR
with such samples as +∞ works, estimate the basin's configurational
integral exactly whatever the flow. Reference samples outside S (two
particles in one cell) have ln q = −∞ and are counted, never dropped.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flows.bijector import run_chain, stack_layers
from flows.local.couplings import LocalLayer
from flows.local.gaussian_base import GaussianDisplacementBase
from flows.local.lattice_graph import LatticeGraph
from flows.solid_flow import SolidFlowBase
from systems.box import minimum_image, wrap


class LocalSolidFlow(SolidFlowBase):
  """Normalizing flow over N particles of a crystal, with local couplings.

  Args:
    lattice: (N, 3) lattice sites in [0, L) (length units); particle 0 is pinned
      to site 0. N >= 2.
    box: (3,) box edge lengths.
    basis_index: (N,) basis-atom index of each site (systems.System.basis_index).
    covariance: (3M, 3M) covariance of the Gaussian base (systems.harmonic),
      length units squared.
    num_layers: LocalLayers (each moves every colour class once); >= 0.
    num_bins: bins of each spline.
    num_neighbours: conditioning neighbours k per moving particle.
    colour_shells: sites within this many neighbour shells are moved in
      different couplings (flows.local.lattice_graph).
    width, filter_width, pair_width: of the local conditioners
      (flows.local.conditioner; pair_width 0: no pair features).
    spline_range: B, splines act on [−B, B] base standard deviations.
    remat: rematerialise each layer in the backward pass.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    lattice,
    box,
    basis_index,
    *,
    covariance,
    num_layers: int,
    num_bins: int,
    num_neighbours: int,
    width: int,
    filter_width: int,
    spline_range: float,
    pair_width: int = 0,
    colour_shells: int = 1,
    remat: bool = False,
    rngs: nnx.Rngs,
  ):
    if num_layers < 0:
      raise ValueError(f'num_layers={num_layers} must be >= 0.')
    self.graph = LatticeGraph(lattice, box, basis_index, num_neighbours, colour_shells)
    self.num_particles = len(self.graph.relative_sites)
    self.box = tuple(float(b) for b in np.asarray(box))  # static, exact period
    self.origin = tuple(float(o) for o in np.asarray(lattice, np.float64)[0])
    self.base = GaussianDisplacementBase(covariance)
    if self.base.num_particles != self.num_particles - 1:
      raise ValueError(
        f'covariance is for {self.base.num_particles} flowed particles; the lattice '
        f'has N − 1 = {self.num_particles - 1}.'
      )
    self.num_layers = int(num_layers)
    self.remat = bool(remat)
    self.log_num_labellings = math.lgamma(self.num_particles)  # ln M!
    num_colours = len(self.graph.classes)

    self.layers = stack_layers(  # stacked on a layer axis; None for no layers
      lambda layer_rngs: LocalLayer(
        num_colours,
        rngs=layer_rngs,
        num_bins=num_bins,
        spline_range=spline_range,
        width=width,
        filter_width=filter_width,
        pair_width=pair_width,
      ),
      num_layers,
      rngs,
    )

  def _check_displacements(self, u):
    if u.shape[-2:] != (self.num_particles - 1, 3):
      raise ValueError(f'u has shape {u.shape}; expected (..., {self.num_particles - 1}, 3).')

  def _chain(self, u, method: str):
    """The layers' `method` on displacements u (..., M, 3) (length units)."""
    unit = self.base.unit
    v, log_det = run_chain(self.layers, u / unit, method, self.graph.classes, remat=self.remat)
    return v * unit, log_det

  def forward(self, u):
    """Base -> model: displacements (..., M, 3) -> (u', ln|det ∂u'/∂u| (...))."""
    self._check_displacements(u)
    return self._chain(u, 'forward')

  def inverse(self, u):
    """Model -> base: displacements (..., M, 3) -> (u⁰, ln|det ∂u⁰/∂u| (...))."""
    self._check_displacements(u)
    return self._chain(u, 'inverse')

  def in_own_cells(self, u) -> jnp.ndarray:
    """(..., M) True where displacement u_i (..., M, 3) keeps particle i in its
    own site's Voronoi cell (|u_i| < d_nn and nearer its site than to every
    site image within 2·d_nn of it; exact, flows.local.lattice_graph)."""
    offsets = jnp.asarray(self.graph.basin_offsets, u.dtype)  # (M, K, 3)
    own = jnp.sum(u * u, axis=-1)  # (..., M)
    other = jnp.sum((u[..., None, :] - offsets) ** 2, axis=-1)  # (..., M, K)
    return (own < self.graph.nearest_distance**2) & jnp.all(own[..., None] < other, axis=-1)

  def in_basin(self, u) -> jnp.ndarray:
    """(...) True where every particle of u (..., M, 3) is in its own cell."""
    return jnp.all(self.in_own_cells(u), axis=-1)

  def positions(self, u) -> jnp.ndarray:
    """Displacements u (..., M, 3) -> positions x (..., N, 3) in [0, L), particle 0 pinned."""
    box = jnp.asarray(self.box, u.dtype)
    sites = jnp.asarray(self.graph.relative_sites, u.dtype)
    y = jnp.concatenate([jnp.zeros_like(u[..., :1, :]), u], axis=-2) + sites
    return wrap(y + jnp.asarray(self.origin, u.dtype), 0.0, box)

  def sample(self, key, num_samples: int, sharding=None):
    """Draws x (n, N, 3) in [0, L), ln q (n,) and the basin mask (n,).

    Samples outside the basin (mask False) have zero weight (module docstring).
    `sharding`, if given, constrains the batch layout of the base samples.
    """
    u0, log_base = self.base_sample(key, num_samples, sharding)
    u, log_det = self._chain(u0, 'forward')
    log_q = log_base - log_det - self.log_num_labellings
    return self.positions(u), log_q, self.in_basin(u)

  def displacements(self, x):
    """Positions x (..., N, 3) -> site-labelled displacements u (..., M, 3) and
    the mask (...) of configurations in the basin S.

    Each of particles 1..N−1 is assigned to its nearest site relative to
    particle 0 (minimum image, all N sites); where that is not a permutation of
    sites 1..N−1, or a displacement fails the basin test, the mask is False.
    """
    if x.shape[-2:] != (self.num_particles, 3):
      raise ValueError(f'x has shape {x.shape}; expected (..., {self.num_particles}, 3).')
    box = jnp.asarray(self.box, x.dtype)
    sites = jnp.asarray(self.graph.relative_sites, x.dtype)  # (N, 3)
    y = x[..., 1:, :] - x[..., :1, :]
    d = minimum_image(y[..., :, None, :] - sites, box)  # (..., M, N, 3)
    nearest = jnp.argmin(jnp.sum(d * d, axis=-1), axis=-1)  # (..., M), site index
    order = jnp.argsort(nearest, axis=-1)  # particle at each site, if a permutation
    is_permutation = jnp.all(
      jnp.take_along_axis(nearest, order, axis=-1) == jnp.arange(1, self.num_particles), axis=-1
    )
    own = jnp.take_along_axis(d, nearest[..., None, None], axis=-2)[..., 0, :]  # (..., M, 3)
    u = jnp.take_along_axis(own, order[..., None], axis=-2)
    return u, is_permutation & self.in_basin(u)

  def log_prob_displacements(self, u):
    """ln q (...) of site-labelled displacements u (..., M, 3) in the basin."""
    self._check_displacements(u)
    u0, log_det = self._chain(u, 'inverse')
    return self.base.log_prob(u0) + log_det - self.log_num_labellings

  def log_prob_of_samples(self, x):
    """ln q (n,) of the flow's own samples x (n, N, 3), in O(N): `sample` puts
    particle i at site i, so u_i is the minimum image of x_i − x_0 − r_i (no
    relabelling). Right where the sample's basin mask is True."""
    box = jnp.asarray(self.box, x.dtype)
    sites = jnp.asarray(self.graph.relative_sites[1:], x.dtype)
    u = minimum_image(x[..., 1:, :] - x[..., :1, :] - sites, box)
    return self.log_prob_displacements(u)

  def log_prob(self, x):
    """ln q (...) of positions x (..., N, 3) (any real values, periodic); −∞ outside S."""
    u, ok = self.displacements(x)
    return jnp.where(ok, self.log_prob_displacements(u), -jnp.inf)

  def reference_data(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Site-labelled displacements (n, M, 3) of reference positions (n, N, 3) and the mask
    (n,) of those in the basin (`displacements`, in batches of 256)."""
    labelled = jax.jit(self.displacements)
    parts = [
      labelled(jnp.asarray(positions[i : i + 256], jnp.float32))
      for i in range(0, len(positions), 256)
    ]
    return (
      np.concatenate([np.asarray(u) for u, _ in parts]),
      np.concatenate([np.asarray(ok) for _, ok in parts]),
    )

  def log_prob_reference(self, data):
    """ln q (n,) of site-labelled displacements (reference_data rows)."""
    return self.log_prob_displacements(data)
