"""Truncated-and-shifted Lennard-Jones energy in a periodic box.

φ(r) = 4ε[(σ/r)^12 - (σ/r)^6] - φ_LJ(r_c) for r < r_c, else 0. Reduced units by
default (ε = σ = 1); positions in units of σ, energies in units of ε.
"""

import functools

import jax
import jax.numpy as jnp

from systems import box as box_lib
from systems import pair_terms


def potential(r: jnp.ndarray, cutoff: float, epsilon: float = 1.0,
              sigma: float = 1.0) -> jnp.ndarray:
  """Shifted pair potential φ(r) (zero at r = cutoff), elementwise on distances r."""
  def lj(s):
    s6 = (sigma / s) ** 6
    return 4 * epsilon * s6 * (s6 - 1)  # +inf, not NaN, at s = 0
  return lj(r) - lj(jnp.asarray(cutoff, dtype=r.dtype))


@functools.partial(jax.jit, static_argnames=('cutoff', 'epsilon', 'sigma', 'linearization'))
def _energy(x, box, cutoff, epsilon, sigma, linearization):
  phi = functools.partial(potential, cutoff=cutoff, epsilon=epsilon, sigma=sigma)
  if linearization is not None:
    phi = linearization(phi)
  return pair_terms.pair_energy(x, box, phi, cutoff)


def energy(x, box, cutoff: float, *, epsilon: float = 1.0, sigma: float = 1.0,
           linearization: pair_terms.Linearization | None = None) -> jnp.ndarray:
  """Total energy (...) of positions x (..., N, 3) with minimum-image pairs.

  Args:
    x: positions (..., N, 3).
    box: edge lengths (3,).
    cutoff: truncation radius r_c.
    epsilon: well depth ε.
    sigma: length scale σ.
    linearization: if given, the training form of the pair potential.
  """
  x = pair_terms.as_positions(x)
  return _energy(x, box_lib.as_array(box, x.dtype), float(cutoff), float(epsilon),
                 float(sigma), linearization)
