r"""Einstein-crystal route to the absolute free energy of a solid (Frenkel–Ladd).

Displacements u_i = x_i − r_i from the lattice sites r_i are sampled on the
subspace Σ_i u_i = 0 (centre of mass fixed) with its Lebesgue measure. The
Einstein crystal U_E = (k/2) Σ_i |u_i|² has, on that 3(N−1)-dimensional
subspace, exactly

    Z_W^E = ∫ exp(−β U_E) du = (2π / (βk))^{3(N−1)/2}.

States U_λ = λ (U − U_0) + (1 − λ) U_E, with U_0 the perfect-lattice energy,
join the Einstein crystal (λ = 0) to the solid (λ = 1); MBAR over the stages
gives Δf = f_1 − f_0 = −ln(Z_W e^{βU_0} / Z_W^E), so

    ln Z_W = ln Z_W^E − Δf − β U_0.

Counting as the published values do, Z = N! (V/N) N^{3/2} Z_W, hence

    βF/N = [−ln(V/N) − (3/2) ln N − ln Z_W] / N + 3 ln Λ.

Stages are trusted only if every adjacent pair has a two-state overlap-matrix
element (pymbar's definition, `estimators.adjacent_pair_overlap`) ≥
`min_overlap`; otherwise `InsufficientOverlapError` names the pair. The error
bar is judged by `estimators.mbar_reasons` (`LambdaPathResult.reasons`): it is
too small when the sparsest stage has too few decorrelated samples per chain.
`lambda_path` is `sample_stages` (HMC) then `path_from_stages` (MBAR), which
scripts.einstein_coverage runs on subsets of one batch of chains. pymbar is
imported lazily (through systems.estimators) when MBAR runs.
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from systems import estimators, sampler


class InsufficientOverlapError(ValueError):
  """Adjacent λ stages overlap too little for MBAR to be trusted."""


def log_z_einstein(spring: float, beta: float, num_particles: int) -> float:
  """ln Z_W^E = (3(N−1)/2) ln(2π/(βk)); k in energy/length², β in 1/energy."""
  for name, value in (('spring', spring), ('beta', beta)):
    if not (value > 0 and math.isfinite(value)):
      raise ValueError(f'{name}={value} must be positive and finite.')
  if int(num_particles) != num_particles or num_particles < 2:
    raise ValueError(f'num_particles={num_particles} must be an integer >= 2.')
  return 1.5 * (num_particles - 1) * math.log(2.0 * math.pi / (beta * spring))


def beta_f_per_particle(
  log_z_w: float, num_particles: int, volume: float, thermal_wavelength: float
) -> float:
  """βF/N = [−ln(V/N) − (3/2) ln N − ln Z_W]/N + 3 ln Λ (V in length³, Λ in length)."""
  for name, value in (('volume', volume), ('thermal_wavelength', thermal_wavelength)):
    if not (value > 0 and math.isfinite(value)):
      raise ValueError(f'{name}={value} must be positive and finite.')
  n = num_particles
  return (-math.log(volume / n) - 1.5 * math.log(n) - log_z_w) / n + 3.0 * math.log(
    thermal_wavelength
  )


def einstein_energy(x: jnp.ndarray, lattice, spring: float) -> jnp.ndarray:
  """U_E = (k/2) Σ_i |x_i − r_i|², x (..., N, 3) unwrapped, lattice (N, 3) -> (...).

  Numpy in, numpy out (float64 stays float64); jax arrays give jax arrays.
  """
  u = x - lattice
  return 0.5 * spring * (u * u).sum(axis=(-2, -1))


def spring_from_displacements(u, beta: float) -> float:
  """k = 3(N−1) / (β ⟨Σ_i |u_i|²⟩) from centred displacements u (..., N, 3).

  Equipartition of the Einstein crystal with fixed centre of mass: its mean
  squared displacement matches the samples' (energy/length²).
  """
  u = np.asarray(u, dtype=np.float64)
  if u.ndim < 2 or u.shape[-1] != 3 or u.shape[-2] < 2:
    raise ValueError(f'u must have shape (..., N >= 2, 3), got {u.shape}.')
  msd = np.mean(np.sum(u * u, axis=(-2, -1)))
  return 3.0 * (u.shape[-2] - 1) / (beta * msd)


def lambda_schedule(num_stages: int) -> np.ndarray:
  """λ_k = sin²(π k / (2(K−1))), k = 0..K−1: dense near both ends; shape (K,)."""
  if int(num_stages) != num_stages or num_stages < 2:
    raise ValueError(f'num_stages={num_stages} must be an integer >= 2.')
  return np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, int(num_stages))) ** 2


@dataclasses.dataclass(frozen=True)
class StageEnergies:
  """HMC samples of every λ stage, as the energies MBAR needs (K stages, C chains, T records).

  delta_u: (K, C, T) U − U_0 of the stored samples (energy unit, float64).
  u_einstein: (K, C, T) U_E of the same samples.
  u_lattice: U_0, the perfect-lattice energy.
  acceptance: (K, C) mean HMC acceptance per chain.
  num_particles: N.
  """

  delta_u: np.ndarray
  u_einstein: np.ndarray
  u_lattice: float
  acceptance: np.ndarray
  num_particles: int

  def select(self, chains: slice = slice(None), records: int | None = None) -> 'StageEnergies':
    """The given chains of every stage, cut to their first `records` records."""
    cut = (slice(None), chains, slice(records))
    return dataclasses.replace(
      self,
      delta_u=self.delta_u[cut],
      u_einstein=self.u_einstein[cut],
      acceptance=self.acceptance[:, chains],
    )


@dataclasses.dataclass(frozen=True)
class LambdaPathResult:
  """MBAR over the λ stages (reduced free energies in kT).

  log_z: ln Z_W of energy_fn on the centre-of-mass-fixed subspace.
  log_z_stderr: its one-sigma error (MBAR on decorrelated samples).
  delta_f: f(λ=1) − f(λ=0) of the shifted path.
  lambdas: (K,) stages.
  adjacent_overlap: (K−1,) two-state overlap of each adjacent pair of stages.
  samples_per_stage: (K,) decorrelated samples per stage fed to MBAR.
  statistical_inefficiency: (K,) g per stage (in stored samples) of
    U − U_0 − U_E, averaged over chains; stage k keeps every ⌈g_k⌉-th sample.
  mean_energy, mean_energy_stderr: ⟨U⟩ at λ = 1 (energy unit).
  acceptance: (K,) mean HMC acceptance per stage.
  reasons: why log_z_stderr is not to be trusted (`estimators.mbar_reasons`:
    too little adjacent overlap, or too few decorrelated samples per chain in
    the sparsest stage); empty when reliable.
  """

  log_z: float
  log_z_stderr: float
  delta_f: float
  lambdas: np.ndarray
  adjacent_overlap: np.ndarray
  samples_per_stage: np.ndarray
  statistical_inefficiency: np.ndarray
  mean_energy: float
  mean_energy_stderr: float
  acceptance: np.ndarray
  reasons: tuple[str, ...]

  @property
  def reliable(self) -> bool:
    """True when no reliability rule failed (``reasons`` is empty)."""
    return not self.reasons


def lambda_path(
  energy_fn: Callable,
  lattice,
  beta: float,
  spring: float,
  lambdas,
  key: jax.Array,
  *,
  chains_per_stage: int,
  num_steps: int,
  burn_in: int,
  thin: int = 1,
  num_leapfrog: int = 2,
  step_size: float = 0.05,
  min_overlap: float = 0.05,
) -> LambdaPathResult:
  """ln Z_W of energy_fn by MBAR along U_λ from the Einstein crystal.

  `sample_stages` then `path_from_stages`; arguments as there.

  Raises:
    InsufficientOverlapError: naming the first adjacent pair below min_overlap
      (both directions of the overlap matrix are checked).
  """
  stages = sample_stages(
    energy_fn,
    lattice,
    beta,
    spring,
    lambdas,
    key,
    chains_per_stage=chains_per_stage,
    num_steps=num_steps,
    burn_in=burn_in,
    thin=thin,
    num_leapfrog=num_leapfrog,
    step_size=step_size,
  )
  return path_from_stages(stages, lambdas, beta, spring, min_overlap=min_overlap)


def _check_lambdas(lambdas) -> np.ndarray:
  lambdas = np.asarray(lambdas, dtype=np.float64)
  if (
    lambdas.ndim != 1
    or lambdas.size < 2
    or lambdas[0] != 0.0
    or lambdas[-1] != 1.0
    or np.any(np.diff(lambdas) <= 0)
  ):
    raise ValueError(f'lambdas must increase from 0 to 1 with at least 2 stages, got {lambdas}.')
  return lambdas


def sample_stages(
  energy_fn: Callable,
  lattice,
  beta: float,
  spring: float,
  lambdas,
  key: jax.Array,
  *,
  chains_per_stage: int,
  num_steps: int,
  burn_in: int,
  thin: int = 1,
  num_leapfrog: int = 2,
  step_size: float = 0.05,
) -> StageEnergies:
  """HMC of every stage U_λ = λ (U − U_0) + (1 − λ) U_E, all stages as one batch.

  Args:
    energy_fn: U(x) for x (N, 3) -> () (energy unit); jax-differentiable.
    lattice: (N, 3) sites; every chain starts there (centre of mass kept).
    beta: 1 / energy unit.
    spring: Einstein spring constant k (energy/length²).
    lambdas: (K,) increasing stages with λ_0 = 0 and λ_{K−1} = 1.
    key: PRNG key.
    chains_per_stage, num_steps, burn_in, thin, num_leapfrog, step_size: HMC
      settings of `sampler.sample`, per stage.
  """
  lattice = np.asarray(lattice, dtype=np.float64)
  lambdas = _check_lambdas(lambdas)
  if int(chains_per_stage) != chains_per_stage or chains_per_stage < 1:
    raise ValueError(f'chains_per_stage={chains_per_stage} must be a positive integer.')
  num_stages, num_particles = lambdas.size, lattice.shape[0]
  u_lattice = float(_energies_float64(energy_fn, lattice[None, None])[0, 0])

  def staged_energy(x, lam):
    return lam * (energy_fn(x) - u_lattice) + (1.0 - lam) * einstein_energy(x, lattice, spring)

  x0 = jnp.broadcast_to(
    jnp.asarray(lattice, jnp.float32), (num_stages * chains_per_stage, num_particles, 3)
  )
  chain_lambdas = jnp.repeat(jnp.asarray(lambdas, jnp.float32), chains_per_stage)
  result = sampler.sample(
    staged_energy,
    x0,
    key,
    beta=beta,
    num_steps=num_steps,
    step_size=step_size,
    burn_in=burn_in,
    thin=thin,
    num_leapfrog=num_leapfrog,
    fix_centre_of_mass=True,
    energy_args=(chain_lambdas,),
  )
  samples = result.samples.reshape(num_stages, chains_per_stage, -1, num_particles, 3)
  delta_u = _energies_float64(energy_fn, samples) - u_lattice
  u_einstein = np.stack(
    [einstein_energy(stage.astype(np.float64), lattice, spring) for stage in samples]
  )
  return StageEnergies(
    delta_u=delta_u,
    u_einstein=u_einstein,
    u_lattice=u_lattice,
    acceptance=result.acceptance.reshape(num_stages, chains_per_stage),
    num_particles=num_particles,
  )


def path_from_stages(
  stages: StageEnergies, lambdas, beta: float, spring: float, *, min_overlap: float = 0.05
) -> LambdaPathResult:
  """MBAR over the stages' decorrelated samples: ln Z_W and its reliability.

  Stage k keeps every ⌈g_k⌉-th record of each chain, g_k the statistical
  inefficiency of U − U_0 − U_E averaged over its chains. lambdas, beta and
  spring as in `sample_stages`; min_overlap: smallest acceptable adjacent
  overlap-matrix element.

  Raises:
    InsufficientOverlapError: naming the first adjacent pair below min_overlap.
  """
  lambdas = _check_lambdas(lambdas)
  delta_u, u_einstein = stages.delta_u, stages.u_einstein
  if delta_u.shape != u_einstein.shape or delta_u.shape[0] != lambdas.size:
    raise ValueError(
      f'stage energies must both have shape ({lambdas.size}, C, T), got {delta_u.shape} '
      f'and {u_einstein.shape}.'
    )
  g = sampler.statistical_inefficiency(delta_u - u_einstein).mean(axis=1)
  kept = [
    (du[:, ::stride].reshape(-1), ue[:, ::stride].reshape(-1))
    for du, ue, stride in zip(delta_u, u_einstein, np.ceil(g).astype(int))
  ]
  flat_du, flat_ue = (np.concatenate(parts) for parts in zip(*kept))
  counts = np.array([du.size for du, _ in kept], dtype=np.int64)

  u_kn = beta * (lambdas[:, None] * flat_du + (1.0 - lambdas[:, None]) * flat_ue)
  estimate = estimators.mbar(u_kn, counts, chains_per_state=delta_u.shape[1])
  adjacent = np.asarray(estimate.adjacent_pair_overlap)
  bad = np.flatnonzero(adjacent < min_overlap)
  if bad.size:
    k = int(bad[0])
    raise InsufficientOverlapError(
      f'λ stages {k} and {k + 1} (λ = {lambdas[k]:.6g}, {lambdas[k + 1]:.6g}) '
      f'overlap {adjacent[k]:.3g} < min_overlap={min_overlap}'
      f'{f" (and {bad.size - 1} more pairs)" if bad.size > 1 else ""}; '
      f'add stages between them.'
    )

  delta_f = float(estimate.delta_f[-1])
  energies_one = kept[-1][0] + stages.u_lattice
  return LambdaPathResult(
    log_z=log_z_einstein(spring, beta, stages.num_particles) - delta_f - beta * stages.u_lattice,
    log_z_stderr=float(estimate.stderr[-1]),
    delta_f=delta_f,
    lambdas=lambdas,
    adjacent_overlap=adjacent,
    samples_per_stage=counts,
    statistical_inefficiency=g,
    mean_energy=float(energies_one.mean()),
    mean_energy_stderr=float(energies_one.std(ddof=1) / math.sqrt(energies_one.size)),
    acceptance=stages.acceptance.mean(axis=1),
    reasons=estimate.reasons,
  )


def _energies_float64(energy_fn: Callable, x) -> np.ndarray:
  """energy_fn on x (S, ..., N, 3) in float64, one leading entry at a time (memory);
  returns (S, ...) numpy."""
  x = np.asarray(x)
  with jax.enable_x64(True):
    fn = jax.jit(lambda y: jax.lax.map(energy_fn, y, batch_size=256))
    return np.stack(
      [np.asarray(fn(jnp.asarray(part.reshape(-1, *x.shape[-2:]), jnp.float64))) for part in x]
    ).reshape(x.shape[:-2])
