"""Analytic and calibration checks of systems.estimators (float64 numpy, fixed seeds)."""

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from systems import estimators as est

REPO = Path(__file__).resolve().parents[1]
DIM = 3


def harmonic(center, sigma, offset):
  """Reduced potential u(x) = |x - center|^2 / (2 sigma^2) + offset on x shape (..., DIM),
  with its reduced free energy relative to the standard normal (sigma 1, offset 0)."""

  def u(x):
    return np.sum((x - center) ** 2, axis=-1) / (2.0 * sigma**2) + offset

  return u, -DIM * np.log(sigma) + offset


U_A, F_A = harmonic(0.0, 1.0, 0.0)
U_B, F_B = harmonic(np.array([0.6, 0.0, 0.0]), 1.25, 0.4)
DELTA_F = F_B - F_A


def sample(rng, shape, center, sigma):
  return center + sigma * rng.standard_normal((*shape, DIM))


def works(rng, n_forward, n_reverse, repeats=()):
  """Forward works on A samples and reverse works on B samples, shapes (*repeats, n)."""
  x_a = sample(rng, (*repeats, n_forward), 0.0, 1.0)
  x_b = sample(rng, (*repeats, n_reverse), np.array([0.6, 0.0, 0.0]), 1.25)
  return U_B(x_a) - U_A(x_a), U_A(x_b) - U_B(x_b)


def within(estimate, truth, sigmas=3.0):
  return abs(estimate.value - truth) < sigmas * estimate.stderr


# --- analytic recovery -------------------------------------------------------


def test_two_state_estimators_recover_delta_f():
  w_f, w_r = works(np.random.default_rng(0), 4000, 3000)
  results = {
    'fep_forward': est.fep_forward(w_f),
    'fep_reverse': est.fep_reverse(w_r),
    'bar': est.bar(w_f, w_r),
  }
  for name, result in results.items():
    assert within(result, DELTA_F), (name, result, DELTA_F)
    assert 0.0 < result.stderr < 0.1, (name, result)
  assert results['bar'].num_samples == (4000, 3000)
  # Reverse weights p_A/p_B on B samples: ESS -> 1 / E_B[(p_A/p_B)^2].  In B's standard
  # coordinates p_A = N(m, s^2) per axis, and
  # E[(p/N(0,1))^2] = exp((m/s^2)^2/a - m^2/s^2) / (s^2 sqrt(2a))
  # with a = 1/s^2 - 1/2 (m = 0 on the other axes).
  s, m = 1.0 / 1.25, -0.6 / 1.25
  a = 1.0 / s**2 - 0.5
  second_moment = (1.0 / (s**2 * np.sqrt(2.0 * a))) ** DIM * np.exp(
    (m / s**2) ** 2 / a - m**2 / s**2
  )
  assert results['fep_reverse'].ess == pytest.approx(1.0 / second_moment, rel=0.05)


def test_bar_sign_convention_swaps():
  w_f, w_r = works(np.random.default_rng(1), 500, 700)
  forward, backward = est.bar(w_f, w_r), est.bar(w_r, w_f)
  assert backward.value == pytest.approx(-forward.value, abs=1e-10)
  assert backward.stderr == pytest.approx(forward.stderr, rel=1e-10)


def test_bar_solves_far_from_zero_and_large_works():
  w_f, w_r = works(np.random.default_rng(2), 800, 800)
  shift = 250.0  # offset both states by a constant: Delta F moves by exactly that
  shifted = est.bar(w_f + shift, w_r - shift)
  plain = est.bar(w_f, w_r)
  assert shifted.value == pytest.approx(plain.value + shift, abs=1e-8)
  assert shifted.stderr == pytest.approx(plain.stderr, rel=1e-6)


def test_mbar_with_intermediate_states():
  rng = np.random.default_rng(3)
  lambdas = np.linspace(0.0, 1.0, 4)
  states = [harmonic(np.array([0.6 * t, 0.0, 0.0]), 1.0 + 0.25 * t, 0.4 * t) for t in lambdas]
  n_k = np.array([600, 500, 500, 700])
  x = np.concatenate(
    [sample(rng, (n,), np.array([0.6 * t, 0.0, 0.0]), 1.0 + 0.25 * t) for n, t in zip(n_k, lambdas)]
  )
  u_kn = np.stack([u(x) for u, _ in states])
  truth = np.array([f for _, f in states]) - states[0][1]

  result = est.mbar(u_kn, n_k)

  assert result.delta_f.shape == result.stderr.shape == (4,)
  assert result.delta_f[0] == 0.0 and result.stderr[0] == 0.0
  assert np.all(np.abs(result.delta_f[1:] - truth[1:]) < 3.0 * result.stderr[1:]), (result, truth)
  assert result.num_samples == (600, 500, 500, 700)
  assert result.overlap.shape == (4, 4)
  np.testing.assert_allclose(result.overlap.sum(axis=1), 1.0, atol=1e-10)
  # Each adjacent pair's overlap equals pymbar's 2x2 overlap matrix of a fresh
  # two-state MBAR on that pair's samples alone.
  pymbar = est.import_pymbar()
  starts = np.concatenate([[0], np.cumsum(n_k)])
  for k in range(3):
    cols = slice(starts[k], starts[k + 2])
    pair = pymbar.MBAR(u_kn[k : k + 2, cols], np.asarray(n_k[k : k + 2]))
    o = pair.compute_overlap()['matrix']
    assert result.adjacent_pair_overlap[k] == pytest.approx(min(o[0, 1], o[1, 0]), rel=1e-4)
  assert result.min_adjacent_overlap == result.adjacent_pair_overlap.min()
  assert 0.0 < result.min_adjacent_overlap < 0.5
  assert not result.delta_f.flags.writeable


def test_adjacent_pair_overlap_grows_as_states_approach():
  """Two 1-D Gaussians: the pair overlap rises towards 1/2 as they merge."""
  rng = np.random.default_rng(5)
  values = []
  for shift in (4.0, 2.0, 1.0, 0.25, 0.0):
    x = np.concatenate([rng.normal(0.0, 1.0, 4000), rng.normal(shift, 1.0, 4000)])
    u_kn = np.stack([0.5 * x**2, 0.5 * (x - shift) ** 2])
    values.append(est.adjacent_pair_overlap(u_kn, np.array([4000, 4000]), np.zeros(2))[0])
  assert np.all(np.diff(values) > 0), values
  assert values[-1] == pytest.approx(0.5, abs=1e-9)
  assert values[0] < 0.1


def test_two_state_mbar_equals_bar():
  rng = np.random.default_rng(4)
  x = np.concatenate(
    [sample(rng, (700,), 0.0, 1.0), sample(rng, (400,), np.array([0.6, 0.0, 0.0]), 1.25)]
  )
  u_kn = np.stack([U_A(x), U_B(x)])
  two_state = est.mbar(u_kn, [700, 400])
  bennett = est.bar(u_kn[1, :700] - u_kn[0, :700], u_kn[0, 700:] - u_kn[1, 700:])
  assert two_state.delta_f[1] == pytest.approx(bennett.value, abs=1e-6)
  # pymbar's MBAR error agrees with the BAR formula to leading order in good overlap.
  assert two_state.stderr[1] == pytest.approx(bennett.stderr, rel=0.05)


def test_bar_counts_samples_of_zero_density():
  # A uniform on [0, 1], B uniform on [0, 2] (both densities 1 on their support):
  # Delta F = -ln 2. A samples have w_F = 0; B samples in (1, 2] have w_R = +inf.
  # The BAR equation then solves to exactly ln(m_in / m), m_in of m B samples in A.
  for n, m, m_in in ((500, 400, 200), (300, 1000, 250)):
    w_r = np.concatenate([np.zeros(m_in), np.full(m - m_in, np.inf)])
    result = est.bar(np.zeros(n), w_r)
    assert result.value == pytest.approx(np.log(m_in / m), abs=1e-12)
    assert result.num_samples == (n, m)
  # The same through lbar: normalised q = U[0, 1], p~ = 1 on [0, 2], Z = 2.
  log_q_on_p = np.where(np.arange(400) < 200, 0.0, -np.inf)
  result = est.lbar(np.zeros(500), np.zeros(500), log_q_on_p, np.zeros(400))
  assert result.value == pytest.approx(np.log(2.0), abs=1e-12)
  with pytest.raises(ValueError, match='work_reverse'):
    est.bar(np.zeros(3), np.array([0.0, np.nan]))
  with pytest.raises(ValueError, match='log_q_on_q'):
    est.lbar(np.array([0.0, -np.inf]), np.zeros(2), np.zeros(2), np.zeros(2))


def test_lbar_recovers_log_partition_function():
  rng = np.random.default_rng(5)
  sigma_q, sigma_p, log_scale = 1.1, 0.9, -7.5  # p~(x) = exp(log_scale - |x|^2 / (2 sigma_p^2))
  log_z = log_scale + 0.5 * DIM * np.log(2.0 * np.pi * sigma_p**2)

  def log_q(x):
    return -np.sum(x**2, axis=-1) / (2.0 * sigma_q**2) - 0.5 * DIM * np.log(
      2.0 * np.pi * sigma_q**2
    )

  def log_p(x):
    return log_scale - np.sum(x**2, axis=-1) / (2.0 * sigma_p**2)

  x_q = sample(rng, (3000,), 0.0, sigma_q)
  x_p = sample(rng, (1000,), 0.0, sigma_p)
  result = est.lbar(log_q(x_q), log_p(x_q), log_q(x_p), log_p(x_p))

  assert within(result, log_z), (result, log_z)
  assert 0.0 < result.stderr < 0.05
  # Same flow samples, importance sampling: ln Z = ln mean p~/q.
  assert within(est.importance_sampling(log_p(x_q) - log_q(x_q)), log_z)


# --- importance sampling ----------------------------------------------------


@pytest.mark.parametrize('level', [-1e4, 0.0, 3e5])
def test_importance_sampling_exact_weights(level):
  result = est.importance_sampling(np.full(64, level))
  assert result.value == level
  assert result.ess == 1.0
  assert result.stderr_delta == 0.0
  assert result.stderr < 1e-12
  assert est.ess_fraction(np.full(5, level)) == 1.0


def test_importance_sampling_any_magnitude_and_zero_weights():
  log_w = np.random.default_rng(6).normal(size=500)
  plain = est.importance_sampling(log_w)
  for shift in (-1e4, 1e4):
    moved = est.importance_sampling(log_w + shift)
    assert moved.value == pytest.approx(plain.value + shift, abs=1e-9)
    assert moved.stderr_delta == pytest.approx(plain.stderr_delta, rel=1e-9)
    assert moved.stderr_bootstrap == pytest.approx(plain.stderr_bootstrap, rel=1e-6)
  padded = est.importance_sampling(np.concatenate([log_w, np.full(500, -np.inf)]))
  assert padded.value == pytest.approx(plain.value - np.log(2.0), abs=1e-12)
  assert est.ess_fraction([0.0, 0.0, -np.inf, -np.inf]) == pytest.approx(0.5)


def test_importance_sampling_reports_both_errors_and_larger():
  result = est.importance_sampling(
    np.random.default_rng(7).normal(size=300), num_bootstrap=50, seed=3
  )
  assert result.stderr == max(result.stderr_delta, result.stderr_bootstrap)
  assert result.stderr_bootstrap == pytest.approx(result.stderr_delta, rel=0.4)
  again = est.importance_sampling(
    np.random.default_rng(7).normal(size=300), num_bootstrap=50, seed=3
  )
  assert again == result
  no_boot = est.importance_sampling(np.random.default_rng(7).normal(size=300), num_bootstrap=0)
  assert np.isnan(no_boot.stderr_bootstrap) and no_boot.stderr == no_boot.stderr_delta


@pytest.mark.parametrize('xi', [0.3, 0.7, 1.0])
def test_pareto_khat_recovers_the_tail_shape_of_pareto_weights(xi):
  """Weights U^−ξ (U uniform) are Pareto with shape ξ, and so are their excesses
  over any threshold: k̂ (about 950 tail points at n = 10⁵, error ≈ (1 + ξ)/√950)
  finds ξ, whatever the scale of the weights, and importance_sampling reports it."""
  log_w = -xi * np.log(np.random.default_rng(int(10 * xi)).uniform(size=100_000))
  khat = est.pareto_khat(log_w)
  assert khat == pytest.approx(xi, abs=0.12)
  assert est.pareto_khat(log_w - 1e4) == pytest.approx(khat, abs=1e-9)
  assert est.importance_sampling(log_w, num_bootstrap=0).pareto_khat == khat


def test_pareto_khat_of_gaussian_log_weights_and_of_no_tail():
  """Log-normal weights of log-std ≤ 1 have a light tail (k̂ < 0.5: finite
  variance); zero weights below the tail change nothing; equal weights, or too
  few (n ≤ 20), have no tail to fit."""
  log_w = np.random.default_rng(8).normal(size=4096)
  assert 0.0 < est.pareto_khat(log_w) < 0.5
  padded = np.concatenate([log_w, np.full(10, -np.inf)])
  assert est.pareto_khat(padded) == pytest.approx(est.pareto_khat(log_w), abs=0.02)
  assert np.isnan(est.pareto_khat(np.zeros(1000)))
  assert np.isnan(est.pareto_khat(log_w[:20])) and np.isfinite(est.pareto_khat(log_w[:21]))
  assert est.psis_khat_threshold(10_000) == 0.75 and est.psis_khat_threshold(100_000) == 0.8


def test_fep_directions_are_importance_sampling():
  w = np.random.default_rng(8).normal(1.0, 0.7, size=200)
  forward, reverse, weights = est.fep_forward(w), est.fep_reverse(w), est.importance_sampling(-w)
  assert forward.value == -weights.value == -reverse.value
  assert dataclasses.replace(forward, value=0.0) == dataclasses.replace(weights, value=0.0)
  # Gaussian works: Delta F = mean - var / 2 in the limit.
  assert est.fep_forward(np.full(10, 2.5)).value == pytest.approx(2.5, abs=1e-14)


# --- error-bar calibration --------------------------------------------------

REPEATS = 200


def calibration(values, stderrs, truth):
  values, stderrs = np.asarray(values), np.asarray(stderrs)
  spread = values.std(ddof=1)
  coverage = np.mean(np.abs(values - truth) < 2.0 * stderrs)
  return spread / stderrs.mean(), coverage


def test_importance_sampling_error_bars_are_calibrated():
  rng = np.random.default_rng(9)
  n = 200
  # q = N(0, 1), p~ = N(0.5, 1) scaled by Z = e^1.5: log-weights are Gaussian, ESS ~ e^-0.25.
  x = rng.standard_normal((REPEATS, n))
  log_w = 1.5 + 0.5 * x - 0.125
  results = [est.importance_sampling(row, num_bootstrap=100, seed=i) for i, row in enumerate(log_w)]
  for kind in ('stderr', 'stderr_delta', 'stderr_bootstrap'):
    ratio, coverage = calibration(
      [r.value for r in results], [getattr(r, kind) for r in results], 1.5
    )
    assert 0.8 < ratio < 1.25, (kind, ratio)
    assert 0.89 < coverage < 0.99, (kind, coverage)


def test_bar_error_bars_are_calibrated():
  w_f, w_r = works(np.random.default_rng(10), 150, 100, repeats=(REPEATS,))
  results = [est.bar(f, r) for f, r in zip(w_f, w_r)]
  ratio, coverage = calibration([r.value for r in results], [r.stderr for r in results], DELTA_F)
  assert 0.8 < ratio < 1.25, ratio
  assert 0.89 < coverage < 0.99, coverage


# --- reliability ------------------------------------------------------------


def test_importance_sampling_is_judged_unreliable_where_its_error_bar_fails():
  """q = N(0, 1), p~ = N(m, 1) (Z = 1): ln w = m z − m²/2, true ESS e^{−m²}, n = 1000.

  m = 1 (about 370 effective samples): judged reliable, 2σ covers ~95 %.
  m = 3 (a dozen effective samples by the samples' own ESS, one in truth):
  judged unreliable, and the 2σ interval covers the truth only ~60 % of the time.
  """
  rng = np.random.default_rng(20)
  for m, reliable, coverage_range in ((1.0, True, (0.9, 1.0)), (3.0, False, (0.0, 0.8))):
    log_w = m * rng.standard_normal((REPEATS, 1000)) - 0.5 * m * m
    results = [est.importance_sampling(row, num_bootstrap=0) for row in log_w]
    _, coverage = calibration([r.value for r in results], [r.stderr for r in results], 0.0)
    assert coverage_range[0] < coverage < coverage_range[1], (m, coverage)
    judged = np.mean([r.reliable for r in results])
    assert (judged == 1.0) if reliable else (judged < 0.05), (m, judged)
  by_ess, by_spread = results[0].reasons
  assert 'effective samples of 1000' in by_ess and 'need >= 100' in by_ess
  assert by_spread.startswith('log-weight spread: ESS ')
  # The FEP directions are importance sampling and are judged alike.
  assert est.fep_forward(-log_w[0]).reasons == results[0].reasons


def test_the_spread_rule_refuses_what_the_samples_own_ess_passes():
  """ln w = m z − m²/2 with m = 2.6 and n = 20,000: the true ESS e^{−m²} gives 23
  effective samples, but in most repeats the samples' own ESS counts over 100 (the tail
  that carries the mean is unsampled). Those estimates lie low and their 2σ intervals
  cover the truth in about 80 %; n·exp(−σ₊²) refuses every one."""
  m, n = 2.6, 20_000
  log_w = m * np.random.default_rng(22).standard_normal((REPEATS, n)) - 0.5 * m * m
  results = [est.importance_sampling(row, num_bootstrap=0) for row in log_w]
  passed = [r for r in results if r.ess * n >= est.MIN_EFFECTIVE_SAMPLES]
  assert len(passed) > REPEATS / 2
  z = np.array([r.value / r.stderr for r in passed])  # the truth is ln Z = 0
  assert np.mean(np.abs(z) < 2) < 0.85 and np.mean(z) < -0.8
  assert not any(r.reliable for r in results)
  by_spread = np.array([r.lognormal_ess * n for r in results])
  assert np.median(by_spread) == pytest.approx(n * np.exp(-m * m), rel=0.1)  # 23
  assert by_spread.max() < 50  # σ₊² ± 0.1 from the 10,000 weights above the median


def test_weighted_rules_count_effective_samples_two_ways():
  assert est.weighted_reasons(0.1, 1000) == ()
  assert est.weighted_reasons(0.1, 1000, lognormal_ess=0.1) == ()
  (reason,) = est.weighted_reasons(2e-4, 16384)
  assert reason.startswith('ESS 0.0002 (3.28 effective samples of 16384')
  (reason,) = est.weighted_reasons(0.1, 1000, lognormal_ess=0.05)
  assert reason.startswith('log-weight spread: ESS 0.05 for log-normal weights of that spread (50 ')


def test_lognormal_ess_by_hand():
  """σ₊² is the mean square of ln w above its median, over the nonzero weights. Weights
  1, e and two zeros: median 1/2, σ₊² = 1/4, so (2/4)·e^{−1/4}. A very low log-weight
  (a near-overlap, no weight) moves the median, not the spread above it: ln w = −10⁴, 0,
  1, 2, 3 has median 1 and σ₊² = (1 + 4)/2, where Var ln w would be 1.6·10⁷. Weights
  bounded above (ln w ≤ 0, a long low tail) keep a small σ₊."""
  r = est.importance_sampling(np.array([0.0, 1.0, -np.inf, -np.inf]), num_bootstrap=0)
  assert r.lognormal_ess == pytest.approx(0.5 * np.exp(-0.25), rel=1e-12)
  r = est.importance_sampling(np.array([-1e4, 0.0, 1.0, 2.0, 3.0]), num_bootstrap=0)
  assert r.lognormal_ess == pytest.approx(np.exp(-2.5), rel=1e-12)
  r = est.importance_sampling(np.full(8, 3.0), num_bootstrap=0)
  assert r.lognormal_ess == 1.0  # equal weights: no spread
  bounded = -np.random.default_rng(3).exponential(2.0, 4000)  # Var 4, σ₊² about 0.4
  r = est.importance_sampling(bounded, num_bootstrap=0)
  assert r.reliable and r.lognormal_ess > np.exp(-1) and np.var(bounded) > 3.5


def test_bar_overlap_is_pymbars_two_state_overlap():
  rng = np.random.default_rng(21)
  x = np.concatenate(
    [sample(rng, (700,), 0.0, 1.0), sample(rng, (400,), np.array([2.0, 0.0, 0.0]), 1.25)]
  )
  u_kn = np.stack([U_A(x), harmonic(np.array([2.0, 0.0, 0.0]), 1.25, 0.4)[0](x)])
  bennett = est.bar(u_kn[1, :700] - u_kn[0, :700], u_kn[0, 700:] - u_kn[1, 700:])
  matrix = est.mbar(u_kn, [700, 400]).overlap
  assert bennett.overlap == pytest.approx(min(matrix[0, 1], matrix[1, 0]), rel=1e-6)
  # Identical states: 1/2 for equal counts, else the smaller share min(n) / (n_F + n_R).
  assert est.bar(np.zeros(40), np.zeros(40)).overlap == pytest.approx(0.5)
  assert est.bar(np.zeros(50), np.zeros(30)).overlap == pytest.approx(30 / 80)


def test_bar_is_judged_unreliable_where_its_error_bar_fails():
  """A = N(0, 1), B = N(d, 0.3²) in 1-D, ΔF = ln(1/0.3).

  d = 1.5 with 100 samples per state (overlap ~0.15, 30 samples of overlap)
  and d = 4 with 10⁴ per state (overlap ~1.5e-3, far below the fraction 0.03,
  but ~30 samples of overlap): reliable, 2σ covers ~95 %. d = 4 with 20 per
  state (overlap ~1e-7) and d = 4.5 with 10³ per state (~0.3 samples of
  overlap): unreliable, and the 2σ interval covers the truth in 10-50 % of
  the repeats.
  """
  rng = np.random.default_rng(22)
  width, truth = 0.3, np.log(1 / 0.3)
  cases = (
    (1.5, 100, True, (0.9, 1.0)),
    (4.0, 10_000, True, (0.85, 1.0)),
    (4.0, 20, False, (0, 0.3)),
    (4.5, 1000, False, (0, 0.75)),
  )
  for d, n, reliable, coverage_range in cases:
    x_a = rng.standard_normal((REPEATS, n))
    x_b = d + width * rng.standard_normal((REPEATS, n))
    x = np.stack([x_a, x_b])
    works_ab = 0.5 * ((x - d) / width) ** 2 - 0.5 * x**2  # u_B − u_A on both samples
    results = [est.bar(f, -r) for f, r in zip(*works_ab)]
    _, coverage = calibration([r.value for r in results], [r.stderr for r in results], truth)
    assert coverage_range[0] < coverage < coverage_range[1], (d, coverage)
    judged = np.mean([r.reliable for r in results])
    assert (judged == 1.0) if reliable else (judged < 0.05), (d, judged)
  assert 'samples of overlap; need >= 10' in results[0].reasons[0]


def test_bar_and_lbar_are_unreliable_with_more_than_one_percent_infinite_works():
  """Finite works lost as +inf (a numerical failure of a map or flow) bias ΔF by
  about ln(1 − φ) for a fraction φ lost: within the error bar at the allowed 1 %
  with 2000 samples per state, 9σ off at 10 %."""
  w_f, w_r = works(np.random.default_rng(23), 2000, 2000)
  exact = est.bar(w_f, w_r)
  assert exact.reasons == ()
  shifts = {}
  for num_inf, reliable in ((200, False), (20, True), (21, False)):  # 1 % of 2000 allowed
    result = est.bar(w_f, np.concatenate([w_r[num_inf:], np.full(num_inf, np.inf)]))
    assert result.num_infinite == (0, num_inf) and result.reliable == reliable
    shifts[num_inf] = result.value - exact.value
    assert shifts[num_inf] == pytest.approx(np.log(1 - num_inf / 2000), rel=0.1)
  assert abs(shifts[20]) < exact.stderr < abs(shifts[200]) / 5
  assert result.reasons == (
    "21 of 2000 reverse works infinite (samples outside the other state's support; "
    'at most 1% allowed)',
  )
  # The real LBAR failure: 2512 of 3200 target samples outside the flow's support.
  log_q_on_p = np.where(np.arange(3200) < 2512, -np.inf, 0.0)
  lbar = est.lbar(np.zeros(100), np.zeros(100), log_q_on_p, np.zeros(3200))
  assert not lbar.reliable and '2512 of 3200 reverse works infinite' in lbar.reasons[-1]


def test_mbar_is_unreliable_when_an_adjacent_pair_barely_overlaps():
  rng = np.random.default_rng(24)
  x = np.concatenate([rng.normal(0.0, 1.0, 300), rng.normal(1.0, 1.0, 300), rng.normal(7, 1, 300)])
  u_kn = np.stack([0.5 * (x - c) ** 2 for c in (0.0, 1.0, 7.0)])
  result = est.mbar(u_kn, [300, 300, 300])
  assert not result.reliable
  assert result.reasons == (
    f'smallest adjacent-pair overlap {result.min_adjacent_overlap:.2g} (need >= 0.03)',
  )
  assert result.adjacent_pair_overlap[0] > 0.03 > result.adjacent_pair_overlap[1]
  assert est.mbar(u_kn[:2, :600], [300, 300]).reliable


# --- pymbar cross-check and import hygiene -----------------------------------


@pytest.mark.parametrize('sizes', [(300, 300), (500, 120), (60, 900)])
def test_bar_matches_pymbar(sizes):
  w_f, w_r = works(np.random.default_rng(11), *sizes)
  reference = est.import_pymbar().other_estimators.bar(w_f, w_r)
  ours = est.bar(w_f, w_r)
  assert ours.value == pytest.approx(reference['Delta_f'], abs=1e-6)
  assert ours.stderr == pytest.approx(reference['dDelta_f'], rel=1e-3)


def run_fresh_python(code):
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_ENABLE_X64', 'PYMBAR_DISABLE_JAX')}
  env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 0, done.stderr
  return done.stdout


def test_mbar_leaves_jax_x64_off():
  out = run_fresh_python(
    'import numpy as np\n'
    'import systems.estimators as est\n'
    'import jax\n'
    'x = np.random.default_rng(0).normal(size=200)\n'
    'res = est.mbar(np.stack([x**2 / 2, (x - 0.3)**2 / 2]), [100, 100])\n'
    'import pymbar.mbar_solvers\n'
    'print(jax.config.jax_enable_x64, pymbar.mbar_solvers.use_jit)\n'
  )
  assert out.split() == ['False', 'False']


def test_package_import_does_not_import_pymbar():
  out = run_fresh_python(
    'import sys\n'
    'import flows, systems.estimators, systems, systems.sampler, systems.einstein\n'
    "print('pymbar' in sys.modules)\n"
  )
  assert out.split() == ['False']


# --- bad input ---------------------------------------------------------------

GOOD = np.array([0.1, -0.3, 0.7])


@pytest.mark.parametrize(
  'call, match',
  [
    (lambda: est.importance_sampling([]), 'log_weights'),
    (lambda: est.importance_sampling([1.0]), 'log_weights'),
    (lambda: est.importance_sampling(np.ones((2, 3))), 'log_weights'),
    (lambda: est.importance_sampling([0.0, np.nan]), 'log_weights'),
    (lambda: est.importance_sampling([0.0, np.inf]), 'log_weights'),
    (lambda: est.importance_sampling([-np.inf, -np.inf]), 'log_weights'),
    (lambda: est.importance_sampling(GOOD, num_bootstrap=1), 'num_bootstrap'),
    (lambda: est.importance_sampling(GOOD, num_bootstrap=-2), 'num_bootstrap'),
    (lambda: est.importance_sampling(GOOD, num_bootstrap=2.5), 'num_bootstrap'),
    (lambda: est.ess_fraction([np.nan, 0.0]), 'log_weights'),
    (lambda: est.pareto_khat([0.0, np.inf]), 'log_weights'),
    (lambda: est.fep_forward([0.0, -np.inf]), 'work_forward'),
    (lambda: est.fep_reverse([0.0, np.nan]), 'work_reverse'),
    (lambda: est.bar(GOOD, [0.0, -np.inf]), 'work_reverse'),
    (lambda: est.bar(GOOD, [np.inf, np.inf]), 'work_reverse'),
    (lambda: est.bar([[0.0, 1.0]], GOOD), 'work_forward'),
    (lambda: est.lbar(GOOD, GOOD[:2], GOOD, GOOD), 'log_q_on_q and log_p_on_q'),
    (lambda: est.lbar(GOOD, GOOD, GOOD, [0.0, np.nan, 1.0]), 'log_p_on_p'),
    (lambda: est.mbar(np.zeros((1, 4)), [4]), 'u_kn'),
    (lambda: est.mbar(np.zeros(4), [4]), 'u_kn'),
    (lambda: est.mbar(np.full((2, 4), np.nan), [2, 2]), 'u_kn'),
    (lambda: est.mbar(np.zeros((2, 4)), [2, 3]), 'n_k'),
    (lambda: est.mbar(np.zeros((2, 4)), [2.0, 2.0]), 'n_k'),
    (lambda: est.mbar(np.zeros((2, 4)), [5, -1]), 'n_k'),
    (lambda: est.mbar(np.zeros((2, 4)), [4]), 'n_k'),
  ],
)
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_bar_error_counts_the_correlation_of_reverse_chains():
  """Reverse works from 8 AR(1) chains (ρ = 0.9, g = 19) time-major: BAR's spread
  over repeats matches the error with reverse_chains, and is ~4× the error that
  takes the samples as independent."""
  rng = np.random.default_rng(5)
  chains, length, rho = 8, 500, 0.9
  values, naive, aware, g = [], [], [], []
  for _ in range(60):
    noise = rng.standard_normal((chains, length))
    series = np.zeros_like(noise)
    for t in range(1, length):
      series[:, t] = rho * series[:, t - 1] + np.sqrt(1 - rho**2) * noise[:, t]
    w_r = 0.5 - series.T.reshape(-1)  # time-major; ΔF = 0 with unit-variance works
    w_f = 0.5 + rng.standard_normal(8000)
    values.append(est.bar(w_f, w_r).value)
    naive.append(est.bar(w_f, w_r).stderr)
    correlated = est.bar(w_f, w_r, reverse_chains=chains)
    aware.append(correlated.stderr)
    g.append(correlated.statistical_inefficiency)
  spread = np.std(values)
  assert 0.75 < spread / np.mean(aware) < 1.33, (spread, np.mean(aware))
  assert spread / np.mean(naive) > 2.5
  assert 12 < np.mean(g) < 25  # (1 + ρ)/(1 − ρ) = 19
  assert est.bar(w_f, w_r).statistical_inefficiency == 1.0
  with pytest.raises(ValueError, match='reverse_chains=7'):
    est.bar(w_f, w_r, reverse_chains=7)


# --- MBAR solver -------------------------------------------------------------


def spring_ladder(num_states=60, per_state=40, dim=30):
  """Harmonic states of springs 1..100 on a sin² ladder: (u_kn, n_k, exact f_K − f_0)."""
  rng = np.random.default_rng(0)
  springs = 1.0 + 99.0 * np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, num_states)) ** 2
  x = np.concatenate([rng.normal(0.0, k**-0.5, (per_state, dim)) for k in springs])
  u_kn = 0.5 * springs[:, None] * np.sum(x * x, axis=-1)[None]
  return u_kn, np.full(num_states, per_state), 0.5 * dim * np.log(springs[-1])


def test_mbar_solve_prints_and_logs_nothing(capfd, caplog):
  u_kn, n_k, exact = spring_ladder()
  pymbar = est.import_pymbar()
  with caplog.at_level(logging.WARNING):
    pymbar.MBAR(u_kn, n_k)  # pymbar's default protocol: hybr fails first, and says so
  assert 'Failed to reach a solution to within tolerance with hybr' in caplog.text
  capfd.readouterr()
  caplog.clear()
  with caplog.at_level(logging.DEBUG):
    result = est.mbar(u_kn, n_k)
  assert caplog.records == []
  assert capfd.readouterr() == ('', '')
  assert abs(result.delta_f[-1] - exact) < 3.0 * result.stderr[-1]


def test_mbar_that_cannot_converge_raises():
  u_kn, n_k, _ = spring_ladder()
  with pytest.raises(est.MBARConvergenceError, match='did not converge in max_iterations=1'):
    est.mbar(u_kn, n_k, max_iterations=1)
  with pytest.raises(ValueError, match='max_iterations=0'):
    est.mbar(u_kn, n_k, max_iterations=0)


def test_mbar_is_unreliable_with_few_decorrelated_samples_per_chain():
  need = est.MIN_CHAIN_SAMPLES
  assert est.mbar_reasons(0.3, 2 * need, 2) == ()
  assert est.mbar_reasons(0.3, 1, None) == ()  # independent samples: no chain rule
  assert est.mbar_reasons(0.3, 2 * need - 1, 2) == (
    f'{2 * need - 1} decorrelated samples in the sparsest state from 2 chains, '
    f'{(2 * need - 1) / 2:.3g} per chain (need >= {need} per chain)',
  )
  assert len(est.mbar_reasons(0.01, 2 * need - 1, 2)) == 2
  u_kn, n_k, _ = spring_ladder(num_states=6, per_state=3 * need - 3, dim=3)
  result = est.mbar(u_kn, n_k, chains_per_state=3)
  assert result.min_adjacent_overlap >= est.MIN_OVERLAP
  assert result.reasons == est.mbar_reasons(result.min_adjacent_overlap, 3 * need - 3, 3)
  assert not result.reliable
  assert est.mbar(u_kn, n_k).reliable


def test_mbar_is_judged_unreliable_where_short_chains_fail_its_error_bar():
  """Four unit Gaussian states 0.6 apart (true Δf = 0), each sampled by two AR(1)
  chains of correlation 0.95 (g = 39) started in equilibrium and subsampled
  every ⌈g⌉-th step, g estimated from the chains (as systems.einstein does).

  24 steps per chain: g is underestimated, a few "decorrelated" samples per
  chain, judged unreliable; the 2σ interval covers 0 in ~65 % of repeats.
  2048 steps: ~40 samples per chain, judged reliable, 2σ coverage ~95 %.
  """
  rng = np.random.default_rng(30)
  centres, rho, chains, repeats = 0.6 * np.arange(4), 0.95, 2, 100
  for steps, reliable, coverage_range in ((24, False, (0.0, 0.8)), (2048, True, (0.85, 1.0))):
    x = rng.standard_normal((repeats, centres.size, chains))
    z = np.empty((*x.shape, steps))
    for t in range(steps):
      x = rho * x + np.sqrt(1.0 - rho**2) * rng.standard_normal(x.shape)
      z[..., t] = x
    results = []
    for series in z:
      g = est.statistical_inefficiency(series).mean(axis=1)
      kept = [c + s[:, :: int(np.ceil(gk))].reshape(-1) for c, s, gk in zip(centres, series, g)]
      samples = np.concatenate(kept)
      u_kn = 0.5 * (samples[None] - centres[:, None]) ** 2
      results.append(est.mbar(u_kn, np.array([k.size for k in kept]), chains_per_state=chains))
    z_scores = np.array([r.delta_f[-1] / r.stderr[-1] for r in results])
    coverage = np.mean(np.abs(z_scores) < 2.0)
    assert coverage_range[0] < coverage < coverage_range[1], (steps, coverage)
    judged = np.mean([r.reliable for r in results])
    assert (judged > 0.95) if reliable else (judged == 0.0), (steps, judged)
