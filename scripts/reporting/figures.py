"""The figures of `scripts.report`, PNGs in the run's figures/ directory.

Free energies are βF/N in kT per particle, energies U/N in the system's energy
unit; unreliable estimates (`systems.estimators`) are drawn grey and open.
"""

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scripts import observables
from scripts.reporting.estimates import (
  Estimates,
  evaluation_reasons,
  format_value,
  importance_weights,
)
from scripts.reporting.reading import Run, Samples
from systems import System

_LENGTH_UNIT = {'lennard_jones': 'σ', 'monatomic_water': 'Å'}
_MAX_SCATTER = 4000  # points per source in the overlap scatter
_FLOW, _REWEIGHTED, _HMC, _BASELINE, _UNRELIABLE = 'C0', 'C1', 'C2', 'C3', 'C7'


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


def _with_hidden(label: str, num_hidden: int, what: str) -> str:
  """A legend label that counts the `num_hidden` samples (`what`) left off the plot."""
  return f'{label} ({num_hidden} {what} not shown)' if num_hidden else label


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
  system: System,
  flow: Samples | None,
  flow_summary: dict | None,
  hmc: Samples | None,
  baseline: dict | None,
  figures_dir: str,
) -> str:
  """Histograms of U/N: flow samples, reweighted flow samples (ESS from
  `flow_summary`, evaluation.summarize of them), reference samples. Samples of
  energy +inf (zero weight) are left out and counted in the legend."""
  n = system.num_particles
  series = []  # (label, U/N, weights, colour)
  if flow is not None:
    ess, finite = flow_summary['ess'], np.isfinite(flow.energy)
    series += [
      (
        _with_hidden('flow q', np.sum(~finite), 'with U = +∞'),
        flow.energy[finite] / n,
        None,
        _FLOW,
      ),
      (
        f'flow reweighted to p (ESS {ess:.2g})',
        flow.energy[finite] / n,
        importance_weights(flow, system)[finite],
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

  Samples with an infinite work (U = +inf or ln q = −inf) are off both panels;
  the legend counts them. `log_z` maps an estimator label to its ln Z estimate
  (nats); the first one shifts the scatter.
  """
  fig, (ax_scatter, ax_work) = _figure(2)
  beta = system.beta
  shift_label, shift = next(iter(log_z.items()))
  sources = [('flow q', flow, _FLOW)]
  if hmc is not None and hmc.log_q is not None:
    sources.append(('HMC samples of p', hmc, _HMC))
  inside = {label: np.isfinite(s.log_q) & np.isfinite(s.energy) for label, s, _ in sources}
  legend = {
    label: _with_hidden(label, np.sum(~inside[label]), 'with an infinite work') for label in inside
  }
  points = {
    label: (-beta * s.energy[inside[label]] - shift, s.log_q[inside[label]])
    for label, s, _ in sources
  }
  lo, hi = _central_range(*(c for xy in points.values() for c in xy))
  for label, _, colour in sources:
    x, y = points[label]
    ax_scatter.scatter(
      _spread(x), _spread(y), s=3, alpha=0.3, color=colour, label=legend[label], rasterized=True
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
      format_value(r['beta_f_per_particle'], r['stderr']),
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


def draw_figures(run: Run, estimates: Estimates, rdf_frames: int, figures_dir: str) -> list[str]:
  """Draws every figure the run's inputs allow into `figures_dir`; returns their paths.

  rdf_frames: the most frames per source for g(r).
  """
  system, flow, hmc, baseline, rows = run.system, run.flow, run.hmc, run.baseline, estimates.rows
  os.makedirs(figures_dir, exist_ok=True)
  figures = []
  if run.training:
    figures.append(plot_loss(run.training, figures_dir))
  if run.evaluation:
    figures += [
      plot_ess(run.evaluation, figures_dir),
      plot_free_energy(run.evaluation, baseline, figures_dir),
    ]
  if flow is not None or hmc is not None:
    figures += [
      plot_energy_histograms(system, flow, estimates.flow_summary, hmc, baseline, figures_dir),
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
