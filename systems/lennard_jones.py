"""Truncated-and-shifted Lennard-Jones energy in a periodic box.

φ(r) = 4ε[(σ/r)^12 - (σ/r)^6] - φ_LJ(r_c) for r < r_c, else 0. Reduced units by
default (ε = σ = 1); positions in units of σ, energies in units of ε.
"""

import functools

import jax
import jax.numpy as jnp

from systems import box as box_lib
from systems import pair_terms


def potential(
  r: jnp.ndarray, cutoff: float, epsilon: float = 1.0, sigma: float = 1.0
) -> jnp.ndarray:
  """Shifted pair potential φ(r) (zero at r = cutoff), elementwise on distances r."""

  def lj(s):
    s6 = (sigma / s) ** 6
    return 4 * epsilon * s6 * (s6 - 1)  # +inf, not NaN, at s = 0

  return lj(r) - lj(jnp.asarray(cutoff, dtype=r.dtype))


def _energy_and_gradient(x, box, cutoff, epsilon, sigma):
  """Energy (...) and its gradient dE/dx (..., N, 3) in one pass over the pairs.

  E = ½ Σ_{i≠j, r_ij < r_c} φ(r_ij) and dE/dx_i = −Σ_j (φ'(r_ij)/r_ij) d_ij with
  d_ij = x_j − x_i (minimum image): the analytic force, which XLA:CPU runs
  about 2× faster than the autodiff gradient of the pair sum. Used through a
  custom VJP, so the physical energy supports reverse-mode autodiff only.
  """
  d = box_lib.pairwise_displacements(x, jnp.asarray(box, x.dtype))
  r2 = jnp.sum(d * d, axis=-1)
  inside = (r2 < cutoff**2) & ~jnp.eye(x.shape[-2], dtype=bool)
  inv_r2 = jnp.where(inside, 1.0 / jnp.where(inside, r2, 1.0), 0.0)
  s6 = (sigma**2 * inv_r2) ** 3  # (σ/r)^6, 0 outside
  sc6 = (sigma / cutoff) ** 6
  shift = 4 * epsilon * sc6 * (sc6 - 1)  # φ_LJ(r_c)
  pair = jnp.where(inside, 4 * epsilon * s6 * (s6 - 1) - shift, 0.0)
  energy = 0.5 * jnp.sum(pair, axis=(-2, -1))
  # φ'(r)/r; coincident particles (r = 0) get infinite energy, zero force.
  force_over_r = jnp.where(r2 > 0, -24 * epsilon * (2 * s6 * s6 - s6) * inv_r2, 0.0)
  return energy, -jnp.sum(force_over_r[..., None] * d, axis=-2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _physical_energy(x, box, cutoff, epsilon, sigma):
  return _energy_and_gradient(x, box, cutoff, epsilon, sigma)[0]


def _physical_energy_bwd(box, cutoff, epsilon, sigma, gradient, g):
  del box, cutoff, epsilon, sigma
  return (g[..., None, None] * gradient,)


_physical_energy.defvjp(_energy_and_gradient, _physical_energy_bwd)  # residual: dE/dx


@functools.partial(jax.jit, static_argnames=('box', 'cutoff', 'epsilon', 'sigma', 'linearization'))
def _energy(x, box, cutoff, epsilon, sigma, linearization):
  if linearization is None:
    total = _physical_energy(x, box, cutoff, epsilon, sigma)
  else:
    phi = functools.partial(potential, cutoff=cutoff, epsilon=epsilon, sigma=sigma)
    total = pair_terms.pair_energy(x, jnp.asarray(box, x.dtype), linearization(phi), cutoff)
  return jnp.where(pair_terms.finite_configurations(x), total, jnp.nan)


def energy(
  x,
  box,
  cutoff: float,
  *,
  epsilon: float = 1.0,
  sigma: float = 1.0,
  linearization: pair_terms.Linearization | None = None,
) -> jnp.ndarray:
  """Total energy (...) of positions x (..., N, 3) with minimum-image pairs.

  NaN for a configuration with a non-finite coordinate.

  Args:
    x: positions (..., N, 3).
    box: edge lengths (3,).
    cutoff: truncation radius r_c.
    epsilon: well depth ε.
    sigma: length scale σ.
    linearization: if given, the training form of the pair potential
      (autodiff gradient); without it the gradient is the analytic force.
  """
  x = pair_terms.as_positions(x)
  box = tuple(float(b) for b in box_lib.check_box(box))  # static: a constant
  return _energy(x, box, float(cutoff), float(epsilon), float(sigma), linearization)
