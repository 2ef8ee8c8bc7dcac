"""Named atomic solids with their reference settings, and the `System` they build.

Units: Lennard-Jones in reduced units (σ, ε, k_B = 1; temperature = 1/β);
monatomic water in Å, kcal/mol and K.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from systems import box as box_lib
from systems import cell_list, lattices, lennard_jones, monatomic_water, neighbour_list, pair_terms

KB_KCAL_PER_MOL_K = 0.0019872067  # Boltzmann constant, kcal/mol/K


@dataclasses.dataclass(frozen=True)
class _Units:
  boltzmann: float  # k_B in energy unit per temperature unit
  energy_unit: str
  length_scale: float  # σ, the default thermal wavelength


_UNITS = {
  'lennard_jones': _Units(1.0, 'epsilon', 1.0),
  'monatomic_water': _Units(KB_KCAL_PER_MOL_K, 'kcal/mol', monatomic_water.SIGMA),
}
POTENTIALS = tuple(_UNITS)


@dataclasses.dataclass(frozen=True, eq=False)
class System:
  """An atomic solid: a lattice in a periodic box, a potential and a temperature.

  Build with `make_system` or `get_system`. Energies take positions
  (..., N, 3) in the length unit and return (...) in `energy_unit`, in the
  dtype of the input; they are pure jax (jit/vmap/grad) and periodic in every
  coordinate.

  Non-finite input: the energy (physical and training alike, eager or traced)
  of a configuration with any NaN or ±inf coordinate is NaN, and only that
  configuration's; such a configuration is never reported as an overflow of
  a cell list or an mW neighbour list. The same holds for every energy in
  `systems`.
  """

  name: str
  potential: str  # one of POTENTIALS
  lattice_name: str
  lattice: np.ndarray  # (N, 3) float64 sites, lattice[0] = 0
  box: np.ndarray  # (3,) edge lengths
  temperature: float  # K (mW) or 1/β (LJ)
  beta: float  # 1 / (k_B T), per energy unit
  cutoff: float  # pair (and mW three-body) cutoff, length unit
  energy_unit: str  # 'kcal/mol' or 'epsilon'
  thermal_wavelength: float  # Λ, length unit
  sites_per_primitive_cell: int  # s of the free-energy counting convention
  basis_index: np.ndarray  # (N,) basis atom of each site in the conventional cell
  linearization: pair_terms.Linearization
  neighbour_capacity: int  # mW neighbour-list capacity K
  cell_capacity: int | None = None  # cell-list capacity (None: cell_list.default_capacity)
  pair_method: str = 'auto'  # how energies find pairs: one of cell_list.METHODS
  notes: tuple[str, ...] = ()  # what a user should know of its settings (scripts.list_systems)

  @property
  def num_particles(self) -> int:
    return self.lattice.shape[0]

  @property
  def volume(self) -> float:
    return box_lib.volume(self.box)

  @property
  def density(self) -> float:
    return self.num_particles / self.volume

  @property
  def family(self) -> tuple:
    """What one set of local-flow weights is trained for: every size of one lattice
    at one density and temperature with one potential (the sizes differ in N only)."""
    return (
      self.potential,
      self.lattice_name,
      round(self.density, 9),
      self.temperature,
      self.cutoff,
      self.thermal_wavelength,
    )

  def _check_shape(self, x) -> jnp.ndarray:
    x = pair_terms.as_positions(x)
    if x.shape[-2] != self.num_particles:
      raise ValueError(
        f'{self.name}: positions must have shape (..., {self.num_particles}, 3), got {x.shape}.'
      )
    return x

  def _energy(self, x, linearization, strict):
    x = self._check_shape(x)
    options = dict(
      linearization=linearization,
      strict=strict,
      method=self.pair_method,
      cell_capacity=self.cell_capacity,
    )
    if self.potential == 'lennard_jones':
      return lennard_jones.energy(x, self.box, self.cutoff, **options)
    return monatomic_water.energy(x, self.box, capacity=self.neighbour_capacity, **options)

  def energy(self, x) -> jnp.ndarray:
    """Physical energy (...) of x (..., N, 3).

    NaN under tracing (ValueError when eager) if a cell of the cell list or
    (mW) the neighbour list of a finite configuration overflows.
    """
    return self._energy(x, None, strict=True)

  def training_energy(self, x) -> jnp.ndarray:
    """Energy (...) with the linearised pair term: large but finite for overlaps.

    An overflowing cell leaves its extra particles out of every pair; an
    overflowing mW neighbour list keeps each particle's K nearest neighbours.
    """
    return self._energy(x, self.linearization, strict=False)


def make_system(
  name: str,
  potential: str,
  lattice_name: str,
  num_particles: int,
  density: float,
  temperature: float,
  *,
  linearize_below: float,
  min_distance: float,
  cutoff: float | None = None,
  thermal_wavelength: float | None = None,
  neighbour_capacity: int = neighbour_list.DEFAULT_CAPACITY,
  cell_capacity: int | None = None,
  pair_method: str = 'auto',
  allow_small_box: bool = False,
) -> System:
  """Builds a System on a perfect lattice.

  Args:
    name: label.
    potential: 'lennard_jones' or 'monatomic_water'.
    lattice_name: one of lattices.LATTICE_NAMES.
    num_particles: N, must tile the lattice.
    density: number density (length unit^-3), positive.
    temperature: positive; K for mW, k_B T / ε for LJ.
    linearize_below: r0 of the training linearisation (length unit).
    min_distance: clip of distances in the training energy (length unit).
    cutoff: LJ truncation radius (required for LJ; mW uses aσ, pass None).
    thermal_wavelength: Λ; defaults to σ of the potential.
    neighbour_capacity: mW neighbour-list capacity (capped at N - 1).
    cell_capacity: particles per cell of the cell list, where a box uses one
      (`systems.cell_list`); None for the default from the density.
    pair_method: 'auto' (the cell list where the box allows it and it is
      cheaper), 'dense' (all N² pairs) or 'cell_list' (where the box allows it).
    allow_small_box: allow a box edge shorter than twice the cutoff (the
      minimum-image convention then drops farther images); the System's
      `notes` say so.

  Raises:
    ValueError: for any bad argument, naming it and what was expected.
  """
  if potential not in _UNITS:
    raise ValueError(f'Unknown potential {potential!r}; known: {", ".join(POTENTIALS)}.')
  if not (np.isfinite(temperature) and temperature > 0):
    raise ValueError(f'Temperature must be positive and finite, got {temperature}.')
  if potential == 'lennard_jones':
    if cutoff is None or not cutoff > 0:
      raise ValueError(f'Lennard-Jones needs a positive cutoff, got {cutoff}.')
  elif cutoff is not None:
    raise ValueError(
      f'mW has the fixed cutoff aσ = {monatomic_water.CUTOFF} Å; '
      f'got cutoff={cutoff}, expected None.'
    )
  else:
    cutoff = monatomic_water.CUTOFF
  if not linearize_below < cutoff:
    raise ValueError(f'linearize_below={linearize_below} must be below the cutoff {cutoff}.')
  if cell_capacity is not None and not (
    isinstance(cell_capacity, int) and not isinstance(cell_capacity, bool) and cell_capacity >= 1
  ):
    raise ValueError(f'cell_capacity={cell_capacity} must be None or an integer >= 1.')
  units = _UNITS[potential]
  lattice = lattices.make_lattice(lattice_name, num_particles, density)
  cell_list.choose(pair_method, lattice.box, cutoff, num_particles, cell_capacity)  # checks it
  shortest = float(np.min(lattice.box))
  notes = ()
  if shortest < 2 * cutoff:
    notes = (
      f'Box edge {shortest:.4f} is shorter than twice the cutoff {cutoff:.4f}: '
      f'energies use the minimum-image convention (one image per pair), as the '
      f'published reference values do.',
    )
    if not allow_small_box:
      raise ValueError(f'System {name!r}: {notes[0]} Pass allow_small_box=True to accept this.')
  return System(
    name=name,
    potential=potential,
    lattice_name=lattice_name,
    lattice=lattice.positions,
    box=lattice.box,
    temperature=float(temperature),
    beta=1.0 / (units.boltzmann * temperature),
    cutoff=float(cutoff),
    energy_unit=units.energy_unit,
    thermal_wavelength=float(thermal_wavelength or units.length_scale),
    sites_per_primitive_cell=lattice.sites_per_primitive_cell,
    basis_index=lattice.basis_index,
    linearization=pair_terms.Linearization(linearize_below, min_distance),
    neighbour_capacity=neighbour_list.capacity_for(num_particles, neighbour_capacity),
    cell_capacity=cell_capacity,
    pair_method=pair_method,
    notes=notes,
  )


_LENNARD_JONES = dict(
  potential='lennard_jones',
  lattice_name='fcc',
  density=1.28,
  temperature=2.0,
  cutoff=2.7,
  linearize_below=0.8,
  min_distance=0.01,
)
_MONATOMIC_WATER = dict(
  potential='monatomic_water',
  density=0.033567184,
  temperature=200.0,
  linearize_below=1.2,
  min_distance=0.01,
)
# Small boxes (edge < 2 cutoff) reproduce published minimum-image values.
_SMALL = dict(allow_small_box=True)

_NAMED = {
  'lj_32': dict(_LENNARD_JONES, num_particles=32, **_SMALL),
  'lj_256': dict(_LENNARD_JONES, num_particles=256),
  'lj_500': dict(_LENNARD_JONES, num_particles=500),
  'lj_864': dict(_LENNARD_JONES, num_particles=864),
  'lj_1372': dict(_LENNARD_JONES, num_particles=1372),
  'mw_cubic_8': dict(_MONATOMIC_WATER, lattice_name='cubic_diamond', num_particles=8, **_SMALL),
  **{
    f'mw_cubic_{n}': dict(_MONATOMIC_WATER, lattice_name='cubic_diamond', num_particles=n)
    for n in (64, 216, 512, 1000, 1728)
  },
  **{
    f'mw_hex_{n}': dict(_MONATOMIC_WATER, lattice_name='hexagonal_ice', num_particles=n)
    for n in (64, 216, 512, 1000, 1728)
  },
}
SYSTEM_NAMES = tuple(_NAMED)


def get_system(name: str) -> System:
  """The named system with its reference settings (see SYSTEM_NAMES).

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if name not in _NAMED:
    raise ValueError(f'Unknown system {name!r}; known: {", ".join(SYSTEM_NAMES)}.')
  return make_system(name, **_NAMED[name])
