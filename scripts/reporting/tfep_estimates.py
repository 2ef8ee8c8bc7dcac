"""The table of `scripts.tfep_report`: FEP, BAR, staged MBAR, LFEP, LBAR on disjoint
held-out blocks against an MBAR reference over all samples of every ladder state, and
the mean dissipated work of the identity and of the trained map.

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


def subset_estimates(works: dict, n: int, j: int) -> dict:
  """FEP, BAR, LFEP and LBAR (value, stderr, reasons) on held-out block j of size n of the
  end states' works, and the Kish ESS fractions of FEP's and LFEP's weights.

  `reasons` (tuple of str) says why systems.estimators judged the estimate
  unreliable, empty if it did not.
  """
  block = slice(j * n, (j + 1) * n)
  results = dict(
    FEP=targeted.estimate(works['plain_forward'][block]),
    BAR=targeted.estimate(works['plain_forward'][block], works['plain_reverse'][block]),
    LFEP=targeted.estimate(works['mapped_forward'][block]),
    LBAR=targeted.estimate(works['mapped_forward'][block], works['mapped_reverse'][block]),
  )
  results = {k: (e.value, e.stderr, e.reasons) for k, e in results.items()}
  results['FEP_ess'] = estimators.ess_fraction(-works['plain_forward'][block])
  results['LFEP_ess'] = estimators.ess_fraction(-works['mapped_forward'][block])
  return results


def staged_mbar(reduced: np.ndarray, num_train: int, n: int, j: int) -> tuple:
  """MBAR over every ladder state (value, stderr, reasons) on held-out block j of size n of
  samples.npz's `reduced` (K, K, n_total)."""
  u = reduced[:, :, num_train + j * n : num_train + (j + 1) * n]  # (K, K, n)
  num_states = u.shape[0]
  staged = estimators.mbar(u.reshape(num_states, -1), np.full(num_states, n))
  return float(staged.delta_f[-1]), float(staged.stderr[-1]), staged.reasons


def dissipation(works: dict, delta_f: float) -> dict:
  """Mean dissipated work (kT) over every held-out sample: ⟨W_AB⟩ − ΔF and ⟨W_BA⟩ + ΔF, for
  the identity (plain) and the trained map (mapped). Zero for a perfect map; the smaller,
  the larger the overlap and the smaller the estimators' variance."""
  return dict(
    plain_forward=float(np.mean(works['plain_forward']) - delta_f),
    plain_reverse=float(np.mean(works['plain_reverse']) + delta_f),
    mapped_forward=float(np.mean(works['mapped_forward']) - delta_f),
    mapped_reverse=float(np.mean(works['mapped_reverse']) + delta_f),
  )


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


def _method_stats(estimates: list, ref_value: float) -> dict:
  """Mean, spread and reliability of one method's (value, stderr, reasons) over blocks."""
  values = np.array([e[0] for e in estimates])
  reasons = [e[2] for e in estimates]
  std = float(values.std(ddof=1))
  return dict(
    mean=float(values.mean()),
    std=std,
    mean_stderr=float(np.mean([e[1] for e in estimates])),
    values=values.tolist(),
    deviation_in_std=float((values.mean() - ref_value) / max(std, 1e-12)),
    reliable_fraction=float(np.mean([not r for r in reasons])),
    example_unreliable_reason=next(('; '.join(r) for r in reasons if r), None),
  )


def make_table(config, data: dict, works: dict) -> dict:
  """Per sample size n: per method the mean, std over disjoint held-out blocks, mean
  reported stderr, the fraction of blocks judged reliable and the first reason given for
  one that was not (None if all were reliable); BAR's over LBAR's variance from the
  spreads (with its 90 % interval) and from the mean reported errors.

  FEP, BAR, LFEP and LBAR use every block of n the end states' held-out samples hold;
  staged MBAR the blocks that every ladder state holds (samples.npz), and is None at a
  size where that is fewer than two.
  """
  ref = reference(data, config.sampling.num_chains)
  num_train = config.sampling.num_train
  num_held = len(works['plain_forward'])
  num_ladder_held = data['reduced'].shape[-1] - num_train
  rows = []
  for n in config.eval.sample_sizes:
    num_blocks = num_held // n
    if num_blocks < 2:
      raise ValueError(
        f'{num_held} held-out samples per end state make fewer than two '
        f'disjoint subsets of n = {n}; expected n <= {num_held // 2}.'
      )
    per_subset = [subset_estimates(works, n, j) for j in range(num_blocks)]
    row = dict(num_samples=n, num_subsets=num_blocks)
    for method in ('FEP', 'BAR', 'LFEP', 'LBAR'):
      row[method] = _method_stats([s[method] for s in per_subset], ref['value'])
    mbar_blocks = num_ladder_held // n
    row['MBAR'] = (
      _method_stats(
        [staged_mbar(data['reduced'], num_train, n, j) for j in range(mbar_blocks)], ref['value']
      )
      if mbar_blocks >= 2
      else None
    )
    row['MBAR_subsets'] = mbar_blocks
    for key in ('FEP_ess', 'LFEP_ess'):
      row[key] = float(np.mean([s[key] for s in per_subset]))
    ratio = row['BAR']['std'] ** 2 / max(row['LBAR']['std'] ** 2, 1e-300)
    row['BAR_over_LBAR_variance'] = float(ratio)
    row['BAR_over_LBAR_variance_90'] = variance_ratio_interval(ratio, num_blocks)
    row['BAR_over_LBAR_stderr_variance'] = float(
      row['BAR']['mean_stderr'] ** 2 / max(row['LBAR']['mean_stderr'] ** 2, 1e-300)
    )
    rows.append(row)
  return dict(
    benchmark=config.benchmark,
    variant=config.variant,
    parameters=np.asarray(data['parameters']).tolist(),
    training_step=int(works['step']),
    reference=ref,
    dissipation=dissipation(works, ref['value']),
    acceptance=np.asarray(data['acceptance']).tolist(),
    statistical_inefficiency=np.asarray(data['statistical_inefficiency']).tolist(),
    rows=rows,
  )
