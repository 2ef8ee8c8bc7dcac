"""Checks of scripts.observables (g(r)), scripts.xyz (extended XYZ) and scripts.report (with
scripts.reporting: reading, estimates, figures).

The fake run is an Einstein crystal of mw_cubic_8: U = U0 + k/2 Σ_{i≥1} |d_i|²
with d_i the displacement of particle i relative to particle 0 from its site,
a Gaussian "flow" of width σ_q on the 3(N−1) relative coordinates, and exact
target samples as reference; ln Z_fixed = −βU0 + 3(N−1)/2 ln(2π/(βk)).
"""

import json
import math
import os

import ase.io
import numpy as np
import pytest

from experiments import evaluation
from scripts import observables, report, xyz
from scripts.reporting import estimates
from systems import convention, estimators, get_system
from systems.box import minimum_image

SYSTEM = 'mw_cubic_8'
SPRING, U0_PER_PARTICLE, SIGMA_Q = 30.0, -6.0, 0.11  # kcal/mol/Å², kcal/mol, Å


def _relative(x, system):
  """Displacements d_i (n, N−1, 3) of particles 1.. from their sites, particle 0 pinned."""
  d = (x[:, 1:] - x[:, :1]) - (system.lattice[1:] - system.lattice[:1])
  return minimum_image(d, system.box)


def _fake_samples(system, rng, n, sigma, translate):
  """Gaussian displacements of width sigma; energy and Gaussian log q of the flow."""
  num = system.num_particles
  x = system.lattice + sigma * rng.standard_normal((n, num, 3))
  x[:, 0] = system.lattice[0]
  if translate:
    x += rng.uniform(0, system.box, (n, 1, 3))
  d = _relative(x, system)
  energy = num * U0_PER_PARTICLE + 0.5 * SPRING * np.sum(d**2, axis=(1, 2))
  dim = d[0].size
  log_q = -0.5 * np.sum(d**2, axis=(1, 2)) / SIGMA_Q**2 - dim * math.log(
    math.sqrt(2 * math.pi) * SIGMA_Q
  )
  return x, energy, log_q


def exact_log_z(system):
  return -system.beta * system.num_particles * U0_PER_PARTICLE + 1.5 * (
    system.num_particles - 1
  ) * math.log(2 * math.pi / (system.beta * SPRING))


def make_fake_run(workdir, num_samples=2000, num_hmc=1000, seed=0, steps=2000):
  """Writes metrics.jsonl, config.json, eval.json, samples.npz; returns (hmc.npz, baseline.json)."""
  system = get_system(SYSTEM)
  rng = np.random.default_rng(seed)
  os.makedirs(workdir, exist_ok=True)
  truth = convention.beta_f_per_particle(
    exact_log_z(system), system.num_particles, system.volume, system.thermal_wavelength
  )
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step in range(100, steps + 1, 100):
      decay = math.exp(-step / 400)
      f.write(
        json.dumps(
          dict(
            step=step,
            wall_time=0.05 * step,
            loss=-20 + 30 * decay + 0.3 * rng.standard_normal(),
            grad_norm=1.0,
            num_skipped=0,
            steps_per_second=20.0,
          )
        )
        + '\n'
      )
      if step % 500 == 0:
        err = 0.002 + 0.05 * decay
        f.write(
          json.dumps(
            dict(
              step=step,
              wall_time=0.05 * step + 1,
              num_samples=1000,
              num_nonfinite=0,
              ess=0.9 - 0.85 * decay,
              log_z=0.0,
              log_z_stderr=8 * err,
              beta_f_per_particle=truth + 4 * err,
              beta_f_per_particle_stderr=err,
              mean_energy=-40.0,
              mean_energy_flow=-39.0,
            )
          )
          + '\n'
        )
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(dict(system=SYSTEM, variant='cpu', seed=0), f)
  x, energy, log_q = _fake_samples(system, rng, num_samples, SIGMA_Q, translate=False)
  energy[0] = np.nan  # one non-finite sample to be dropped
  np.savez(
    os.path.join(workdir, 'samples.npz'),
    positions=x,
    log_q=log_q,
    energy=energy,
    beta=system.beta,
    box=system.box,
    system=SYSTEM,
  )
  with open(os.path.join(workdir, 'eval.json'), 'w') as f:
    json.dump(
      dict(
        system=SYSTEM,
        step=steps,
        beta_f_per_particle=truth,
        beta_f_per_particle_stderr=0.001,
        ess=0.8,
        num_samples=num_samples,
      ),
      f,
    )
  hmc_sigma = 1 / math.sqrt(system.beta * SPRING)
  x, energy, log_q = _fake_samples(system, rng, num_hmc, hmc_sigma, translate=True)
  log_q[0] = -np.inf  # outside the flow's support: kept, and counted by LBAR
  hmc_path = os.path.join(workdir, 'hmc.npz')
  np.savez(hmc_path, positions=x, energy=energy, log_q=log_q)
  baseline_path = os.path.join(workdir, 'baseline.json')
  with open(baseline_path, 'w') as f:
    json.dump(
      dict(
        system=SYSTEM,
        beta_f_per_particle=truth + 0.003,
        beta_f_per_particle_stderr=0.002,
        num_stages=16,
        samples_per_stage=4000,
        min_adjacent_overlap=0.3,
        statistical_inefficiency=2.0,
        wall_time_seconds=60.0,
        mean_energy=system.num_particles * U0_PER_PARTICLE
        + 1.5 * (system.num_particles - 1) / system.beta,
      ),
      f,
    )
  return hmc_path, baseline_path


# --- g(r) --------------------------------------------------------------------


def test_rdf_ideal_gas_is_one():
  rng = np.random.default_rng(0)
  box = np.array([10.0, 11.0, 12.0])
  x = rng.uniform(0, box, (200, 64, 3))
  edges, g = observables.radial_distribution(x, box, num_bins=20)
  assert edges[-1] == pytest.approx(5.0)
  # Outer half: each bin holds thousands of pairs, so g = 1 within a few %.
  np.testing.assert_allclose(g[10:], 1.0, atol=0.05)
  assert abs(np.mean(g[10:]) - 1.0) < 0.01


def _cubic_lattice(basis, cells):
  """Unit-edge cubic cells tiled cells³ times: positions (cells³·M, 3), box (3,)."""
  grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing='ij'), -1).reshape(-1, 1, 3)
  return (grid + np.asarray(basis, float)).reshape(-1, 3), np.full(3, float(cells))


@pytest.mark.parametrize(
  'basis, cells, nn, neighbours',
  [
    ([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], 4, math.sqrt(0.5), 12),  # FCC
    ([[0, 0, 0]], 6, 1.0, 6),  # simple cubic
  ],
)
def test_rdf_lattice_first_shell(basis, cells, nn, neighbours):
  x, box = _cubic_lattice(basis, cells)
  edges, g = observables.radial_distribution(x[None], box, num_bins=64)
  centres = 0.5 * (edges[1:] + edges[:-1])
  assert abs(centres[np.argmax(g)] - nn) <= edges[1]  # first peak at the nn distance
  assert g[centres < 0.9 * nn].max() == 0.0
  r_cut = edges[np.searchsorted(edges, 0.5 * (1 + math.sqrt(2)) * nn)]  # before 2nd shell
  count = observables.coordination_number(edges, g, len(x), np.prod(box), r_cut)
  assert count == pytest.approx(neighbours, rel=1e-9)


def test_density_about_a_point():
  rng = np.random.default_rng(1)
  box = np.array([8.0, 9.0, 10.0])
  point = np.array([1.0, -3.0, 12.5])  # any point; distances are periodic
  x = rng.uniform(0, box, (400, 50, 3))
  edges, g = observables.distribution_about_point(x, box, point, num_bins=8)
  assert edges[-1] == pytest.approx(4.0)
  np.testing.assert_allclose(g[4:], 1.0, atol=0.05)  # uniform: 1 within noise
  # Particles on a shell of radius 2.3 about the point (and its images).
  directions = rng.normal(size=(1, 50, 3))
  shell = point + box * 3 + 2.3 * directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  edges, g = observables.distribution_about_point(shell, box, point, num_bins=8)
  volume = 4 / 3 * np.pi * (edges[5] ** 3 - edges[4] ** 3)
  np.testing.assert_allclose(g, np.where(np.arange(8) == 4, np.prod(box) / volume, 0))
  with pytest.raises(ValueError, match='point must be'):
    observables.distribution_about_point(x, box, [0.0, 1.0])


def test_rdf_rejects_r_max_beyond_half_box():
  with pytest.raises(ValueError, match='r_max=6.0 must be in'):
    observables.radial_distribution(np.zeros((1, 2, 3)), np.full(3, 10.0), r_max=6.0)


# --- XYZ -------------------------------------------------------------------


def read_with_ase(path):
  """ASE's own extxyz reader: positions (n, N, 3), cells (n, 3, 3), pbc (n, 3),
  energies (n,), species (set)."""
  frames = ase.io.read(path, format='extxyz', index=':')
  return (
    np.array([atoms.get_positions() for atoms in frames]),
    np.array([atoms.cell.array for atoms in frames]),
    np.array([atoms.pbc for atoms in frames]),
    np.array([atoms.get_potential_energy() for atoms in frames]),
    {symbol for atoms in frames for symbol in atoms.get_chemical_symbols()},
  )


def test_xyz_round_trips_through_ase(tmp_path):
  rng = np.random.default_rng(1)
  box = np.array([6.2, 6.3, 6.4])
  x = rng.uniform(-1, 7, (5, 8, 3))  # not wrapped: written as given
  energy = rng.normal(-50, 1, 5)
  path = tmp_path / 'a.xyz'
  assert xyz.write_extxyz(str(path), x, box, species='Ar', energies=energy) == 5
  positions, cells, pbc, energies, species = read_with_ase(path)
  np.testing.assert_array_equal(positions, x)
  np.testing.assert_array_equal(cells, np.broadcast_to(np.diag(box), (5, 3, 3)))
  assert pbc.all()
  np.testing.assert_array_equal(energies, energy)
  assert species == {'Ar'}


def test_xyz_cli_and_bad_input(tmp_path):
  x = np.arange(24.0).reshape(4, 2, 3)
  np.savez(tmp_path / 's.npz', positions=x, box=np.ones(3), energy=np.arange(4.0))
  assert (
    xyz.main([f'--samples={tmp_path / "s.npz"}', f'--out={tmp_path / "s.xyz"}', '--max_frames=3'])
    == 0
  )
  positions, cells, _, energies, species = read_with_ase(tmp_path / 's.xyz')
  np.testing.assert_array_equal(positions, x[:3])
  np.testing.assert_array_equal(cells, np.broadcast_to(np.eye(3), (3, 3, 3)))
  np.testing.assert_array_equal(energies, [0.0, 1.0, 2.0])
  assert species == {'O'}
  with pytest.raises(ValueError, match=r'energies must have shape \(4,\)'):
    xyz.write_extxyz(str(tmp_path / 'b.xyz'), x, np.ones(3), energies=np.zeros(3))


# --- report ----------------------------------------------------------------


@pytest.fixture(scope='module')
def fake_report(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  hmc_path, baseline_path = make_fake_run(workdir)
  assert (
    report.main(
      [
        f'--workdir={workdir}',
        f'--baseline={baseline_path}',
        f'--hmc_samples={hmc_path}',
        '--rdf_frames=200',
      ]
    )
    == 0
  )
  with open(os.path.join(workdir, 'report.json')) as f:
    return workdir, json.load(f)


def test_report_writes_outputs(fake_report):
  workdir, result = fake_report
  names = {os.path.basename(p) for p in result['figures']}
  assert names == {
    'loss.png',
    'ess.png',
    'free_energy.png',
    'energy_histogram.png',
    'rdf.png',
    'overlap.png',
    'estimators.png',
  }
  for path in result['figures']:
    with open(os.path.join(workdir, path), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  text = open(os.path.join(workdir, 'report.md')).read()
  assert 'LBAR' in text and 'figures/overlap.png' in text
  positions, _, _, energies, species = read_with_ase(os.path.join(workdir, 'samples.xyz'))
  data = np.load(os.path.join(workdir, 'samples.npz'))
  np.testing.assert_array_equal(positions, data['positions'][1:11])  # first one non-finite
  np.testing.assert_array_equal(energies, data['energy'][1:11])
  assert species == {'O'}


def test_report_values_match_direct_computation(fake_report):
  workdir, result = fake_report
  system = get_system(SYSTEM)
  data = np.load(os.path.join(workdir, 'samples.npz'))
  keep = np.isfinite(data['energy'])
  energy, log_w = data['energy'][keep], -system.beta * data['energy'][keep] - data['log_q'][keep]
  direct = estimators.importance_sampling(log_w)
  rows = {r['estimator']: r for r in result['estimators']}
  flow = rows['flow importance sampling']
  n = system.num_particles
  assert flow['log_z'] == direct.value
  assert flow['beta_f_per_particle'] == pytest.approx(
    convention.beta_f_per_particle(direct.value, n, system.volume, system.thermal_wavelength),
    abs=1e-12,
  )
  assert flow['stderr_delta'] == pytest.approx(direct.stderr_delta / n)
  assert flow['stderr_bootstrap'] == pytest.approx(direct.stderr_bootstrap / n)
  assert result['samples']['num_nonfinite'] == 1
  assert result['samples']['ess'] == pytest.approx(direct.ess)
  weights = np.exp(log_w - log_w.max())
  assert result['energies']['flow q'] == pytest.approx(np.mean(energy) / n)
  assert result['energies']['flow reweighted to p'] == pytest.approx(
    np.sum(weights * energy) / np.sum(weights) / n
  )
  base = rows['Einstein crystal (MBAR)']
  assert flow['delta_to_baseline_sigma'] == pytest.approx(
    (flow['beta_f_per_particle'] - base['beta_f_per_particle'])
    / math.hypot(flow['stderr'], base['stderr'])
  )
  hmc = np.load(os.path.join(workdir, 'hmc.npz'))
  assert result['hmc_samples']['num_outside_support'] == 1
  assert result['hmc_samples']['num_samples'] == len(hmc['energy'])
  lbar = estimators.lbar(
    data['log_q'][keep],
    -system.beta * data['energy'][keep],
    hmc['log_q'],
    -system.beta * hmc['energy'],
  )
  assert rows['LBAR (flow + reference)']['log_z'] == lbar.value
  # The fake model is exactly solvable: IS and LBAR recover ln Z within 4σ.
  for row in (flow, rows['LBAR (flow + reference)']):
    assert abs(row['log_z'] - exact_log_z(system)) < 4 * row['log_z_stderr'], row


def test_report_judges_every_estimate_reliable_on_the_good_fake_run(fake_report):
  workdir, result = fake_report
  for row in result['estimators']:
    assert row['reliable'] and row['unreliable_reasons'] == [], row
  assert 'UNRELIABLE' not in open(os.path.join(workdir, 'report.md')).read()


def test_report_marks_unreliable_estimates_everywhere(tmp_path, capsys):
  # 50 flow samples (49 finite) cannot make 100 effective samples; 100 of the
  # 1000 HMC samples outside the flow's support are 10 % infinite reverse works.
  hmc_path, _ = make_fake_run(str(tmp_path), num_samples=50)
  with np.load(hmc_path) as data:
    hmc = dict(data)
  hmc['log_q'][:100] = -np.inf
  np.savez(hmc_path, **hmc)
  with open(tmp_path / 'metrics.jsonl', 'a') as f:  # an early-training-like evaluation
    row = dict(step=2100, wall_time=110.0, num_samples=1000, ess=0.01)
    f.write(json.dumps(dict(row, beta_f_per_particle=-8.5, beta_f_per_particle_stderr=0.1)) + '\n')
  assert report.main([f'--workdir={tmp_path}', f'--hmc_samples={hmc_path}', '--rdf_frames=20']) == 0
  printed = capsys.readouterr().out
  with open(tmp_path / 'report.json') as f:
    rows = {r['estimator']: r for r in json.load(f)['estimators']}
  flow, lbar = rows['flow importance sampling'], rows['LBAR (flow + reference)']
  assert not flow['reliable'] and 'effective samples of 49' in flow['unreliable_reasons'][0]
  assert not lbar['reliable'] and lbar['num_infinite'] == [0, 100]
  assert any('100 of 1000 reverse works infinite' in r for r in lbar['unreliable_reasons'])
  assert estimates.evaluation_reasons(row) == [
    'ESS 0.01 (10 effective samples of 1000; need >= 100)'
  ]  # drawn as an UNRELIABLE point in free_energy.png
  text = open(tmp_path / 'report.md').read()
  for row in (flow, lbar):
    note = 'UNRELIABLE: ' + '; '.join(row['unreliable_reasons'])
    assert f'**{note}**' in text and note in printed


def test_report_counts_infinite_energy_flow_samples_as_zero_weights(tmp_path):
  # 3 of the 399 kept flow samples (one more has a NaN energy) overlap: U = +inf.
  # They are zero weights, as in experiments.evaluation.summarize (eval.json);
  # dropping them would divide the same weight sum by 396 instead of 399.
  system = get_system(SYSTEM)
  hmc_path, baseline_path = make_fake_run(str(tmp_path), num_samples=400, num_hmc=300)
  samples_path = tmp_path / 'samples.npz'
  with np.load(samples_path) as data:
    flow = dict(data)
  flow['energy'][[1, 5, 200]] = np.inf
  np.savez(samples_path, **flow)
  args = [f'--workdir={tmp_path}', f'--baseline={baseline_path}', f'--hmc_samples={hmc_path}']
  assert report.main([*args, '--rdf_frames=20']) == 0
  with open(tmp_path / 'report.json') as f:
    result = json.load(f)
  rows = {r['estimator']: r for r in result['estimators']}
  row = rows['flow importance sampling']
  with pytest.warns(UserWarning, match='1 of 400 evaluation samples'):  # the NaN one
    kept = evaluation.summarize(dict(log_q=flow['log_q'], energy=flow['energy']), system)
  finite = np.isfinite(flow['energy'])
  dropped = evaluation.summarize(
    dict(log_q=flow['log_q'][finite], energy=flow['energy'][finite]), system
  )
  for key in (
    'ess',
    'log_z',
    'log_z_stderr',
    'beta_f_per_particle',
    'num_samples',
    'num_zero_weight',
  ):
    assert row[key] == kept[key], key
  assert row['stderr'] == kept['beta_f_per_particle_stderr']
  assert (row['num_samples'], row['num_zero_weight']) == (399, 3)
  assert result['samples'] == dict(
    num_samples=399, num_nonfinite=1, num_zero_weight=3, ess=kept['ess']
  )
  assert row['log_z'] == pytest.approx(dropped['log_z'] - math.log(399 / 396), abs=1e-12)
  assert row['ess'] == pytest.approx(dropped['ess'] * 396 / 399, rel=1e-12)
  assert result['energies']['flow reweighted to p'] == kept['mean_energy'] / system.num_particles
  # LBAR: the +inf energies are infinite forward works, counted, not dropped.
  with np.load(hmc_path) as hmc:
    log_q_p, log_p_p = hmc['log_q'], -system.beta * hmc['energy']
  used = ~np.isnan(flow['energy'])
  lbar = estimators.lbar(flow['log_q'][used], -system.beta * flow['energy'][used], log_q_p, log_p_p)
  lbar_dropped = estimators.lbar(
    flow['log_q'][finite], -system.beta * flow['energy'][finite], log_q_p, log_p_p
  )
  lbar_row = rows['LBAR (flow + reference)']
  assert lbar_row['num_infinite'] == [3, 1] and lbar_row['num_samples'] == [399, 300]
  assert lbar_row['log_z'] == lbar.value and lbar.value < lbar_dropped.value - 1e-4
  # Every figure is still drawn, the hidden samples counted; the table and notes say why.
  assert len(result['figures']) == 7
  for path in result['figures']:
    with open(tmp_path / path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  text = open(tmp_path / 'report.md').read()
  assert '3 with U = +∞ (zero weight)' in text
  assert 'infinite works (forward, reverse) 3, 1' in text
  assert '3 flow samples have energy +∞' in text
  _, _, _, energies, _ = read_with_ase(tmp_path / 'samples.xyz')  # frames 1 and 5: U = +inf
  np.testing.assert_array_equal(energies, flow['energy'][1:11])


def test_report_judges_eval_json_rows_written_before_the_judgement(tmp_path):
  make_fake_run(str(tmp_path), num_samples=50)  # eval.json: ESS 0.8 of 50, no judgement keys
  os.remove(tmp_path / 'samples.npz')
  (row,) = report.write_report(str(tmp_path))['estimators']
  assert row['unreliable_reasons'] == ['ESS 0.8 (40 effective samples of 50; need >= 100)']


def test_report_without_samples_uses_eval_json(tmp_path):
  make_fake_run(str(tmp_path))
  os.remove(tmp_path / 'samples.npz')
  result = report.write_report(str(tmp_path))
  (row,) = result['estimators']
  assert row['source'] == 'eval.json'
  assert {os.path.basename(p) for p in result['figures']} == {
    'loss.png',
    'ess.png',
    'free_energy.png',
    'estimators.png',
  }


def test_report_missing_metrics_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No metrics.jsonl in --workdir'):
    report.write_report(str(tmp_path))


def test_report_rejects_baseline_of_another_system(tmp_path):
  _, baseline_path = make_fake_run(str(tmp_path), num_samples=50, num_hmc=10)
  with open(baseline_path, 'w') as f:
    json.dump(dict(system='lj_32', beta_f_per_particle=1.0, beta_f_per_particle_stderr=0.1), f)
  with pytest.raises(ValueError, match="for system 'lj_32'"):
    report.write_report(str(tmp_path), baseline_path)
