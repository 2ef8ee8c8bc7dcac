r"""Report of a training run: figures, βF/N from every available estimator, an XYZ excerpt.

  python -m scripts.report --workdir=W [--baseline=F.json] [--hmc_samples=M.npz]

Reads W/metrics.jsonl and W/config.json, and if present W/eval.json and
W/samples.npz (from `experiments.evaluate --samples_out`); --baseline is the
JSON of `scripts.einstein_baseline`, --hmc_samples an .npz of HMC samples of
the target (`scripts.reference_samples`) with positions (m, N, 3), energy (m,)
and optionally log_q (m,), the flow's log-density on them (which enables
LBAR). Writes W/report.json, W/report.md, PNG figures in W/figures/ and, with
samples, W/samples.xyz.

Every estimate is judged by `systems.estimators` (too few effective samples, too
little overlap, too many infinite works): rows carry `reliable` and
`unreliable_reasons`, and unreliable ones are marked UNRELIABLE in the table,
the figure and the printed lines.

Free energies are βF/N in kT per particle in the convention of
`systems.convention`; ln Z is ln Z_fixed (particle 0 pinned), in nats.
"""

import argparse
import dataclasses
import json
import math
import os
import sys

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scripts import observables, xyz
from systems import System, convention, estimators, get_system

_LENGTH_UNIT = {'lennard_jones': 'σ', 'monatomic_water': 'Å'}
_SPECIES = {'lennard_jones': 'Ar', 'monatomic_water': 'O'}
_MAX_SCATTER = 4000  # points per source in the overlap scatter
_FLOW, _REWEIGHTED, _HMC, _BASELINE, _UNRELIABLE = 'C0', 'C1', 'C2', 'C3', 'C7'


@dataclasses.dataclass(frozen=True)
class Samples:
  """Finite samples of one source (non-finite ones dropped and counted).

  positions: (n, N, 3), length unit. energy: (n,) physical energy, energy
  unit. log_q: (n,) flow log-density over the N − 1 relative coordinates
  (nats), or None; −inf (kept) for the num_outside_support reference samples
  that lie outside the flow's support.
  """

  positions: np.ndarray
  energy: np.ndarray
  log_q: np.ndarray | None
  num_nonfinite: int
  num_outside_support: int = 0


# --- inputs ------------------------------------------------------------------


def read_json(path: str, what: str) -> dict:
  """A JSON object from `path`; `what` names the file in errors."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} not found at {path!r}.')
  with open(path) as f:
    try:
      record = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f'{what} {path!r} is not valid JSON: {error}.') from None
  if not isinstance(record, dict):
    raise ValueError(f'{what} {path!r} must hold a JSON object, got {type(record).__name__}.')
  return record


_TRAINING_KEYS = ('step', 'wall_time', 'loss', 'num_skipped', 'steps_per_second')
_EVALUATION_KEYS = (
  'step',
  'wall_time',
  'num_samples',
  'ess',
  'beta_f_per_particle',
  'beta_f_per_particle_stderr',
)


def read_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  """Training rows (with `loss`) and evaluation rows (with `beta_f_per_particle`)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'No metrics.jsonl in --workdir={workdir!r}: expected a training run '
      f'directory written by python -m experiments.train (missing {path!r}).'
    )
  training, evaluation = [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f'{path}:{number} is not a JSON row: {error}.') from None
      kind, keys = (
        (training, _TRAINING_KEYS)
        if isinstance(row, dict) and 'loss' in row
        else (evaluation, _EVALUATION_KEYS)
      )
      if not isinstance(row, dict) or any(k not in row for k in keys):
        raise ValueError(
          f'{path}:{number} is neither a training row (keys '
          f'{", ".join(_TRAINING_KEYS)}) nor an evaluation row (keys '
          f'{", ".join(_EVALUATION_KEYS)}): {line.strip()[:120]!r}.'
        )
      kind.append(row)
  if not training and not evaluation:
    raise ValueError(f'{path} has no rows; expected training and evaluation rows.')
  return training, evaluation


def read_samples(
  path: str, system: System, what: str, need_log_q: bool, outside_support_ok: bool = False
) -> Samples:
  """Samples from an .npz with positions (n, N, 3), energy (n,), optional log_q (n,).

  Checks N, and box and beta where the file stores them, against `system`.
  With `outside_support_ok` (target samples) log_q = −inf is kept: LBAR must
  count those samples, and dropping them would bias it.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} not found at {path!r}.')
  with np.load(path) as data:
    arrays = {k: np.asarray(data[k]) for k in data.files}
  required = {'positions', 'energy'} | ({'log_q'} if need_log_q else set())
  if missing := required - set(arrays):
    raise ValueError(f'{what} {path!r} lacks {sorted(missing)}; found {sorted(arrays)}.')
  positions = np.asarray(arrays['positions'], np.float64)
  n, num_samples = system.num_particles, positions.shape[0]
  if positions.shape[1:] != (n, 3):
    raise ValueError(
      f'{what} {path!r}: positions must have shape (n, {n}, 3) for '
      f'{system.name}, got {positions.shape}.'
    )
  per_sample = {k: np.asarray(arrays[k], np.float64) for k in ('energy', 'log_q') if k in arrays}
  for key, value in per_sample.items():
    if value.shape != (num_samples,):
      raise ValueError(
        f'{what} {path!r}: {key} must have shape ({num_samples},), got {value.shape}.'
      )
  if 'box' in arrays and not np.allclose(arrays['box'], system.box, rtol=1e-6):
    raise ValueError(
      f'{what} {path!r}: box {arrays["box"]} differs from the box {system.box} of {system.name}.'
    )
  if 'beta' in arrays and not np.isclose(float(arrays['beta']), system.beta, rtol=1e-6):
    raise ValueError(
      f'{what} {path!r}: beta={float(arrays["beta"])} differs from '
      f'beta={system.beta} of {system.name}.'
    )
  outside = np.zeros(num_samples, bool)
  if outside_support_ok and 'log_q' in per_sample:
    outside = per_sample['log_q'] == -np.inf
  finite = np.isfinite(positions).all(axis=(1, 2))
  for key, value in per_sample.items():
    finite &= np.isfinite(value) | (outside if key == 'log_q' else False)
  if finite.sum() < 2:
    raise ValueError(f'{what} {path!r} has {int(finite.sum())} finite samples; need >= 2.')
  if not finite.all():
    positions = positions[finite]
    per_sample = {k: v[finite] for k, v in per_sample.items()}
  return Samples(
    positions=positions,
    energy=per_sample['energy'],
    log_q=per_sample.get('log_q'),
    num_nonfinite=int(finite.size - finite.sum()),
    num_outside_support=int((outside & finite).sum()),
  )


# --- estimates ---------------------------------------------------------------


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


def _to_beta_f(log_z: float, system: System) -> float:
  return float(
    convention.beta_f_per_particle(
      log_z, system.num_particles, system.volume, system.thermal_wavelength
    )
  )


def log_weights(samples: Samples, system: System) -> np.ndarray:
  """ln w = −βU − ln q (n,), nats: importance log-weights of flow samples."""
  return -system.beta * samples.energy - samples.log_q


def importance_weights(samples: Samples, system: System) -> np.ndarray:
  """Normalised importance weights (n,) of flow samples, summing to 1."""
  log_w = log_weights(samples, system)
  weights = np.exp(log_w - log_w.max())
  return weights / weights.sum()


def evaluation_reasons(record: dict) -> list[str]:
  """Why an evaluation row's (eval.json or metrics.jsonl) estimate is unreliable.

  Rows written before evaluations were judged lack `unreliable_reasons`; they
  are judged here from their ESS and sample count.
  """
  if 'unreliable_reasons' in record:
    return list(record['unreliable_reasons'])
  return list(estimators.weighted_reasons(record['ess'], record['num_samples']))


def importance_sampling_row(flow: Samples, system: System, source: str) -> dict:
  """βF/N by importance sampling of flow samples, delta and bootstrap stderr."""
  estimate = estimators.importance_sampling(log_weights(flow, system))
  n = system.num_particles
  return _row(
    'flow importance sampling',
    source,
    _to_beta_f(estimate.value, system),
    estimate.stderr / n,
    estimate.reasons,
    stderr_delta=estimate.stderr_delta / n,
    stderr_bootstrap=estimate.stderr_bootstrap / n,
    log_z=estimate.value,
    log_z_stderr=estimate.stderr,
    ess=estimate.ess,
    num_samples=estimate.num_samples,
  )


def lbar_row(flow: Samples, hmc: Samples, system: System, source: str) -> dict:
  """βF/N by LBAR between flow samples and HMC samples carrying log q."""
  beta = system.beta
  estimate = estimators.lbar(flow.log_q, -beta * flow.energy, hmc.log_q, -beta * hmc.energy)
  return _row(
    'LBAR (flow + reference)',
    source,
    _to_beta_f(estimate.value, system),
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


# --- figures -----------------------------------------------------------------


def _figure(num_panels: int = 1) -> tuple[Figure, list]:
  fig = Figure(figsize=(5.2 * num_panels, 4.0), layout='constrained')
  return fig, list(np.atleast_1d(fig.subplots(1, num_panels)))


def _save(fig: Figure, figures_dir: str, name: str) -> str:
  path = os.path.join(figures_dir, name)
  fig.savefig(path, dpi=110)
  return path


def _central_range(*series, tail: float = 0.5) -> tuple[float, float]:
  """(lo, hi) covering all series between their `tail` and 100 − `tail` percentiles."""
  lo = min(np.percentile(s, tail) for s in series)
  hi = max(np.percentile(s, 100 - tail) for s in series)
  pad = 0.05 * (hi - lo) or 0.5 * abs(lo) or 1.0
  return lo - pad, hi + pad


def _clip_early(ax, steps, values, spread=None, include=()) -> None:
  """Zooms y onto the data after the first 10% of steps (and onto the values
  `include`) if all the data span 3x more."""
  steps, values = np.asarray(steps, float), np.asarray(values, float)
  spread = np.zeros_like(values) if spread is None else np.asarray(spread, float)
  late = steps >= steps.min() + 0.1 * (steps.max() - steps.min())
  lo = np.nanmin([*(values - spread)[late], *include])
  hi = np.nanmax([*(values + spread)[late], *include])
  full = np.nanmax(values + spread) - np.nanmin(values - spread)
  if full > 3 * (hi - lo):
    pad = 0.1 * (hi - lo) or 0.1 * abs(hi) or 1.0
    ax.set_ylim(lo - pad, hi + pad)
    ax.text(
      0.98,
      0.97,
      'early values beyond the axis',
      transform=ax.transAxes,
      ha='right',
      va='top',
      fontsize=8,
      color='grey',
    )


def _baseline_band(ax, baseline: dict | None) -> None:
  if baseline is not None:
    value, err = baseline['beta_f_per_particle'], baseline['beta_f_per_particle_stderr']
    ax.axhspan(value - err, value + err, color=_BASELINE, alpha=0.2, lw=0)
    ax.axhline(value, color=_BASELINE, lw=1, label='Einstein baseline ± σ')


def plot_loss(training: list[dict], figures_dir: str) -> str:
  """Training loss E_q[βU_train + ln q] (kT) vs step."""
  fig, (ax,) = _figure()
  steps = [r['step'] for r in training]
  losses = [r['loss'] for r in training]
  ax.plot(steps, losses, color=_FLOW, lw=1)
  _clip_early(ax, steps, losses)
  ax.set(
    xlabel='training step',
    ylabel='loss  E_q[βU + ln q]  (kT)',
    title='Training loss (KL(q‖p) − ln Z)',
  )
  ax.grid(alpha=0.3)
  return _save(fig, figures_dir, 'loss.png')


def plot_ess(evaluation: list[dict], figures_dir: str) -> str:
  """Kish effective sample size fraction of the periodic evaluations vs step."""
  fig, (ax,) = _figure()
  ax.semilogy(
    [r['step'] for r in evaluation], [r['ess'] for r in evaluation], 'o-', color=_FLOW, ms=3
  )
  ax.set(
    xlabel='training step', ylabel='ESS / n  (fraction)', title='Effective sample size of the flow'
  )
  ax.grid(alpha=0.3, which='both')
  return _save(fig, figures_dir, 'ess.png')


def plot_free_energy(evaluation: list[dict], baseline: dict | None, figures_dir: str) -> str:
  """βF/N ± stderr of the periodic evaluations vs step and vs wall time; the
  unreliable ones (`evaluation_reasons`) as open grey circles."""
  fig, axes = _figure(2)
  value = np.array([r['beta_f_per_particle'] for r in evaluation], float)
  err = np.array([r['beta_f_per_particle_stderr'] for r in evaluation], float)
  unreliable = np.array([bool(evaluation_reasons(r)) for r in evaluation])
  steps = [r['step'] for r in evaluation]
  band = (
    ()
    if baseline is None
    else (
      baseline['beta_f_per_particle'] - baseline['beta_f_per_particle_stderr'],
      baseline['beta_f_per_particle'] + baseline['beta_f_per_particle_stderr'],
    )
  )
  abscissae = (('training step', steps), ('wall time (s)', [r['wall_time'] for r in evaluation]))
  for ax, (label, x) in zip(axes, abscissae):
    ax.fill_between(x, value - err, value + err, color=_FLOW, alpha=0.3, lw=0)
    ax.plot(x, value, 'o-', color=_FLOW, ms=3, label='flow importance sampling ± σ')
    if unreliable.any():
      ax.plot(
        np.asarray(x)[unreliable],
        value[unreliable],
        'o',
        color=_UNRELIABLE,
        mfc='white',
        ms=5,
        label='UNRELIABLE',
      )
    _baseline_band(ax, baseline)
    _clip_early(ax, steps, value, err, include=band)
    ax.set(xlabel=label, ylabel='βF/N  (kT per particle)')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle('Free energy per particle during training')
  return _save(fig, figures_dir, 'free_energy.png')


def plot_energy_histograms(
  system: System, flow: Samples | None, hmc: Samples | None, baseline: dict | None, figures_dir: str
) -> str:
  """Histograms of U/N: flow samples, reweighted flow samples, reference samples."""
  n = system.num_particles
  series = []  # (label, U/N, weights, colour)
  if flow is not None:
    ess = estimators.ess_fraction(log_weights(flow, system))
    series += [
      ('flow q', flow.energy / n, None, _FLOW),
      (
        f'flow reweighted to p (ESS {ess:.2g})',
        flow.energy / n,
        importance_weights(flow, system),
        _REWEIGHTED,
      ),
    ]
  if hmc is not None:
    series.append(('HMC samples of p', hmc.energy / n, None, _HMC))
  fig, (ax,) = _figure()
  bins = np.linspace(*_central_range(*(s[1] for s in series)), 61)
  for label, energy, weights, colour in series:
    ax.hist(
      energy,
      bins=bins,
      weights=weights,
      density=True,
      histtype='step',
      lw=1.5,
      color=colour,
      label=label,
    )
    mean = np.average(energy, weights=weights)
    ax.axvline(mean, color=colour, lw=1, ls=':')
  if baseline is not None and 'mean_energy' in baseline:
    ax.axvline(
      baseline['mean_energy'] / n,
      color=_BASELINE,
      lw=1,
      ls='--',
      label='mean U/N, Einstein baseline',
    )
  unit = system.energy_unit
  ax.set(
    xlabel=f'U/N  ({unit})',
    ylabel=f'probability density  (per {unit})',
    title=f'Energy per particle, {system.name} (dotted: means)',
  )
  ax.xaxis.set_major_locator(MaxNLocator(6))
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, figures_dir, 'energy_histogram.png')


def plot_rdf(
  system: System, flow: Samples | None, hmc: Samples | None, max_frames: int, figures_dir: str
) -> str:
  """g(r) of flow and reference samples up to half the shortest box edge."""
  fig, (ax,) = _figure()
  for label, samples, colour, width in (
    ('HMC samples of p', hmc, _HMC, 2.5),
    ('flow q', flow, _FLOW, 1.2),
  ):
    if samples is None:
      continue
    frames = samples.positions[
      np.linspace(0, len(samples.positions) - 1, min(max_frames, len(samples.positions))).astype(
        int
      )
    ]
    edges, g = observables.radial_distribution(frames, system.box, num_bins=150)
    ax.stairs(g, edges, color=colour, lw=width, label=f'{label} ({len(frames)} frames)')
  ax.axhline(1.0, color='grey', lw=1, ls='--', label='ideal gas')
  length = _LENGTH_UNIT.get(system.potential, 'length unit')
  ax.set(
    xlabel=f'r  ({length})', ylabel='g(r)', title=f'Radial distribution function, {system.name}'
  )
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, figures_dir, 'rdf.png')


def _spread(values: np.ndarray) -> np.ndarray:
  """At most _MAX_SCATTER evenly spaced entries."""
  return values[np.linspace(0, len(values) - 1, min(_MAX_SCATTER, len(values))).astype(int)]


def plot_overlap(
  system: System, flow: Samples, hmc: Samples | None, log_z: dict, figures_dir: str
) -> str:
  """ln q vs −βU − ln Ẑ (a perfect flow lies on the diagonal) and works βU + ln q.

  `log_z` maps an estimator label to its ln Z estimate (nats); the first one
  shifts the scatter.
  """
  fig, (ax_scatter, ax_work) = _figure(2)
  beta = system.beta
  shift_label, shift = next(iter(log_z.items()))
  sources = [('flow q', flow, _FLOW)]
  if hmc is not None and hmc.log_q is not None:
    sources.append(('HMC samples of p', hmc, _HMC))
  inside = {label: np.isfinite(s.log_q) for label, s, _ in sources}  # ln q = −∞ off the plot
  points = {
    label: (-beta * s.energy[inside[label]] - shift, s.log_q[inside[label]])
    for label, s, _ in sources
  }
  lo, hi = _central_range(*(c for xy in points.values() for c in xy))
  for label, _, colour in sources:
    x, y = points[label]
    ax_scatter.scatter(
      _spread(x), _spread(y), s=3, alpha=0.3, color=colour, label=label, rasterized=True
    )
  ax_scatter.plot([lo, hi], [lo, hi], color='k', lw=1, label='q = p')
  ax_scatter.set(
    xlim=(lo, hi),
    ylim=(lo, hi),
    aspect='equal',
    xlabel='ln p(x) = −βU − ln Ẑ  (nats)',
    ylabel='ln q(x)  (nats)',
    title='Overlap of flow and target',
  )
  ax_scatter.text(
    0.98,
    0.02,
    f'ln Ẑ = {shift:.3f}\n({shift_label})',
    ha='right',
    va='bottom',
    transform=ax_scatter.transAxes,
    fontsize=8,
  )
  ax_scatter.legend(fontsize=8, markerscale=4, loc='upper left')
  works = {
    label: beta * s.energy[inside[label]] + s.log_q[inside[label]] for label, s, _ in sources
  }
  bins = np.linspace(*_central_range(*works.values()), 61)
  for label, _, colour in sources:
    ax_work.hist(
      works[label], bins=bins, density=True, histtype='step', lw=1.5, color=colour, label=label
    )
  for (label, value), style in zip(log_z.items(), ('--', ':')):
    ax_work.axvline(-value, color='k', ls=style, lw=1, label=f'−ln Ẑ, {label}')
  ax_work.set(
    xlabel='work  βU + ln q  (kT)',
    ylabel='probability density  (per kT)',
    title='Work distributions (cross at −ln Z)',
  )
  ax_work.legend(fontsize=8)
  for ax in (ax_scatter, ax_work):
    ax.grid(alpha=0.3)
  return _save(fig, figures_dir, 'overlap.png')


def plot_estimators(rows: list[dict], baseline: dict | None, figures_dir: str) -> str:
  """βF/N ± stderr of every estimator side by side; unreliable ones grey, open and labelled."""
  fig, (ax,) = _figure()
  labels = [
    f'{r["estimator"]}\n[{r["source"]}]' + ('' if r['reliable'] else '\nUNRELIABLE') for r in rows
  ]
  y = np.arange(len(rows))[::-1]
  for r, height in zip(rows, y):
    ax.errorbar(
      r['beta_f_per_particle'],
      height,
      xerr=r['stderr'],
      fmt='o',
      color=_FLOW if r['reliable'] else _UNRELIABLE,
      mfc=None if r['reliable'] else 'none',
      capsize=4,
    )
  if baseline is not None:
    value, err = baseline['beta_f_per_particle'], baseline['beta_f_per_particle_stderr']
    ax.axvspan(value - err, value + err, color=_BASELINE, alpha=0.2, lw=0)
  for r, height in zip(rows, y):
    ax.annotate(
      _format(r['beta_f_per_particle'], r['stderr']),
      (r['beta_f_per_particle'], height),
      xytext=(0, 8),
      textcoords='offset points',
      ha='center',
      fontsize=8,
    )
  ax.set_yticks(y, labels, fontsize=8)
  ax.set_ylim(-0.7, len(rows) - 0.3)
  lo = min(r['beta_f_per_particle'] - r['stderr'] for r in rows)
  hi = max(r['beta_f_per_particle'] + r['stderr'] for r in rows)
  pad = 0.3 * (hi - lo) or 0.01 * abs(hi) or 1.0
  ax.set_xlim(lo - pad, hi + pad)  # room for the value labels
  ax.xaxis.set_major_locator(MaxNLocator(4))
  ax.ticklabel_format(axis='x', useOffset=False)
  ax.set(xlabel='βF/N  (kT per particle)', title='Free-energy estimators (±1σ)')
  ax.grid(alpha=0.3, axis='x')
  return _save(fig, figures_dir, 'estimators.png')


# --- report ------------------------------------------------------------------


def _format(value: float, stderr: float) -> str:
  """'value ± stderr' with two significant digits of stderr."""
  if not (math.isfinite(stderr) and stderr > 0):
    return f'{value:.6f} ± {stderr}'
  decimals = min(max(1 - math.floor(math.log10(stderr)), 2), 10)
  return f'{value:.{decimals}f} ± {stderr:.{decimals}f}'


def markdown(report: dict) -> str:
  """The human-readable report (figures linked relative to the workdir)."""
  s = report['system']
  lines = [
    f'# Report: {s["name"]}',
    '',
    f'N = {s["num_particles"]}, T = {s["temperature"]:g}, β = {s["beta"]:.6g} '
    f'per {s["energy_unit"]}, V = {s["volume"]:.6g}.',
    '',
  ]
  t = report['training']
  if t['final_loss'] is not None:
    lines += [
      '## Training',
      '',
      f'{t["last_step"]} steps in {t["wall_time_seconds"]:.0f} s '
      f'(median {t["median_steps_per_second"]:.3g} steps/s); final loss '
      f'{t["final_loss"]:.5g} kT; {t["num_skipped"]} non-finite steps skipped; '
      f'{t["num_evaluations"]} evaluations.',
      '',
    ]
  lines += [
    '## βF/N (kT per particle)',
    '',
    '| estimator | source | βF/N ± σ | details | Δ to baseline | judgement |',
    '|---|---|---|---|---|---|',
  ]
  for r in report['estimators']:
    details = []
    if 'stderr_delta' in r:
      details.append(f'σ delta {r["stderr_delta"]:.2g}, σ bootstrap {r["stderr_bootstrap"]:.2g}')
    if 'ess' in r:
      details.append(f'ESS {r["ess"]:.3g}')
    if 'num_samples' in r:
      details.append(f'n = {r["num_samples"]}')
    if 'num_stages' in r:
      details.append(f'{r["num_stages"]} stages')
    if 'min_adjacent_overlap' in r:
      details.append(f'min overlap {r["min_adjacent_overlap"]:.3f}')
    if 'overlap' in r:
      details.append(f'overlap {r["overlap"]:.3g}')
    delta = (
      f'{r["delta_to_baseline"]:+.2g} ({r["delta_to_baseline_sigma"]:+.2f} σ)'
      if 'delta_to_baseline' in r
      else '—'
    )
    value = _format(r['beta_f_per_particle'], r['stderr'])
    note = estimators.unreliable_note(r['unreliable_reasons'])
    judgement = f'**{note}**' if note else 'reliable'
    lines.append(
      f'| {r["estimator"]} | {r["source"]} | {value} | {"; ".join(details)} | {delta} '
      f'| {judgement} |'
    )
  lines.append('')
  if report['energies']:
    lines += [f'## Mean energy per particle ({s["energy_unit"]})', '']
    lines += [f'- {k}: {v:.6g}' for k, v in report['energies'].items()]
    lines.append('')
  lines += ['## Figures', '']
  lines += [f'![{os.path.splitext(os.path.basename(p))[0]}]({p})' for p in report['figures']]
  lines += [''] + [f'- {note}' for note in report['notes']]
  return '\n'.join(lines) + '\n'


def _training_summary(training: list[dict], evaluation: list[dict]) -> dict:
  """Last step, wall time (s), final loss (kT), skipped steps, median steps/s."""
  rows = training + evaluation
  return dict(
    last_step=max(r['step'] for r in rows),
    wall_time_seconds=max(r['wall_time'] for r in rows),
    final_loss=training[-1]['loss'] if training else None,
    num_skipped=training[-1]['num_skipped'] if training else None,
    median_steps_per_second=(
      float(np.median([r['steps_per_second'] for r in training])) if training else None
    ),
    num_evaluations=len(evaluation),
  )


def collect_estimates(
  system: System,
  flow: Samples | None,
  hmc: Samples | None,
  final_eval: dict | None,
  evaluation: list[dict],
  baseline: dict | None,
  hmc_path: str | None,
  baseline_path: str | None,
) -> tuple[list[dict], dict, list[str]]:
  """βF/N rows of every available estimator, mean U/N by source, and notes.

  The flow's importance-sampling row comes from samples.npz if given, else
  from eval.json, else from the last evaluation row of metrics.jsonl.
  """
  rows, energies, notes = [], {}, []
  n = system.num_particles
  if flow is not None:
    rows.append(importance_sampling_row(flow, system, 'samples.npz'))
    energies['flow q'] = float(np.mean(flow.energy)) / n
    energies['flow reweighted to p'] = (
      float(np.sum(importance_weights(flow, system) * flow.energy)) / n
    )
    if flow.num_nonfinite:
      notes.append(f'{flow.num_nonfinite} non-finite flow samples were left out.')
  elif final_eval is not None or evaluation:
    record, source = (
      (final_eval, 'eval.json')
      if final_eval is not None
      else (evaluation[-1], f'metrics.jsonl, step {evaluation[-1]["step"]}')
    )
    rows.append(
      _row(
        'flow importance sampling',
        source,
        record['beta_f_per_particle'],
        record['beta_f_per_particle_stderr'],
        evaluation_reasons(record),
        ess=record['ess'],
        num_samples=record['num_samples'],
      )
    )
  if hmc is not None:
    energies['HMC samples of p'] = float(np.mean(hmc.energy)) / n
    if flow is not None and hmc.log_q is not None:
      rows.append(lbar_row(flow, hmc, system, f'samples.npz + {os.path.basename(hmc_path)}'))
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
  if baseline is not None:
    rows = with_baseline_sigma(rows, baseline_row(baseline, os.path.basename(baseline_path)))
    if 'mean_energy' in baseline:
      energies['Einstein baseline'] = baseline['mean_energy'] / n
  if not all(r['reliable'] for r in rows):
    notes.append(
      "UNRELIABLE rows failed systems.estimators' checks "
      f'({estimators.RELIABILITY_RULES}): their error bars mean nothing.'
    )
  return rows, energies, notes


def draw_figures(
  system: System,
  training: list[dict],
  evaluation: list[dict],
  flow: Samples | None,
  hmc: Samples | None,
  baseline: dict | None,
  rows: list[dict],
  rdf_frames: int,
  figures_dir: str,
) -> list[str]:
  """Draws every figure the inputs allow into `figures_dir`; returns their paths."""
  os.makedirs(figures_dir, exist_ok=True)
  figures = []
  if training:
    figures.append(plot_loss(training, figures_dir))
  if evaluation:
    figures += [
      plot_ess(evaluation, figures_dir),
      plot_free_energy(evaluation, baseline, figures_dir),
    ]
  if flow is not None or hmc is not None:
    figures += [
      plot_energy_histograms(system, flow, hmc, baseline, figures_dir),
      plot_rdf(system, flow, hmc, rdf_frames, figures_dir),
    ]
  if flow is not None:
    best_first = sorted(
      (r for r in rows if 'log_z' in r), key=lambda r: (not r['reliable'], r['log_z_stderr'])
    )
    log_z = {r['estimator']: r['log_z'] for r in best_first}
    figures.append(plot_overlap(system, flow, hmc, log_z, figures_dir))
  if rows:
    figures.append(plot_estimators(rows, baseline, figures_dir))
  return figures


def write_report(
  workdir: str,
  baseline_path: str | None = None,
  hmc_path: str | None = None,
  rdf_frames: int = 2000,
  xyz_frames: int = 10,
) -> dict:
  """Writes report.json, report.md, figures/*.png and samples.xyz into `workdir`.

  Returns the report as written to report.json (figure paths relative to workdir).
  """
  training, evaluation = read_metrics(workdir)
  config = read_json(os.path.join(workdir, 'config.json'), 'config.json of the run')
  if 'system' not in config:
    raise ValueError(f'config.json in {workdir!r} has no "system" key.')
  system = get_system(config['system'])
  baseline = None if baseline_path is None else read_json(baseline_path, '--baseline')
  if baseline is not None:
    if missing := {'beta_f_per_particle', 'beta_f_per_particle_stderr'} - set(baseline):
      raise ValueError(f'--baseline {baseline_path!r} lacks {sorted(missing)}.')
    if baseline.get('system', system.name) != system.name:
      raise ValueError(
        f'--baseline {baseline_path!r} is for system '
        f'{baseline["system"]!r}, the run for {system.name!r}.'
      )
  eval_path = os.path.join(workdir, 'eval.json')
  final_eval = read_json(eval_path, 'eval.json') if os.path.isfile(eval_path) else None
  samples_path = os.path.join(workdir, 'samples.npz')
  flow = (
    read_samples(samples_path, system, 'samples.npz', need_log_q=True)
    if os.path.isfile(samples_path)
    else None
  )
  hmc = (
    None
    if hmc_path is None
    else read_samples(hmc_path, system, '--hmc_samples', False, outside_support_ok=True)
  )

  rows, energies, notes = collect_estimates(
    system, flow, hmc, final_eval, evaluation, baseline, hmc_path, baseline_path
  )
  figures = draw_figures(
    system,
    training,
    evaluation,
    flow,
    hmc,
    baseline,
    rows,
    rdf_frames,
    os.path.join(workdir, 'figures'),
  )
  if not rows:
    notes.append(
      'No free-energy estimate: no samples.npz, eval.json, evaluation rows or --baseline.'
    )
  xyz_path = None
  if flow is not None:
    xyz_path = os.path.join(workdir, 'samples.xyz')
    xyz.write_extxyz(
      xyz_path,
      flow.positions[:xyz_frames],
      system.box,
      _SPECIES.get(system.potential, 'X'),
      flow.energy[:xyz_frames],
    )

  report = dict(
    system=dict(
      name=system.name,
      num_particles=system.num_particles,
      temperature=system.temperature,
      beta=system.beta,
      energy_unit=system.energy_unit,
      volume=system.volume,
      box=system.box.tolist(),
      thermal_wavelength=system.thermal_wavelength,
    ),
    training=_training_summary(training, evaluation),
    last_evaluation=evaluation[-1] if evaluation else None,
    evaluation=final_eval,
    baseline=baseline,
    estimators=rows,
    energies=energies,
    samples=None
    if flow is None
    else dict(
      num_samples=len(flow.energy),
      num_nonfinite=flow.num_nonfinite,
      ess=estimators.ess_fraction(log_weights(flow, system)),
    ),
    hmc_samples=None
    if hmc is None
    else dict(
      path=hmc_path,
      num_samples=len(hmc.energy),
      num_nonfinite=hmc.num_nonfinite,
      num_outside_support=hmc.num_outside_support,
      has_log_q=hmc.log_q is not None,
    ),
    figures=[os.path.relpath(p, workdir) for p in figures],
    xyz=None if xyz_path is None else os.path.relpath(xyz_path, workdir),
    notes=notes,
  )
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(markdown(report))
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='training run directory')
  parser.add_argument('--baseline', help='JSON of scripts.einstein_baseline')
  parser.add_argument('--hmc_samples', help='.npz of reference samples of the target')
  parser.add_argument('--rdf_frames', type=int, default=2000, help='frames per source for g(r)')
  parser.add_argument(
    '--xyz_frames', type=int, default=10, help='leading flow samples written to samples.xyz'
  )
  args = parser.parse_args(argv)
  for name in ('rdf_frames', 'xyz_frames'):
    if getattr(args, name) < 1:
      parser.error(f'--{name}={getattr(args, name)} must be a positive integer.')
  report = write_report(
    args.workdir, args.baseline, args.hmc_samples, args.rdf_frames, args.xyz_frames
  )
  for r in report['estimators']:
    note = estimators.unreliable_note(r['unreliable_reasons'])
    print(
      f'{r["estimator"]:28s} βF/N = {_format(r["beta_f_per_particle"], r["stderr"])}'
      f'  [{r["source"]}]' + (f'  {note}' if note else '')
    )
  print(f'Wrote {os.path.join(args.workdir, "report.md")} and {len(report["figures"])} figures.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
