"""Circular Fourier features of periodic coordinates."""

import jax.numpy as jnp


def circular_features(
  x: jnp.ndarray, lower: float, upper: float, num_frequencies: int
) -> jnp.ndarray:
  """Embeds periodic coordinates on [lower, upper) as points on circles.

  For every coordinate x_d and k = 1..F the features are
  cos(2πk(x_d − lower)/w) and sin(2πk(x_d − lower)/w) with w = upper − lower,
  so the embedding is smooth and exactly periodic with period w.

  Args:
    x: (..., D) coordinates (any real values; length units of the range).
    lower: lower end of the periodic range.
    upper: upper end of the periodic range (> lower).
    num_frequencies: F >= 1.

  Returns:
    (..., 2·F·D) features: all cosines (ordered d-major, k-minor), then all sines.
  """
  if num_frequencies < 1:
    raise ValueError(f'num_frequencies={num_frequencies} must be >= 1.')
  if not upper > lower:
    raise ValueError(f'upper={upper} must be greater than lower={lower}.')
  k = jnp.arange(1, num_frequencies + 1, dtype=x.dtype)
  angles = (2 * jnp.pi / (upper - lower)) * k * (x[..., None] - lower)
  angles = angles.reshape(x.shape[:-1] + (-1,))
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
