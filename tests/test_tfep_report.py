"""The TFEP report (scripts.tfep_report, scripts.reporting.tfep_*): its MBAR reference (error
from independent chains), table, structure."""

import os
import re
import shutil
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from flows import CouplingLayer, targeted
from scripts import observables, tfep_report
from scripts.reporting import tfep_estimates, tfep_structure
from systems import sampler
from systems.box import wrap


def harmonic_ladder(num_chains, num_times, rho, seed=0):
  """1-D states u_k(x) = κ_k x²/2 (κ from 1 to 4), exact ΔF = ½ ln 4; each chain
  an AR(1) series of correlation rho, stored time-major (sample t·C + c)."""
  rng = np.random.default_rng(seed)
  kappa = np.array([1.0, 1.6, 2.5, 4.0])
  z = np.empty((len(kappa), num_times, num_chains))
  z[:, 0] = rng.standard_normal((len(kappa), num_chains))
  for t in range(1, num_times):
    z[:, t] = rho * z[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(
      (len(kappa), num_chains)
    )
  x = z.reshape(len(kappa), -1) / np.sqrt(kappa)[:, None]  # (K, n)
  reduced = 0.5 * kappa[:, None, None] * x[None] ** 2  # u[k, l, i]
  return dict(reduced=reduced, x=x, kappa=kappa), 0.5 * np.log(kappa[-1] / kappa[0])


def test_reference_error_covers_correlated_chains():
  data, exact = harmonic_ladder(num_chains=40, num_times=250, rho=0.95)
  ref = tfep_estimates.reference(data, num_chains=40)
  assert ref['num_groups'] == 10 and ref['samples_per_state'] == 10_000
  # x² decorrelates with ρ², so g = (1 + ρ²)/(1 − ρ²) ≈ 19.5 and the true
  # error is ≈ 4.4× pymbar's, which takes the samples as independent
  assert ref['stderr'] > 2 * ref['pymbar_stderr']
  assert abs(ref['value'] - exact) < 4 * ref['stderr']


def test_reference_error_matches_pymbar_for_independent_samples():
  data, exact = harmonic_ladder(num_chains=40, num_times=250, rho=0.0, seed=1)
  ref = tfep_estimates.reference(data, num_chains=40)
  assert 0.4 < ref['stderr'] / ref['pymbar_stderr'] < 2.0  # 10 groups: ±25 % scatter
  assert abs(ref['value'] - exact) < 4 * ref['stderr']


def test_reference_rejects_samples_not_time_major_over_the_chains():
  data, _ = harmonic_ladder(num_chains=4, num_times=5, rho=0.0)
  with pytest.raises(ValueError, match='num_chains=3'):
    tfep_estimates.reference(data, num_chains=3)


def test_variance_ratio_interval_has_its_coverage():
  low, high = tfep_estimates.variance_ratio_interval(1.0, 5)
  np.testing.assert_allclose([1 / low, high], [6.388, 6.388], rtol=1e-3)  # F(4, 4) 95 %
  rng = np.random.default_rng(0)
  true_ratio, k, covered = 4.0, 10, 0
  for _ in range(2000):
    a = rng.normal(0.0, np.sqrt(true_ratio), k)
    b = rng.normal(0.0, 1.0, k)
    low, high = tfep_estimates.variance_ratio_interval(a.var(ddof=1) / b.var(ddof=1), k)
    covered += low <= true_ratio <= high
  assert 0.87 < covered / 2000 < 0.93


def harmonic_table_inputs():
  """(config, data, works, exact ΔF) of the harmonic ladder with held-out works:
  plain ones, and mapped ones 10 % off the exact map x -> x √(κ_A/κ_B)."""
  data, exact = harmonic_ladder(num_chains=10, num_times=1000, rho=0.0, seed=2)
  num_train = 1000
  kappa, held = data['kappa'], slice(num_train, None)
  x_a, y_b, u = data['x'][0, held], data['x'][-1, held], data['reduced']
  scale = 1.1 * np.sqrt(kappa[0] / kappa[-1])
  works = dict(
    step=0,
    plain_forward=u[-1, 0, held] - u[0, 0, held],
    plain_reverse=u[0, -1, held] - u[-1, -1, held],
    mapped_forward=0.5 * kappa[-1] * (scale * x_a) ** 2 - 0.5 * kappa[0] * x_a**2 - np.log(scale),
    mapped_reverse=0.5 * kappa[0] * (y_b / scale) ** 2 - 0.5 * kappa[-1] * y_b**2 + np.log(scale),
  )
  data.update(parameters=kappa, acceptance=np.ones(4), statistical_inefficiency=np.ones(4))
  config = ml_collections.ConfigDict(
    dict(
      benchmark='harmonic',
      variant='test',
      sampling=dict(num_chains=10, num_train=num_train),
      eval=dict(sample_sizes=(1000, 3000), num_subsets=3),
    )
  )
  return config, data, works, exact


def test_table_uses_every_disjoint_block_and_agrees_with_the_exact_delta_f():
  config, data, works, exact = harmonic_table_inputs()
  table = tfep_estimates.make_table(config, data, works)
  assert [row['num_subsets'] for row in table['rows']] == [9, 3]  # 9000 held out
  for row in table['rows']:
    for method in tfep_estimates.METHODS:
      stats = row[method]
      assert abs(stats['mean'] - exact) < 4 * stats['std'] / np.sqrt(row['num_subsets'])
  # per-sample work std ≈ 0.15 kT mapped against ≈ 2 kT plain
  assert table['rows'][0]['BAR_over_LBAR_variance'] > 10
  assert abs(table['reference']['value'] - exact) < 4 * table['reference']['stderr']

  assert all(
    row[m]['reliable_fraction'] == 1.0 for row in table['rows'] for m in tfep_estimates.METHODS
  )
  assert table['reference']['reliable']
  assert not re.search(r'\(\d+ % reliable\)', tfep_report.markdown(table))

  config.eval.sample_sizes = (6000,)
  with pytest.raises(ValueError, match='n = 6000'):
    tfep_estimates.make_table(config, data, works)


def test_dissipated_work_matches_the_harmonic_states_and_mbar_uses_the_ladders_blocks():
  config, data, works, exact = harmonic_table_inputs()
  # Only the first 2000 held-out samples of every state are the ladder's: staged MBAR
  # has two blocks of 1000 and none of 3000; the other methods keep all 9000.
  data['reduced'] = data['reduced'][:, :, : config.sampling.num_train + 2000]
  table = tfep_estimates.make_table(config, data, works)
  small, large = table['rows']
  assert (small['num_subsets'], small['MBAR_subsets'], len(small['MBAR']['values'])) == (9, 2, 2)
  assert (large['num_subsets'], large['MBAR_subsets'], large['MBAR']) == (3, 0, None)
  assert '| — |' in tfep_report.markdown(table)
  # κ_A = 1, κ_B = 4, map scale s = 0.55: ⟨W_AB⟩ = (κ_B/κ_A − 1)/2 = 1.5 unmapped and
  # (κ_B s²/κ_A − 1)/2 − ln s mapped; ⟨W_BA⟩ = (κ_A/κ_B − 1)/2 and (κ_A/(κ_B s²) − 1)/2 + ln s.
  s = 0.55
  expected = dict(
    plain_forward=1.5 - exact,
    plain_reverse=-0.375 + exact,
    mapped_forward=(4 * s**2 - 1) / 2 - np.log(s) - exact,
    mapped_reverse=(1 / (4 * s**2) - 1) / 2 + np.log(s) + exact,
  )
  dissipation = table['dissipation']
  ref_error = abs(table['reference']['value'] - exact)
  for name, value in expected.items():  # 9000 samples: ± 0.07 kT unmapped, ± 0.005 mapped
    tolerance = (0.1 if name.startswith('plain') else 0.01) + ref_error
    assert abs(dissipation[name] - value) < tolerance, name
  assert min(dissipation.values()) > 0 and dissipation['mapped_forward'] < 0.05


def test_table_reports_the_share_of_subsets_judged_reliable():
  config, data, works, _ = harmonic_table_inputs()
  config.eval.sample_sizes = (1000,)
  # 2 % of the mapped reverse works lost as +inf in the first 3 of 9 subsets
  # (a failing map), and forward works of a state B far wider than A (weights
  # e^{1.5 x²}, infinite variance): a sample or two carry each FEP subset.
  works['mapped_reverse'][np.arange(3)[:, None] * 1000 + np.arange(20)] = np.inf
  works['plain_forward'] = -works['plain_forward']
  table = tfep_estimates.make_table(config, data, works)
  (row,) = table['rows']
  assert row['LBAR']['reliable_fraction'] == pytest.approx(6 / 9)
  assert row['LBAR']['example_unreliable_reason'].startswith('20 of 1000 reverse works infinite')
  assert row['FEP']['reliable_fraction'] == 0.0
  assert 'effective samples of 1000' in row['FEP']['example_unreliable_reason']
  assert row['BAR']['reliable_fraction'] == 1.0 and row['BAR']['example_unreliable_reason'] is None
  text = tfep_report.markdown(table)
  assert '(67 % reliable)' in text and '(0 % reliable)' in text
  assert 'LBAR: 20 of 1000 reverse works infinite' in text


class Translation:
  """Test fixture: y = wrap(x + shift) in [lower, upper)³, log-det 0."""

  def __init__(self, shift, lower, upper):
    self.shift, self.lower, self.upper = jnp.asarray(shift), lower, upper

  def forward(self, x):
    return wrap(x + self.shift, self.lower, self.upper), jnp.zeros(x.shape[:-2])

  def inverse(self, y):
    return wrap(y - self.shift, self.lower, self.upper), jnp.zeros(y.shape[:-2])


def test_structure_of_the_identity_and_of_a_translation():
  lower, upper, num_train, radius_b = -2.0, 2.0, 10, 1.2
  # structure() reads only the ladder's geometry, not its potential
  ladder = types.SimpleNamespace(
    parameters=np.array([1.0, radius_b]), lower=lower, upper=upper, solute=np.zeros(3)
  )
  samples = np.random.default_rng(3).uniform(lower, upper, (2, 40, 6, 3))
  data = dict(samples=samples.astype(np.float32))
  config = ml_collections.ConfigDict(
    dict(sampling=dict(num_train=num_train), eval=dict(batch_size=7))
  )
  layer = dict(
    num_bins=4, embedding_size=8, num_heads=2, num_blocks=1, num_frequencies=2, use_layernorm=False
  )
  identity = targeted.TargetedMap(
    6,
    lower,
    upper,
    num_layers=1,
    make_layer=lambda rngs: CouplingLayer(lower=lower, upper=upper, **layer, rngs=rngs),
    rngs=nnx.Rngs(0),
  )
  result = tfep_structure.structure(config, ladder, data, identity, num_bins=8)
  assert result['num_frames'] == 30
  for kind in ('pair', 'solute'):
    np.testing.assert_allclose(result[kind]['M(A)'], result[kind]['A'], atol=1e-12)
    np.testing.assert_allclose(result[kind]['M⁻¹(B)'], result[kind]['B'], atol=1e-12)
  inside_a = np.mean(np.sum(np.linalg.norm(samples[0, num_train:], axis=-1) < radius_b, -1))
  assert result['inside_radius_b']['A'] == pytest.approx(inside_a)
  assert result['inside_radius_b']['M(A)'] == pytest.approx(inside_a)

  # A translation keeps all pair distances and moves the particles relative to
  # the solute: by +shift for M(A), by −shift for M⁻¹(B).
  shift = np.array([1.3, -0.4, 0.7])
  moved = tfep_structure.structure(
    config, ladder, data, Translation(shift, lower, upper), num_bins=8
  )
  np.testing.assert_allclose(moved['pair']['M(A)'], moved['pair']['A'], atol=1e-9)
  np.testing.assert_allclose(moved['pair']['M⁻¹(B)'], moved['pair']['B'], atol=1e-9)
  box = np.full(3, upper - lower)
  for name, x, sign in (('M(A)', samples[0], 1), ('M⁻¹(B)', samples[1], -1)):
    _, expected = observables.distribution_about_point(
      x[num_train:] + sign * shift, box, np.zeros(3), num_bins=8
    )
    np.testing.assert_allclose(moved['solute'][name], expected, atol=1e-9)
  assert not np.allclose(moved['solute']['M(A)'], moved['solute']['A'])
  without_solute = types.SimpleNamespace(**{**vars(ladder), 'solute': None})
  assert set(tfep_structure.structure(config, without_solute, data, identity)) == {
    'num_frames',
    'pair',
  }


def test_missing_samples_stop_the_report_with_the_command_that_draws_them(
  tmp_path, tiny_tfep_config, tiny_tfep_run, monkeypatch
):
  (tmp_path / 'config.json').write_text(tiny_tfep_config.to_json_best_effort())

  def sample(*args, **kwargs):
    raise AssertionError('the report started sampling')

  monkeypatch.setattr(sampler, 'sample', sample)
  expected = (
    f'{tmp_path / "samples.npz"} is missing.*python -m experiments.tfep '
    f'--config=experiments/configs/tfep_solid.py:tiny --workdir={tmp_path}'
  )
  with pytest.raises(FileNotFoundError, match=expected):
    tfep_report.main([f'--workdir={tmp_path}'])
  assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']
  # nor the ends' own samples
  shutil.copy(os.path.join(tiny_tfep_run[1], 'samples.npz'), tmp_path)
  with pytest.raises(FileNotFoundError, match=f'{tmp_path / "endpoints.npz"} is missing'):
    tfep_report.main([f'--workdir={tmp_path}'])


def test_report_of_a_tiny_run(tiny_tfep_run, tmp_path):
  config, run, works = tiny_tfep_run
  workdir = tmp_path / 'run'
  shutil.copytree(run, workdir)
  table = tfep_report.main([f'--workdir={workdir}'])
  assert table['training_step'] == config.train.num_steps
  assert [row['num_samples'] for row in table['rows']] == [4]
  (row,) = table['rows']
  assert row['num_subsets'] == 2  # 8 held-out samples of each end ...
  assert row['MBAR'] is None and row['MBAR_subsets'] == 1  # ... 4 of every state
  assert '| — |' in (workdir / 'tfep_report.md').read_text()
  ref = table['reference']['value']
  assert table['dissipation']['plain_forward'] == pytest.approx(
    np.mean(works['plain_forward']) - ref
  )
  assert table['dissipation']['mapped_reverse'] == pytest.approx(
    np.mean(works['mapped_reverse']) + ref
  )
  for name in ('tfep_report.json', 'tfep_report.md', 'tfep_report.png', 'tfep_structure.png'):
    assert (workdir / name).stat().st_size > 0
  assert table['structure']['num_frames'] == 8
