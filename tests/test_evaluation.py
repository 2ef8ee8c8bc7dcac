"""Evaluation on a case with a known answer, and the config files' errors."""

import json
import math

import jax
import numpy as np
import pytest

from experiments import evaluation, training
from experiments.configs import lennard_jones, monatomic_water
from systems import convention, estimators, get_system


def test_flow_targeting_its_own_density_has_unit_ess_and_exact_log_z(perturb):
  """Target p̃(x) = e^c q(x): every weight is e^c, so ESS = 1 and ln Z = c.

  The energies come from `flow.log_prob` (inverse pass) and the log q from
  `sample_and_log_prob` (forward pass), so this also checks that the two
  agree on a trained-looking (randomised) flow.
  """
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  setup, state = training.build(config)
  flow = setup.flow(perturb(state['params'], 0.05))
  c = 3.7
  beta = setup.system.beta

  def sample_fn(key, n):
    x, log_q = flow.sample_and_log_prob(key, n)
    return x, log_q, -(flow.log_prob(x) + c) / beta

  samples = evaluation.draw_samples(sample_fn, jax.random.key(1), 300, 128)
  assert samples['log_q'].shape == (300,)
  row = evaluation.summarize(samples, setup.system)
  assert row['ess'] == pytest.approx(1.0, abs=1e-6)
  assert row['log_z'] == pytest.approx(c, abs=2e-3)
  assert row['log_z_stderr'] < 1e-3
  n, volume = setup.system.num_particles, setup.system.volume
  expected = (-(c + math.log(volume)) + math.lgamma(n + 1)) / n + 3 * math.log(
    setup.system.thermal_wavelength
  )
  assert row['beta_f_per_particle'] == pytest.approx(expected, abs=3e-4)
  assert expected == pytest.approx(
    convention.beta_f_per_particle(c, n, volume, setup.system.thermal_wavelength)
  )
  energies = samples['energy']
  assert row['mean_energy_flow'] == pytest.approx(np.mean(energies))
  # ln w = c for every sample of the exact flow: E_q[ln w] = ln Z, no spread.
  assert row['mean_log_weight'] == pytest.approx(c, abs=1e-4)
  assert row['log_weight_std'] < 1e-4


def _samples_with_log_weights(system, log_w):
  """log q = 0 and the energies that give importance log-weights `log_w`."""
  return dict(log_q=np.zeros_like(log_w), energy=-log_w / system.beta)


def test_summarize_judges_the_estimate_and_says_why_it_is_unreliable():
  system = get_system('lj_32')
  z = np.random.default_rng(0).standard_normal(16384)
  good = evaluation.summarize(_samples_with_log_weights(system, 0.5 * z), system)
  assert good['reliable'] and good['unreliable_reasons'] == []
  assert 'UNRELIABLE' not in evaluation.result_lines(good, 'lj_32')
  bad = evaluation.summarize(_samples_with_log_weights(system, 4.0 * z), system)
  assert bad['ess'] * bad['num_samples'] < 100
  assert not bad['reliable']
  by_ess, by_spread = bad['unreliable_reasons']  # both rules fail at Var ln w = 16
  assert 'effective samples of 16384' in by_ess
  assert by_spread.startswith('log-weight spread') and bad['lognormal_ess'] < 1e-6
  assert good['lognormal_ess'] == pytest.approx(np.exp(-0.25), rel=0.03)
  assert np.isfinite(bad['beta_f_per_particle'])  # the estimate is kept, and judged
  lines = evaluation.result_lines(dict(bad, step=7), 'lj_32').splitlines()
  assert lines[0].startswith('lj_32: βF/N = ') and '(step 7)' in lines[0]
  assert lines[1] == f'UNRELIABLE: {by_ess}; {by_spread}'
  json.dumps(bad)  # JSON-ready


def test_mean_log_weight_is_the_reverse_kl_below_ln_z():
  # ln w ~ N(μ, s²): ln Z = ln E[w] = μ + s²/2, so ln Z − E_q[ln w] = s²/2 (the reverse KL);
  # a sample of zero weight (energy +∞) counts in ln Z, not in the mean of ln w.
  system = get_system('lj_32')
  mu, s = 1.5, 0.5
  log_w = mu + s * np.random.default_rng(1).standard_normal(65536)
  samples = _samples_with_log_weights(system, np.append(log_w, 0.0))
  samples['energy'][-1] = np.inf
  row = evaluation.summarize(samples, system)
  assert row['num_zero_weight'] == 1
  assert row['mean_log_weight'] == pytest.approx(np.mean(log_w))
  assert row['log_weight_std'] == pytest.approx(np.std(log_w))
  assert row['mean_log_weight'] == pytest.approx(mu, abs=0.01)
  assert row['log_weight_std'] == pytest.approx(s, rel=0.01)
  assert row['log_z'] - row['mean_log_weight'] == pytest.approx(s**2 / 2, abs=0.01)
  # The tail's shape is the zero-weight sample's as well (log-weights to ~1e-6).
  khat = estimators.pareto_khat(np.append(log_w, -np.inf))
  assert row['pareto_khat'] == pytest.approx(khat, abs=1e-4) and khat < 0.5


def test_summarize_of_only_non_finite_samples_says_so_instead_of_failing():
  system = get_system('lj_32')
  samples = dict(
    log_q=np.array([0.0, np.nan, 0.0, -1.0]),
    energy=np.array([np.inf, 1.0, np.nan, np.inf]),
  )
  with pytest.warns(UserWarning, match='4 of 4 evaluation samples'):
    row = evaluation.summarize(samples, system)
  # Energy +inf is a zero weight (kept); NaN energy or log q is left out.
  counts = (row['num_samples'], row['num_zero_weight'], row['num_nonfinite'])
  assert counts == (2, 2, 2) and not row['reliable']
  assert np.isnan(row['beta_f_per_particle']) and np.isnan(row['ess'])
  (reason,) = row['unreliable_reasons']
  assert 'non-finite energy (3) or log-probability (1)' in reason
  assert 'overlapping particles' in reason and 'diverged flow' in reason
  assert 'UNRELIABLE: 4 of 4' in evaluation.result_lines(row, 'lj_32')


def test_draw_samples_rejects_bad_sizes():
  with pytest.raises(ValueError, match='num_samples=0'):
    evaluation.draw_samples(None, jax.random.key(0), 0, 10)


@pytest.mark.parametrize(
  'module, arg, message',
  [
    (monatomic_water, 'mw_cubic_9,cpu', "Unknown system 'mw_cubic_9'.*mw_cubic_8"),
    (monatomic_water, 'mw_cubic_8,gpu', "Unknown variant 'gpu'.*cpu"),
    (lennard_jones, 'mw_cubic_8', "Unknown system 'mw_cubic_8'.*lj_32"),
    (lennard_jones, '', 'must be "<system>\\[,<variant>\\]"'),
  ],
)
def test_config_errors_name_the_bad_value(module, arg, message):
  with pytest.raises(ValueError, match=message):
    module.get_config(arg)


def test_paper_variant_is_the_published_setup():
  config = lennard_jones.get_config('lj_256,paper')
  assert (
    config.model.transformer.num_layers,
    config.model.transformer.num_bins,
    config.model.transformer.embedding_size,
    config.model.transformer.num_heads,
    config.model.transformer.num_blocks,
    config.model.transformer.num_frequencies,
  ) == (24, 16, 256, 2, 2, 16)
  assert (
    config.train.batch_size,
    config.train.learning_rate,
    tuple(config.train.lr_decay_steps),
    config.train.lr_decay_factor,
    config.train.max_gradient_norm,
    config.train.num_steps,
  ) == (128, 7e-5, (250_000, 500_000), 0.1, 1e4, 1_000_000)
