"""Free energies at every size, side by side: flow importance sampling, LBAR, Einstein crystal.

  python -m scripts.size_report --free_energy=A.json,B.json,... \
    --baselines=docs/baselines/X.json,... --out=docs/scalable_flows_table

Reads the JSON records of scripts.free_energy (one per system and run) and
of scripts.einstein_baseline, matches them by system, and writes OUT.md (a
table: βF/N ± σ of each estimate, the ESS, LBAR's overlap and HMC samples
outside the flow's support, the Einstein baseline, and each flow estimate's
distance from it in combined σ; estimates judged unreliable are marked) and
OUT.png (each estimate minus the baseline against N, with ±σ bars; colour:
method, marker: lattice family, open: unreliable), and prints the table.
"""

import argparse
import json
import math
import os
import sys

from systems import estimators

METHODS = (('importance_sampling', 'flow IS'), ('lbar', 'LBAR'))
COLOURS = ('C0', 'C1')  # of METHODS in the figure
FAMILY_MARKERS = {'mw_cubic': 'o', 'mw_hex': 's', 'lj': '^'}
SPREAD = 0.03  # ln-x step between neighbouring points at one N in the figure


def _family(system: str) -> str:
  """The lattice family of a named system: 'mw_cubic_64' -> 'mw_cubic'."""
  return system.rsplit('_', 1)[0]


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def rows(records: list[dict], baselines: dict[str, dict]) -> list[dict]:
  """One row per free-energy record, with its system's baseline (if any)."""
  out = []
  for record in sorted(records, key=lambda r: (_family(r['system']), r['num_particles'])):
    base = baselines.get(record['system'])
    row = dict(
      system=record['system'],
      num_particles=record['num_particles'],
      trained_system=record['trained_system'],
      conditioner=record['conditioner'],
      hmc_burn_in=(record.get('hmc') or {}).get('settings', {}).get('burn_in'),
      baseline=base,
    )
    for key, _ in METHODS:
      estimate = row[key] = record[key]  # lbar is None for a --flow_only record
      if base is not None and estimate is not None:
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
      _value(lbar) if lbar else '– (flow only)',
      f'{lbar["overlap"]:.3g}' if lbar else '–',
      f'{lbar["num_hmc_outside_support"]} of {lbar["num_hmc_samples"]}'
      + (f' ({r["hmc_burn_in"]})' if r['hmc_burn_in'] is not None else '')
      if lbar
      else '–',
      _value(base) if base else '–',
    ]
    for key, _ in METHODS:
      has = base and r[key] is not None
      cells.append(f'{r[key + "_delta"]:+.5f} ({r[key + "_delta_sigma"]:+.1f})' if has else '–')
    for key, label in METHODS:
      note = r[key] and estimators.unreliable_note(r[key]['unreliable_reasons'])
      if note:
        cells[2 if key == 'importance_sampling' else 4] += ' †'
        notes.append(f'† {r["system"]} {label}: {note}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines + [''] + notes) + '\n'


def positions(table: list[dict]) -> dict[tuple[str, int], float]:
  """x of each (method key, row index): the points at one N spread about N, evenly in ln x.

  Flow IS first, then LBAR, each in table order; their geometric mean is N.
  """
  points = [(key, i) for key, _ in METHODS for i in range(len(table)) if table[i][key]]
  out = {}
  for n in {r['num_particles'] for r in table}:
    at_n = [p for p in points if table[p[1]]['num_particles'] == n]
    for j, p in enumerate(at_n):
      out[p] = n * math.exp(SPREAD * (j - (len(at_n) - 1) / 2))
  return out


def plot(table: list[dict], path: str):
  """Each estimate minus the Einstein baseline (±σ, combined) against N; returns the Figure.

  Colour: the method; marker: the lattice family; open: judged unreliable.
  """
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D

  with_base = [r for r in table if r['baseline']]
  families = sorted({_family(r['system']) for r in with_base})
  unknown = [f for f in families if f not in FAMILY_MARKERS]
  if unknown:
    raise ValueError(
      f'no figure marker for families {unknown}; expected one of {list(FAMILY_MARKERS)}'
    )
  fig = Figure(figsize=(7.2, 4.4), layout='constrained')
  ax = fig.subplots()
  x = positions(with_base)
  for (key, _), colour in zip(METHODS, COLOURS):
    for i, r in enumerate(with_base):
      if r[key] is None:
        continue
      err = math.hypot(
        r[key]['beta_f_per_particle_stderr'], r['baseline']['beta_f_per_particle_stderr']
      )
      ax.errorbar(
        x[key, i],
        r[key + '_delta'],
        err,
        fmt=FAMILY_MARKERS[_family(r['system'])],
        color=colour,
        mfc=colour if r[key]['reliable'] else 'white',
        capsize=3,
        ms=6,
      )
  ax.axhline(0.0, color='k', lw=0.8)
  ax.set_xscale('log')
  sizes = sorted({r['num_particles'] for r in with_base})
  ax.set_xticks(sizes, [str(n) for n in sizes])
  ax.minorticks_off()
  ax.set(
    xlabel='N (particles)',
    ylabel='βF/N − Einstein baseline (kT per particle)',
    title='Flow estimates against the Einstein crystal (±1σ combined)',
  )
  ax.grid(alpha=0.3)
  handles = [
    Line2D([], [], ls='', marker='o', color=c, label=label)
    for (_, label), c in zip(METHODS, COLOURS)
  ]
  handles += [
    Line2D([], [], ls='', marker=FAMILY_MARKERS[f], color='0.4', label=f) for f in families
  ]
  handles.append(Line2D([], [], ls='', marker='o', color='0.4', mfc='white', label='unreliable'))
  ax.legend(handles=handles, fontsize=8, loc='center left', bbox_to_anchor=(1.01, 0.5))
  fig.savefig(path, dpi=120)
  return fig


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
