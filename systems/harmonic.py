"""The harmonic crystal: the Gaussian approximation of a solid about its lattice.

With particle 0 pinned at site 0, expanding βU to second order in the other
particles' displacements u (M, 3) from their sites gives the density
∝ exp(−½ uᵀ βH u), H the Hessian of U at the perfect lattice restricted to
particles 1..N−1 (pinning removes the three zero modes of translation). Its
covariance (βH)⁻¹ is the base of flows.LocalSolidFlow: for mW ice at 200 K it
alone reaches an importance-sampling ESS near 1 % at N = 64.

The lattice is n×n×n translates of a conventional cell with B basis atoms
(site index = cell·B + basis), and the energy is invariant under lattice
translations, so the Hessian of all N particles is fixed by its 3B rows of
cell 0: those come from 3B Hessian-vector products, O(B·N) work rather than
the O(N²) of a dense Hessian.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _cell_translations(system) -> np.ndarray:
  """(C, N) int: row c maps site j to the site at r_j + t_c, t_c cell c's offset.

  Raises:
    ValueError: if the sites are not n×n×n translates of one cell (checked
      against the positions).
  """
  num_sites = system.num_particles
  basis_size = int(system.basis_index.max()) + 1
  num_cells = num_sites // basis_size
  n = round(num_cells ** (1 / 3))
  if n**3 * basis_size != num_sites or np.any(
    system.basis_index != np.tile(np.arange(basis_size), num_cells)
  ):
    raise ValueError(f'{system.name}: sites are not n×n×n cells of {basis_size} basis atoms.')
  grid = np.stack(np.unravel_index(np.arange(num_cells), (n, n, n)), axis=-1)  # (C, 3)
  cell_of, basis_of = np.arange(num_sites) // basis_size, system.basis_index
  shifted = (grid[:, None, :] + grid[None, cell_of, :]) % n  # (C, N, 3)
  maps = np.ravel_multi_index(tuple(np.moveaxis(shifted, -1, 0)), (n, n, n)) * basis_size
  maps = maps + basis_of
  offsets = (
    system.lattice[maps] - system.lattice[None] - (system.lattice[maps[:, :1]] - system.lattice[0])
  )
  if not np.allclose(offsets - system.box * np.round(offsets / system.box), 0.0, atol=1e-8):
    raise ValueError(f'{system.name}: cell translations do not map sites onto sites.')
  return maps


def hessian(system) -> np.ndarray:
  """H (3M, 3M) of the physical energy at the lattice, particle 0 pinned.

  Energy unit per length unit squared, float64, ordered (particle 1..M,
  coordinate).
  """
  num_sites = system.num_particles
  basis_size = int(system.basis_index.max()) + 1
  with jax.enable_x64(True):
    sites = jnp.asarray(system.lattice, jnp.float64)
    gradient = jax.grad(lambda x: system.energy(x))

    def product(v):
      return jax.jvp(gradient, (sites,), (v,))[1]

    directions = jnp.eye(num_sites * 3, 3 * basis_size, dtype=jnp.float64).T
    rows = np.asarray(jax.jit(jax.vmap(product))(directions.reshape(-1, num_sites, 3)))
  rows = rows.reshape(basis_size, 3, num_sites, 3)
  full = np.zeros((num_sites, 3, num_sites, 3))
  for translate in _cell_translations(system):
    for b in range(basis_size):
      full[translate[b], :, translate, :] = rows[b].transpose(1, 0, 2)
  flowed = full[1:, :, 1:, :].reshape(3 * (num_sites - 1), 3 * (num_sites - 1))
  return 0.5 * (flowed + flowed.T)


def covariance(system) -> np.ndarray:
  """(βH)⁻¹ (3M, 3M), length units squared: the harmonic crystal's covariance.

  Computed once per system settings in a process (a copy is returned).

  Raises:
    ValueError: if βH is not positive definite (the lattice is not a stable
      minimum of the energy), naming its smallest eigenvalue.
  """
  key = (system.name, system.family, system.num_particles, system.beta, system.box.tobytes())
  if key not in _COVARIANCES:
    _COVARIANCES[key] = _covariance(system)
  return _COVARIANCES[key].copy()


# Covariances computed in this process, by system settings (a memo: the
# Hessian of a 512-particle crystal takes seconds).
_COVARIANCES: dict[tuple, np.ndarray] = {}


def empirical_covariance(system, positions: np.ndarray) -> np.ndarray:
  """(3M, 3M) covariance of the displacements of samples, particle 0 pinned.

  The second moment about the lattice sites, E[u uᵀ]: the covariance of the
  zero-mean Gaussian that the base is (the one closest to the samples in
  forward KL among zero-mean Gaussians), length units squared. Each configuration
  counts once per cell translation (every particle of basis atom 0 pinned in
  turn, the others relabelled by the translation that takes it to site 0),
  which the energy's symmetry makes equally likely: C times the samples.

  Args:
    system: the solid; particle i of a sample belongs to site i.
    positions: (n, N, 3) samples, e.g. HMC samples of the target.
  """
  positions = np.asarray(positions, np.float64)
  if positions.ndim != 3 or positions.shape[1:] != (system.num_particles, 3):
    raise ValueError(
      f'positions have shape {positions.shape}; expected (n, {system.num_particles}, 3).'
    )
  box = np.asarray(system.box, np.float64)
  u = positions - np.asarray(system.lattice, np.float64)
  u -= box * np.round(u / box)
  size = 3 * (system.num_particles - 1)
  total = np.zeros((size, size))
  translations = _cell_translations(system)
  for translate in translations:
    moved = u[:, translate]
    pinned = (moved[:, 1:] - moved[:, :1]).reshape(len(u), size)
    total += pinned.T @ pinned
  total /= len(u) * len(translations)
  return 0.5 * (total + total.T)


def _covariance(system) -> np.ndarray:
  beta_h = system.beta * hessian(system)
  smallest = float(np.linalg.eigvalsh(beta_h)[0])
  if not smallest > 0:
    raise ValueError(
      f'{system.name}: the Hessian at the lattice is not positive definite (smallest '
      f'eigenvalue of βH {smallest:.3g}); the harmonic crystal does not exist.'
    )
  inverse = np.linalg.inv(beta_h)
  return 0.5 * (inverse + inverse.T)
