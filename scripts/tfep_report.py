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
"""

import argparse
import json
import os

import jax
import ml_collections
import numpy as np

from experiments import tfep_stages
from flows import targeted
from scripts import observables
from systems import estimators, ladders

METHODS = ('FEP', 'BAR', 'MBAR', 'LFEP', 'LBAR')
STRUCTURE_SETS = ('A', 'B', 'M(A)', 'M⁻¹(B)')  # held-out samples, then mapped


def subset_estimates(works: dict, reduced: np.ndarray, num_train: int, n: int, j: int) -> dict:
  """The five estimates (value, stderr, reasons) on held-out block j of size n.

  `reasons` (tuple of str) says why systems.estimators judged the estimate
  unreliable, empty if it did not.
  """
  block = slice(j * n, (j + 1) * n)
  u = reduced[:, :, num_train:][:, :, block]  # (K, K, n)
  num_states = u.shape[0]
  staged = estimators.mbar(u.reshape(num_states, -1), np.full(num_states, n))
  results = dict(
    FEP=targeted.estimate(works['plain_forward'][block]),
    BAR=targeted.estimate(works['plain_forward'][block], works['plain_reverse'][block]),
    LFEP=targeted.estimate(works['mapped_forward'][block]),
    LBAR=targeted.estimate(works['mapped_forward'][block], works['mapped_reverse'][block]),
  )
  results = {k: (e.value, e.stderr, e.reasons) for k, e in results.items()}
  results['MBAR'] = (float(staged.delta_f[-1]), float(staged.stderr[-1]), staged.reasons)
  results['FEP_ess'] = estimators.ess_fraction(-works['plain_forward'][block])
  results['LFEP_ess'] = estimators.ess_fraction(-works['mapped_forward'][block])
  return results


def reference(data: dict, num_chains: int, num_groups: int = 10) -> dict:
  """MBAR ΔF_AB over every sample of every state, with a batch-means error.

  Samples are time-major over `num_chains` independent chains (sample i is
  chain i mod num_chains). The chains are dealt into min(num_groups,
  num_chains) groups, MBAR is solved on each, and stderr = std over groups /
  √groups: valid however slowly the chains decorrelate, unlike pymbar's error
  (`pymbar_stderr`), which takes every sample as independent.
  """
  u = data['reduced']
  num_states, _, n = u.shape
  if n % num_chains:
    raise ValueError(
      f'{n} samples per state are not time-major over num_chains={num_chains} chains.'
    )
  result = estimators.mbar(u.reshape(num_states, -1), np.full(num_states, n))
  groups = min(num_groups, num_chains)
  chain = np.arange(n) % num_chains
  per_group = []
  for j in range(groups):
    part = u[:, :, chain % groups == j]
    per_group.append(
      estimators.mbar(part.reshape(num_states, -1), np.full(num_states, part.shape[-1])).delta_f[-1]
    )
  return dict(
    value=float(result.delta_f[-1]),
    stderr=float(np.std(per_group, ddof=1) / np.sqrt(groups)),
    pymbar_stderr=float(result.stderr[-1]),
    num_groups=groups,
    min_adjacent_overlap=result.min_adjacent_overlap,
    reliable=result.reliable,
    unreliable_reasons=list(result.reasons),
    samples_per_state=int(n),
  )


def variance_ratio_interval(ratio: float, num_subsets: int, level: float = 0.9) -> list[float]:
  """Two-sided `level` interval of a ratio of two sample variances.

  Each variance is over `num_subsets` values, so for independent normal
  estimates and independent variances ratio / true ratio ~ F(k − 1, k − 1):
  with 5 subsets the 90 % interval spans a factor 6.4 each way, with 10 a
  factor 3.2. Approximate for the TFEP table, whose two spreads come from the
  same samples.
  """
  from scipy import stats

  f = stats.f.ppf(0.5 + level / 2, num_subsets - 1, num_subsets - 1)
  return [float(ratio / f), float(ratio * f)]


def make_table(config, data: dict, works: dict) -> dict:
  """Per sample size: per method mean, std over subsets, mean reported stderr,
  the fraction of subsets judged reliable and the first reason given for one
  that was not (None if all were reliable)."""
  ref = reference(data, config.sampling.num_chains)
  rows = []
  num_held = data['reduced'].shape[-1] - config.sampling.num_train
  for n in config.eval.sample_sizes:
    num_blocks = num_held // n
    if num_blocks < 2:
      raise ValueError(
        f'{num_held} held-out samples per state make fewer than two '
        f'disjoint subsets of n = {n}; expected n <= {num_held // 2}.'
      )
    per_subset = [
      subset_estimates(works, data['reduced'], config.sampling.num_train, n, j)
      for j in range(num_blocks)
    ]
    row = dict(num_samples=n, num_subsets=len(per_subset))
    for method in METHODS:
      values = np.array([s[method][0] for s in per_subset])
      reasons = [s[method][2] for s in per_subset]
      row[method] = dict(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)),
        mean_stderr=float(np.mean([s[method][1] for s in per_subset])),
        values=values.tolist(),
        deviation_in_std=float((values.mean() - ref['value']) / max(values.std(ddof=1), 1e-12)),
        reliable_fraction=float(np.mean([not r for r in reasons])),
        example_unreliable_reason=next(('; '.join(r) for r in reasons if r), None),
      )
    for key in ('FEP_ess', 'LFEP_ess'):
      row[key] = float(np.mean([s[key] for s in per_subset]))
    ratio = row['BAR']['std'] ** 2 / max(row['LBAR']['std'] ** 2, 1e-300)
    row['BAR_over_LBAR_variance'] = float(ratio)
    row['BAR_over_LBAR_variance_90'] = variance_ratio_interval(ratio, len(per_subset))
    rows.append(row)
  return dict(
    benchmark=config.benchmark,
    variant=config.variant,
    parameters=np.asarray(data['parameters']).tolist(),
    training_step=int(works['step']),
    reference=ref,
    acceptance=np.asarray(data['acceptance']).tolist(),
    statistical_inefficiency=np.asarray(data['statistical_inefficiency']).tolist(),
    rows=rows,
  )


def structure(
  config, ladder: ladders.Ladder, data: dict, bijector, num_frames: int = 1000, num_bins: int = 60
) -> dict:
  """g(r) of `num_frames` held-out A and B samples, of M(A) and of M⁻¹(B).

  A map that does its job makes M(A) look like B and M⁻¹(B) like A. Returns
  {'num_frames', 'pair': {'edges', <set>: g}} (observables.radial_distribution)
  and, on a ladder with a solute, 'solute' (observables.distribution_about_point
  about it) and 'inside_radius_b' (per set, the mean number of particles closer
  to the solute than its radius in state B, λ_B).
  """
  held = config.sampling.num_train
  x_a = np.asarray(data['samples'][0, held : held + num_frames])
  y_b = np.asarray(data['samples'][-1, held : held + num_frames])
  batch = config.eval.batch_size
  sets = dict(
    zip(
      STRUCTURE_SETS,
      (
        x_a,
        y_b,
        tfep_stages.batched(jax.jit(lambda x: bijector.forward(x)[0]), x_a, batch),
        tfep_stages.batched(jax.jit(lambda y: bijector.inverse(y)[0]), y_b, batch),
      ),
    )
  )
  box = np.full(3, ladder.upper - ladder.lower)
  result = dict(num_frames=len(x_a))
  kinds = [('pair', lambda x: observables.radial_distribution(x, box, num_bins))]
  if ladder.solute is not None:
    kinds.append(
      ('solute', lambda x: observables.distribution_about_point(x, box, ladder.solute, num_bins))
    )
    radius_b = float(ladder.parameters[-1])
    result['inside_radius_b'] = {}
    for name, x in sets.items():
      inside = observables.distances_to_point(x, box, ladder.solute) < radius_b
      result['inside_radius_b'][name] = float(np.mean(np.sum(inside, axis=-1)))
  for kind, distribution in kinds:
    curves = {name: distribution(x) for name, x in sets.items()}
    result[kind] = dict(
      edges=next(iter(curves.values()))[0].tolist(),
      **{name: g.tolist() for name, (_, g) in curves.items()},
    )
  return result


def _percent(fraction: float) -> str:
  return f'{100 * fraction:.0f} %'


def _reliability_mark(stats: dict) -> str:
  """'' if every subset's estimate was judged reliable, else ' (x % reliable)'."""
  fraction = stats['reliable_fraction']
  return '' if fraction == 1.0 else f' ({_percent(fraction)} reliable)'


def markdown(table: dict) -> str:
  ref = table['reference']
  smallest = min(row[m]['std'] for row in table['rows'] for m in METHODS)
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
    'var BAR / var LBAR (90 % interval) |',
    '|---|---|' + '---|' * (len(METHODS) + 3),
  ]
  for row in table['rows']:
    cells = [
      f'{row[m]["mean"]:.3f} ± {row[m]["std"]:.3f}{_reliability_mark(row[m])}' for m in METHODS
    ]
    lines.append(
      f'| {row["num_samples"]} | {row["num_subsets"]} | '
      + ' | '.join(cells)
      + f' | {row["FEP_ess"]:.4f} | {row["LFEP_ess"]:.4f} | '
      f'{row["BAR_over_LBAR_variance"]:.1f} '
      f'({row["BAR_over_LBAR_variance_90"][0]:.1f}–'
      f'{row["BAR_over_LBAR_variance_90"][1]:.1f}) |'
    )
  lines += [
    '',
    'Entries: mean ± std over disjoint held-out subsets (kT). The '
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
      + ', '.join(f'{m} {_percent(row[m]["reliable_fraction"])}' for m in METHODS)
      + ''.join(
        f'; {m}: {row[m]["example_unreliable_reason"]}'
        for m in METHODS
        if row[m]['example_unreliable_reason']
      )
    )
  lines += ['', '(mean − reference)/std per method:', '']
  for row in table['rows']:
    lines.append(
      f'- n = {row["num_samples"]}: '
      + ', '.join(f'{m} {row[m]["deviation_in_std"]:+.2f}' for m in METHODS)
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


def plot(table: dict, path: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  ref = table['reference']
  sizes = np.array([row['num_samples'] for row in table['rows']])
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.axhline(ref['value'], color='k', lw=1, label='MBAR reference')
  ax.axhspan(ref['value'] - ref['stderr'], ref['value'] + ref['stderr'], color='k', alpha=0.15)
  for i, method in enumerate(METHODS):
    mean = np.array([row[method]['mean'] for row in table['rows']])
    std = np.array([row[method]['std'] for row in table['rows']])
    x = sizes * (1 + 0.04 * (i - 2))  # dodge
    reliable = min(row[method]['reliable_fraction'] for row in table['rows'])
    label = method + ('' if reliable == 1.0 else f' (≥ {_percent(reliable)} of subsets reliable)')
    ax.errorbar(x, mean, yerr=std, marker='o', capsize=3, label=label)
    ax.fill_between(x, mean - std, mean + std, alpha=0.15)
  ax.set_xscale('log')
  ax.set_xticks(sizes, [f'{n:,}' for n in sizes])  # the sizes only, not log minor ticks
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel('samples per state')
  ax.set_ylabel('ΔF = f_B − f_A (kT)')
  ax.set_title(f'{table["benchmark"]} ({table["variant"]})')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)


def plot_structure(result: dict, title: str, path: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  kinds = [k for k in ('pair', 'solute') if k in result]
  labels = dict(pair='pair g(r)', solute='density about the solute / (N/V)')
  fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
  styles = dict(zip(STRUCTURE_SETS, (('C0', '-'), ('C3', '-'), ('C3', '--'), ('C0', '--'))))
  for ax, kind in zip(axes[0], kinds):
    edges = np.asarray(result[kind]['edges'])
    for name in STRUCTURE_SETS:
      colour, line = styles[name]
      ax.stairs(result[kind][name], edges, color=colour, ls=line, lw=1.3, label=name)
    ax.axhline(1.0, color='grey', lw=0.8, ls=':')
    occupied = np.flatnonzero(np.max([result[kind][n] for n in STRUCTURE_SETS], axis=0))
    ax.set_xlim(edges[max(occupied[0] - 2, 0)] if occupied.size else 0.0, edges[-1])
    ax.set(xlabel='r (σ)', ylabel=labels[kind])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(
    f'{title}: held-out samples and the trained map ({result["num_frames"]} per set)', fontsize=10
  )
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
  """Writes the report files of --workdir; returns the table."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='run directory of experiments.tfep')
  workdir = parser.parse_args(argv).workdir
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(
      f'--workdir={workdir} has no config.json; run python -m experiments.tfep first.'
    )
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  ladder = tfep_stages.make_ladder(config)
  data = tfep_stages.load_samples(config, ladder, workdir)  # never samples by itself
  works = tfep_stages.compute_works(config, ladder, data, workdir)
  table = make_table(config, data, works)
  bijector, _ = tfep_stages.restore_map(config, ladder, workdir)
  table['structure'] = structure(config, ladder, data, bijector)
  with open(os.path.join(workdir, 'tfep_report.json'), 'w') as f:
    json.dump(table, f, indent=2)
  text = markdown(table)
  with open(os.path.join(workdir, 'tfep_report.md'), 'w') as f:
    f.write(text)
  plot(table, os.path.join(workdir, 'tfep_report.png'))
  plot_structure(
    table['structure'],
    f'{table["benchmark"]} ({table["variant"]})',
    os.path.join(workdir, 'tfep_structure.png'),
  )
  print(text)
  return table


if __name__ == '__main__':
  main()
