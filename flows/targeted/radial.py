"""A radial spline about the centre of a periodic cube: particles move along rays.

For a solute fixed at the centre c of the box [lower, upper)³ (half-edge h),
every particle moves along its ray from c: d = x − c -> d·f(ρ)/ρ, where
ρ = max_k |d_k| / h ∈ [0, 1] is its cubic radius (1 on the box surface) and f
a monotone spline of [0, 1] onto itself. The surface ρ = 1 stays fixed, so the
map is continuous on the 3-torus, and every ray maps onto itself. The spline's
parameters are a small network of the ray's direction through the two
invariants of the cube's symmetry group, the middle and smallest of
|d_1|, |d_2|, |d_3| over the largest, so the map commutes with the 48 symmetries
of the cube about c (and is permutation-equivariant: each particle is mapped
alone). In the coordinates (ρ, direction) the map only changes ρ, so

    ln|det J| = Σ_i [2 ln(f(ρ_i)/ρ_i) + ln f'(ρ_i)].

With a growing solute this pushes the solvent out of the cavity and compresses
it towards the box surface, the bulk of what the solvent does between the two
states; the coupling layers after it handle the particles' correlations.
"""

import math

import jax.numpy as jnp
from flax import nnx

from flows import splines
from flows.bijector import zero_linear
from systems.box import wrap

NUM_DIRECTION_FEATURES = 2


class RadialSpline(nnx.Module):
  """x (..., M, 3) -> c + (x − c)·f(ρ)/ρ, per particle; identity at initialisation.

  Args:
    lower, upper: the periodic cube [lower, upper)³ (length units), upper > lower.
    num_bins: bins of the spline f.
    hidden_size: width of the two hidden layers of the direction network.
    rngs: parameter initialisation.
  """

  def __init__(
    self, lower: float, upper: float, *, num_bins: int, hidden_size: int = 32, rngs: nnx.Rngs
  ):
    if not upper > lower:
      raise ValueError(f'upper={upper} must be greater than lower={lower}.')
    self.lower, self.upper = float(lower), float(upper)
    init = lambda fan_in: nnx.initializers.truncated_normal(1 / math.sqrt(fan_in))
    self.hidden = nnx.List(
      [
        nnx.Linear(
          NUM_DIRECTION_FEATURES, hidden_size, kernel_init=init(NUM_DIRECTION_FEATURES), rngs=rngs
        ),
        nnx.Linear(hidden_size, hidden_size, kernel_init=init(hidden_size), rngs=rngs),
      ]
    )
    self.head = zero_linear(hidden_size, splines.num_params(num_bins), rngs=rngs)

  def _rays(self, x):
    """Displacement d (..., M, 3), cubic radius ρ (..., M), spline params."""
    centre, half = 0.5 * (self.lower + self.upper), 0.5 * (self.upper - self.lower)
    d = wrap(x, self.lower, self.upper) - centre
    magnitudes = jnp.sort(jnp.abs(d), axis=-1)  # ascending
    largest = magnitudes[..., 2:]
    features = magnitudes[..., :2] / jnp.where(largest > 0, largest, 1.0)
    h = features
    for layer in self.hidden:
      h = nnx.gelu(layer(h))
    return d, largest[..., 0] / half, self.head(h)

  def _apply(self, x, spline_fn):
    d, rho, raw = self._rays(x)
    rho_new, log_slope = spline_fn(rho, raw, 0.0, 1.0)
    # f(ρ)/ρ, and its limit f'(0) at the centre itself.
    ratio = jnp.where(rho > 0, rho_new / jnp.where(rho > 0, rho, 1.0), jnp.exp(log_slope))
    centre = 0.5 * (self.lower + self.upper)
    y = jnp.clip(centre + d * ratio[..., None], self.lower, self.upper)
    log_det = jnp.sum(2 * jnp.log(ratio) + log_slope, axis=-1)
    return y, log_det

  def forward(self, x):
    """x (..., M, 3) -> (y (..., M, 3) in the cube, ln|det J| (...))."""
    return self._apply(x, splines.forward)

  def inverse(self, y):
    """Inverse of forward: y (..., M, 3) -> (x, ln|det J⁻¹| (...))."""
    return self._apply(y, splines.inverse)
