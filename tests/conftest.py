"""Shared fixtures: a finished tiny TFEP run, and the check that skipped steps changed nothing."""

import jax
import numpy as np
import pytest

from experiments import tfep_stages
from experiments.configs import tfep_solid


def _tiny_tfep_config():
  config = tfep_solid.get_config('tiny')
  config.train.checkpoint_every_steps = 5
  return config


@pytest.fixture
def tiny_tfep_config():
  """tfep_solid.py:tiny (lj_32, two states, 16 samples each), checkpoints every 5 of 20 steps."""
  return _tiny_tfep_config()


@pytest.fixture(scope='session')
def tiny_tfep_run(tmp_path_factory):
  """(config, workdir, works) of a finished tiny_tfep_config run; copy the workdir to change it."""
  config = _tiny_tfep_config()
  workdir = str(tmp_path_factory.mktemp('tiny_tfep'))
  return config, workdir, tfep_stages.run(config, workdir)


@pytest.fixture
def assert_skips_changed_nothing():
  """check(initial, saved, num_skipped): a state saved after `num_skipped` skipped steps
  from `initial` has its parameters, their moving average and the optimiser state, and
  counts every step as taken, skipped and non-finite in a row."""

  def check(initial, saved, num_skipped):
    for name in ('params', 'ema_params', 'opt_state'):
      for x, y in zip(jax.tree.leaves(initial[name]), jax.tree.leaves(saved[name])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    for name in ('step', 'num_skipped', 'consecutive_nonfinite'):
      assert int(saved[name]) == num_skipped, name

  return check
