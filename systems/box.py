"""Periodic orthorhombic box spanning [0, L) along each axis.

A box is an array of the 3 edge lengths, shape (3,), in the system's length
unit (σ for Lennard-Jones, Å for monatomic water).
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


def wrap(x: jnp.ndarray, box) -> jnp.ndarray:
  """Maps positions (..., 3) into [0, L) along each axis."""
  return jnp.mod(x, as_array(box, x.dtype))


def as_array(box, dtype) -> jnp.ndarray:
  """Box (3,) as a jax array of `dtype`, validated (ValueError) unless traced."""
  if not isinstance(box, jax.core.Tracer):
    box = check_box(box)
  return jnp.asarray(box, dtype=dtype)


def minimum_image(dx: jnp.ndarray, box) -> jnp.ndarray:
  """Nearest periodic image of displacement vectors (..., 3), each in [-L/2, L/2]."""
  box = as_array(box, dx.dtype)
  return dx - box * jnp.round(dx / box)


def pairwise_displacements(x: jnp.ndarray, box) -> jnp.ndarray:
  """Minimum-image displacements x_j - x_i, shape (..., N, N, 3), from x (..., N, 3)."""
  return minimum_image(x[..., None, :, :] - x[..., :, None, :], box)
