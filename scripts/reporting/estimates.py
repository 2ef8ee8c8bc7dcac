"""βF/N rows of `scripts.report`: flow importance sampling, LBAR, the Einstein baseline.

The flow's importance-sampling summary is `experiments.evaluation.summarize`,
the one the training loop and `experiments.evaluate` write. Every row is judged
by `systems.estimators`: `reliable` and `unreliable_reasons`. Free energies are
βF/N in kT per particle in the convention of `systems.convention`; ln Z is
ln Z_fixed (particle 0 pinned), in nats.
"""

import dataclasses
import math
import os

import numpy as np

from experiments import evaluation
from scripts.reporting.reading import Run, Samples
from systems import System, convention, estimators


@dataclasses.dataclass(frozen=True)
class Estimates:
  """rows: the βF/N table (baseline last). energies: mean U/N (energy unit) by
  source. notes: sentences for the reader. flow_summary: evaluation.summarize
  of samples.npz, or None without it."""

  rows: list[dict]
  energies: dict[str, float]
  notes: list[str]
  flow_summary: dict | None


def format_value(value: float, stderr: float) -> str:
  """'value ± stderr' with two significant digits of stderr."""
  if not (math.isfinite(stderr) and stderr > 0):
    return f'{value:.6f} ± {stderr}'
  decimals = min(max(1 - math.floor(math.log10(stderr)), 2), 10)
  return f'{value:.{decimals}f} ± {stderr:.{decimals}f}'


def _row(estimator: str, source: str, value: float, stderr: float, reasons, **details) -> dict:
  """A table row; `reasons` (str sequence): why the estimate is unreliable, empty if not."""
  return dict(
    estimator=estimator,
    source=source,
    beta_f_per_particle=float(value),
    stderr=float(stderr),
    reliable=not reasons,
    unreliable_reasons=list(reasons),
    **details,
  )


def log_weights(samples: Samples, system: System) -> np.ndarray:
  """ln w = −βU − ln q (n,), nats: importance log-weights of flow samples
  (−inf, a zero weight, where U = +inf)."""
  return -system.beta * samples.energy - samples.log_q


def importance_weights(samples: Samples, system: System) -> np.ndarray:
  """Normalised importance weights (n,) of flow samples, summing to 1 (0 where U = +inf)."""
  log_w = log_weights(samples, system)
  weights = np.exp(log_w - log_w.max())
  return weights / weights.sum()


def flow_summary(flow: Samples, system: System) -> dict:
  """experiments.evaluation.summarize of the kept flow samples (energy +inf: zero weight)."""
  return evaluation.summarize(dict(log_q=flow.log_q, energy=flow.energy), system)


def evaluation_reasons(record: dict) -> list[str]:
  """Why an evaluation row's (eval.json or metrics.jsonl) estimate is unreliable.

  Rows written before evaluations were judged lack `unreliable_reasons`; they
  are judged here from their ESS and sample count.
  """
  if 'unreliable_reasons' in record:
    return list(record['unreliable_reasons'])
  return list(estimators.weighted_reasons(record['ess'], record['num_samples']))


def importance_sampling_row(summary: dict, num_particles: int, source: str) -> dict:
  """βF/N by importance sampling from a `flow_summary`, with its delta and
  bootstrap stderr (per particle), ln Z and the count of zero weights (U = +inf)."""
  return _row(
    'flow importance sampling',
    source,
    summary['beta_f_per_particle'],
    summary['beta_f_per_particle_stderr'],
    summary['unreliable_reasons'],
    stderr_delta=summary['log_z_stderr_delta'] / num_particles,
    stderr_bootstrap=summary['log_z_stderr_bootstrap'] / num_particles,
    log_z=summary['log_z'],
    log_z_stderr=summary['log_z_stderr'],
    ess=summary['ess'],
    num_samples=summary['num_samples'],
    num_zero_weight=summary['num_zero_weight'],
  )


def recorded_row(record: dict, source: str) -> dict:
  """βF/N by importance sampling as recorded in eval.json or a metrics.jsonl row."""
  return _row(
    'flow importance sampling',
    source,
    record['beta_f_per_particle'],
    record['beta_f_per_particle_stderr'],
    evaluation_reasons(record),
    ess=record['ess'],
    num_samples=record['num_samples'],
  )


def lbar_row(flow: Samples, hmc: Samples, system: System, source: str) -> dict:
  """βF/N by LBAR between flow samples and HMC samples carrying log q."""
  beta = system.beta
  estimate = estimators.lbar(flow.log_q, -beta * flow.energy, hmc.log_q, -beta * hmc.energy)
  return _row(
    'LBAR (flow + reference)',
    source,
    convention.beta_f_per_particle(
      estimate.value, system.num_particles, system.volume, system.thermal_wavelength
    ),
    estimate.stderr / system.num_particles,
    estimate.reasons,
    log_z=estimate.value,
    log_z_stderr=estimate.stderr,
    num_samples=list(estimate.num_samples),
    overlap=estimate.overlap,
    num_infinite=list(estimate.num_infinite),
  )


def baseline_row(baseline: dict, source: str) -> dict:
  """The Einstein-crystal βF/N of `scripts.einstein_baseline`."""
  details = {
    k: baseline[k]
    for k in ('num_stages', 'samples_per_stage', 'min_adjacent_overlap', 'wall_time_seconds')
    if k in baseline
  }
  reasons = (
    estimators.mbar_reasons(
      baseline['min_adjacent_overlap'],
      baseline['samples_per_stage'],
      baseline.get('settings', {}).get('chains'),
    )
    if 'min_adjacent_overlap' in baseline
    else ()
  )
  return _row(
    'Einstein crystal (MBAR)',
    source,
    baseline['beta_f_per_particle'],
    baseline['beta_f_per_particle_stderr'],
    reasons,
    **details,
  )


def with_baseline_sigma(rows: list[dict], base: dict) -> list[dict]:
  """Rows plus `delta_to_baseline` (value − baseline) and `delta_to_baseline_sigma`
  (that difference over the combined one-sigma error), then the baseline row."""
  return [
    dict(
      r,
      delta_to_baseline=r['beta_f_per_particle'] - base['beta_f_per_particle'],
      delta_to_baseline_sigma=(r['beta_f_per_particle'] - base['beta_f_per_particle'])
      / math.hypot(r['stderr'], base['stderr']),
    )
    for r in rows
  ] + [base]


def collect_estimates(run: Run) -> Estimates:
  """βF/N rows of every estimator the run's inputs allow, mean U/N by source, and notes.

  The flow's importance-sampling row comes from samples.npz if given, else
  from eval.json, else from the last evaluation row of metrics.jsonl.
  """
  system, flow, hmc = run.system, run.flow, run.hmc
  rows, energies, notes, summary = [], {}, [], None
  n = system.num_particles
  if flow is not None:
    summary = flow_summary(flow, system)
    rows.append(importance_sampling_row(summary, n, 'samples.npz'))
    energies['flow q'] = summary['mean_energy_flow'] / n
    energies['flow reweighted to p'] = summary['mean_energy'] / n
    if flow.num_nonfinite:
      notes.append(
        f'{flow.num_nonfinite} flow samples with a NaN or −∞ energy, a non-finite ln q '
        'or non-finite positions were left out.'
      )
    if flow.num_infinite_energy:
      notes.append(
        f'{flow.num_infinite_energy} flow samples have energy +∞ (overlapping particles, '
        "or outside the solid's basin): importance sampling counts them as zero weights "
        'and LBAR as infinite forward works; the energy and overlap figures leave them out.'
      )
  elif run.final_eval is not None:
    rows.append(recorded_row(run.final_eval, 'eval.json'))
  elif run.evaluation:
    last = run.evaluation[-1]
    rows.append(recorded_row(last, f'metrics.jsonl, step {last["step"]}'))
  if hmc is not None:
    energies['HMC samples of p'] = float(np.mean(hmc.energy)) / n
    if flow is not None and hmc.log_q is not None:
      source = f'samples.npz + {os.path.basename(run.hmc_path)}'
      rows.append(lbar_row(flow, hmc, system, source))
      notes.append(
        'LBAR stderr assumes independent reference samples; correlated '
        'HMC samples make it optimistic.'
      )
      if hmc.num_outside_support:
        notes.append(
          f'{hmc.num_outside_support} reference samples lie outside the '
          "flow's support (ln q = −∞); LBAR counts them (infinite reverse work)."
        )
    else:
      notes.append('No LBAR: it needs samples.npz and log_q in --hmc_samples.')
  if run.baseline is not None:
    base = baseline_row(run.baseline, os.path.basename(run.baseline_path))
    rows = with_baseline_sigma(rows, base)
    if 'mean_energy' in run.baseline:
      energies['Einstein baseline'] = run.baseline['mean_energy'] / n
  if not all(r['reliable'] for r in rows):
    notes.append(
      "UNRELIABLE rows failed systems.estimators' checks "
      f'({estimators.RELIABILITY_RULES}): their error bars mean nothing.'
    )
  return Estimates(rows, energies, notes, summary)
