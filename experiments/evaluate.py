"""Evaluates the latest checkpoint of a training run on fresh samples.

  python -m experiments.evaluate --workdir=runs/mw_cubic_8 --num_samples=65536 \
    [--samples_out=runs/mw_cubic_8/samples.npz] [--system=S [--num_neighbours=K]]

Samples the parameters that training evaluates (their moving average when
train.ema_decay > 0). Writes `<workdir>/eval.json` (ESS, ln Z, βF/N ± stderr,
⟨U⟩, and whether the estimate is reliable, with the reasons if not; see
experiments.evaluation.summarize); with --samples_out also an .npz of
positions (n, N, 3), log q (n,), energies (n,) and the system's β, box and
name, for the estimators and the report. With --system, a local flow is
evaluated at another size of its family (written to eval_<system>.json),
with --num_neighbours at another k (experiments.runs.for_system).
The run is loaded by experiments.runs.load_run; importing this module
defines no flags.
"""

import json
import os

from experiments import flag_checks


def main():
  from absl import app, flags, logging

  workdir_flag = flags.DEFINE_string('workdir', None, 'Run directory of a training run.')
  num_samples_flag = flags.DEFINE_integer('num_samples', 65536, 'Fresh flow samples.')
  batch_size_flag = flags.DEFINE_integer(
    'batch_size', 0, 'Samples per compiled call (0: config eval.batch_size).'
  )
  seed_flag = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  samples_out_flag = flags.DEFINE_string('samples_out', None, 'Optional .npz path.')
  system_flag = flags.DEFINE_string(
    'system', None, "Evaluate at this size of the run's family (local flows; default: its own)."
  )
  num_neighbours_flag = flags.DEFINE_integer(
    'num_neighbours', None, "A local flow's conditioning neighbours (default: the run's)."
  )
  flags.mark_flag_as_required('workdir')

  def _main(argv):
    del argv
    flag_checks.check(
      {
        '--num_samples': (num_samples_flag.value, flag_checks.POSITIVE_INT),
        '--batch_size': (
          batch_size_flag.value,
          (flag_checks.NON_NEGATIVE_INT[0], "an integer >= 0 (0: the config's eval.batch_size)"),
        ),
        '--seed': (seed_flag.value, flag_checks.SEED),
        '--num_neighbours': (num_neighbours_flag.value, flag_checks.POSITIVE_INT),
      }
    )
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    import jax
    import numpy as np

    from experiments import evaluation, runs, training

    workdir = workdir_flag.value
    config, setup, state = runs.load_run(workdir, system_flag.value, num_neighbours_flag.value)
    sample_fn = training.make_eval_sample_fn(setup)
    with jax.default_matmul_precision('highest'):  # true float32 on GPU/TPU too
      samples = evaluation.draw_samples(
        lambda key, n: sample_fn(state['ema_params'], key, n),
        jax.random.key(seed_flag.value),
        num_samples_flag.value,
        batch_size_flag.value or config.eval.batch_size,
        keep_positions=bool(samples_out_flag.value),
      )
    result = dict(
      system=config.system, step=int(state['step']), **evaluation.summarize(samples, setup.system)
    )
    name = 'eval.json' if system_flag.value is None else f'eval_{config.system}.json'
    with open(os.path.join(workdir, name), 'w') as f:
      json.dump(result, f, indent=2)
    if samples_out_flag.value:
      np.savez_compressed(
        samples_out_flag.value,
        positions=samples['positions'],
        log_q=samples['log_q'],
        energy=samples['energy'],
        beta=setup.system.beta,
        box=setup.system.box,
        system=config.system,
      )
    print(json.dumps(result, indent=2))
    print(evaluation.result_lines(result, config.system))

  app.run(_main)


if __name__ == '__main__':
  main()
