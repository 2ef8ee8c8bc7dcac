"""Periodic bijectors on particle coordinates (..., M, 3) in a cube [lower, upper)³.

Every bijector has `forward(x) -> (y, log_det)` and `inverse(y) -> (x,
log_det)` with x, y of shape (..., M, 3) and log_det of shape (...), the log
|det| of the Jacobian of the map that was applied. All of them are periodic
(they act on the 3-torus) and equivariant under permutations of the M particles.
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from flows import splines
from flows.transformer.conditioner import Conditioner
from systems.box import wrap

NUM_COORDS = 3


class CircularShift(nnx.Module):
  """x_d -> wrap(x_d + (upper − lower)·θ_d) with learned θ ∈ R³, θ = 0 at init."""

  def __init__(self, lower: float, upper: float):
    self.lower, self.upper = float(lower), float(upper)
    self.shift = nnx.Param(jnp.zeros((NUM_COORDS,), jnp.float32))

  def _apply(self, x, sign):
    offset = (self.upper - self.lower) * self.shift[...]
    y = wrap(x + sign * offset, self.lower, self.upper)
    return y, jnp.zeros(x.shape[:-2], x.dtype)

  def forward(self, x):
    return self._apply(x, 1.0)

  def inverse(self, y):
    return self._apply(y, -1.0)


class SplitCoupling(nnx.Module):
  """Splines the `transformed` coordinates of every particle, conditioned on
  the remaining coordinates of all particles (through a Conditioner).
  """

  def __init__(
    self,
    transformed: Sequence[int],
    *,
    lower: float,
    upper: float,
    num_bins: int,
    rngs: nnx.Rngs,
    **conditioner_kwargs,
  ):
    transformed = tuple(sorted(set(int(d) for d in transformed)))
    if not transformed or not set(transformed) < set(range(NUM_COORDS)):
      raise ValueError(
        f'transformed={transformed} must be a non-empty proper '
        f'subset of coordinates {tuple(range(NUM_COORDS))}.'
      )
    self.transformed = transformed
    self.conditioning = tuple(d for d in range(NUM_COORDS) if d not in transformed)
    self.lower, self.upper = float(lower), float(upper)
    self.conditioner = Conditioner(
      len(self.conditioning),
      len(transformed),
      num_bins=num_bins,
      lower=lower,
      upper=upper,
      rngs=rngs,
      **conditioner_kwargs,
    )

  def _apply(self, x, spline_fn):
    raw = self.conditioner(x[..., self.conditioning])
    t = list(self.transformed)
    xt = wrap(x[..., t], self.lower, self.upper)
    y, log_det = spline_fn(xt, raw, self.lower, self.upper)
    return x.at[..., t].set(y), jnp.sum(log_det, axis=(-2, -1))

  def forward(self, x):
    return self._apply(x, splines.forward)

  def inverse(self, y):
    return self._apply(y, splines.inverse)


def undo_axis_rolls(x: jnp.ndarray, num_layers: int, method: str) -> jnp.ndarray:
  """Cancels the axis rolls of a chain of `num_layers` CouplingLayers.

  Apply after the chain's forward pass (method 'forward') or before its
  inverse pass (method 'inverse'), so that a fresh chain is the identity.
  """
  net = num_layers % 3
  return jnp.roll(x, -net if method == 'forward' else net, axis=-1)


class CouplingLayer(nnx.Module):
  """One flow layer, the composition P ∘ S ∘ A ∘ B (B acts first in `forward`).

  B splines coordinates 1, 2 given coordinate 0; A splines coordinate 0 given
  coordinates 1, 2; S is a CircularShift; P rolls the coordinates by one
  (x, y, z) -> (z, x, y), log-det 0. This is the layer of the published model
  (its bijector list [P, S, A, B] composed right to left, as in distrax.Chain).
  """

  axis_roll = 1  # places by which each layer rolls (x, y, z); undone by undo_axis_rolls

  def __init__(
    self, *, lower: float, upper: float, num_bins: int, rngs: nnx.Rngs, **conditioner_kwargs
  ):
    kwargs = dict(lower=lower, upper=upper, num_bins=num_bins, rngs=rngs, **conditioner_kwargs)
    self.shift = CircularShift(lower, upper)
    self.coupling_a = SplitCoupling((0,), **kwargs)
    self.coupling_b = SplitCoupling((1, 2), **kwargs)

  def forward(self, x):
    x, ld_b = self.coupling_b.forward(x)
    x, ld_a = self.coupling_a.forward(x)
    x, ld_s = self.shift.forward(x)
    return jnp.roll(x, 1, axis=-1), ld_b + ld_a + ld_s

  def inverse(self, y):
    y, ld_s = self.shift.inverse(jnp.roll(y, -1, axis=-1))
    y, ld_a = self.coupling_a.inverse(y)
    y, ld_b = self.coupling_b.inverse(y)
    return y, ld_s + ld_a + ld_b
