r"""A local many-body coupling layer for particles in a periodic cube: column couplings.

The M particles of a configuration (..., M, 3) in [lower, upper)³ are split by
index parity into two fixed groups, even and odd. A ColumnCoupling has, for
each group g in turn and for each axis c = 0, 1, 2 in turn, one coupling step:
the c coordinate of every particle i of g passes through a circular
rational-quadratic spline on [lower, upper) (flows.splines), whose parameters
depend only on what the step leaves fixed: i's two other coordinates and the
positions of the other group's particles. The neighbours of i are the
particles j of the other group inside the cylinder about i's column along c,
ρ_ij < cutoff, with ρ_ij the minimum-image distance in the plane orthogonal to
c; the cylinder does not depend on x_i[c], so the step is a coupling. With
u_ij = max(1 − (ρ_ij/cutoff)², 0), each pair contributes the message

    φ_ij = u_ij² Σ_{k,m} w_km T_k(2u_ij − 1) f_m(x_j[c]),

a linear layer on tensor-product features: the smooth envelope u² (zero, with
zero slope, at the cutoff) times a Chebyshev basis T_k, k < R, of u (smooth
in the in-plane displacement, also at ρ = 0), times f = (1, cos, sin of
2πm(x_j[c] − lower)/L, m = 1..K) of j's coordinate along c
(flows.embeddings). The messages are summed over j and divided by n̄ ≥ 1, the
envelope-weighted neighbour count of a uniform fluid (activations stay O(1)
at any density); the circular features of i's own in-plane coordinates are
added (a solute fixed at the box centre makes absolute position matter), and
an MLP gives the spline parameters (widths, heights, slopes; flows.splines),

    θ_i = head(gelu(W gelu(Σ_j φ_ij / n̄ + A circ(x_i[a], x_i[b]) + b))),

with `head` initialised to zero: a fresh layer is the identity. Since φ is
linear in its features, Σ_j φ_ij is one batched product of the (..., Mi, Mj,
R) pair basis with the (..., Mj, 2K+1) neighbour features: per pair only R
numbers are formed, O(M²·R·K) per step with the envelope as mask and no Python
loop over particles. (A per-pair hidden layer of width 16 made the layer 3-6×
slower than the transformer coupling on CPU, for this benchmark.) The
parameters are C¹ in the positions, and cutoff ≤ L/2 keeps the minimum-image
jump of the displacement (at ρ ≥ L/2) outside every cylinder, so the layer is
continuous on the 3-torus.

Summing over neighbours makes the layer equivariant under permutations within
each parity group (not across groups). Each step's Jacobian is triangular with
the spline derivatives on its diagonal, so ln|det J| is the sum of the
splines' log-derivatives. The layer keeps the axes in place (no roll).
"""

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flows import embeddings, splines
from flows.bijector import zero_linear
from systems.box import minimum_image, wrap

NUM_COORDS = 3
NUM_GROUPS = 2


def _init(fan_in: int):
  return nnx.initializers.truncated_normal(1 / math.sqrt(fan_in))


def check_cutoff(cutoff: float, lower: float, upper: float) -> float:
  """`cutoff` as a float, if 0 < cutoff ≤ (upper − lower)/2; ValueError otherwise."""
  limit = 0.5 * (float(upper) - float(lower))
  cutoff = float(cutoff)
  if not (math.isfinite(cutoff) and 0 < cutoff <= limit):
    raise ValueError(
      f'cutoff={cutoff} must be positive and at most half the box width, {limit} (minimum image).'
    )
  return cutoff


class _StepConditioner(nnx.Module):
  """Spline parameters of one coupling step (a group and an axis), see the module doc."""

  def __init__(
    self, *, num_params: int, width: int, num_frequencies: int, num_radial: int, rngs: nnx.Rngs
  ):
    circular = 2 * num_frequencies  # features of one coordinate
    pair_features = num_radial * (circular + 1)
    self.message = nnx.Linear(pair_features, width, kernel_init=_init(pair_features), rngs=rngs)
    self.own = nnx.Linear(2 * circular, width, kernel_init=_init(2 * circular), rngs=rngs)
    self.hidden = nnx.Linear(width, width, kernel_init=_init(width), rngs=rngs)
    self.head = zero_linear(width, num_params, rngs=rngs)

  def __call__(self, weighted_basis, neighbour_features, own_features, norm):
    """weighted_basis (..., Mi, Mj, R), the envelope times the basis of each pair;
    neighbour_features (..., Mj, 2K); own_features (..., Mi, 4K) -> raw
    parameters (..., Mi, 3K+1)."""
    one = jnp.ones(neighbour_features.shape[:-1] + (1,), neighbour_features.dtype)
    neighbour_features = jnp.concatenate([one, neighbour_features], axis=-1)
    # Σ_j e_ij b_k(s_ij) f_m(x_j[c]): (..., Mi, R, 2K+1), one batched product.
    density = jnp.einsum('...ijk,...jm->...ikm', weighted_basis, neighbour_features)
    density = density.reshape(density.shape[:-2] + (-1,)) / norm
    h = nnx.gelu(self.message(density) + self.own(own_features))
    return self.head(nnx.gelu(self.hidden(h)))


class ColumnCoupling(nnx.Module):
  """Six coupling steps (2 parity groups × 3 axes) with cylindrical neighbourhoods.

  forward(x) -> (y, log_det) and inverse(y) -> (x, log_det) on x, y (..., M, 3)
  in [lower, upper)³ (inputs are wrapped into it), log_det (...); identity at
  initialisation. See the module doc.

  Args:
    lower, upper: the periodic cube [lower, upper)³ (length units), upper > lower.
    cutoff: radius of the cylinders (length units), 0 < cutoff ≤ (upper − lower)/2.
    num_bins: bins of the circular splines.
    width: hidden width of the message and output networks.
    num_frequencies: K, circular frequencies of the coordinate features.
    num_radial: R ≥ 1, Chebyshev basis functions of the pair distance.
    rngs: parameter initialisation.
  """

  axis_roll = 0  # it does not roll the coordinate axes

  def __init__(
    self,
    lower: float,
    upper: float,
    *,
    cutoff: float,
    num_bins: int,
    width: int = 32,
    num_frequencies: int = 4,
    num_radial: int = 4,
    rngs: nnx.Rngs,
  ):
    if not upper > lower:
      raise ValueError(f'upper={upper} must be greater than lower={lower}.')
    for name, value in (
      ('width', width),
      ('num_frequencies', num_frequencies),
      ('num_radial', num_radial),
    ):
      if value < 1:
        raise ValueError(f'{name}={value} must be >= 1.')
    self.lower, self.upper = float(lower), float(upper)
    self.cutoff = check_cutoff(cutoff, lower, upper)
    self.num_frequencies = int(num_frequencies)
    self.num_radial = int(num_radial)
    self.steps = nnx.List(
      [
        _StepConditioner(
          num_params=splines.num_params(num_bins),
          width=width,
          num_frequencies=num_frequencies,
          num_radial=num_radial,
          rngs=rngs,
        )
        for _ in range(NUM_GROUPS * NUM_COORDS)
      ]
    )

  def _weighted_basis(self, s):
    """Envelope times radial basis, (...) -> (..., R): u²·T_k(2u − 1), k < R, u = max(1 − s, 0)."""
    u = jnp.maximum(1.0 - s, 0.0)
    t = 2.0 * u - 1.0
    basis = [jnp.ones_like(t), t]
    while len(basis) < self.num_radial:
      basis.append(2.0 * t * basis[-1] - basis[-2])
    return jnp.square(u)[..., None] * jnp.stack(basis[: self.num_radial], axis=-1)

  def _circular(self, x):
    return embeddings.circular_features(x, self.lower, self.upper, self.num_frequencies)

  def _step(self, x, group: int, axis: int, spline_fn):
    """One coupling step: splines coordinate `axis` of the particles of `group`."""
    num = x.shape[-2]
    moving_index = np.arange(group, num, NUM_GROUPS)
    other_index = np.arange(1 - group, num, NUM_GROUPS)
    if len(moving_index) == 0:
      return x, jnp.zeros(x.shape[:-2], x.dtype)
    plane = [a for a in range(NUM_COORDS) if a != axis]
    moving, other = x[..., moving_index, :], x[..., other_index, :]
    width = self.upper - self.lower
    box = np.full(NUM_COORDS, width)
    displacement = minimum_image(other[..., None, :, :] - moving[..., :, None, :], box)
    s = jnp.sum(jnp.square(displacement[..., plane]), axis=-1) / self.cutoff**2
    # Envelope-weighted neighbours of a uniform fluid: n_j·π·cutoff²/L² · ∫₀¹(1 − s)² ds.
    norm = max(1.0, len(other_index) * math.pi * self.cutoff**2 / (3 * width**2))
    raw = self.steps[NUM_COORDS * group + axis](
      self._weighted_basis(s),
      self._circular(other[..., axis : axis + 1]),
      self._circular(moving[..., plane]),
      norm,
    )
    y, log_det = spline_fn(moving[..., axis], raw, self.lower, self.upper)
    return x.at[..., moving_index, axis].set(y), jnp.sum(log_det, axis=-1)

  def _order(self):
    return [(g, c) for g in range(NUM_GROUPS) for c in range(NUM_COORDS)]

  def forward(self, x):
    """x (..., M, 3) -> (y (..., M, 3) in the cube, ln|det J| (...))."""
    x = wrap(x, self.lower, self.upper)
    log_det = jnp.zeros(x.shape[:-2], x.dtype)
    for group, axis in self._order():
      x, ld = self._step(x, group, axis, splines.forward)
      log_det = log_det + ld
    return x, log_det

  def inverse(self, y):
    """Inverse of forward: y (..., M, 3) -> (x, ln|det J⁻¹| (...))."""
    y = wrap(y, self.lower, self.upper)
    log_det = jnp.zeros(y.shape[:-2], y.dtype)
    for group, axis in reversed(self._order()):
      y, ld = self._step(y, group, axis, splines.inverse)
      log_det = log_det + ld
    return y, log_det
