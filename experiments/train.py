"""Trains a flow for an atomic solid from its energy, from HMC samples, or both.

  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_8,cpu --workdir=runs/mw_cubic_8

Rerunning the same command resumes from the latest checkpoint in --workdir.
Override any config key with e.g. --config.train.batch_size=64. With
--init_from=W a fresh run starts from run W's parameters (its moving
average), also at another size of W's family for a local flow (e.g. a
mw_cubic_216 run from a mw_cubic_64 one); a run that already has a
checkpoint resumes and ignores it. Without the flag, the config's
`init_from` (set by the fine-tune variants, e.g. `mw_cubic_216,local_from_64`;
'' for none) is used. For several hosts, launch one process per
host with --multihost. The library is experiments.training; importing this
module defines no flags.
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
  init_from_flag = flags.DEFINE_string(
    'init_from', None, 'Start a fresh run from the parameters of this run directory.'
  )
  multihost_flag = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first.')
  flags.mark_flags_as_required(['config', 'workdir'])

  def _main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    import jax

    if multihost_flag.value:
      jax.distributed.initialize()
    from experiments import checkpointing, evaluation, runs, training

    config, workdir = config_flag.value, workdir_flag.value
    initial = None
    init_from = init_from_flag.value or config.get('init_from', '')
    if init_from and not checkpointing.has_checkpoint(workdir):
      initial = runs.initial_params(init_from, config)
    result = training.train(config, workdir, start_time=start, initial_params=initial)
    if jax.process_index() == 0:
      print(evaluation.result_lines(result, config.system))

  app.run(_main)


if __name__ == '__main__':
  main()
