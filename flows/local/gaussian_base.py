"""Gaussian base distribution over the labelled displacements of a crystal.

The displacements u (M, 3) of the M flowed particles from their lattice sites
are drawn as u = s·L z with z ~ N(0, I_{3M}), L the Cholesky factor of a
fixed covariance C (3M × 3M, length units squared) and s = exp(log_scale) a
learned scalar (1 at initialisation). So

    ln q(u) = −½|z|² − (3M/2) ln 2π − ln|det L| − 3M ln s,   z = L⁻¹u/s.

Two covariances are used (flows.LocalSolidFlow): σ²·I (independent particles,
as in the lattice base of the paper and bgmat) and the harmonic crystal's
(βH)⁻¹ (systems.harmonic), whose samples are already close to the solid.
Sampling and density cost O(M²) per configuration (a triangular product or
solve).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class GaussianDisplacementBase(nnx.Module):
  """N(0, s²·C) over displacements (..., M, 3).

  Args:
    covariance: (3M, 3M) symmetric positive-definite C, in the order
      (particle, coordinate), length units squared.
  """

  def __init__(self, covariance):
    covariance = np.asarray(covariance, np.float64)
    size = covariance.shape[0]
    if covariance.shape != (size, size) or size % 3 or size == 0:
      raise ValueError(f'covariance has shape {covariance.shape}; expected (3M, 3M), M >= 1.')
    if not np.allclose(covariance, covariance.T, rtol=1e-10, atol=0):
      raise ValueError('covariance must be symmetric.')
    try:
      cholesky = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
      raise ValueError(
        f'covariance must be positive definite; its smallest eigenvalue is '
        f'{np.linalg.eigvalsh(covariance)[0]:.3g}.'
      ) from None
    self.num_particles = size // 3
    self.cholesky = nnx.Variable(jnp.asarray(cholesky, jnp.float32))
    self.log_normaliser = float(np.sum(np.log(np.diag(cholesky)))) + 0.5 * size * math.log(
      2 * math.pi
    )
    self.log_scale = nnx.Param(jnp.zeros((), jnp.float32))
    self.unit = float(np.sqrt(np.mean(np.diag(covariance))))  # mean per-coordinate std

  def _log_density(self, z):
    size = 3 * self.num_particles
    return -0.5 * jnp.sum(z * z, axis=-1) - self.log_normaliser - size * self.log_scale[...]

  def sample_and_log_prob(self, key, num_samples: int):
    """u (n, M, 3) and ln q(u) (n,)."""
    z = jax.random.normal(key, (num_samples, 3 * self.num_particles))
    u = jnp.exp(self.log_scale[...]) * (z @ self.cholesky[...].T)
    return u.reshape(num_samples, self.num_particles, 3), self._log_density(z)

  def log_prob(self, u):
    """ln q(u) (...) of displacements u (..., M, 3)."""
    if u.shape[-2:] != (self.num_particles, 3):
      raise ValueError(f'u has shape {u.shape}; expected (..., {self.num_particles}, 3).')
    flat = u.reshape((-1, 3 * self.num_particles))
    cholesky = self.cholesky[...].astype(u.dtype)
    z = jax.scipy.linalg.solve_triangular(cholesky, flat.T, lower=True).T
    z = z * jnp.exp(-self.log_scale[...])
    return self._log_density(z).reshape(u.shape[:-2])
