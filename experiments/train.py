"""Trains a flow for an atomic solid from its energy alone.

  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_8,cpu --workdir=runs/mw_cubic_8

Rerunning the same command resumes from the latest checkpoint in --workdir.
Override any config key with e.g. --config.train.batch_size=64. For several
hosts, launch one process per host with --multihost. The library is
experiments.training; importing this module defines no flags.
"""

import time


def main():
  start = time.time()
  from absl import app, flags, logging
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config.', lock_config=True
  )
  workdir_flag = flags.DEFINE_string('workdir', None, 'Run directory.')
  multihost_flag = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first.')
  flags.mark_flags_as_required(['config', 'workdir'])

  def _main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    import jax

    if multihost_flag.value:
      jax.distributed.initialize()
    from experiments import evaluation, training

    config = config_flag.value
    result = training.train(config, workdir_flag.value, start_time=start)
    if jax.process_index() == 0:
      print(evaluation.result_lines(result, config.system))

  app.run(_main)


if __name__ == '__main__':
  main()
