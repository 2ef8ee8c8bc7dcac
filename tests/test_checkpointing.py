"""Checkpoints: a damaged one is set aside for the previous one; other layouts are refused."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpointing
from experiments.configs import monatomic_water

MODEL = monatomic_water.get_config('mw_cubic_8,tiny').model.to_dict()
META = dict(system='toy', model=MODEL)


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
  other = dict(MODEL, transformer=dict(MODEL['transformer'], embedding_size=4))
  with pytest.raises(checkpointing.CheckpointMismatchError, match='transformer.embedding_size'):
    ckpt.restore(state(0), dict(META, model=other))
  assert saved_steps(tmp_path) == [1]
  ckpt.close()


# A model section as checkpoints stored it before the families were nested
# (experiments/pretrained/*/config.json): flat, the union of every family's keys.
FLAT_LOCAL = dict(
  conditioner='local',
  base='harmonic',
  num_layers=4,
  num_bins=8,
  embedding_size=32,
  num_heads=2,
  num_blocks=2,
  num_frequencies=8,
  noise_scale=0.2,
  num_neighbours=16,
  filter_width=16,
  spline_range=5.0,
  use_layernorm=False,
  remat=True,
  compute_dtype='float32',
)


def test_an_old_flat_model_matches_its_nested_config_and_compute_keys_may_change(tmp_path):
  nested = monatomic_water.get_config('mw_cubic_64,local').model.to_dict()
  assert checkpointing.model_shape_keys(FLAT_LOCAL) == checkpointing.model_shape_keys(nested)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(1, state(1), dict(META, model=FLAT_LOCAL))
  switched = dict(nested, remat=False)  # compute-only: may change on resume
  assert int(ckpt.restore(state(0), dict(META, model=switched))['step']) == 1
  with pytest.raises(checkpointing.CheckpointMismatchError, match='local.num_layers'):
    ckpt.restore(
      state(0), dict(META, model=dict(nested, local=dict(nested['local'], num_layers=2)))
    )
  ckpt.close()
  paper = monatomic_water.get_config('mw_cubic_64,paper').model.to_dict()
  assert paper['transformer']['compute_dtype'] == 'bfloat16'
  float32 = dict(paper, transformer=dict(paper['transformer'], compute_dtype='float32'))
  assert checkpointing.model_shape_keys(paper) == checkpointing.model_shape_keys(float32)


def test_an_old_tfep_model_with_the_local_conditioner_is_refused_naming_column():
  old = dict(num_layers=1, centre_on_sites=False, radial_bins=8, conditioner='local')
  with pytest.raises(ValueError, match="set model.conditioner='column'"):
    checkpointing.model_shape_keys(old)
