"""Ladders of thermodynamic states for targeted free-energy perturbation.

A ladder is a family of states k = 0..K−1 with parameter λ_k of one system on
a periodic cube [lower, upper)³: A = state 0, B = state K−1, the others only
serve staged (MBAR) estimates. Configurations are (..., M, 3) positions of the
M particles the targeted map acts on (a fixed solute is not among them).

- SolvationLadder: λ = the radius R (σ) of the solute of systems.solvation;
- TemperatureLadder: λ = the inverse temperature β (1/energy) of a named
  solid of the registry in a cubic box.

LADDERS maps each TFEP benchmark name (config.benchmark) to its constructor,
(parameters (K,)) -> Ladder.
"""

import abc
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from systems import get_system, solvation


class Ladder(abc.ABC):
  """States k with parameters λ_k (K,) on the periodic cube [lower, upper)³.

  Attributes:
    parameters: (K,) λ_k; A = parameters[0], B = parameters[-1].
    num_particles: M, particles per configuration.
    lower, upper: the periodic cube (length units).
    sites: (M, 3) lattice sites of a solid (None for a fluid).
    solute: (3,) position of a fixed solute of radius λ (None: no solute).
  """

  parameters: np.ndarray
  num_particles: int
  lower: float
  upper: float
  sites: np.ndarray | None = None
  solute: np.ndarray | None = None

  @abc.abstractmethod
  def reduced(self, x, parameter) -> jnp.ndarray:
    """Reduced potential (...) in kT of x (..., M, 3) in the state of λ = `parameter`."""

  @abc.abstractmethod
  def initial_positions(self, key: jax.Array, num: int, parameter: float) -> np.ndarray:
    """(num, M, 3) starting configurations for sampling the state of λ = `parameter`."""

  def reduced_at(self, k: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """x (..., M, 3) -> reduced potential (...) of state k."""
    return lambda x: self.reduced(x, self.parameters[k])


class SolvationLadder(Ladder):
  """λ = solute radius R (σ): the 125 solvent particles of systems.solvation
  about a WCA solute fixed at the centre of the box [−L/2, L/2)³."""

  num_particles = solvation.NUM_SOLVENT
  lower, upper = solvation.LOWER, solvation.UPPER
  solute = np.zeros(3)

  def __init__(self, parameters):
    self.parameters = np.asarray(parameters, np.float64)

  def reduced(self, x, radius):
    return solvation.BETA * solvation.energy(x, radius)

  def initial_positions(self, key, num, radius):
    return solvation.initial_positions(key, num, radius)


class TemperatureLadder(Ladder):
  """λ = β (1/energy) of a named solid of the registry, in its cubic box [0, L)³.

  Sampling starts on the lattice sites with Gaussian noise of std 0.02/√β.
  """

  def __init__(self, system_name: str, parameters):
    self.system = get_system(system_name)
    box = np.asarray(self.system.box)
    if not np.allclose(box, box[0]):
      raise ValueError(f'{system_name} has box {box}; expected a cube.')
    self.parameters = np.asarray(parameters, np.float64)
    self.num_particles = self.system.num_particles
    self.lower, self.upper = 0.0, float(box[0])
    self.sites = np.asarray(self.system.lattice)

  def reduced(self, x, beta):
    return beta * self.system.energy(x)

  def initial_positions(self, key, num, beta):
    noise = 0.02 * np.asarray(jax.random.normal(key, (num,) + self.sites.shape))
    return (self.sites + noise / np.sqrt(beta)).astype(np.float32)


LADDERS: dict[str, Callable[[np.ndarray], Ladder]] = {
  'solvation': SolvationLadder,
  'lj_32': functools.partial(TemperatureLadder, 'lj_32'),
}
