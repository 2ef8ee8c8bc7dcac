"""Einstein-crystal route: the analytic partition function against numerical
integration, βF/N against the flows' pinned-particle convention, the λ path
with MBAR against an analytic harmonic answer, and refusal on poor stage overlap."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scripts import einstein_baseline, einstein_coverage
from systems import convention, einstein, estimators


def test_log_z_einstein_matches_numerical_integral_on_fixed_com_subspace():
  # N = 2 in 3-D: integrate over an orthonormal basis of {u_0 + u_1 = 0} (3-D grid).
  n, spring, beta = 2, 3.0, 0.7
  _, _, vt = np.linalg.svd(np.tile(np.eye(3), n))  # rows 3.. span Σu = 0
  basis = vt[3:].T  # (3N, 3(N-1)), orthonormal
  a = np.linspace(-6, 6, 121) / math.sqrt(beta * spring)
  grid = np.stack(np.meshgrid(a, a, a, indexing='ij'), -1).reshape(-1, 3)
  u = (grid @ basis.T).reshape(-1, n, 3)
  integrand = np.exp(-beta * einstein.einstein_energy(u, np.zeros((n, 3)), spring))
  numeric = integrand.sum() * (a[1] - a[0]) ** 3
  np.testing.assert_allclose(math.log(numeric), einstein.log_z_einstein(spring, beta, n), atol=1e-8)


def test_beta_f_per_particle_agrees_with_the_pinned_particle_route():
  """Two routes to βF/N of a harmonic solid, U = (k/2) Σ_i |u_i − ū|² in the
  displacements u from the sites, for every labelling of the sites:
  einstein.beta_f_per_particle from the analytic ln Z_W (centre of mass fixed,
  Frenkel–Ladd), and systems.convention.beta_f_per_particle from ln Z_fixed, the
  flow's integral with particle 0 pinned at its site, done here as a Gaussian
  integral over the other particles with their Hessian from autodiff, times
  the (N−1)! labellings of the other particles."""
  n, spring, beta, volume, wavelength = 5, 3.0, 0.7, 57.3, 1.3
  sites = np.random.default_rng(4).uniform(0, 4, (n, 3))

  def energy(y):
    """U with particle 0 at its site and particles 1.. at y (3(N−1),)."""
    u = jnp.concatenate([jnp.zeros((1, 3)), y.reshape(n - 1, 3) - sites[1:]])
    return einstein.einstein_energy(u - u.mean(axis=0), np.zeros((n, 3)), spring)

  with jax.enable_x64(True):
    hessian = np.asarray(jax.hessian(energy)(jnp.asarray(sites[1:].reshape(-1))))
  dim = 3 * (n - 1)
  log_z_fixed = (
    math.lgamma(n) + 0.5 * dim * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(beta * hessian)[1]
  )
  log_z_w = einstein.log_z_einstein(spring, beta, n)
  assert einstein.beta_f_per_particle(log_z_w, n, volume, wavelength) == pytest.approx(
    convention.beta_f_per_particle(log_z_fixed, n, volume, wavelength), abs=1e-12
  )


def test_spring_from_exact_einstein_samples():
  spring, beta, n = 5.0, 2.0, 10
  u = np.random.default_rng(0).normal(size=(20_000, n, 3)) / math.sqrt(beta * spring)
  u -= u.mean(axis=1, keepdims=True)  # projection onto Σu = 0
  assert einstein.spring_from_displacements(u, beta) == pytest.approx(spring, rel=0.01)


def _harmonic_solid(sites, spring, offset):
  sites = jnp.asarray(sites, jnp.float32)
  return lambda x: offset + 0.5 * spring * jnp.sum((x - sites) ** 2)


def test_lambda_path_recovers_harmonic_partition_function():
  n, beta, k_einstein, k_true, offset = 4, 1.3, 1.0, 2.5, -7.0
  sites = np.random.default_rng(2).uniform(0, 4, size=(n, 3))
  path = einstein.lambda_path(
    _harmonic_solid(sites, k_true, offset),
    sites,
    beta,
    k_einstein,
    einstein.lambda_schedule(6),
    jax.random.PRNGKey(0),
    chains_per_stage=8,
    num_steps=400,
    burn_in=200,
    step_size=0.3,
  )
  exact = einstein.log_z_einstein(k_true, beta, n) - beta * offset
  assert abs(path.log_z - exact) < 4 * path.log_z_stderr + 1e-3
  assert path.log_z_stderr < 0.05
  assert path.adjacent_overlap.min() >= 0.05
  assert path.mean_energy == pytest.approx(offset + 1.5 * (n - 1) / beta, abs=0.3)
  assert path.reliable and path.samples_per_stage.min() >= 8 * estimators.MIN_CHAIN_SAMPLES


def test_short_path_is_judged_unreliable_by_its_sparsest_stage():
  """The same harmonic solid, one chain per stage: a prefix of each chain has
  too few decorrelated samples, the full chains enough; the prefix is the
  first records of the full run (`StageEnergies.select`)."""
  n, beta, k_einstein, k_true = 4, 1.3, 1.0, 2.5
  sites = np.random.default_rng(2).uniform(0, 4, size=(n, 3))
  lambdas = einstein.lambda_schedule(6)
  stages = einstein.sample_stages(
    _harmonic_solid(sites, k_true, 0.0),
    sites,
    beta,
    k_einstein,
    lambdas,
    jax.random.PRNGKey(5),
    chains_per_stage=2,
    num_steps=800,
    burn_in=100,
    step_size=0.3,
  )
  short = stages.select(slice(0, 1), 40)
  assert short.delta_u.shape == short.u_einstein.shape == (6, 1, 40)
  np.testing.assert_array_equal(short.delta_u, stages.delta_u[:, :1, :40])
  full = einstein.path_from_stages(stages, lambdas, beta, k_einstein)
  cut = einstein.path_from_stages(short, lambdas, beta, k_einstein)
  assert full.reliable, full.reasons
  sparsest = int(cut.samples_per_stage.min())
  assert sparsest < estimators.MIN_CHAIN_SAMPLES
  assert cut.reasons == estimators.mbar_reasons(cut.adjacent_overlap.min(), sparsest, 1)
  assert len(cut.reasons) == 1 and 'per chain' in cut.reasons[0]


def test_too_few_stages_are_refused_naming_the_pair():
  n, beta = 8, 1.0
  sites = np.random.default_rng(3).uniform(0, 4, size=(n, 3))
  with pytest.raises(einstein.InsufficientOverlapError, match=r'stages 0 and 1'):
    einstein.lambda_path(
      _harmonic_solid(sites, 100.0, 0.0),
      sites,
      beta,
      1.0,
      [0.0, 1.0],
      jax.random.PRNGKey(1),
      chains_per_stage=4,
      num_steps=100,
      burn_in=50,
      step_size=0.05,
    )


@pytest.mark.parametrize('lambdas', [[0.1, 1.0], [0.0, 0.5], [0.0, 0.6, 0.4, 1.0], [1.0]])
def test_bad_lambdas_raise(lambdas):
  with pytest.raises(ValueError, match='lambdas'):
    einstein.lambda_path(
      lambda x: jnp.sum(x**2),
      np.zeros((2, 3)),
      1.0,
      1.0,
      lambdas,
      jax.random.PRNGKey(0),
      chains_per_stage=1,
      num_steps=2,
      burn_in=0,
    )


@pytest.mark.parametrize(
  'args, match',
  [((0.0, 1.0, 4), 'spring'), ((1.0, -1.0, 4), 'beta'), ((1.0, 1.0, 1), 'num_particles')],
)
def test_log_z_einstein_rejects_bad_input(args, match):
  with pytest.raises(ValueError, match=match):
    einstein.log_z_einstein(*args)


MW8_SPRING = '23.467'  # fitted spring of docs/baselines/mw_cubic_8.json (skips the fit)


@pytest.mark.parametrize(
  'flags, message',
  [
    (['--steps=-1'], '--steps=-1: expected a positive integer'),
    (
      ['--chains=0', '--spring=-2'],
      '--chains=0: expected a positive integer; --spring=-2.0: expected a finite number > 0',
    ),
    (['--stages=1'], '--stages=1: expected an integer >= 2'),
    (['--min_overlap=0.7'], '--min_overlap=0.7: expected a number in (0, 0.5)'),
    (['--steps=30', '--thin=4'], '--steps=30: expected a multiple of 4 (--thin=4), at least 8'),
  ],
)
def test_baseline_bad_flags_end_with_one_line(flags, message, tmp_path, capsys):
  out = tmp_path / 'f.json'
  with pytest.raises(SystemExit) as exit_info:
    einstein_baseline.main(['--system=mw_cubic_8', f'--out={out}', *flags])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.splitlines() == [f'Bad flag values: {message}']
  assert not out.exists()


def test_baseline_record_and_line_say_when_unreliable(tmp_path, capsys):
  out = tmp_path / 'f.json'
  flags = ['--stages=24', '--chains=2', '--steps=16', '--burn_in=20', f'--spring={MW8_SPRING}']
  assert einstein_baseline.main(['--system=mw_cubic_8', f'--out={out}', *flags]) == 0
  record = json.loads(out.read_text())
  assert record['samples_per_stage'] == min(record['samples_per_stage_all'])
  assert record['samples_per_stage'] < 2 * estimators.MIN_CHAIN_SAMPLES
  assert record['reliable'] is False
  assert record['unreliable_reasons'] == list(
    estimators.mbar_reasons(record['min_adjacent_overlap'], record['samples_per_stage'], 2)
  )
  line = capsys.readouterr().out
  assert f'{record["samples_per_stage"]} decorrelated samples in the sparsest stage' in line
  assert 'UNRELIABLE: ' + record['unreliable_reasons'][0] in line


def test_coverage_table_bins_by_samples_per_chain():
  # truth 10; z = (log_z − 10)/σ: 0.5, −1.5, 3 (per chain 4, 4, 4) and 0.5, −0.5 (12, 30).
  runs = [
    dict(log_z=10.5, log_z_stderr=1.0, min_stage_samples=8),
    dict(log_z=7.0, log_z_stderr=2.0, min_stage_samples=9),
    dict(log_z=11.5, log_z_stderr=0.5, min_stage_samples=8),
    dict(log_z=10.25, log_z_stderr=0.5, min_stage_samples=24),
    dict(log_z=9.5, log_z_stderr=1.0, min_stage_samples=60),
  ]
  table = einstein_coverage.coverage_table(runs, 10.0, chains=2)
  assert [row['samples_per_chain'] for row in table] == ['[0, 5)', '[10, 20)', '[20, 40)']
  first = table[0]
  assert first['runs'] == 3
  assert first['coverage_1sigma'] == pytest.approx(1 / 3)
  assert first['coverage_2sigma'] == pytest.approx(2 / 3)
  assert first['rms_z'] == pytest.approx(math.sqrt((0.25 + 2.25 + 9.0) / 3))
  assert [row['runs'] for row in table[1:]] == [1, 1]
