"""The figures of `scripts.tfep_report`: estimates against samples per state, and structure."""

import numpy as np

from scripts.reporting.tfep_estimates import METHODS, percent
from scripts.reporting.tfep_structure import STRUCTURE_SETS


def plot_table(table: dict, path: str) -> None:
  """Mean ± std over subsets of each method (kT) against samples per state, the
  MBAR reference ± its error as a band; written as a PNG to `path`."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  ref = table['reference']
  sizes = np.array([row['num_samples'] for row in table['rows']])
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.axhline(ref['value'], color='k', lw=1, label='MBAR reference')
  ax.axhspan(ref['value'] - ref['stderr'], ref['value'] + ref['stderr'], color='k', alpha=0.15)
  for i, method in enumerate(METHODS):
    rows = [row for row in table['rows'] if row[method]]  # staged MBAR: not at every size
    if not rows:
      continue
    mean = np.array([row[method]['mean'] for row in rows])
    std = np.array([row[method]['std'] for row in rows])
    x = np.array([row['num_samples'] for row in rows]) * (1 + 0.04 * (i - 2))  # dodge
    reliable = min(row[method]['reliable_fraction'] for row in rows)
    label = method + ('' if reliable == 1.0 else f' (≥ {percent(reliable)} of subsets reliable)')
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
  """The curves of `tfep_structure.structure` (`result`), one panel per kind; a PNG at `path`."""
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
