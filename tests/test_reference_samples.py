"""scripts.reference_samples: HMC samples of a solid, with the flow's log q."""

import numpy as np
import pytest

from experiments import training
from experiments.configs import monatomic_water
from scripts import reference_samples
from systems import get_system

SHORT = ['--chains=2', '--steps=20', '--burn_in=10', '--thin=5']


def test_samples_energies_and_centre_of_mass(tmp_path):
  out = tmp_path / 'hmc.npz'
  summary = reference_samples.main(['--system=mw_cubic_8', f'--out={out}', *SHORT])
  system = get_system('mw_cubic_8')
  with np.load(out) as data:
    positions, energy = data['positions'], data['energy']
    assert 'log_q' not in data.files
    assert float(data['beta']) == pytest.approx(system.beta)
  assert positions.shape == (2 * 20 // 5, 8, 3) and summary['num_samples'] == 8
  np.testing.assert_allclose(energy, np.asarray(system.energy(positions)), rtol=1e-4)
  np.testing.assert_allclose(
    positions.mean(axis=1), np.broadcast_to(system.lattice.mean(axis=0), (8, 3)), atol=1e-4
  )
  assert np.std(positions - system.lattice) > 0.01  # the chains moved


def test_log_q_of_a_training_run_is_translation_invariant(tmp_path):
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  config.train.num_steps = 5
  training.train(config, str(tmp_path / 'run'))
  out = tmp_path / 'hmc.npz'
  reference_samples.main(
    ['--system=mw_cubic_8', f'--out={out}', f'--workdir={tmp_path / "run"}', *SHORT]
  )
  with np.load(out) as data:
    positions, log_q = data['positions'], data['log_q']
  assert log_q.shape == (8,) and np.all(np.isfinite(log_q))
  shifted = reference_samples.flow_log_prob(
    str(tmp_path / 'run'), 'mw_cubic_8', positions + np.array([0.7, -1.3, 2.9])
  )
  np.testing.assert_allclose(shifted, log_q, atol=2e-3)
  with pytest.raises(ValueError, match="trained 'mw_cubic_8', not --system='mw_cubic_64'"):
    reference_samples.flow_log_prob(str(tmp_path / 'run'), 'mw_cubic_64', positions)
