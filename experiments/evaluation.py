"""Evaluation of a trained flow against the physical energy of its system.

Given flow samples x ~ q with log q(x) and physical energies U(x), the
log-weights ln w = −βU(x) − ln q(x) give the importance-sampling estimate of
ln Z_fixed (the configurational integral with particle 0 fixed; see
`systems.convention`), hence βF/N in the project convention, the effective sample
size and the energy averages under q and reweighted to the Boltzmann
distribution.
"""

import warnings
from collections.abc import Callable

import jax
import numpy as np

from systems import System, convention, estimators

# (key, n) -> positions (n, N, 3), log q (n,), physical energy (n,).
SampleFn = Callable[[jax.Array, int], tuple[jax.Array, jax.Array, jax.Array]]


def draw_samples(
  sample_fn: SampleFn,
  key: jax.Array,
  num_samples: int,
  batch_size: int,
  keep_positions: bool = False,
) -> dict:
  """Draws `num_samples` in compiled batches of `batch_size` (last one padded).

  Returns:
    dict of float64 numpy arrays: `log_q` (n,), `energy` (n,) and, if
    `keep_positions`, `positions` (n, N, 3).
  """
  if num_samples <= 0 or batch_size <= 0:
    raise ValueError(f'num_samples={num_samples} and batch_size={batch_size} must be positive.')
  parts = {'log_q': [], 'energy': [], 'positions': []}
  num_batches = -(-num_samples // batch_size)
  for i in range(num_batches):
    x, log_q, energy = sample_fn(jax.random.fold_in(key, i), batch_size)
    parts['log_q'].append(np.asarray(log_q, np.float64))
    parts['energy'].append(np.asarray(energy, np.float64))
    if keep_positions:
      parts['positions'].append(np.asarray(x, np.float64))
  out = {k: np.concatenate(v)[:num_samples] for k, v in parts.items() if v}
  return out


def summarize(samples: dict, system: System) -> dict:
  """Free-energy and energy estimates from flow samples, judged for reliability.

  A sample of energy +∞ (overlapping particles, or outside the solid's basin
  for a flows.LocalSolidFlow) has zero target density: it counts as a zero
  importance weight, never dropped, since dropping it would bias ln Z upward.
  Samples with a NaN or −∞ energy or a non-finite log q are left out with a
  warning.

  Args:
    samples: `log_q` (n,) and `energy` (n,) in the system's energy unit.
    system: the target system (β, N, volume, thermal wavelength).

  Returns:
    JSON-ready dict: `ess` (fraction), `log_z` and `log_z_stderr` (ln Z_fixed),
    `log_z_stderr_delta` and `log_z_stderr_bootstrap` (the two errors whose
    larger is `log_z_stderr`), `pareto_khat` (the weights' tail shape,
    systems.estimators.pareto_khat), `lognormal_ess` (the ESS that the spread of
    the log-weights implies, judged beside `ess`; systems.estimators), `beta_f_per_particle` and
    `beta_f_per_particle_stderr` (project convention), `mean_energy`
    (reweighted to the target, the estimate of ⟨U⟩),
    `mean_energy_flow` (under q, finite energies), `mean_log_weight` and
    `log_weight_std` (of ln w = −βU − ln q over the samples of finite energy:
    E_q[ln w] ≤ ln Z for any flow, and ln Z − E_q[ln w] is the flow's reverse
    KL divergence in kT, a measure of its quality that, unlike the ESS, is
    well estimated from few samples), `num_samples` (used),
    `num_zero_weight` (of them, energy +∞), `num_nonfinite` (left out),
    `reliable` and `unreliable_reasons` (list of str; see systems.estimators).
    With fewer than two samples of finite weight every estimate is NaN and the
    reason says how many samples were non-finite and the likely cause.
  """
  log_q, energy = samples['log_q'], samples['energy']
  used = np.isfinite(log_q) & (np.isfinite(energy) | (energy == np.inf))
  finite = used & np.isfinite(energy)
  num_nonfinite = int(np.size(used) - used.sum())
  if finite.sum() < 2:
    reason = _no_finite_samples_reason(log_q, energy)
    warnings.warn(reason, stacklevel=2)
    return dict(
      num_samples=int(used.sum()),
      num_zero_weight=int(used.sum() - finite.sum()),
      num_nonfinite=num_nonfinite,
      ess=float('nan'),
      log_z=float('nan'),
      log_z_stderr=float('nan'),
      log_z_stderr_delta=float('nan'),
      log_z_stderr_bootstrap=float('nan'),
      pareto_khat=float('nan'),
      lognormal_ess=float('nan'),
      beta_f_per_particle=float('nan'),
      beta_f_per_particle_stderr=float('nan'),
      mean_energy=float('nan'),
      mean_energy_flow=float('nan'),
      mean_log_weight=float('nan'),
      log_weight_std=float('nan'),
      reliable=False,
      unreliable_reasons=[reason],
    )
  if num_nonfinite:
    warnings.warn(
      f'{num_nonfinite} of {used.size} evaluation samples had a NaN or −∞ energy or a '
      'non-finite log-probability and were left out.',
      stacklevel=2,
    )
  log_q, energy = log_q[used], energy[used]
  log_w = -system.beta * energy - log_q  # −∞ for energy +∞
  estimate = estimators.importance_sampling(log_w)
  n = system.num_particles
  weights = np.exp(log_w - log_w.max())
  weights /= weights.sum()
  return dict(
    num_samples=int(used.sum()),
    num_zero_weight=int(used.sum() - finite.sum()),
    num_nonfinite=num_nonfinite,
    ess=float(estimate.ess),
    log_z=float(estimate.value),
    log_z_stderr=float(estimate.stderr),
    log_z_stderr_delta=float(estimate.stderr_delta),
    log_z_stderr_bootstrap=float(estimate.stderr_bootstrap),
    pareto_khat=float(estimate.pareto_khat),
    lognormal_ess=float(estimate.lognormal_ess),
    beta_f_per_particle=float(
      convention.beta_f_per_particle(estimate.value, n, system.volume, system.thermal_wavelength)
    ),
    beta_f_per_particle_stderr=float(estimate.stderr / n),
    mean_energy=float(np.sum(weights[weights > 0] * energy[weights > 0])),  # 0·inf: no NaN
    mean_energy_flow=float(np.mean(energy[np.isfinite(energy)])),
    mean_log_weight=float(np.mean(log_w[np.isfinite(log_w)])),
    log_weight_std=float(np.std(log_w[np.isfinite(log_w)])),
    reliable=estimate.reliable,
    unreliable_reasons=list(estimate.reasons),
  )


def result_lines(row: dict, name: str) -> str:
  """A `summarize` row for a person: βF/N ± stderr, ESS, ⟨U⟩, the step (and wall
  time, if the row has them) on one line, then 'UNRELIABLE: <reasons>' on a
  second line if the estimate was judged unreliable."""
  when = [f'step {row["step"]}'] if 'step' in row else []
  if 'wall_time' in row:
    when.append(f'{row["wall_time"]:.0f} s')
  line = (
    f'{name}: βF/N = {row["beta_f_per_particle"]:.5f} ± {row["beta_f_per_particle_stderr"]:.5f}, '
    f'ESS = {row["ess"]:.3g}, ⟨U⟩ = {row["mean_energy"]:.3f}'
    + (f' ({", ".join(when)})' if when else '')
  )
  note = estimators.unreliable_note(row['unreliable_reasons'])
  return f'{line}\n{note}' if note else line


def _no_finite_samples_reason(log_q: np.ndarray, energy: np.ndarray) -> str:
  """Why no estimate is possible: the non-finite counts and their likely causes."""
  bad_energy, bad_log_q = ~np.isfinite(energy), ~np.isfinite(log_q)
  causes = []
  if np.any(energy == np.inf):
    causes.append('overlapping particles (infinite energy)')
  if np.any(np.isnan(energy) | bad_log_q):
    causes.append('a diverged flow (NaN positions or energies, or a non-finite log q)')
  bad = bad_energy | bad_log_q
  return (
    f'{int(bad.sum())} of {bad.size} evaluation samples have a non-finite energy '
    f'({int(bad_energy.sum())}) or log-probability ({int(bad_log_q.sum())}), leaving '
    f'{int(bad.size - bad.sum())} finite: too few for an estimate (need 2)'
    + (f'; likely cause: {" or ".join(causes)}.' if causes else '.')
  )
