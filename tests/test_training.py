"""Solid-flow training: loss decreases, resume after SIGKILL or from a damaged checkpoint,
mismatch refused, NaN guard, moving average, sharded step."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import checkpointing, loop, training
from experiments.configs import monatomic_water

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The training settings every run of this file shares (on top of mw_cubic_8,tiny), so that
# they share one compiled step: batch and learning rate under which the loss falls within
# 150 steps, and a moving average of the parameters.
SHARED_TRAIN = dict(batch_size=64, learning_rate=3e-3, ema_decay=0.75)


def tiny_config(**train):
  """mw_cubic_8 with a one-layer, width-8 model (SHARED_TRAIN): compiles and steps fast."""
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  config.train.update(SHARED_TRAIN, **train)
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def final_params(workdir, config):
  setup, state = training.build(config)
  ckpt = checkpointing.Checkpointer(workdir)
  state = ckpt.restore(state, checkpointing.checkpoint_meta(config, config.system))
  ckpt.close()
  return state


def test_loss_is_finite_and_decreases(tmp_path):
  config = tiny_config(num_steps=150, log_every_steps=25)
  training.train(config, str(tmp_path))
  rows = [r for r in read_metrics(tmp_path) if 'loss' in r]
  losses = np.array([r['loss'] for r in rows])
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.5, losses
  assert [r['step'] for r in rows] == list(range(25, 151, 25))
  for row in rows:
    assert set(loop.ROW_KEYS) | {'reduced_energy', 'log_q'} == set(row)
    # the objective's parts, averaged like the loss, add up to it
    assert row['reduced_energy'] + row['log_q'] == pytest.approx(row['loss'], abs=1e-3)
  evals = [r for r in read_metrics(tmp_path) if 'ess' in r]
  assert evals and {
    'ess',
    'beta_f_per_particle',
    'beta_f_per_particle_stderr',
    'mean_energy',
    'wall_time',
    'step',
  } <= set(evals[-1])


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  num_steps = 60
  config = tiny_config(num_steps=num_steps)
  straight = str(tmp_path / 'straight')
  training.train(config, straight)

  killed = str(tmp_path / 'killed')
  cmd = [
    sys.executable,
    '-m',
    'experiments.train',
    '--config=experiments/configs/monatomic_water.py:mw_cubic_8,tiny',
    f'--workdir={killed}',
    f'--config.train.num_steps={num_steps}',
    '--config.train.checkpoint_every_steps=5',
    *(f'--config.train.{key}={value}' for key, value in SHARED_TRAIN.items()),
  ]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(killed, 'checkpoints')
  deadline = time.time() + 120
  while time.time() < deadline:
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
    if [s for s in steps if s >= 10]:
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  at_kill = checkpointing.Checkpointer(killed)
  killed_at = at_kill.latest_step
  at_kill.close()
  assert killed_at is not None and killed_at < num_steps, killed_at

  training.train(config, killed)  # resumes
  a, b = final_params(straight, config), final_params(killed, config)
  assert int(a['step']) == int(b['step']) == num_steps
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The rows written between the last checkpoint and the kill were dropped on
  # resume: one training row per logged step, one evaluation row at the end,
  # and wall time goes on from the checkpoint's.
  rows = read_metrics(killed)
  training_rows = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in training_rows] == list(range(5, num_steps + 1, 5))
  assert [r['step'] for r in rows if 'loss' not in r] == [num_steps]
  wall_times = [r['wall_time'] for r in training_rows]
  assert wall_times == sorted(wall_times)


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
  config = tiny_config(num_steps=20, checkpoint_every_steps=5)
  workdir = str(tmp_path)
  training.train(config, workdir)
  uninterrupted = final_params(workdir, config)
  checkpoints = tmp_path / 'checkpoints'
  assert sorted(int(d.name) for d in checkpoints.iterdir()) == [10, 15, 20]
  meta = checkpoints / '20' / 'meta' / 'metadata'
  meta.write_bytes(np.random.default_rng(0).bytes(meta.stat().st_size))

  with pytest.warns(UserWarning, match=r'Restored the checkpoint at step 15 .* step 20 \('):
    training.train(config, workdir)
  resumed = final_params(workdir, config)
  assert int(resumed['step']) == 20
  for x, y in zip(jax.tree.leaves(uninterrupted['params']), jax.tree.leaves(resumed['params'])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert (tmp_path / checkpointing.CORRUPT_DIRECTORY / '20').is_dir()
  assert [r['step'] for r in read_metrics(workdir) if 'loss' in r] == [5, 10, 15, 20]

  for step in (10, 15, 20):  # none readable: an error naming each, nothing moved
    (checkpoints / str(step) / 'meta' / 'metadata').write_bytes(b'\xff\xfe not json')
  with pytest.raises(checkpointing.CorruptCheckpointError, match=r'(?s)step 20.*step 15.*step 10'):
    training.train(config, workdir)
  assert sorted(int(d.name) for d in checkpoints.iterdir()) == [10, 15, 20]


def test_checkpoint_of_another_model_is_refused(tmp_path):
  training.train(tiny_config(num_steps=2), str(tmp_path))
  other = tiny_config(num_steps=4)
  other.model.transformer.embedding_size = 16
  with pytest.raises(checkpointing.CheckpointMismatchError, match='transformer.embedding_size'):
    training.train(other, str(tmp_path))
  # The refused run must not have touched the checkpoint.
  assert int(final_params(str(tmp_path), tiny_config())['step']) == 2


class _NanEnergySystem:
  """Wraps a system; its training energy is NaN for the whole batch."""

  def __init__(self, system):
    self._system = system

  def __getattr__(self, name):
    return getattr(self._system, name)

  def training_energy(self, x):
    return jnp.full(x.shape[:-2], jnp.nan)


def test_nonfinite_loss_never_reaches_parameters(
  tmp_path, monkeypatch, assert_skips_changed_nothing
):
  real = training.get_system
  monkeypatch.setattr(training, 'get_system', lambda n: _NanEnergySystem(real(n)))
  config = tiny_config(num_steps=50, max_consecutive_nonfinite=7, ema_decay=0.5)
  setup, initial = training.build(config)
  initial = jax.tree.map(np.asarray, initial)
  with pytest.raises(loop.NonFiniteLossError, match='7 consecutive'):
    training.train(config, str(tmp_path))
  assert_skips_changed_nothing(initial, final_params(str(tmp_path), config), 7)


def test_moving_average_of_parameters_is_exact_and_skips_nothing():
  config = tiny_config()
  setup, state = training.build(config)
  decay = config.train.ema_decay  # the runs' own step, compiled once for the file
  assert decay == 0.75
  step = training.make_train_step(setup, config.train.batch_size, ema_decay=decay)
  p0 = jax.tree.map(np.asarray, state['params'])
  state, _ = step(state, None)
  p1 = jax.tree.map(np.asarray, state['params'])
  state, _ = step(state, None)
  p2 = jax.tree.map(np.asarray, state['params'])
  for a, b, c, e in zip(*map(jax.tree.leaves, (p0, p1, p2, state['ema_params']))):
    expected = decay * (decay * a + (1 - decay) * b) + (1 - decay) * c
    np.testing.assert_allclose(np.asarray(e), expected, rtol=1e-6, atol=1e-7)
  assert any(not np.array_equal(a, c) for a, c in zip(jax.tree.leaves(p0), jax.tree.leaves(p2)))


SHARDED_SCRIPT = r"""
import jax, numpy as np
from experiments import training
from experiments.configs import monatomic_water
config = monatomic_water.get_config('mw_cubic_8,tiny')
assert jax.device_count() == 2, jax.devices()
key = jax.random.key(3)
results = []
for devices in (jax.devices()[:1], jax.devices()):
  setup, state = training.build(config, devices=devices)
  loss_fn = training.make_loss_fn(setup, config.train.batch_size)
  (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state['params'], key, None)
  step = training.make_train_step(setup, config.train.batch_size)
  state, out = step(state, None)
  leaf = jax.tree.leaves(state['params'])[0]
  assert len(leaf.sharding.device_set) == len(devices)
  results.append((float(loss), jax.tree.map(np.asarray, grads), float(out['loss'])))
(l1, g1, s1), (l2, g2, s2) = results
scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(g1))
gdiff = max(float(np.max(np.abs(a - b))) for a, b in
            zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
print('LOSSDIFF', abs(l1 - l2) / abs(l1), abs(s1 - s2) / abs(s1))
print('GRADDIFF', gdiff / scale)
"""


def test_sharded_step_equals_single_device_step():
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'
  env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS='cpu')  # two host devices
  out = subprocess.run(
    [sys.executable, '-c', SHARDED_SCRIPT],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  loss_diffs = [float(v) for v in out.stdout.split('LOSSDIFF')[1].split()[:2]]
  grad_diff = float(out.stdout.split('GRADDIFF')[1].split()[0])
  assert max(loss_diffs) < 1e-6, loss_diffs
  assert grad_diff < 1e-4, grad_diff


def test_wall_time_budget_stops_the_run_evaluated_and_saved(tmp_path):
  """train.max_wall_seconds ends a run early, with a last metrics row and a
  checkpoint at the step it stopped; a resumed run takes no further step."""
  config = tiny_config(num_steps=10**9, max_wall_seconds=3.0, log_every_steps=10**6)
  quadratic = lambda params, key, data: ((params['x'] - 1.0) ** 2, {})
  optimizer = optax.sgd(1e-6)
  run = lambda: loop.train(  # fresh parameters each call: the step donates them
    config,
    str(tmp_path),
    loss_fn=quadratic,
    params={'x': jnp.zeros(())},
    optimizer=optimizer,
    meta={},
  )
  start = time.time()
  step = int(run().state['step'])
  assert 0 < step < config.train.num_steps
  assert 3.0 <= time.time() - start < 30
  rows = read_metrics(tmp_path)
  assert [r['step'] for r in rows] == [step]  # the stop is logged though off the cadence
  assert rows[0]['wall_time'] >= 3.0
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.latest_step == step
  ckpt.close()
  assert int(run().state['step']) == step


def test_a_run_out_of_time_before_its_first_step_logs_its_evaluation(tmp_path):
  """A budget spent before the first step (e.g. by compilation) still leaves
  the evaluation of the initial parameters in metrics.jsonl, and a step-0
  checkpoint."""
  config = tiny_config(num_steps=10, max_wall_seconds=1e-9)
  evaluation = loop.Evaluation(
    compile=lambda params: lambda params, step: dict(x=float(params['x'])), every_steps=5
  )
  result = loop.train(
    config,
    str(tmp_path),
    loss_fn=lambda params, key, data: ((params['x'] - 1.0) ** 2, {}),
    params={'x': jnp.full((), 0.25)},
    optimizer=optax.sgd(0.1),
    meta={},
    evaluation=evaluation,
  )
  assert int(result.state['step']) == 0
  (row,) = read_metrics(tmp_path)
  assert row['step'] == 0 and row['x'] == 0.25 and row == result.evaluation
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.latest_step == 0
  ckpt.close()
