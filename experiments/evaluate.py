"""Evaluates the latest checkpoint of a training run on fresh samples.

  python -m experiments.evaluate --workdir=runs/mw_cubic_8 --num_samples=65536 \
    [--samples_out=runs/mw_cubic_8/samples.npz]

Samples the parameters that training evaluates (their moving average when
train.ema_decay > 0). Writes `<workdir>/eval.json` (ESS, ln Z, βF/N ± stderr,
⟨U⟩, and whether the estimate is reliable, with the reasons if not; see
experiments.evaluation.summarize); with --samples_out also an .npz of
positions (n, N, 3), log q (n,), energies (n,) and the system's β, box and
name, for the estimators and the report.
"""

import json
import os

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory of a training run.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 65536, 'Fresh flow samples.')
_BATCH_SIZE = flags.DEFINE_integer(
  'batch_size', 0, 'Samples per compiled call (0: config eval.batch_size).'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_SAMPLES_OUT = flags.DEFINE_string('samples_out', None, 'Optional .npz path.')
flags.mark_flag_as_required('workdir')


def load_run(workdir: str):
  """Returns (config, setup, state) of the latest checkpoint in `workdir`.

  The model computes in float32 (config.model.compute_dtype is overridden);
  callers evaluate under jax.default_matmul_precision('highest'), so that
  GPUs and TPUs do not round float32 products to TF32 or bfloat16 either.
  """
  import ml_collections

  from experiments import checkpointing, training

  ckpt = checkpointing.Checkpointer(workdir)
  if ckpt.latest_step is None:
    raise FileNotFoundError(
      f'No checkpoint under {ckpt.directory}; train first with python -m experiments.train.'
    )
  config = ml_collections.ConfigDict(ckpt.read_meta()['config'])
  # Densities are evaluated with float32 products whatever the training used:
  # sampling (forward) and log q of given configurations (inverse) then agree
  # to float32 round-off, as LBAR against MD samples needs; with bfloat16 a
  # rounding flip in a conditioner can make them differ on a few samples.
  config.model.compute_dtype = 'float32'
  setup, state = training.build(config)
  state = ckpt.restore(state, training.checkpoint_meta(config))
  ckpt.close()
  return config, setup, state


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  import jax
  import numpy as np

  from experiments import evaluation, training

  config, setup, state = load_run(_WORKDIR.value)
  sample_fn = training.make_eval_sample_fn(setup)
  with jax.default_matmul_precision('highest'):  # true float32 on GPU/TPU too
    samples = evaluation.draw_samples(
      lambda key, n: sample_fn(state['ema_params'], key, n),
      jax.random.key(_SEED.value),
      _NUM_SAMPLES.value,
      _BATCH_SIZE.value or config.eval.batch_size,
      keep_positions=bool(_SAMPLES_OUT.value),
    )
  result = dict(
    system=config.system, step=int(state['step']), **evaluation.summarize(samples, setup.system)
  )
  with open(os.path.join(_WORKDIR.value, 'eval.json'), 'w') as f:
    json.dump(result, f, indent=2)
  if _SAMPLES_OUT.value:
    np.savez_compressed(
      _SAMPLES_OUT.value,
      positions=samples['positions'],
      log_q=samples['log_q'],
      energy=samples['energy'],
      beta=setup.system.beta,
      box=setup.system.box,
      system=config.system,
    )
  print(json.dumps(result, indent=2))
  print(evaluation.result_lines(result, config.system))


if __name__ == '__main__':
  app.run(main)
