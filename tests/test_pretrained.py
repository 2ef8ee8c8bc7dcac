"""The trained models shipped under experiments/pretrained/ still load and give their free energy.

Each shipped run must restore into the model the current code builds from its
config.json, and a small fresh importance-sampling estimate must agree with
the 65,536-sample one stored in its free_energy.json (written by
scripts.free_energy when it was shipped) where that one was judged
reliable; a change to the model, the base or
the energy that silently breaks the shipped models fails here.
"""

import json
import os

import jax
import numpy as np
import pytest

from experiments import evaluation, runs, training

PRETRAINED = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'pretrained')
SHIPPED = sorted(os.listdir(PRETRAINED)) if os.path.isdir(PRETRAINED) else []
NUM_SAMPLES = 512


def test_the_shipped_models_are_there():
  assert {'mw_cubic_64', 'mw_hex_64', 'lj_256'} <= set(SHIPPED)


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_model_reproduces_its_free_energy(name):
  workdir = os.path.join(PRETRAINED, name)
  with open(os.path.join(workdir, 'free_energy.json')) as f:
    stored = json.load(f)['importance_sampling']
  config, setup, state = runs.load_run(workdir)
  assert config.system == name
  sample_fn = training.make_eval_sample_fn(setup)
  with jax.default_matmul_precision('highest'):
    samples = evaluation.draw_samples(
      lambda k, n: sample_fn(state['ema_params'], k, n), jax.random.key(7), NUM_SAMPLES, 256
    )
  row = evaluation.summarize(samples, setup.system)
  # The density of its own samples, by the inverse pass, is what sampling said.
  x, log_q, _ = setup.sample(state['ema_params'], jax.random.key(8), 8)
  with jax.default_matmul_precision('highest'):
    np.testing.assert_allclose(setup.flow(state['ema_params']).log_prob(x), log_q, atol=2e-3)
  if not stored['reliable']:  # e.g. lj_256 (ESS 6e-5): only its LBAR is a result
    return
  # The stored estimate's error grows as 1/sqrt(samples); allow 6 of the small
  # estimate's expected errors, floored for the few-sample ESS noise.
  expected_error = stored['beta_f_per_particle_stderr'] * np.sqrt(
    stored['num_samples'] / NUM_SAMPLES
  )
  tolerance = max(6 * expected_error, 0.003)
  assert abs(row['beta_f_per_particle'] - stored['beta_f_per_particle']) < tolerance
