"""scripts.base_quality: the reverse KL of Gaussian bases against a reference ln Z."""

import json

import numpy as np

from scripts import base_quality
from systems import get_system, harmonic

SHIPPED = 'experiments/pretrained/mw_cubic_64/free_energy.json'


def test_bases_lie_below_ln_z_and_the_moment_matched_one_recovers_its_samples(tmp_path):
  # Samples of the harmonic crystal itself: their moment-matched Gaussian is that crystal,
  # so its reverse KL equals the harmonic base's to sampling noise; every base's
  # E_q[ln w] lies below the shipped run's ln Z (Jensen), and halving the width costs more.
  s = get_system('mw_cubic_64')
  covariance = harmonic.covariance(s)
  rng = np.random.default_rng(0)
  u = rng.multivariate_normal(np.zeros(len(covariance)), covariance, size=4000)
  positions = s.lattice + np.concatenate([np.zeros((4000, 1, 3)), u.reshape(4000, -1, 3)], 1)
  with open(SHIPPED) as f:
    log_z = json.load(f)['lbar']['log_z']
  rows = {
    r['base']: r for r in base_quality.base_rows(s, positions % s.box, log_z, [1.0, 0.5], 1024)
  }
  assert set(rows) == {'harmonic x1', 'harmonic x0.5', 'moment-matched'}
  for row in rows.values():
    assert row['reverse_kl'] > 0
    assert row['reverse_kl'] == log_z - row['mean_log_weight']
    assert row['reverse_kl_per_particle'] == row['reverse_kl'] / 64
  assert abs(rows['moment-matched']['reverse_kl'] - rows['harmonic x1']['reverse_kl']) < 0.5
  assert rows['harmonic x0.5']['reverse_kl'] > rows['harmonic x1']['reverse_kl'] + 10
