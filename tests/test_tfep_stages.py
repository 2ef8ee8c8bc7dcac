"""The TFEP stages: a run caches samples, map and works; resumes; skips non-finite steps."""

import json
import os
import shutil

import numpy as np
import pytest
from flax import nnx

from experiments import checkpointing, loop, tfep_stages
from flows import targeted
from systems import sampler


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_run_caches_every_stage(tiny_tfep_run, monkeypatch):
  config, workdir, works = tiny_tfep_run
  num_train = config.sampling.num_train
  with np.load(os.path.join(workdir, 'samples.npz')) as f:
    data = dict(f)
  with np.load(os.path.join(workdir, 'endpoints.npz')) as f:
    ends = dict(f)
  # 8 training + 4 held-out samples per state, and 4 more held-out ones of each end drawn
  # by chains of their own
  assert data['samples'].shape == (2, 12, 32, 3) and data['reduced'].shape == (2, 2, 12)
  assert ends['samples'].shape == (2, 4, 32, 3) and ends['reduced'].shape == (2, 2, 4)
  np.testing.assert_array_equal(ends['parameters'], data['parameters'])
  assert not np.allclose(ends['samples'], data['samples'][:, num_train:])
  x = np.concatenate([data['samples'][:, num_train:], ends['samples']], axis=1)
  u = np.concatenate([data['reduced'][:, :, num_train:], ends['reduced']], axis=2)
  assert int(works['step']) == config.train.num_steps
  np.testing.assert_array_equal(works['plain_forward'], u[1, 0] - u[0, 0])
  np.testing.assert_array_equal(works['plain_reverse'], u[0, 1] - u[1, 1])

  # The energies of the ends' own samples are those of their states, and the mapped works
  # are those of the trained map on every held-out sample.
  ladder = tfep_stages.make_ladder(config)
  u_a, u_b = ladder.reduced_at(0), ladder.reduced_at(1)
  np.testing.assert_allclose(ends['reduced'][0], u_a(ends['samples']), rtol=1e-6)
  np.testing.assert_allclose(ends['reduced'][1], u_b(ends['samples']), rtol=1e-6)
  bijector, step = tfep_stages.restore_map(config, ladder, workdir)
  assert step == config.train.num_steps
  forward = targeted.forward_work(bijector, x[0], u_a, u_b)
  reverse = targeted.reverse_work(bijector, x[1], u_a, u_b)
  np.testing.assert_allclose(works['mapped_forward'], forward, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(works['mapped_reverse'], reverse, rtol=1e-5, atol=1e-4)
  assert not np.allclose(works['mapped_forward'], works['plain_forward'], atol=1e-3)

  rows = read_metrics(workdir)
  assert [r['step'] for r in rows] == [5, 10, 15, 20]
  assert all(set(loop.ROW_KEYS) == set(r) and np.isfinite(r['loss']) for r in rows)

  # Rerunning neither samples nor trains nor recomputes the works.
  def fail(*args, **kwargs):
    raise AssertionError('a finished run did work again')

  monkeypatch.setattr(sampler, 'sample', fail)
  monkeypatch.setattr(targeted, 'forward_work', fail)
  again = tfep_stages.run(config, workdir)
  for name, value in works.items():
    np.testing.assert_array_equal(again[name], value)
  assert read_metrics(workdir) == rows


class Interrupted(Exception):
  """Stands for a kill of the process."""


def test_resume_after_an_interruption_gives_the_same_works(tiny_tfep_run, tmp_path, monkeypatch):
  config, straight, works = tiny_tfep_run
  workdir = str(tmp_path)
  for name in ('samples.npz', 'endpoints.npz'):
    shutil.copy(os.path.join(straight, name), workdir)
  save = checkpointing.Checkpointer.save

  def save_until_15(self, step, state, meta):
    if step == 15:  # killed after the row of step 15, before its checkpoint
      raise Interrupted
    save(self, step, state, meta)

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_until_15)
  with pytest.raises(Interrupted):
    tfep_stages.run(config, workdir)
  assert [r['step'] for r in read_metrics(workdir)] == [5, 10, 15]
  monkeypatch.undo()

  resumed = tfep_stages.run(config, workdir)
  for name, value in works.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  rows, straight_rows = read_metrics(workdir), read_metrics(straight)
  assert [r['step'] for r in rows] == [5, 10, 15, 20]  # the row of step 15 once
  for name in ('loss', 'grad_norm'):
    assert [r[name] for r in rows] == [r[name] for r in straight_rows]


def test_samples_of_another_count_are_refused(tiny_tfep_run, tmp_path):
  config, run, _ = tiny_tfep_run
  for name in ('samples.npz', 'endpoints.npz'):
    shutil.copy(os.path.join(run, name), tmp_path)
  ladder = tfep_stages.make_ladder(config)
  config.sampling.num_ladder_held_out = 2  # 10 per state and 6 more of each end
  with pytest.raises(checkpointing.CheckpointMismatchError, match='samples.npz holds 12 samples'):
    tfep_stages.load_samples(config, ladder, str(tmp_path))
  config.sampling.num_ladder_held_out = 4
  config.eval.num_subsets = 3  # 12 held out: 8 more of each end
  with pytest.raises(checkpointing.CheckpointMismatchError, match='endpoints.npz holds 4 samples'):
    tfep_stages.load_samples(config, ladder, str(tmp_path))


def test_nonfinite_targeted_objective_changes_nothing(
  tmp_path, tiny_tfep_config, assert_skips_changed_nothing
):
  config = tiny_tfep_config
  config.train.update(max_consecutive_nonfinite=3, ema_decay=0.5)
  ladder = tfep_stages.make_ladder(config)
  data = dict(samples=np.full((2, 16, ladder.num_particles, 3), np.nan, np.float32))
  with pytest.raises(loop.NonFiniteLossError, match='3 consecutive steps up to step 3'):
    tfep_stages.train(config, ladder, data, str(tmp_path))

  params = nnx.state(tfep_stages.make_map(config, ladder), nnx.Param)
  initial = loop.initial_state(params, loop.make_optimizer(config.train), config.seed)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  saved = ckpt.restore(initial, checkpointing.checkpoint_meta(config, config.benchmark))
  ckpt.close()
  assert_skips_changed_nothing(initial, saved, 3)
