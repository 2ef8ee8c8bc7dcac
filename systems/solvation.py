"""Repulsive solute in a Lennard-Jones solvent: the learned-TFEP benchmark.

The system of Wirnsberger et al., J. Chem. Phys. 153, 144112 (2020): 125 LJ
solvent particles and one solute fixed at the origin, in a cubic periodic box
of edge 6.290 σ, at k_B T / ε = 3.2155. Reduced units (ε = σ = k_B = 1).

* solvent–solvent: LJ truncated at half the box edge and shifted;
* solute–solvent: WCA of size R, i.e. LJ with σ replaced by R, cut at
  2^{1/6} R (its minimum) and shifted, so purely repulsive.

Positions are those of the solvent only, (..., 125, 3), any real values
(energies are periodic; a configuration with a NaN or infinite coordinate has
energy NaN, as in `systems.System`); the box is [−L/2, L/2)³ with the solute
at its centre.
"""

import jax
import jax.numpy as jnp
import numpy as np

from systems import box as box_lib
from systems import lennard_jones, pair_terms

NUM_SOLVENT = 125
BOX_EDGE = 6.290
TEMPERATURE = 3.2155
BETA = 1.0 / TEMPERATURE
BOX = np.full(3, BOX_EDGE)
LOWER, UPPER = -BOX_EDGE / 2, BOX_EDGE / 2
SOLVENT_CUTOFF = BOX_EDGE / 2
WCA_CUTOFF_FACTOR = 2.0 ** (1.0 / 6.0)


def _check_radius(radius):
  if not isinstance(radius, jax.core.Tracer) and not float(radius) > 0:
    raise ValueError(f'radius={radius} must be positive (units of σ).')


def solute_energy(x, radius) -> jnp.ndarray:
  """WCA energy (...) of the solute of size `radius` with solvent x (..., M, 3)."""
  _check_radius(radius)
  x = pair_terms.as_positions(x)
  radius = jnp.asarray(radius, x.dtype)
  cutoff = WCA_CUTOFF_FACTOR * radius
  r = pair_terms.safe_norm(box_lib.minimum_image(x, BOX))
  phi = lambda s: lennard_jones.potential(s, cutoff, sigma=radius)
  total = jnp.sum(pair_terms.where_safe(r < cutoff, phi, r, cutoff), axis=-1)
  return jnp.where(pair_terms.finite_configurations(x), total, jnp.nan)


def solvent_energy(x) -> jnp.ndarray:
  """Solvent–solvent LJ energy (...) of x (..., M, 3), cut at L/2 and shifted."""
  return lennard_jones.energy(x, BOX, SOLVENT_CUTOFF)


def energy(x, radius) -> jnp.ndarray:
  """Total energy (...) in ε of solvent positions x (..., 125, 3), solute size R."""
  x = pair_terms.as_positions(x)
  if x.shape[-2] != NUM_SOLVENT:
    raise ValueError(f'positions must have shape (..., {NUM_SOLVENT}, 3), got {x.shape}.')
  return solvent_energy(x) + solute_energy(x, radius)


def initial_positions(
  key: jax.Array, num_configs: int, radius: float, spacing: float = 0.8
) -> np.ndarray:
  """(num_configs, 125, 3) starting configurations outside the solute.

  Each takes 125 random sites of a cubic grid of about `spacing` σ that lie
  beyond the solute's WCA cutoff, so no energy is infinite; HMC burn-in
  relaxes the residual overlaps.
  """
  _check_radius(radius)
  per_side = int(np.ceil(BOX_EDGE / spacing))
  ticks = LOWER + (np.arange(per_side) + 0.5) * BOX_EDGE / per_side
  grid = np.stack(np.meshgrid(ticks, ticks, ticks, indexing='ij'), -1).reshape(-1, 3)
  free = grid[np.linalg.norm(grid, axis=-1) > WCA_CUTOFF_FACTOR * radius]
  if len(free) < NUM_SOLVENT:
    raise ValueError(
      f'radius={radius} with spacing={spacing} leaves {len(free)} '
      f'grid sites for {NUM_SOLVENT} particles; use a smaller spacing.'
    )
  keys = jax.random.split(key, num_configs)
  picks = [np.asarray(jax.random.choice(k, len(free), (NUM_SOLVENT,), replace=False)) for k in keys]
  return np.stack([free[p] for p in picks]).astype(np.float32)
