"""Trains a flow for an atomic solid from its energy alone.

  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_8,cpu --workdir=runs/mw_cubic_8

Rerunning the same command resumes from the latest checkpoint in --workdir.
Override any config key with e.g. --config.train.batch_size=64. For several
hosts, launch one process per host with --multihost.
"""

import time

_START = time.time()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  import jax

  if _MULTIHOST.value:
    jax.distributed.initialize()
  from experiments import evaluation, training

  result = training.train(_CONFIG.value, _WORKDIR.value, start_time=_START)
  if jax.process_index() == 0:
    print(evaluation.result_lines(result, _CONFIG.value.system))


if __name__ == '__main__':
  app.run(main)
