"""Table and plot of a learned-TFEP run: FEP, BAR, staged MBAR, LFEP, LBAR vs reference.

  python -m scripts.tfep_report --workdir=runs/tfep_solvation_cpu

Reads config.json, samples.npz and (computing it from the latest checkpoint if
missing or stale) works.npz of the workdir; a missing samples.npz is an error
naming the experiments.tfep command that draws it (the report never starts
the sampling, which takes up to hours). Writes tfep_report.json,
tfep_report.md, tfep_report.png (estimates against samples per state) and
tfep_structure.png (what the map does to the structure: g(r) of held-out A
and B samples and of each mapped by the trained map, and with a solute the
density about it) there. All free energies are ΔF = f_B − f_A in kT. At each
sample size n the held-out samples of every state are cut into as many
disjoint blocks of n as they hold (`eval.num_subsets` at the largest n, more
at smaller n); each method's mean ± std is over the blocks. The
reference is MBAR over all samples of all ladder states; its error comes from
MBAR on groups of independent chains (pymbar's own error, which takes the
samples as independent, is printed beside it). Every subset's estimate is
judged by `systems.estimators` (effective samples, overlap, infinite works);
each method reports the fraction of its subsets judged reliable, and the
table marks methods for which that is below 100 %.

Reading is `scripts.reporting.tfep_reading`, the table
`scripts.reporting.tfep_estimates`, the structure
`scripts.reporting.tfep_structure`, the figures `scripts.reporting.tfep_figures`.
"""

import argparse
import json
import os

from scripts.reporting import tfep_estimates, tfep_figures, tfep_reading, tfep_structure
from scripts.reporting.tfep_estimates import METHODS, percent
from scripts.reporting.tfep_structure import STRUCTURE_SETS
from systems import estimators


def _reliability_mark(stats: dict) -> str:
  """'' if every subset's estimate was judged reliable, else ' (x % reliable)'."""
  fraction = stats['reliable_fraction']
  return '' if fraction == 1.0 else f' ({percent(fraction)} reliable)'


def markdown(table: dict) -> str:
  """tfep_report.md: the reference, the table of `tfep_estimates.make_table`, the
  reliable share of each method's subsets and, if present, the structure's summary."""
  ref = table['reference']
  smallest = min(row[m]['std'] for row in table['rows'] for m in METHODS if row[m])
  lines = [
    f'# Learned TFEP: {table["benchmark"]} ({table["variant"]}), '
    f'map after {table["training_step"]} steps',
    '',
    f'λ ladder: {", ".join(f"{p:.4g}" for p in table["parameters"])} (A first, B last).',
    f'Reference ΔF (MBAR, {len(table["parameters"])} states × '
    f'{ref["samples_per_state"]} samples) = {ref["value"]:.4f} ± {ref["stderr"]:.4f} kT '
    f'(error from {ref["num_groups"]} groups of independent chains; pymbar, '
    f'taking samples as independent, says {ref["pymbar_stderr"]:.4f}; '
    f'min adjacent overlap {ref["min_adjacent_overlap"]:.3f}).',
    *([estimators.unreliable_note(ref['unreliable_reasons'])] if not ref['reliable'] else []),
    f'The smallest spread in the table is {smallest / ref["stderr"]:.1f}× the reference error.',
    '',
    '| n per state | subsets | ' + ' | '.join(METHODS) + ' | ESS FEP | ESS LFEP | '
    'var BAR / var LBAR: spreads (90 % interval) | error bars |',
    '|---|---|' + '---|' * (len(METHODS) + 4),
  ]
  for row in table['rows']:
    cells = [
      f'{row[m]["mean"]:.3f} ± {row[m]["std"]:.3f}{_reliability_mark(row[m])}' if row[m] else '—'
      for m in METHODS
    ]
    lines.append(
      f'| {row["num_samples"]} | {row["num_subsets"]} | '
      + ' | '.join(cells)
      + f' | {row["FEP_ess"]:.4f} | {row["LFEP_ess"]:.4f} | '
      f'{row["BAR_over_LBAR_variance"]:.1f} '
      f'({row["BAR_over_LBAR_variance_90"][0]:.1f}–'
      f'{row["BAR_over_LBAR_variance_90"][1]:.1f}) | '
      f'{row["BAR_over_LBAR_stderr_variance"]:.1f} |'
    )
  d = table['dissipation']
  lines += [
    '',
    'Mean dissipated work over every held-out sample (kT; 0 for a perfect map): '
    f'⟨W_AB⟩ − ΔF {d["plain_forward"]:.2f} unmapped, {d["mapped_forward"]:.2f} mapped; '
    f'⟨W_BA⟩ + ΔF {d["plain_reverse"]:.2f} unmapped, {d["mapped_reverse"]:.2f} mapped.',
  ]
  lines += [
    '',
    'Entries: mean ± std over disjoint held-out subsets (kT); staged MBAR ("—" where the '
    'ladder states hold fewer than two blocks) uses only the blocks every state holds '
    f'({", ".join(str(row["MBAR_subsets"]) for row in table["rows"])} per size). "error '
    'bars": the ratio of the mean squared errors the estimators report, for sizes with '
    'too few subsets for a spread (the smaller sizes show whether the two agree). The '
    "variance ratio's interval is approximate: it treats the subsets "
    "as independent normal estimates and BAR's and LBAR's spreads as "
    'independent, though both come from the same samples and adjacent '
    'subsets are adjacent stretches of the same chains. '
    '"(x % reliable)": only that share of the subsets\' estimates passed '
    f"systems.estimators' checks ({estimators.RELIABILITY_RULES}), so the error "
    'bars of the others mean nothing. Reliable subsets per method, and a reason '
    'given for an unreliable one:',
    '',
  ]
  for row in table['rows']:
    lines.append(
      f'- n = {row["num_samples"]}: '
      + ', '.join(f'{m} {percent(row[m]["reliable_fraction"])}' for m in METHODS if row[m])
      + ''.join(
        f'; {m}: {row[m]["example_unreliable_reason"]}'
        for m in METHODS
        if row[m] and row[m]['example_unreliable_reason']
      )
    )
  lines += ['', '(mean − reference)/std per method:', '']
  for row in table['rows']:
    lines.append(
      f'- n = {row["num_samples"]}: '
      + ', '.join(f'{m} {row[m]["deviation_in_std"]:+.2f}' for m in METHODS if row[m])
    )
  if 'structure' in table:
    lines += [
      '',
      f'Structure (tfep_structure.png, {table["structure"]["num_frames"]} '
      'held-out samples per set): a good map makes M(A) look like B and '
      'M⁻¹(B) like A.',
    ]
    inside = table['structure'].get('inside_radius_b')
    if inside:
      lines.append(
        'Particles closer to the solute than λ_B, per configuration: '
        + ', '.join(f'{name} {inside[name]:.2f}' for name in STRUCTURE_SETS)
        + '.'
      )
  return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> dict:
  """Writes the report files of --workdir; returns the table."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='run directory of experiments.tfep')
  workdir = parser.parse_args(argv).workdir
  run = tfep_reading.read_run(workdir)
  table = tfep_estimates.make_table(run.config, run.data, run.works)
  table['structure'] = tfep_structure.structure(run.config, run.ladder, run.data, run.bijector)
  with open(os.path.join(workdir, 'tfep_report.json'), 'w') as f:
    json.dump(table, f, indent=2)
  text = markdown(table)
  with open(os.path.join(workdir, 'tfep_report.md'), 'w') as f:
    f.write(text)
  tfep_figures.plot_table(table, os.path.join(workdir, 'tfep_report.png'))
  tfep_figures.plot_structure(
    table['structure'],
    f'{table["benchmark"]} ({table["variant"]})',
    os.path.join(workdir, 'tfep_structure.png'),
  )
  print(text)
  return table


if __name__ == '__main__':
  main()
