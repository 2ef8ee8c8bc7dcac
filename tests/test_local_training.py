"""Training a local flow from HMC samples and the energy; size transfer; scripts.free_energy."""

import dataclasses
import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import checkpointing, evaluation, hmc_samples, runs, training
from experiments.configs import lennard_jones, monatomic_water
from scripts import free_energy, is_coverage
from systems import estimators, get_system

TINY = 'mw_cubic_64,local_tiny'


@pytest.fixture(scope='module')
def local_run(tmp_path_factory):
  """(config, workdir) of a finished mw_cubic_64 local_tiny run (mixed objective)."""
  config = monatomic_water.get_config(TINY)
  workdir = str(tmp_path_factory.mktemp('local_run'))
  training.train(config, workdir)
  return config, workdir


def copy_of(run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(run, workdir)
  return workdir


def test_mixed_objective_is_the_weighted_sum_of_its_parts(local_run):
  config, workdir = local_run
  setup, state = training.build(config)
  samples = hmc_samples.load_or_draw(config, setup.system, workdir)
  reference, covered = setup.reference_data(state['params'], samples['positions'])
  assert covered.all()
  key = jax.random.key(3)
  data = jnp.asarray(reference[covered])
  losses = {}
  for w in (0.3, 1.0):
    loss_fn = jax.jit(training.make_loss_fn(setup, 8, forward_kl_weight=w))
    losses[w] = loss_fn(state['params'], key, data)
  loss, parts = losses[0.3]
  reverse = parts['reduced_energy'] + parts['log_q']
  np.testing.assert_allclose(loss, 0.7 * reverse + 0.3 * parts['forward_kl'], rtol=1e-6)
  # The pure reverse objective's parts, by their shapes alone (nothing compiled).
  reverse_only = training.make_loss_fn(setup, 8, forward_kl_weight=0.0)
  assert set(jax.eval_shape(reverse_only, state['params'], key, data)[1]) == {
    'reduced_energy',
    'log_q',
  }
  assert set(losses[1.0][1]) == {'forward_kl', 'outside_support'}
  # The forward part is E_p[−ln q] over the drawn rows, by the flow's own density.
  _, key_p = jax.random.split(key)
  rows = jax.random.randint(key_p, (8,), 0, int(covered.sum()))
  log_q = setup.flow(state['params']).log_prob(jnp.asarray(samples['positions'])[covered][rows])
  np.testing.assert_allclose(losses[1.0][0], -jnp.mean(log_q), rtol=1e-5)


def test_the_path_gradient_vanishes_where_the_flow_is_the_target():
  """With βU = −ln q_θ₀ (the flow is exact at θ₀) the path gradient of the reverse
  KL is zero sample by sample, and so is the Rényi-2 term's (the weights are
  constant); the plain one keeps its score term, zero only on average. Both
  losses have the same value, 0 up to rounding."""
  setup, state = training.build(monatomic_water.get_config(TINY))
  params = state['params']
  frozen = setup.flow(params)
  exact = types.SimpleNamespace(beta=1.0, training_energy=lambda x: -frozen.log_prob(x))
  setup = dataclasses.replace(setup, system=exact)
  key = jax.random.key(0)
  assert bool(jnp.all(setup.sample(params, key, 8)[2]))  # all in the basin
  cases = ((False, 0.0), (True, 0.0), (True, 1.0))

  @jax.jit  # one compiled program for the three gradients, not one per operation
  def losses_and_grads(params):
    return {
      (path, renyi2): jax.value_and_grad(
        training.make_loss_fn(setup, 8, path_gradient=path, renyi2_weight=renyi2), has_aux=True
      )(params, key, None)
      for path, renyi2 in cases
    }

  norms = {}
  for case, ((loss, _), grad) in losses_and_grads(params).items():
    assert abs(float(loss)) < 1e-3, case
    norms[case] = optax.tree.norm(grad)
  plain, path = norms[False, 0.0], norms[True, 0.0]
  assert plain > 1.0 and path < 1e-4 * plain, (plain, path)
  # Constant weights: the Rényi-2 term is 0 and so is its (plain) gradient, up to
  # the float32 rounding of the weights (about 1e-4 of the score's norm).
  assert norms[True, 1.0] < 1e-3 * plain


def test_the_renyi2_term_is_the_log_inverse_ess_of_the_batch(local_run):
  """λ·D₂ on top of the reverse KL, D₂ = −ln ESS of the batch's own weights
  (systems.estimators.ess_fraction, an independent formula)."""
  config, _ = local_run
  setup, state = training.build(config)
  key = jax.random.key(5)
  loss, parts = jax.jit(training.make_loss_fn(setup, 16, renyi2_weight=0.5))(
    state['params'], key, None
  )
  x, log_q, in_basin = setup.sample(state['params'], key, 16)
  assert bool(jnp.all(in_basin))
  log_v = np.asarray(-setup.system.beta * setup.system.training_energy(x) - log_q, np.float64)
  d2 = -np.log(estimators.ess_fraction(log_v))
  assert d2 > 0.01
  np.testing.assert_allclose(parts['renyi2'], d2, rtol=1e-4)
  reverse = float(parts['reduced_energy'] + parts['log_q'])
  np.testing.assert_allclose(loss, reverse + 0.5 * d2, rtol=1e-6, atol=1e-3)
  with pytest.raises(ValueError, match='renyi2_weight=-1'):
    training.make_loss_fn(setup, 16, renyi2_weight=-1)


def test_hmc_samples_are_drawn_once_and_reused_on_resume(local_run, tmp_path):
  config, run = local_run
  workdir = copy_of(run, tmp_path)
  path = os.path.join(workdir, hmc_samples.FILENAME)
  before = open(path, 'rb').read()
  longer = monatomic_water.get_config(TINY)
  longer.train.num_steps = 25
  training.train(longer, workdir)
  assert open(path, 'rb').read() == before
  steps = [
    r['step'] for r in map(json.loads, open(os.path.join(workdir, 'metrics.jsonl'))) if 'loss' in r
  ]
  assert steps == sorted(set(steps)) and steps[-1] == 25


def test_hmc_samples_of_other_settings_are_refused(local_run, tmp_path):
  workdir = copy_of(local_run[1], tmp_path)
  other = monatomic_water.get_config(TINY)
  other.hmc.num_chains = 8
  with pytest.raises(checkpointing.CheckpointMismatchError, match='num_chains'):
    training.train(other, workdir)


def test_hmc_samples_outside_the_flow_are_counted_not_dropped(local_run, tmp_path):
  config, workdir = local_run
  setup, state = training.build(config)
  positions = np.array(hmc_samples.load_or_draw(config, setup.system, workdir)['positions'][:4])
  positions[2, 7] = positions[2, 9] + 0.1  # two particles in one lattice cell
  _, covered = setup.reference_data(state['params'], positions)
  np.testing.assert_array_equal(covered, [True, True, False, True])
  with pytest.warns(UserWarning, match='1 of 4 HMC samples lie outside'):
    record = hmc_samples.report_coverage(str(tmp_path), covered)
  assert record['num_outside_support'] == 1
  with open(tmp_path / hmc_samples.COVERAGE_FILENAME) as f:
    assert json.load(f)['fraction_outside_support'] == 0.25


def test_a_run_starts_from_another_size_of_its_family(local_run):
  _, workdir = local_run
  larger = monatomic_water.get_config('mw_cubic_216,local_tiny')
  larger.model.local.num_neighbours = 4  # k does not shape the parameters (run: 16)
  params = runs.initial_params(workdir, larger)
  _, _, state = runs.load_run(workdir)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state['ema_params'])):
    np.testing.assert_array_equal(a, b)
  config, setup, moved = runs.load_run(workdir, 'mw_cubic_216')
  assert config.system == 'mw_cubic_216' and setup.system.num_particles == 216
  x, log_q, _ = setup.sample(moved['ema_params'], jax.random.key(0), 4)
  np.testing.assert_allclose(setup.flow(moved['ema_params']).log_prob(x), log_q, atol=1e-3)


def test_a_run_evaluates_at_another_size_with_another_neighbour_count(local_run):
  _, workdir = local_run
  config, setup, state = runs.load_run(workdir, 'mw_cubic_216', num_neighbours=4)
  assert config.model.local.num_neighbours == 4
  assert all(c.neighbours.shape[1] == 4 for c in setup.flow(state['ema_params']).graph.classes)
  x, log_q, _ = setup.sample(state['ema_params'], jax.random.key(1), 4)
  np.testing.assert_allclose(setup.flow(state['ema_params']).log_prob(x), log_q, atol=1e-3)
  with pytest.raises(ValueError, match=r'num_neighbours=12 splits a shell.*4, 16'):
    runs.load_run(workdir, 'mw_cubic_216', num_neighbours=12)
  with pytest.raises(ValueError, match='num_neighbours=12 applies to a local flow only'):
    runs.for_system(lennard_jones.get_config('lj_32,cpu'), None, num_neighbours=12)


def test_a_deeper_run_starts_as_the_trained_one(local_run):
  # Two layers appended to the run's one: they start as the identity (zero heads),
  # so samples and densities are the trained flow's; then training moves them.
  _, workdir = local_run
  _, setup, state = runs.load_run(workdir)
  deeper = monatomic_water.get_config(TINY)
  deeper.model.local.num_layers = 3
  params = runs.initial_params(workdir, deeper)
  grown_setup, _ = training.build(deeper)
  key = jax.random.key(5)
  x, log_q, mask = setup.sample(state['ema_params'], key, 16)
  x_grown, log_q_grown, mask_grown = grown_setup.sample(params, key, 16)
  np.testing.assert_allclose(x_grown, x, atol=1e-6)
  np.testing.assert_allclose(log_q_grown, log_q, rtol=1e-6)
  np.testing.assert_array_equal(mask_grown, mask)
  np.testing.assert_allclose(grown_setup.flow(params).log_prob(x), log_q, rtol=1e-5)
  trained_layers = jax.tree.leaves(state['ema_params']['layers'])
  for grown, trained in zip(jax.tree.leaves(params['layers']), trained_layers, strict=True):
    assert grown.shape == (3,) + trained.shape[1:]
    np.testing.assert_array_equal(grown[:1], trained)  # the trained layer comes first
  assert any(np.any(grown[1:] != 0) for grown in jax.tree.leaves(params['layers']))
  # Fewer layers, or more with another shaping key, is another model.
  shallower = monatomic_water.get_config(TINY)
  shallower.model.local.num_layers = 0
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r'local.num_layers \(1 there'):
    runs.initial_params(workdir, shallower)
  deeper.model.local.num_bins = 6
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r'differ: local.num_bins \(4'):
    runs.initial_params(workdir, deeper)


def test_transfer_needs_the_same_family_and_a_local_flow(local_run):
  config, workdir = local_run
  with pytest.raises(ValueError, match='another family'):
    runs.load_run(workdir, 'mw_hex_64')
  transformer = lennard_jones.get_config('lj_32,cpu')
  with pytest.raises(ValueError, match="conditioner is 'transformer'"):
    runs.for_system(transformer, 'lj_256')
  other_model = monatomic_water.get_config('mw_cubic_216,local_tiny')
  other_model.model.local.embedding_size = 16
  with pytest.raises(checkpointing.CheckpointMismatchError, match='local.embedding_size'):
    runs.initial_params(workdir, other_model)


def test_free_energy_writes_both_estimates(local_run, tmp_path, capsys):
  _, workdir = local_run
  out = tmp_path / 'fe.json'
  assert free_energy.main([f'--workdir={workdir}', f'--out={out}', '--num_flow_samples=512']) == 0
  record = json.loads(out.read_text())
  assert (record['conditioner'], record['num_neighbours']) == ('local', 16)
  for section in ('importance_sampling', 'lbar'):
    r = record[section]
    assert np.isfinite(r['beta_f_per_particle']) and r['beta_f_per_particle_stderr'] > 0
    assert isinstance(r['reliable'], bool)
  assert 0 < record['importance_sampling']['ess'] <= 1
  assert 0 < record['importance_sampling']['pareto_khat'] < 1.5  # 512 weights: a fitted tail
  assert record['lbar']['num_hmc_samples'] == 4 * 40 // 2
  assert record['lbar']['num_hmc_outside_support'] == 0
  assert record['lbar']['statistical_inefficiency'] >= 1
  # Both estimate the same ln Z: far apart only if one of them is wrong.
  difference = record['lbar']['log_z'] - record['importance_sampling']['log_z']
  combined = np.hypot(record['lbar']['log_z_stderr'], record['importance_sampling']['log_z_stderr'])
  assert abs(difference) < 5 * combined
  printed = capsys.readouterr().out
  assert 'mw_cubic_64 importance sampling: βF/N =' in printed and 'mw_cubic_64 LBAR:' in printed


def test_free_energy_warns_of_a_heavy_tail_above_the_psis_threshold():
  """A TAIL line under importance sampling exactly when k̂ >= 1 − 1/log₁₀ n (0.8 at
  n = 10⁵); none for a light tail or none fitted (NaN)."""
  row = dict(
    beta_f_per_particle=3.1,
    beta_f_per_particle_stderr=3e-4,
    ess=0.002,
    lognormal_ess=0.001,
    mean_energy=-900.0,
    energy_unit='epsilon',
    num_samples=100_000,
    unreliable_reasons=[],
  )
  light, heavy, unfitted = (
    [
      line
      for line in free_energy.lines(
        dict(system='lj_256', lbar=None, importance_sampling=dict(row, pareto_khat=khat))
      ).splitlines()
      if 'TAIL' in line
    ]
    for khat in (0.79, 0.81, float('nan'))
  )
  assert not light and not unfitted
  assert len(heavy) == 1 and 'k̂ 0.81 >= 0.80' in heavy[0]


def test_flow_only_is_the_importance_sampling_of_the_full_run(local_run, tmp_path, capsys):
  """--flow_only draws the same flow samples as the full run (same seed) and no HMC:
  the same importance-sampling section, ⟨U⟩ included, and no LBAR. The samples it keeps
  (--flow_samples_out) give that section again, and scripts.is_coverage's one chunk of
  them is that estimate against the full run's LBAR."""
  _, workdir = local_run
  paths, printed = {}, {}
  kept = tmp_path / 'samples.npz'
  for name, extra in (('full', []), ('flow_only', ['--flow_only', f'--flow_samples_out={kept}'])):
    paths[name] = tmp_path / f'{name}.json'
    args = [f'--workdir={workdir}', f'--out={paths[name]}', '--num_flow_samples=512', *extra]
    assert free_energy.main(args) == 0
    printed[name] = capsys.readouterr().out.splitlines()
  full, alone = (json.loads(paths[n].read_text()) for n in ('full', 'flow_only'))
  assert alone['lbar'] is None and alone['hmc'] is None
  assert 'hmc_samples' not in alone['timings_seconds']
  assert alone['importance_sampling'] == full['importance_sampling']
  assert np.isfinite(alone['importance_sampling']['mean_energy'])
  assert alone['importance_sampling']['num_nonfinite'] == 0
  assert alone['importance_sampling']['energy_unit'] == 'kcal/mol'
  lines = [line for line in printed['flow_only'] if not line.startswith('  ')]  # notes
  assert len(lines) == 1 and lines[0].startswith('mw_cubic_64 importance sampling: βF/N =')
  assert lines[0] in printed['full'] and 'kcal/mol' in lines[0]
  with np.load(kept) as f:
    assert (str(f['system']), int(f['seed']), f['log_q'].shape) == ('mw_cubic_64', 0, (512,))
    again = evaluation.summarize({k: f[k] for k in ('log_q', 'energy')}, get_system('mw_cubic_64'))
  assert again['log_z'] == alone['importance_sampling']['log_z']
  assert again['mean_energy'] == alone['importance_sampling']['mean_energy']
  out = tmp_path / 'coverage.json'
  chunk_args = [f'--samples={kept}', f'--reference={paths["full"]}', '--chunk_sizes=512,256']
  assert is_coverage.main([*chunk_args, f'--out={out}']) == 0
  record = json.loads(out.read_text())
  whole, lbar = record['whole'], full['lbar']
  assert whole['log_z'] == alone['importance_sampling']['log_z']
  z = (whole['log_z'] - lbar['log_z']) / np.hypot(whole['log_z_stderr'], lbar['log_z_stderr'])
  assert whole['z'] == pytest.approx(z, rel=1e-12)
  assert [(r['size'], r['chunk']) for r in record['chunks']] == [(256, 0), (256, 1), (512, 0)]
  assert record['table'][0]['selection'] == 'all' and record['table'][0]['chunks'] == 3


def test_flow_samples_are_drawn_until_the_error_asked_for():
  """--target_stderr: rounds of samples (log weights of std 0.3, so the error of βF/N
  falls as 0.3/(8√n)) until the estimate is reliable with that error, or
  --max_flow_samples are drawn; a small error of an unreliable estimate is not enough."""
  system = get_system('mw_cubic_8')
  calls = []

  def draw(i, n):
    calls.append((i, n))
    noise = np.random.default_rng(i).normal(0.0, 0.3, n)
    energy = np.full(n, -90.0)
    return dict(log_q=-system.beta * energy + noise, energy=energy)

  target = 0.3 / 8 / np.sqrt(4000)
  samples, rounds = free_energy.flow_samples_to_target(draw, system, 256, target, 1 << 20)
  row = evaluation.summarize(samples, system)
  assert rounds['target_reached'] and row['reliable']
  assert row['beta_f_per_particle_stderr'] <= target
  assert [i for i, _ in calls] == list(range(rounds['rounds'])) and rounds['rounds'] >= 2
  assert calls[0][1] == 256 and 4000 * 0.8 < len(samples['log_q']) < 4000 * 2
  calls.clear()
  samples, rounds = free_energy.flow_samples_to_target(draw, system, 256, target, 1000)
  assert not rounds['target_reached'] and len(samples['log_q']) == 1000
  assert sum(n for _, n in calls) == 1000

  # Log weights of std 1.5 (ESS ≈ e^-2.25 ≈ 0.1 of n): the first 256 samples meet a loose
  # error but are too few effective samples; the rounds go on until they are enough.
  def wide(i, n):
    samples = draw(i, n)
    return dict(samples, log_q=5 * samples['log_q'] - 4 * -system.beta * -90.0)

  samples, rounds = free_energy.flow_samples_to_target(wide, system, 256, 1.0, 1 << 20)
  first = evaluation.summarize(wide(0, 256), system)
  assert not first['reliable'] and first['beta_f_per_particle_stderr'] < 1.0
  assert rounds['target_reached'] and rounds['rounds'] >= 2
  assert evaluation.summarize(samples, system)['reliable']
