"""Free-energy estimators on log-weights and reduced works (all in units of kT).

Sign convention, used throughout:

* ``u_A``, ``u_B`` are reduced potentials (``beta * U`` or ``-ln density``) and
  ``f = -ln Z`` the reduced free energy; ``Delta F = f_B - f_A = -ln(Z_B / Z_A)``.
* Forward works ``w_F = u_B(x) - u_A(x)`` are evaluated on samples ``x ~ A``;
  reverse works ``w_R = u_A(x) - u_B(x)`` on samples ``x ~ B``.  With a mapping
  ``M`` (targeted FEP) the forward work is ``u_B(M(x)) - u_A(x) - ln|det J_M(x)|``
  and the reverse one uses ``M^-1`` likewise; the estimators only see the works.

Every estimator returns a frozen dataclass with ``value``, ``stderr`` and
``num_samples``.  Inputs are converted to float64 numpy arrays and validated;
bad input raises ``ValueError`` naming the argument.

Reliability.  A one-sigma error bar is only as good as the asymptotics behind
it, so every estimate also carries ``reasons``, why its error bar should not be
trusted (empty when none), and ``reliable = not reasons``.  The rules, in one
place (`weighted_reasons`, `two_state_reasons`, `mbar_reasons`):

* importance sampling and one-sided FEP: fewer than ``MIN_EFFECTIVE_SAMPLES``
  = 100 effective samples, counted two ways: the samples' own n·ESS, and
  n·exp(−σ₊²), the ESS that the spread of the log-weights implies (σ₊² the
  mean square of ln w above its median, Var ln w for log-normal weights, for
  which this is exact; ``lognormal_ess``).  With log-normal weights and n = 1000
  (tests/test_estimators.py) the 2σ interval covers the truth in 96 % of
  repeats at ~380 effective samples but in 60 % at ~12, where the spread of
  the estimates is 1.8× the stated error.  The samples' own ESS overestimates
  the true one while the tail of the weights that carries the mean is
  unsampled; σ₊² is a plain second moment, well estimated long before.
  On 420 chunks (4,096-32,768 samples) of seven flows' stored samples, each
  against an independent LBAR (scripts.is_coverage,
  docs/ablation/is_rule_coverage.json), the 79 that pass n·ESS alone cover
  it at 2σ in 80 % (RMS z 2.0); the 40 of them that the spread refuses in
  65 % (RMS z 2.7, 38 of them too low); the 39 judged reliable in 95 % (RMS
  z 0.9).  Most of those 39 come from two flows, so this is a check, not a
  calibration; and a whole estimate can still pass and miss: the 131,072
  samples of one Lennard-Jones flow (112 effective samples by the spread)
  give a ln Z 2.3σ low.
  Beside the rule, not in it, the estimate reports the Pareto k̂
  of its largest weights (`pareto_khat`): on those chunks no k̂ threshold
  separated the good from the bad (docs/standalone_flows.md, seventh and
  eighth rounds); scripts.free_energy warns above `psis_khat_threshold`.
* BAR and LBAR: fewer than ``MIN_OVERLAP_SAMPLES`` = 10 samples' worth of
  overlap, (n_F + n_R)·O with O the two-state overlap (pymbar's 2x2 overlap
  matrix, see `BAREstimate.overlap`).  What decides whether BAR's error bar
  holds is how many samples fall where both states have weight, not the
  overlap fraction alone (the 0.03 fraction that Klimovich, Shirts & Mobley,
  J. Comput. Aided Mol. Des. 29, 397, 2015, recommend is that count at ~300
  samples).  For A = N(0, 1), B = N(d, 0.3²) in 1-D (tests/test_estimators.py,
  80 repeats each) the 2σ coverage of the truth is 93-99 % down to
  (n_F + n_R)·O ≈ 7 at every n from 100 to 10⁴ per state (O from 0.04 down to
  4·10⁻⁴; 99 % at O = 1.5·10⁻³ with 10⁴ per state), but 81 % at 2.9, 51 % at
  0.3 (spread 2.4× the stated error) and 10 % at overlap 1e-7 with 20 samples
  per state (spread 6×).  Or more than
  ``MAX_INFINITE_WORK_FRACTION`` = 1 % of either side's works infinite: BAR
  counts a sample the other state truly cannot produce correctly, but for a
  flow or map (a bijection with full support) an infinite work is a
  numerical failure standing in for a finite work.  Losing a fraction φ of
  one side's works shifts ΔF by about ln(1 − φ): 0.01 kT at 1 %, within the
  error bar of 2000 well-overlapping samples per state, 9σ at 10 %
  (tests/test_estimators.py).  With far more samples the rule is lenient.
* MBAR: some adjacent pair of states overlapping less than ``MIN_OVERLAP`` =
  0.03 (the Klimovich et al. fraction; the stages' sample counts are fixed and
  a few hundred each).  Or, on MCMC samples, fewer than
  ``MIN_CHAIN_SAMPLES`` = 20 decorrelated samples per chain in the sparsest
  state (``n_k`` counts every ⌈g⌉-th record): a chain only some g long
  underestimates its own statistical inefficiency g, so MBAR counts
  correlated samples as independent and its error bar is too small; more
  chains of the same length do not help.  Calibrated by coverage on the
  Einstein path of mw_cubic_8 (`scripts.einstein_coverage`: 24 stages,
  burn-in 20 steps, 48 repeats at each of 6-7 chain lengths, the truth one
  MBAR on all repeats' chains at full length), binned by the sparsest
  stage's decorrelated samples per chain:

      per chain   2 chains (8-512 steps)         4 chains (6-192 steps)
                  runs  1σ    2σ    RMS z        runs  1σ    2σ    RMS z
      [0, 5)        69  0.48  0.81  1.57           91  0.58  0.88  1.29
      [5, 10)       79  0.56  0.84  1.38           66  0.59  0.88  1.34
      [10, 20)      75  0.60  0.89  1.20           81  0.60  0.86  1.27
      [20, 40)      61  0.72  0.97  0.90           50  0.64  0.94  1.12
      [40, 80)      49  0.67  0.94  1.09            -

  (nominal 0.68, 0.95, 1).  Coverage reaches its nominal level at 20 per
  chain with either chain count, not at a fixed total (4 chains with 40-80
  samples in all cover 86 % at 2σ); the estimated g is 2 at 8 steps and
  saturates near 7.5 from 256 steps on.  The same failure on AR(1) chains
  is in tests/test_estimators.py.  A mw_cubic_512 baseline with 2 chains of
  500 steps (4 per chain) and the 216 ones with 4 chains of 600 (10 per
  chain) fail the rule.
  Tables and commands: docs/baselines/README.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

__all__ = [
  'MIN_EFFECTIVE_SAMPLES',
  'MIN_OVERLAP',
  'MIN_CHAIN_SAMPLES',
  'MIN_OVERLAP_SAMPLES',
  'MAX_INFINITE_WORK_FRACTION',
  'RELIABILITY_RULES',
  'Estimate',
  'WeightedEstimate',
  'BAREstimate',
  'MBAREstimate',
  'MBARConvergenceError',
  'weighted_reasons',
  'two_state_reasons',
  'mbar_reasons',
  'unreliable_note',
  'ess_fraction',
  'pareto_khat',
  'psis_khat_threshold',
  'importance_sampling',
  'fep_forward',
  'fep_reverse',
  'bar',
  'lbar',
  'mbar',
  'import_pymbar',
]


MIN_EFFECTIVE_SAMPLES = 100  # importance sampling / FEP: least n·ESS for a meaningful error bar
MIN_OVERLAP = 0.03  # MBAR: least adjacent two-state overlap (Klimovich et al. 2015)
MIN_CHAIN_SAMPLES = 20  # MBAR on MCMC chains: least decorrelated samples per chain, sparsest state
MIN_OVERLAP_SAMPLES = 10  # BAR, LBAR: least (n_F + n_R)·overlap
MAX_INFINITE_WORK_FRACTION = 0.01  # BAR, LBAR: most infinite works on either side
_MIN_TAIL = 5  # pareto_khat: fewest tail weights to fit (n > 20)
RELIABILITY_RULES = (  # the rules in words, for reports
  f'at least {MIN_EFFECTIVE_SAMPLES} effective samples n·ESS and n·exp(−σ₊²) (importance '
  f'sampling, FEP); at '
  f'least {MIN_OVERLAP_SAMPLES} samples of two-state overlap (n_F + n_R)·overlap and at most '
  f'{MAX_INFINITE_WORK_FRACTION:.0%} infinite works on either side (BAR, LBAR); an adjacent '
  f'overlap of at least {MIN_OVERLAP} and, on MCMC chains, at least {MIN_CHAIN_SAMPLES} '
  f'decorrelated samples per chain in every state (MBAR)'
)


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A scalar estimate: ``value`` with one-sigma ``stderr`` (both in kT or nats).

  ``num_samples`` is the sample count, or a tuple of counts per state.
  ``reasons``: why the error bar should not be trusted (module docstring),
  empty for a reliable estimate.
  """

  value: float
  stderr: float
  num_samples: int | tuple[int, ...]
  reasons: tuple[str, ...] = dataclasses.field(kw_only=True)

  @property
  def reliable(self) -> bool:
    """True when no reliability rule failed (``reasons`` is empty)."""
    return not self.reasons


@dataclasses.dataclass(frozen=True)
class WeightedEstimate(Estimate):
  """Estimate from a single weighted average (importance sampling / Zwanzig).

  ``stderr`` is the larger of ``stderr_delta`` (delta method) and
  ``stderr_bootstrap`` (NaN when no bootstrap was run); ``ess`` is the Kish
  effective-sample-size fraction in (0, 1]; ``pareto_khat`` the shape of the
  largest weights' tail (`pareto_khat`), a diagnostic beside the rule, not
  part of it.
  ``lognormal_ess`` is the ESS fraction that the spread of the log-weights
  implies, (n_w/n)·exp(−σ₊²) over the n_w nonzero weights, σ₊² the mean
  square of ln w above its median: for log-normal weights σ₊² = Var ln w and
  this is the true ESS, which the samples' own ESS overestimates until the
  tail that carries the mean has been drawn (`weighted_reasons`).  Only the
  upper half counts, since only large weights carry the mean: a low tail of
  ln w (near-overlaps, or works of a one-sided FEP bounded below) would
  inflate the variance and refuse good estimates.
  """

  ess: float
  stderr_delta: float
  stderr_bootstrap: float
  pareto_khat: float
  lognormal_ess: float


@dataclasses.dataclass(frozen=True)
class BAREstimate(Estimate):
  """Estimate from forward and reverse works (BAR, LBAR).

  ``overlap``: the off-diagonal element of pymbar's 2x2 overlap matrix of the
  two states (rows summing to 1; the smaller of the two), computed from the
  works at the solution; 0 for disjoint states, and for identical ones the
  smaller state's share of the samples, min(n_F, n_R) / (n_F + n_R): 1/2 for
  equal counts; so (n_F + n_R)·overlap counts the samples in the overlap.
  ``num_infinite``: (forward, reverse) counts of +inf works.
  ``statistical_inefficiency``: g of the reverse samples' Fermi terms (1 for
  independent samples), by which their variance term was multiplied.
  """

  overlap: float
  num_infinite: tuple[int, int]
  statistical_inefficiency: float = 1.0


@dataclasses.dataclass(frozen=True)
class MBAREstimate:
  """MBAR result over K states (arrays are read-only float64).

  ``delta_f[k] = f_k - f_0`` and ``stderr[k]`` its one-sigma error, shape (K,);
  ``overlap`` the (K, K) row-stochastic overlap matrix; ``adjacent_pair_overlap``
  (K-1,) the overlap of each adjacent pair on its own (see
  `adjacent_pair_overlap`) and ``min_adjacent_overlap`` its minimum;
  ``reasons`` as for `Estimate`.
  """

  delta_f: np.ndarray
  stderr: np.ndarray
  overlap: np.ndarray
  adjacent_pair_overlap: np.ndarray  # (K-1,) two-state overlap of each adjacent pair
  min_adjacent_overlap: float
  num_samples: tuple[int, ...]
  reasons: tuple[str, ...]

  @property
  def reliable(self) -> bool:
    """True when every adjacent pair overlaps enough (``reasons`` is empty)."""
    return not self.reasons


# --- reliability ---------------------------------------------------------------


def weighted_reasons(
  ess: float, num_samples: int, lognormal_ess: float | None = None
) -> tuple[str, ...]:
  """Why an importance-sampling or FEP error bar is meaningless: () or the failed rules.

  ``ess``: Kish ESS fraction; ``num_samples``: n; ``lognormal_ess``: the ESS
  fraction implied by the log-weights' variance (`WeightedEstimate`; None for
  records that predate it).  Unreliable below ``MIN_EFFECTIVE_SAMPLES`` effective
  samples counted either way, n·ESS or n·lognormal_ess.
  """
  reasons = []
  effective = ess * num_samples
  if not effective >= MIN_EFFECTIVE_SAMPLES:
    reasons.append(
      f'ESS {ess:.2g} ({effective:.3g} effective samples of {num_samples}; '
      f'need >= {MIN_EFFECTIVE_SAMPLES})'
    )
  spread_effective = (lognormal_ess if lognormal_ess is not None else np.nan) * num_samples
  if spread_effective < MIN_EFFECTIVE_SAMPLES:  # NaN (no spread measured) is no reason
    reasons.append(
      f'log-weight spread: ESS {lognormal_ess:.2g} for log-normal weights of that spread '
      f'({spread_effective:.3g} effective samples of {num_samples}; need >= '
      f'{MIN_EFFECTIVE_SAMPLES}): the tail of the weights that carries the estimate is '
      'not yet sampled'
    )
  return tuple(reasons)


def two_state_reasons(overlap: float, num_infinite, num_samples) -> tuple[str, ...]:
  """Why a BAR or LBAR error bar is meaningless: () or the failed rules.

  ``overlap``: two-state overlap (`BAREstimate.overlap`); ``num_infinite``
  and ``num_samples``: (forward, reverse) counts of infinite works and of
  all works.  Unreliable below ``MIN_OVERLAP_SAMPLES`` samples' worth of
  overlap, (n_F + n_R)·overlap, or above ``MAX_INFINITE_WORK_FRACTION``
  infinite works on either side.
  """
  reasons = []
  overlapping = overlap * sum(num_samples)
  if overlapping < MIN_OVERLAP_SAMPLES:
    reasons.append(
      f'overlap {overlap:.2g} of the forward and reverse work distributions '
      f'({overlapping:.3g} samples of overlap; need >= {MIN_OVERLAP_SAMPLES})'
    )
  for side, infinite, n in zip(('forward', 'reverse'), num_infinite, num_samples):
    if infinite > MAX_INFINITE_WORK_FRACTION * n:
      reasons.append(
        f'{infinite} of {n} {side} works infinite (samples outside the other '
        f"state's support; at most {MAX_INFINITE_WORK_FRACTION:.0%} allowed)"
      )
  return tuple(reasons)


def unreliable_note(reasons) -> str:
  """'' when ``reasons`` is empty, else 'UNRELIABLE: ' and the reasons joined by '; '."""
  return f'UNRELIABLE: {"; ".join(reasons)}' if reasons else ''


def mbar_reasons(
  min_adjacent_overlap: float, min_state_samples: int, chains_per_state: int | None = None
) -> tuple[str, ...]:
  """Why an MBAR error bar is meaningless: () or the failed rules.

  Unreliable when the smallest two-state overlap of adjacent states is below
  ``MIN_OVERLAP``, or, for samples from ``chains_per_state`` MCMC chains per
  state (None: independent samples, no such rule), when the sparsest state
  has fewer than ``MIN_CHAIN_SAMPLES`` decorrelated samples per chain
  (``min_state_samples`` of them in all).
  """
  reasons = []
  if min_adjacent_overlap < MIN_OVERLAP:
    reasons.append(
      f'smallest adjacent-pair overlap {min_adjacent_overlap:.2g} (need >= {MIN_OVERLAP})'
    )
  if chains_per_state is not None and min_state_samples < MIN_CHAIN_SAMPLES * chains_per_state:
    reasons.append(
      f'{min_state_samples} decorrelated samples in the sparsest state from {chains_per_state} '
      f'chains, {min_state_samples / chains_per_state:.3g} per chain '
      f'(need >= {MIN_CHAIN_SAMPLES} per chain)'
    )
  return tuple(reasons)


def _as_samples(name: str, values, *, allow: str = 'finite') -> np.ndarray:
  """1-D float64 array of at least 2 entries.

  ``allow="finite"`` rejects any non-finite entry; ``"-inf"`` / ``"+inf"`` also
  admit that one infinity (a zero weight) as long as one entry is finite.
  """
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1 or array.size < 2:
    raise ValueError(f'{name} must be a 1-D array with at least 2 entries, got shape {array.shape}')
  bad = np.isnan(array)
  if allow != '-inf':
    bad |= array == -np.inf
  if allow != '+inf':
    bad |= array == np.inf
  if bad.any():
    raise ValueError(
      f'{name} has {int(bad.sum())} entries that are NaN or not allowed infinities '
      f'(allowed: {allow})'
    )
  if not np.isfinite(array).any():
    raise ValueError(f'{name} has no finite entry')
  return array


def _ess_fraction(log_weights: np.ndarray) -> float:
  """Kish ESS fraction (sum w)^2 / (n sum w^2) of validated log-weights, in (0, 1]."""
  shifted = log_weights - log_weights.max()  # exact for equal weights of any magnitude
  log_ess = 2.0 * logsumexp(shifted) - logsumexp(2.0 * shifted) - np.log(shifted.size)
  return float(min(np.exp(log_ess), 1.0))


def _lognormal_ess(log_weights: np.ndarray) -> float:
  """(n_w/n)·exp(−σ₊²) of validated log-weights, σ₊² the mean of (ln w − median)² over
  the nonzero weights above their median (NaN if fewer than 2 are nonzero)."""
  finite = log_weights[np.isfinite(log_weights)]
  if finite.size < 2:
    return float('nan')
  median = np.median(finite)
  upper = finite[finite > median]
  upper = upper if upper.size else finite  # equal weights: spread 0
  return float(finite.size / log_weights.size * np.exp(-np.mean((upper - median) ** 2)))


def ess_fraction(log_weights) -> float:
  """Kish effective-sample-size fraction (sum w)^2 / (n sum w^2), in (0, 1].

  ``log_weights``: shape (n,), any magnitude; ``-inf`` entries are zero weights.
  """
  return _ess_fraction(_as_samples('log_weights', log_weights, allow='-inf'))


def _pareto_khat(log_weights: np.ndarray) -> float:
  """`pareto_khat` of validated log-weights (any magnitude, ``-inf`` allowed)."""
  n = log_weights.size
  tail_size = int(np.ceil(min(0.2 * n, 3.0 * np.sqrt(n))))
  if tail_size < _MIN_TAIL:
    return float('nan')
  ordered = np.sort(log_weights)
  ordered = ordered - ordered[-1]  # largest weight 1
  excess = np.exp(ordered[-tail_size:]) - np.exp(ordered[-tail_size - 1])  # ascending, >= 0
  if excess[-1] <= 0.0:  # the tail's weights are all equal: no tail to fit
    return float('nan')
  # Zhang & Stephens (2009): the GPD with shape ξ and scale σ has a profile
  # likelihood in θ = −ξ/σ alone, ξ(θ) = mean ln(1 − θx).  The posterior mean of θ
  # over a grid that their prior concentrates near 1/max(x) ...
  num_grid = 30 + int(np.sqrt(tail_size))
  quartile = excess[int(tail_size / 4 + 0.5) - 1]
  grid = 1.0 / excess[-1] + (1.0 - np.sqrt(num_grid / (np.arange(1, num_grid + 1) - 0.5))) / (
    3.0 * quartile
  )
  shape = np.mean(np.log1p(-grid[:, None] * excess), axis=1)
  log_lik = tail_size * (np.log(-grid / shape) - shape - 1.0)
  posterior = np.exp(log_lik - logsumexp(log_lik))
  xi = float(np.mean(np.log1p(-np.dot(posterior, grid) * excess)))
  # ... and the weak prior of PSIS toward ξ = 0.5, worth 10 tail points.
  return (tail_size * xi + 10 * 0.5) / (tail_size + 10)


def pareto_khat(log_weights) -> float:
  """Pareto k̂: the shape ξ of a generalised Pareto fit to the largest weights.

  ``log_weights``: shape (n,), any magnitude, ``-inf`` for zero weights.  The
  fit takes the largest ⌈min(n/5, 3√n)⌉ weights over the next one (Pareto-
  smoothed importance sampling, Vehtari et al., JMLR 25, 72, 2024) by the
  empirical-Bayes estimate of Zhang & Stephens (Technometrics 51, 316, 2009),
  shrunk toward 0.5 by 10 pseudo-points as PSIS does.  The weights have
  finite variance (the ESS and the delta-method error mean something) only for
  ξ < 0.5 and a finite mean only for ξ < 1; PSIS trusts an estimate below
  min(1 − 1/log₁₀ n, 0.7).  NaN for n ≤ 20 or a flat tail.  Here it is reported
  beside the effective-sample rules, not part of them: the flows' good 512-particle estimates
  have k̂ 0.73-0.77 (docs/standalone_flows.md, fifth round).
  """
  return _pareto_khat(_as_samples('log_weights', log_weights, allow='-inf'))


def psis_khat_threshold(num_samples: int) -> float:
  """1 − 1/log₁₀ n: the largest Pareto k̂ for which n samples suffice (PSIS, Vehtari
  et al. 2024, who also cap it at 0.7): 0.75 at n = 10⁴, 0.8 at 10⁵."""
  return 1.0 - 1.0 / np.log10(num_samples)


def importance_sampling(
  log_weights, *, num_bootstrap: int = 200, seed: int | np.random.Generator = 0
) -> WeightedEstimate:
  """ln Z = ln mean(exp(log_weights)), the importance-sampling estimate.

  ``log_weights``: shape (n,), ``ln p~(x) - ln q(x)`` for ``x ~ q`` with q normalised;
  any magnitude (computed with log-sum-exp); ``-inf`` entries are zero weights.
  Errors: delta method, ``sqrt((1/ess - 1) / (n - 1))``, and the standard deviation
  of ``num_bootstrap`` resampled estimates (0 skips it, giving NaN); ``stderr`` is
  the larger.
  """
  log_w = _as_samples('log_weights', log_weights, allow='-inf')
  valid_int = isinstance(num_bootstrap, (int, np.integer)) and not isinstance(num_bootstrap, bool)
  if not valid_int or num_bootstrap == 1 or num_bootstrap < 0:
    raise ValueError(
      f'num_bootstrap must be 0 (no bootstrap) or an int >= 2, got {num_bootstrap!r}'
    )
  n = log_w.size
  log_w_max = log_w.max()
  shifted = log_w - log_w_max  # in (-inf, 0]: no cancellation for log-weights ~ -1e4
  ess = _ess_fraction(shifted)
  lognormal_ess = _lognormal_ess(shifted)
  stderr_delta = float(np.sqrt(max(1.0 / ess - 1.0, 0.0) / (n - 1)))
  stderr_bootstrap = _bootstrap_stderr(shifted, num_bootstrap, np.random.default_rng(seed))
  return WeightedEstimate(
    value=float(log_w_max + logsumexp(shifted) - np.log(n)),
    stderr=float(np.fmax(stderr_delta, stderr_bootstrap)),
    num_samples=n,
    ess=ess,
    stderr_delta=stderr_delta,
    stderr_bootstrap=stderr_bootstrap,
    pareto_khat=_pareto_khat(shifted),
    lognormal_ess=lognormal_ess,
    reasons=weighted_reasons(ess, n, lognormal_ess),
  )


def _bootstrap_stderr(log_w: np.ndarray, num_bootstrap: int, rng: np.random.Generator) -> float:
  """Std of ln mean exp over ``num_bootstrap`` resamples (NaN if 0), in blocks of ~4M draws."""
  if num_bootstrap == 0:
    return float('nan')
  n = log_w.size
  rows = max(1, (1 << 22) // n)
  values = []
  for start in range(0, num_bootstrap, rows):
    idx = rng.integers(n, size=(min(rows, num_bootstrap - start), n))
    values.append(logsumexp(log_w[idx], axis=1))
  values = np.concatenate(values)
  return float(np.std(values, ddof=1))


def fep_forward(
  work_forward, *, num_bootstrap: int = 200, seed: int | np.random.Generator = 0
) -> WeightedEstimate:
  """Zwanzig: Delta F = F_B - F_A = -ln mean exp(-w_F), works ``w_F`` shape (n,) on A samples.

  ``+inf`` works are allowed (zero weight).  Errors and ``ess`` (of the weights
  exp(-w_F)) as in :func:`importance_sampling`.
  """
  work = _as_samples('work_forward', work_forward, allow='+inf')
  estimate = importance_sampling(-work, num_bootstrap=num_bootstrap, seed=seed)
  return dataclasses.replace(estimate, value=-estimate.value)


def fep_reverse(
  work_reverse, *, num_bootstrap: int = 200, seed: int | np.random.Generator = 0
) -> WeightedEstimate:
  """Reverse Zwanzig: Delta F = F_B - F_A = +ln mean exp(-w_R), works ``w_R`` (n,) on B.

  ``+inf`` works are allowed (zero weight).  Errors and ``ess`` (of the weights
  exp(-w_R)) as in :func:`importance_sampling`.
  """
  work = _as_samples('work_reverse', work_reverse, allow='+inf')
  return importance_sampling(-work, num_bootstrap=num_bootstrap, seed=seed)


def _log_fermi_sums(work_forward, work_reverse, delta_f, log_ratio):
  """Log Fermi terms of the BAR equation, ``ln f(M + w_F - dF)`` and ``ln f(-M + w_R + dF)``."""
  return (
    -np.logaddexp(0.0, log_ratio + work_forward - delta_f),
    -np.logaddexp(0.0, -log_ratio + work_reverse + delta_f),
  )


def bar(work_forward, work_reverse, *, reverse_chains: int | None = None) -> BAREstimate:
  """Bennett acceptance ratio Delta F = F_B - F_A from forward and reverse works.

  ``work_forward``: shape (n_F,), w_F on A samples; ``work_reverse``: shape (n_R,),
  w_R on B samples.  A work may be +inf (a sample that the other state gives zero
  density, e.g. outside a flow's support): it counts in n with a zero Fermi term,
  so dropping it instead would bias the estimate.  Each side needs a finite work.
  Solves, with ``M = ln(n_F / n_R)`` and
  ``f(x) = 1 / (1 + e^x)``,
  ``sum_F f(M + w_F - dF) = sum_R f(-M + w_R + dF)`` in log space by Brent's
  method (the difference of the log sums is increasing in dF).  ``stderr`` is the
  asymptotic BAR variance (Shirts et al., PRL 91, 140601, 2003; pymbar's "BAR"),
  ``sum_s (1/ESS_s - 1/n_s)`` with ESS_s the Kish effective size of the Fermi terms.
  ``overlap`` (see `BAREstimate`) is ``sum f(x) f(-x) / max(n_F, n_R)`` over the
  Fermi arguments x of all samples, which is pymbar's 2x2 overlap at the solution.

  ``reverse_chains``: if the reverse works come from this many correlated chains
  (MCMC), time-major (row t·C + c is chain c's t-th sample), their variance term
  is multiplied by the statistical inefficiency g of the reverse Fermi terms
  (mean over chains; n_R/g effective samples), recorded in
  ``statistical_inefficiency``. Default: independent samples (g = 1).
  """
  w_f = _as_samples('work_forward', work_forward, allow='+inf')
  w_r = _as_samples('work_reverse', work_reverse, allow='+inf')
  log_ratio = np.log(w_f.size / w_r.size)

  def residual(delta_f: float) -> float:
    log_f_f, log_f_r = _log_fermi_sums(w_f, w_r, delta_f, log_ratio)
    return float(logsumexp(log_f_f) - logsumexp(log_f_r))

  # Gibbs: -<w_R> <= Delta F <= <w_F> (finite works: a start); widen until bracketed.
  lower, upper = sorted((-w_r[np.isfinite(w_r)].mean(), w_f[np.isfinite(w_f)].mean()))
  step = max(upper - lower, 1.0)
  while residual(lower) > 0.0:
    lower, step = lower - step, 2.0 * step
  while residual(upper) < 0.0:
    upper, step = upper + step, 2.0 * step
  delta_f = brentq(residual, lower, upper, xtol=1e-14, rtol=4.0 * np.finfo(float).eps, maxiter=500)

  log_f_f, log_f_r = _log_fermi_sums(w_f, w_r, delta_f, log_ratio)
  g = 1.0
  if reverse_chains is not None:
    if w_r.size % reverse_chains or w_r.size // reverse_chains < 2:
      raise ValueError(
        f'reverse_chains={reverse_chains} must divide the {w_r.size} reverse works into '
        'chains of at least 2'
      )
    per_chain = np.exp(log_f_r).reshape(-1, reverse_chains).T  # (C, T) Fermi terms
    g = float(np.mean(statistical_inefficiency(per_chain)))
  variance = (1.0 / _ess_fraction(log_f_f) - 1.0) / log_f_f.size
  variance += g * (1.0 / _ess_fraction(log_f_r) - 1.0) / log_f_r.size
  # ln[f(x) f(-x)] of every sample's Fermi argument; -inf (no overlap) for an infinite work.
  x = np.concatenate([log_ratio + w_f - delta_f, -log_ratio + w_r + delta_f])
  log_pair = -np.logaddexp(0.0, x) - np.logaddexp(0.0, -x)
  overlap = float(np.exp(logsumexp(log_pair)) / max(w_f.size, w_r.size))
  num_samples = (w_f.size, w_r.size)
  num_infinite = (int(np.isinf(w_f).sum()), int(np.isinf(w_r).sum()))
  return BAREstimate(
    value=float(delta_f),
    stderr=float(np.sqrt(max(variance, 0.0))),
    num_samples=num_samples,
    overlap=overlap,
    num_infinite=num_infinite,
    reasons=two_state_reasons(overlap, num_infinite, num_samples),
    statistical_inefficiency=g,
  )


def lbar(
  log_q_on_q, log_p_on_q, log_q_on_p, log_p_on_p, *, target_chains: int | None = None
) -> BAREstimate:
  """ln Z of an unnormalised target p~ = exp(-beta U), by BAR against a normalised flow q.

  State A = q (``u_A = -ln q``, ``Z_A = 1``), state B = p~ (``u_B = beta U = -ln p~``,
  ``Z_B = Z``), so ``Delta F = -ln Z`` and:

  * on flow samples ``x ~ q``:   ``w_F = u_B - u_A = ln q(x) - ln p~(x)``;
  * on target samples ``x ~ p``: ``w_R = u_A - u_B = ln p~(x) - ln q(x)``, where
    ``ln q(x)`` needs the inverse flow (base log-density at ``f^-1(x)`` plus
    ``ln|det J_{f^-1}(x)|``).

  Arguments are 1-D arrays: ``log_q_on_q``, ``log_p_on_q`` shape (n_q,);
  ``log_q_on_p``, ``log_p_on_p`` shape (n_p,).  ``log_q_on_p`` may be -inf (a
  target sample outside the flow's support) and ``log_p_on_q`` -inf (a flow sample
  of infinite energy): their works are +inf and they still count (see ``bar``).
  ``target_chains``: the target samples come from this many MCMC chains,
  time-major (``bar``'s ``reverse_chains``). Returns ``ln Z`` (value = -Delta F).
  """
  arrays = {
    name: _as_samples(name, values, allow=allow)
    for name, values, allow in (
      ('log_q_on_q', log_q_on_q, 'finite'),
      ('log_p_on_q', log_p_on_q, '-inf'),
      ('log_q_on_p', log_q_on_p, '-inf'),
      ('log_p_on_p', log_p_on_p, 'finite'),
    )
  }
  for a, b in (('log_q_on_q', 'log_p_on_q'), ('log_q_on_p', 'log_p_on_p')):
    if arrays[a].shape != arrays[b].shape:
      raise ValueError(
        f'{a} and {b} must have the same shape, got {arrays[a].shape} and {arrays[b].shape}'
      )
  estimate = bar(
    arrays['log_q_on_q'] - arrays['log_p_on_q'],
    arrays['log_p_on_p'] - arrays['log_q_on_p'],
    reverse_chains=target_chains,
  )
  return dataclasses.replace(estimate, value=-estimate.value)


def statistical_inefficiency(series) -> np.ndarray:
  """g = 1 + 2 Σ_t (1 − t/T) ρ_t of time series (..., T), summed until ρ_t ≤ 0.

  The autocorrelation ρ_t is computed by FFT; g ≥ 1, and g = 1 for a
  constant series. Returns shape (...).
  """
  x = np.asarray(series, dtype=np.float64)
  if x.ndim < 1 or x.shape[-1] < 2:
    raise ValueError(f'series must have shape (..., T) with T >= 2, got {x.shape}.')
  length = x.shape[-1]
  dx = x - x.mean(axis=-1, keepdims=True)
  spectrum = np.fft.rfft(dx, n=2 * length, axis=-1)
  acov = np.fft.irfft(spectrum * np.conj(spectrum), axis=-1)[..., :length]
  var = acov[..., :1]
  rho = np.divide(acov, var, out=np.zeros_like(acov), where=var > 0)
  positive = np.cumprod(rho[..., 1:] > 0, axis=-1)
  weights = 1.0 - np.arange(1, length) / length
  return np.maximum(1.0, 1.0 + 2.0 * np.sum(positive * rho[..., 1:] * weights, axis=-1))


@contextlib.contextmanager
def _jax_x64_preserved():
  """Restore ``jax_enable_x64`` on exit if jax is loaded (pymbar's jax backend flips it)."""
  jax_module = sys.modules.get('jax')
  x64 = None if jax_module is None else jax_module.config.jax_enable_x64
  try:
    yield
  finally:
    if jax_module is not None and jax_module.config.jax_enable_x64 != x64:
      jax_module.config.update('jax_enable_x64', x64)


def import_pymbar():
  """Import pymbar with its numpy backend, leaving jax's x64 flag untouched.

  pymbar 4.0.x uses jax whenever importable and then switches ``jax_enable_x64``
  on for the whole process; it ignores ``PYMBAR_DISABLE_JAX`` (set here anyway for
  later versions), so jax is hidden, and pymbar's import-time warnings silenced,
  while pymbar is first imported.  Not thread-safe against a concurrent first
  import of jax.
  """
  os.environ.setdefault('PYMBAR_DISABLE_JAX', '1')
  if 'pymbar' not in sys.modules:
    jax_module = sys.modules.get('jax')
    logger = logging.getLogger('pymbar')
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.modules['jax'] = None  # `import jax` now raises ImportError
    try:
      import pymbar  # noqa: F401
    finally:
      logger.setLevel(level)
      if jax_module is None:
        del sys.modules['jax']
      else:
        sys.modules['jax'] = jax_module
  import pymbar

  return pymbar


class MBARConvergenceError(RuntimeError):
  """pymbar's solver did not reach its tolerance."""


@contextlib.contextmanager
def _pymbar_solver_failures():
  """Collects the messages of pymbar's solver warnings (a failed solve) instead of
  printing them; pymbar's other warnings still go to the usual handlers."""
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  logger = logging.getLogger('pymbar')
  propagate, level = logger.propagate, logger.level
  logger.addHandler(handler)
  logger.propagate = False
  logger.setLevel(logging.WARNING)  # failures are seen whatever the root logger's level
  failures = []
  try:
    yield failures
  finally:
    logger.removeHandler(handler)
    logger.propagate = propagate
    logger.setLevel(level)
    for record in records:
      if record.name == 'pymbar.mbar_solvers':
        failures.append(record.getMessage())
      else:
        logging.getLogger(record.name).handle(record)


def mbar(
  u_kn, n_k, *, chains_per_state: int | None = None, max_iterations: int = 10_000
) -> MBAREstimate:
  """MBAR (pymbar 4) free energies of K states relative to state 0.

  ``u_kn``: shape (K, N), finite reduced potential of every sample n under every
  state k, samples ordered by the state they were drawn from; ``n_k``: shape (K,),
  non-negative integer sample counts summing to N.  ``chains_per_state``: the
  samples are decorrelated (subsampled) records of this many MCMC chains per
  state, which `mbar_reasons` judges; None for independent samples.

  Solved by pymbar's "adaptive" method alone (Newton–Raphson or self-consistent
  iteration, whichever lowers the gradient more, at most ``max_iterations``
  steps), which converges on MBAR's convex objective; pymbar's default tries
  scipy's "hybr" first, which often fails and logs a warning before "adaptive"
  succeeds. A converged solve logs nothing.

  Raises:
    MBARConvergenceError: the solver did not reach pymbar's tolerance (its
      messages included).
  """
  u = np.asarray(u_kn, dtype=np.float64)
  if u.ndim != 2 or u.shape[0] < 2 or u.shape[1] < 2:
    raise ValueError(f'u_kn must have shape (K >= 2, N >= 2), got {u.shape}')
  if not np.isfinite(u).all():
    raise ValueError('u_kn must be finite')
  counts = np.asarray(n_k)
  if (
    counts.shape != (u.shape[0],)
    or not np.issubdtype(counts.dtype, np.integer)
    or (counts < 0).any()
    or counts.sum() != u.shape[1]
  ):
    raise ValueError(
      f'n_k must be {u.shape[0]} non-negative integers summing to N={u.shape[1]}, got {counts!r}'
    )
  if int(max_iterations) != max_iterations or max_iterations < 1:
    raise ValueError(f'max_iterations={max_iterations!r} must be a positive integer')

  pymbar = import_pymbar()
  with _jax_x64_preserved():  # in case pymbar was imported elsewhere with jax
    with _pymbar_solver_failures() as failures:
      solver = pymbar.MBAR(
        u,
        counts.astype(np.int64),
        maximum_iterations=max_iterations,
        solver_protocol=(dict(method='adaptive', options=dict(min_sc_iter=0)),),
      )
    if failures:
      raise MBARConvergenceError(
        f'MBAR did not converge in max_iterations={max_iterations}: ' + ' '.join(failures)
      )
    differences = solver.compute_free_energy_differences()
    overlap = np.asarray(solver.compute_overlap()['matrix'], dtype=np.float64)
  delta_f = np.array(differences['Delta_f'][0], dtype=np.float64)
  stderr = np.array(differences['dDelta_f'][0], dtype=np.float64)
  for array in (delta_f, stderr, overlap):
    array.flags.writeable = False
  f_k = np.array(solver.f_k, dtype=np.float64)
  pairwise = adjacent_pair_overlap(u, counts, f_k)
  for array in (pairwise,):
    array.flags.writeable = False
  return MBAREstimate(
    delta_f=delta_f,
    stderr=stderr,
    overlap=overlap,
    adjacent_pair_overlap=pairwise,
    min_adjacent_overlap=float(pairwise.min()),
    num_samples=tuple(int(c) for c in counts),
    reasons=mbar_reasons(float(pairwise.min()), int(counts.min()), chains_per_state),
  )


def adjacent_pair_overlap(u_kn, n_k, f_k) -> np.ndarray:
  """Overlap of each adjacent pair of states on its own: shape (K-1,).

  Entry k is the off-diagonal element of the 2x2 MBAR overlap matrix
  (pymbar's definition, rows summing to 1) of states k and k+1, from their
  samples alone and the MBAR free energies ``f_k`` (K,); the smaller of the
  two directions. Unlike the adjacent elements of the K-state matrix, which
  shrink as closely spaced states share their overlap among many
  neighbours, it grows monotonically as the two states approach (1/2 for
  identical states), so it is the criterion for "every adjacent pair
  overlaps".
  """
  u = np.asarray(u_kn, dtype=np.float64)
  counts = np.asarray(n_k, dtype=np.int64)
  f = np.asarray(f_k, dtype=np.float64)
  starts = np.concatenate([[0], np.cumsum(counts)])
  result = np.empty(u.shape[0] - 1)
  for k in range(u.shape[0] - 1):
    cols = slice(starts[k], starts[k + 2])
    n_pair = counts[k : k + 2].astype(np.float64)
    log_terms = f[k : k + 2, None] - u[k : k + 2, cols]  # (2, n)
    log_denominator = logsumexp(log_terms + np.log(n_pair)[:, None], axis=0)
    log_w = log_terms - log_denominator  # (2, n)
    log_w -= logsumexp(log_w, axis=1, keepdims=True)  # columns of W sum to 1
    w = np.exp(log_w)
    cross = float(np.sum(w[0] * w[1]))
    result[k] = min(cross * n_pair[1], cross * n_pair[0])
  return result
