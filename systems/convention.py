r"""Free-energy counting convention for flows with a pinned particle.

SolidFlow pins particle 0 at lattice site 0 and models the N − 1 others. Its
log_q is normalised over the (N−1)! labellings of the other particles, so
importance sampling with weights exp(−βU(x) − ln q(x)) estimates

    Z_fixed = ∫_{V^{N−1}} exp(−βU(0, y)) dy      (basin with particle 0 pinned).

The published convention integrates the pinned particle over the box,
Z_pub = V·Z_fixed, since U is invariant under global translations. The full
configurational integral of the solid over V^N additionally covers particle 0
sitting on each of the s sites of a primitive cell that are not related by a
lattice translation, so Z_all = s·Z_pub, i.e. ln Z_all = ln Z_pub + ln s.

All functions take and return float64 numpy values (scalars or arrays of
log Z), lengths in one unit system, and raise ValueError on bad input.
"""

import math

import numpy as np


def _positive(name: str, value) -> float:
  value = float(value)
  if not (value > 0 and math.isfinite(value)):
    raise ValueError(f'{name}={value} must be positive and finite.')
  return value


def _count(name: str, value, minimum: int) -> int:
  if int(value) != value or value < minimum:
    raise ValueError(f'{name}={value} must be an integer >= {minimum}.')
  return int(value)


def log_z_published(log_z_fixed, volume):
  """ln Z_pub = ln Z_fixed + ln V (V in length³)."""
  return np.asarray(log_z_fixed, np.float64) + math.log(_positive('volume', volume))


def beta_f_per_particle(log_z_fixed, num_particles: int, volume, thermal_wavelength):
  r"""βF/N in the published convention, from ln Z_fixed.

  The canonical partition function of N identical particles is
  Z_N = ∫_{V^N} exp(−βU) dx / (N! Λ^{3N}). Replacing the configurational
  integral by Z_pub = V·Z_fixed and taking βF = −ln Z_N gives

      βF/N = (−(ln Z_fixed + ln V) + ln N!)/N + 3 ln Λ.

  Args:
    log_z_fixed: ln Z_fixed (float or array), e.g. an importance-sampling
      estimate of ln E_q[exp(−βU − ln q)].
    num_particles: N >= 1, including the pinned particle.
    volume: box volume V (length³).
    thermal_wavelength: Λ (same length unit).
  """
  n = _count('num_particles', num_particles, 1)
  wavelength = _positive('thermal_wavelength', thermal_wavelength)
  log_z = log_z_published(log_z_fixed, volume)
  return (-log_z + math.lgamma(n + 1)) / n + 3.0 * math.log(wavelength)


def beta_f_per_particle_all_space(
  log_z_fixed, num_particles: int, volume, thermal_wavelength, sites_per_cell: int
):
  """βF/N with the integral over all of V^N: ln(s)/N below the published one.

  Args:
    sites_per_cell: s >= 1, lattice sites per primitive cell (1 for FCC, 2 for
      cubic diamond, 4 for hexagonal ice); other args as beta_f_per_particle.
  """
  s = _count('sites_per_cell', sites_per_cell, 1)
  n = _count('num_particles', num_particles, 1)
  return beta_f_per_particle(log_z_fixed, n, volume, thermal_wavelength) - math.log(s) / n
