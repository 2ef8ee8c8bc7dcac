"""Loading a solid-flow training run from its workdir, for evaluation and analysis."""

import ml_collections

from experiments import checkpointing, training


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, training.Setup, dict]:
  """Returns (config, setup, state) of the newest readable checkpoint in `workdir`.

  The config is the one stored in the checkpoint. The model computes in
  float32 (config.model.compute_dtype is overridden); callers evaluate under
  jax.default_matmul_precision('highest'), so that GPUs and TPUs do not round
  float32 products to TF32 or bfloat16 either.

  Raises:
    FileNotFoundError: if the workdir holds no checkpoint.
    checkpointing.CorruptCheckpointError: if none of its checkpoints can be read.
  """

  def load(step: int):
    config = ml_collections.ConfigDict(ckpt.read_meta(step)['config'])
    # Densities are evaluated with float32 products whatever the training used:
    # sampling (forward) and log q of given configurations (inverse) then agree
    # to float32 round-off, as LBAR against MD samples needs; with bfloat16 a
    # rounding flip in a conditioner can make them differ on a few samples.
    config.model.compute_dtype = 'float32'
    setup, state = training.build(config)
    meta = checkpointing.checkpoint_meta(config, config.system)
    return config, setup, ckpt.restore(state, meta, step)

  ckpt = checkpointing.Checkpointer(workdir)
  try:
    restored = ckpt.restore_newest(load)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(
      f'No checkpoint under {ckpt.directory}; train first with python -m experiments.train.'
    )
  return restored[1]
