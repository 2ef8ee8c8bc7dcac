"""Checkpoints: a damaged one is set aside for the previous one; other layouts are refused."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpointing

META = dict(system='toy', model=dict(width=3))


def state(value):
  return dict(params=dict(w=jnp.full(3, value)), step=jnp.asarray(int(value)))


def saved_steps(tmp_path):
  return sorted(int(d.name) for d in (tmp_path / 'checkpoints').iterdir())


def test_damaged_state_falls_back_and_is_set_aside(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  for step in (1, 2, 3):
    ckpt.save(step, state(step), META)
  for path in (tmp_path / 'checkpoints' / '3' / 'state').rglob('manifest.ocdbt'):
    path.write_bytes(b'damaged')
  restore = lambda step: ckpt.restore(state(0), META, step)
  with pytest.warns(
    UserWarning, match=r'at step 2 .*step 3 \(state (layout )?of step 3 unreadable'
  ):
    step, restored = ckpt.restore_newest(restore)
  assert step == 2 and int(restored['step']) == 2
  np.testing.assert_array_equal(restored['params']['w'], np.full(3, 2.0))
  assert saved_steps(tmp_path) == [1, 2] and ckpt.latest_step == 2
  assert (tmp_path / checkpointing.CORRUPT_DIRECTORY / '3').is_dir()
  ckpt.save(3, state(3), META)  # the step is free again
  assert ckpt.latest_step == 3
  ckpt.close()


def test_no_checkpoint_and_none_readable(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.restore_newest(lambda step: ckpt.restore(state(0), META, step)) is None
  ckpt.save(1, state(1), META)
  (tmp_path / 'checkpoints' / '1' / 'meta' / 'metadata').write_bytes(b'\xff\xfe')
  with pytest.raises(checkpointing.CorruptCheckpointError, match='step 1: meta of step 1'):
    ckpt.restore_newest(lambda step: ckpt.restore(state(0), META, step))
  assert saved_steps(tmp_path) == [1]  # nothing moved
  ckpt.close()


def test_other_state_layout_is_refused_not_taken_for_damage(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(1, state(1), META)
  newer_layout = dict(state(0), ema_params=dict(w=jnp.zeros(3)))
  with pytest.raises(
    checkpointing.CheckpointMismatchError, match="'ema_params': missing from the checkpoint"
  ):
    ckpt.restore_newest(lambda step: ckpt.restore(newer_layout, META, step))
  with pytest.raises(checkpointing.CheckpointMismatchError, match='width'):
    ckpt.restore(state(0), dict(META, model=dict(width=4)))
  assert saved_steps(tmp_path) == [1]
  ckpt.close()
