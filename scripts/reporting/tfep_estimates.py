"""The table of `scripts.tfep_report`: FEP, BAR, staged MBAR, LFEP, LBAR on disjoint
held-out blocks against an MBAR reference over all samples.

All free energies are ΔF = f_B − f_A in kT. Every block's estimate is judged by
`systems.estimators`; each method reports the fraction of its blocks judged reliable.
"""

import numpy as np

from flows import targeted
from systems import estimators

METHODS = ('FEP', 'BAR', 'MBAR', 'LFEP', 'LBAR')


def percent(fraction: float) -> str:
  """A reliable fraction as people read it: 0.667 -> '67 %'."""
  return f'{100 * fraction:.0f} %'


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
