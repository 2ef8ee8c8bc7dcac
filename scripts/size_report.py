"""Free energies at every size, side by side: flow importance sampling, LBAR, Einstein crystal.

  python -m scripts.size_report --free_energy=A.json,B.json,... \
    --baselines=docs/baselines/X.json,... --out=docs/scalable_flows_table

Reads the JSON records of scripts.free_energy (one per system and run) and
of scripts.einstein_baseline, matches them by system, and writes OUT.md (a
table: βF/N ± σ of each estimate, the ESS, LBAR's overlap and HMC samples
outside the flow's support, the Einstein baseline, and each flow estimate's
distance from it in combined σ; estimates judged unreliable are marked) and
OUT.png (each estimate minus the baseline against N, with ±σ bars), and
prints the table.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from systems import estimators

METHODS = (('importance_sampling', 'flow IS'), ('lbar', 'LBAR'))


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def rows(records: list[dict], baselines: dict[str, dict]) -> list[dict]:
  """One row per free-energy record, with its system's baseline (if any)."""
  out = []
  for record in sorted(records, key=lambda r: (r['system'].rsplit('_', 1)[0], r['num_particles'])):
    base = baselines.get(record['system'])
    row = dict(
      system=record['system'],
      num_particles=record['num_particles'],
      trained_system=record['trained_system'],
      conditioner=record['conditioner'],
      hmc_burn_in=record.get('hmc', {}).get('settings', {}).get('burn_in'),
      baseline=base,
    )
    for key, _ in METHODS:
      estimate = record[key]
      row[key] = estimate
      if base is not None:
        sigma = math.hypot(
          estimate['beta_f_per_particle_stderr'], base['beta_f_per_particle_stderr']
        )
        delta = estimate['beta_f_per_particle'] - base['beta_f_per_particle']
        row[f'{key}_delta'] = delta
        row[f'{key}_delta_sigma'] = delta / sigma
    out.append(row)
  return out


def _value(estimate: dict) -> str:
  return f'{estimate["beta_f_per_particle"]:.5f} ± {estimate["beta_f_per_particle_stderr"]:.5f}'


def markdown(table: list[dict]) -> str:
  lines = [
    '| system | model (trained at) | flow IS βF/N | ESS | LBAR βF/N | overlap '
    '| HMC outside support (burn-in steps) | Einstein βF/N | IS − E (σ) | LBAR − E (σ) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  notes = []
  for r in table:
    importance, lbar, base = r['importance_sampling'], r['lbar'], r['baseline']
    cells = [
      r['system'],
      f'{r["conditioner"]} ({r["trained_system"]})',
      _value(importance),
      f'{importance["ess"]:.3g}',
      _value(lbar),
      f'{lbar["overlap"]:.3g}',
      f'{lbar["num_hmc_outside_support"]} of {lbar["num_hmc_samples"]}'
      + (f' ({r["hmc_burn_in"]})' if r['hmc_burn_in'] is not None else ''),
      _value(base) if base else '–',
    ]
    for key, _ in METHODS:
      cells.append(f'{r[key + "_delta"]:+.5f} ({r[key + "_delta_sigma"]:+.1f})' if base else '–')
    for key, label in METHODS:
      note = estimators.unreliable_note(r[key]['unreliable_reasons'])
      if note:
        cells[2 if key == 'importance_sampling' else 4] += ' †'
        notes.append(f'† {r["system"]} {label}: {note}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines + [''] + notes) + '\n'


def plot(table: list[dict], path: str) -> None:
  """Each estimate minus the Einstein baseline (±σ, combined) against N."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.4, 4.2), layout='constrained')
  ax = fig.subplots()
  with_base = [r for r in table if r['baseline']]
  for (key, label), offset, colour in zip(METHODS, (-0.04, 0.04), ('C0', 'C1')):
    n = np.array([r['num_particles'] for r in with_base], float)
    delta = np.array([r[key + '_delta'] for r in with_base])
    err = np.array(
      [
        math.hypot(
          r[key]['beta_f_per_particle_stderr'], r['baseline']['beta_f_per_particle_stderr']
        )
        for r in with_base
      ]
    )
    reliable = np.array([r[key]['reliable'] for r in with_base], bool)
    x = n * np.exp(offset)
    ax.errorbar(
      x[reliable], delta[reliable], err[reliable], fmt='o', color=colour, capsize=3, label=label
    )
    if (~reliable).any():
      ax.errorbar(
        x[~reliable],
        delta[~reliable],
        err[~reliable],
        fmt='o',
        mfc='none',
        color=colour,
        capsize=3,
        label=f'{label} (unreliable)',
      )
    for xi, di, r in zip(x, delta, with_base):
      ax.annotate(
        r['system'].rsplit('_', 1)[0],
        (xi, di),
        fontsize=6,
        xytext=(3, 3),
        textcoords='offset points',
      )
  ax.axhline(0.0, color='k', lw=0.8)
  ax.set_xscale('log')
  ax.set(
    xlabel='N (particles)',
    ylabel='βF/N − Einstein baseline (kT per particle)',
    title='Flow estimates against the Einstein crystal (±1σ combined)',
  )
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=120)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--free_energy', required=True, help='comma-separated scripts.free_energy JSONs'
  )
  parser.add_argument('--baselines', default='', help='comma-separated einstein_baseline JSONs')
  parser.add_argument('--out', required=True, help='output stem (.md and .png are added)')
  args = parser.parse_args(argv)
  records = [_read(p) for p in args.free_energy.split(',') if p]
  baselines = {b['system']: b for b in (_read(p) for p in args.baselines.split(',') if p)}
  table = rows(records, baselines)
  text = markdown(table)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + '.md', 'w') as f:
    f.write(text)
  plot(table, args.out + '.png')
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
