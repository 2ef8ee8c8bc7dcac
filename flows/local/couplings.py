"""Coupling layers on the displacements of a crystal's particles from their sites.

A ColourCoupling moves the particles of one colour class (flows.local.lattice_graph)
and leaves every other particle fixed: each moving particle's displacement
coordinates x, y, z pass in turn through monotone rational-quadratic splines
on [−B, B] (in the flow's unit) with identity tails outside, whose parameters
come from a flows.local.conditioner.LocalConditioner of its neighbours'
displacements and the particle's two other coordinates. Each of the three
steps has a triangular Jacobian, so

    ln|det J| = Σ_{moving i, coordinate d} ln s'_{i,d}(v_{i,d}).

A LocalLayer applies one ColourCoupling per colour in turn, so every
particle moves once per layer. Displacements are in the flow's unit (the
base's mean per-coordinate standard deviation) and shaped (..., M, 3); the
neighbour index 0 is the pinned particle, whose displacement is always 0.
"""

import jax.numpy as jnp
from flax import nnx

from flows import splines
from flows.local.conditioner import LocalConditioner
from flows.local.lattice_graph import ColourClass


def neighbour_displacements(v: jnp.ndarray, neighbours) -> jnp.ndarray:
  """v (..., M, 3) -> (..., M_c, k, 3) displacements of the listed neighbours.

  `neighbours` (M_c, k) index all N sites; site 0 is the pinned particle (0).
  """
  padded = jnp.concatenate([jnp.zeros_like(v[..., :1, :]), v], axis=-2)
  return padded[..., neighbours, :]


class ColourCoupling(nnx.Module):
  """Splines the displacements of one colour class given their neighbours.

  Args:
    num_bins: spline bins K.
    spline_range: B, the splines act on [−B, B] (flow units), identity outside.
    width, filter_width, pair_width: of the LocalConditioner.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    *,
    num_bins: int,
    spline_range: float,
    width: int,
    filter_width: int,
    pair_width: int = 0,
    rngs: nnx.Rngs,
  ):
    if not spline_range > 0:
      raise ValueError(f'spline_range={spline_range} must be positive.')
    self.spline_range = float(spline_range)
    self.conditioner = LocalConditioner(
      splines.num_params(num_bins),
      width=width,
      filter_width=filter_width,
      pair_width=pair_width,
      rngs=rngs,
    )

  def _apply(self, v, colour: ColourClass, spline_fn, order):
    offsets = jnp.asarray(colour.offsets, v.dtype)
    context = self.conditioner.context(neighbour_displacements(v, colour.neighbours), offsets)
    moving = v[..., colour.targets, :]
    log_det = jnp.zeros(v.shape[:-2], v.dtype)
    b = self.spline_range
    for c in order:
      others = [d for d in range(3) if d != c]
      raw = self.conditioner(context, moving[..., others], c)
      moved, ld = spline_fn(moving[..., c], raw, -b, b, 'identity')
      moving = moving.at[..., c].set(moved)
      log_det = log_det + jnp.sum(ld, axis=-1)
    return v.at[..., colour.targets, :].set(moving), log_det

  def forward(self, v, colour: ColourClass):
    """v (..., M, 3) -> (v', ln|det ∂v'/∂v| (...))."""
    return self._apply(v, colour, splines.forward, (0, 1, 2))

  def inverse(self, v, colour: ColourClass):
    """Inverse of forward: v' (..., M, 3) -> (v, ln|det ∂v/∂v'| (...))."""
    return self._apply(v, colour, splines.inverse, (2, 1, 0))


class LocalLayer(nnx.Module):
  """One ColourCoupling per colour class, applied in colour order (forward)."""

  def __init__(self, num_colours: int, rngs: nnx.Rngs, **coupling_kwargs):
    self.couplings = nnx.List(
      [ColourCoupling(rngs=rngs, **coupling_kwargs) for _ in range(num_colours)]
    )

  def forward(self, v, classes: tuple[ColourClass, ...]):
    log_det = jnp.zeros(v.shape[:-2], v.dtype)
    for coupling, colour in zip(self.couplings, classes, strict=True):
      v, ld = coupling.forward(v, colour)
      log_det = log_det + ld
    return v, log_det

  def inverse(self, v, classes: tuple[ColourClass, ...]):
    log_det = jnp.zeros(v.shape[:-2], v.dtype)
    for coupling, colour in zip(reversed(self.couplings), reversed(classes), strict=True):
      v, ld = coupling.inverse(v, colour)
      log_det = log_det + ld
    return v, log_det
