r"""Report of a training run: figures, βF/N from every available estimator, an XYZ excerpt.

  python -m scripts.report --workdir=W [--baseline=F.json] [--hmc_samples=M.npz]

Reads W/metrics.jsonl and W/config.json, and if present W/eval.json and
W/samples.npz (from `experiments.evaluate --samples_out`; its samples of energy
+∞ count as zero weights, as in eval.json); --baseline is the
JSON of `scripts.einstein_baseline`, --hmc_samples an .npz of HMC samples of
the target (`scripts.reference_samples`) with positions (m, N, 3), energy (m,)
and optionally log_q (m,), the flow's log-density on them (which enables
LBAR). Writes W/report.json, W/report.md, PNG figures in W/figures/ and, with
samples, W/samples.xyz.

Every estimate is judged by `systems.estimators` (too few effective samples, too
little overlap, too many infinite works): rows carry `reliable` and
`unreliable_reasons`, and unreliable ones are marked UNRELIABLE in the table,
the figure and the printed lines.

Reading is `scripts.reporting.reading`, the estimates
`scripts.reporting.estimates` (the flow's importance sampling is
`experiments.evaluation.summarize`), the figures `scripts.reporting.figures`.

Free energies are βF/N in kT per particle in the convention of
`systems.convention`; ln Z is ln Z_fixed (particle 0 pinned), in nats.
"""

import argparse
import json
import os
import sys

import numpy as np

from scripts import xyz
from scripts.reporting import estimates, figures, reading
from systems import estimators

_SPECIES = {'lennard_jones': 'Ar', 'monatomic_water': 'O'}


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
    if r.get('num_zero_weight'):
      details.append(f'{r["num_zero_weight"]} with U = +∞ (zero weight)')
    if 'num_stages' in r:
      details.append(f'{r["num_stages"]} stages')
    if 'min_adjacent_overlap' in r:
      details.append(f'min overlap {r["min_adjacent_overlap"]:.3f}')
    if 'overlap' in r:
      details.append(f'overlap {r["overlap"]:.3g}')
    if any(r.get('num_infinite', ())):
      details.append('infinite works (forward, reverse) {}, {}'.format(*r['num_infinite']))
    delta = (
      f'{r["delta_to_baseline"]:+.2g} ({r["delta_to_baseline_sigma"]:+.2f} σ)'
      if 'delta_to_baseline' in r
      else '—'
    )
    value = estimates.format_value(r['beta_f_per_particle'], r['stderr'])
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
  run = reading.read_run(workdir, baseline_path, hmc_path)
  system, flow, hmc = run.system, run.flow, run.hmc
  found = estimates.collect_estimates(run)
  paths = figures.draw_figures(run, found, rdf_frames, os.path.join(workdir, 'figures'))
  notes = list(found.notes)
  if not found.rows:
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
    training=_training_summary(run.training, run.evaluation),
    last_evaluation=run.evaluation[-1] if run.evaluation else None,
    evaluation=run.final_eval,
    baseline=run.baseline,
    estimators=found.rows,
    energies=found.energies,
    samples=None
    if flow is None
    else dict(
      num_samples=len(flow.energy),
      num_nonfinite=flow.num_nonfinite,
      num_zero_weight=found.flow_summary['num_zero_weight'],
      ess=found.flow_summary['ess'],
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
    figures=[os.path.relpath(p, workdir) for p in paths],
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
      f'{r["estimator"]:28s} βF/N = {estimates.format_value(r["beta_f_per_particle"], r["stderr"])}'
      f'  [{r["source"]}]' + (f'  {note}' if note else '')
    )
  print(f'Wrote {os.path.join(args.workdir, "report.md")} and {len(report["figures"])} figures.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
