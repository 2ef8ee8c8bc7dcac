"""Periodic orthorhombic box, and the one convention for periodic coordinates.

A box is an array of the 3 edge lengths, shape (3,), in the system's length
unit (σ for Lennard-Jones, Å for monatomic water); positions live in [0, L).

Periodic intervals are half-open everywhere: `wrap` maps coordinates into
[lower, upper) and `minimum_image` maps displacements into [−L/2, L/2), so a
displacement of exactly ±L/2 (a tie between two images) becomes −L/2. Both
take numpy or jax arrays and return the same kind: numpy in gives numpy out
(float64 stays float64), and any jax input, traced or not, gives a jax array.
"""

import jax
import jax.numpy as jnp
import numpy as np


def check_box(box) -> np.ndarray:
  """Returns `box` as a float64 array of shape (3,) with positive entries.

  Raises:
    ValueError: if the shape is not (3,) or an edge is not positive and finite.
  """
  box = np.asarray(box, dtype=np.float64)
  if box.shape != (3,):
    raise ValueError(f'Box must have shape (3,) (three edge lengths), got shape {box.shape}.')
  if not np.all(np.isfinite(box) & (box > 0)):
    raise ValueError(f'Box edges must be positive and finite, got {box}.')
  return box


def volume(box) -> float:
  """Volume of the box, length unit cubed."""
  return float(np.prod(check_box(box)))


def as_array(box, dtype) -> jnp.ndarray:
  """Box (3,) as a jax array of `dtype`, validated (ValueError) unless traced."""
  if not isinstance(box, jax.core.Tracer):
    box = check_box(box)
  return jnp.asarray(box, dtype=dtype)


def _array_module(*values):
  """jax.numpy if any of `values` is a jax array (traced included), else numpy."""
  return jnp if any(isinstance(v, jax.Array) for v in values) else np


def wrap(x, lower, upper):
  """Maps coordinates x periodically into [lower, upper) (upper > lower).

  The bounds broadcast against x (scalars, or (3,) per axis); use
  wrap(x, 0.0, box) for the box frame [0, L).
  """
  xp = _array_module(x, lower, upper)
  y = lower + xp.mod(x - lower, upper - lower)
  return xp.where(y >= upper, lower, y)  # the mod or the sum may round up to `upper`


def minimum_image(dx, box):
  """Nearest periodic image of displacements dx (..., 3), each coordinate in [−L/2, L/2).

  The box (3,) is validated (ValueError) unless traced, and used in dx's dtype.
  """
  xp = _array_module(dx, box)
  dx = xp.asarray(dx)
  box = as_array(box, dx.dtype) if xp is jnp else check_box(box).astype(dx.dtype)
  half = box / 2
  d = dx - box * xp.round(dx / box)  # [−L/2, L/2] up to rounding, ties to either end
  d = xp.where(d < -half, d + box, d)  # rounded below −L/2 (dx several boxes away)
  return xp.where(d >= half, d - box, d)  # ties, and rounding onto or above L/2


def pairwise_displacements(x: jnp.ndarray, box) -> jnp.ndarray:
  """Minimum-image displacements x_j - x_i, shape (..., N, N, 3), from x (..., N, 3)."""
  return minimum_image(x[..., None, :, :] - x[..., :, None, :], box)
