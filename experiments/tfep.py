"""Learned targeted FEP between the end states of a ladder: sample, train, compute the works.

  python -m experiments.tfep \
    --config=experiments/configs/tfep_solvation.py:cpu --workdir=runs/tfep_solvation_cpu

Runs experiments.tfep_stages.run: HMC samples of every state (samples.npz),
the map trained on them (checkpoints/, metrics.jsonl) and the held-out works
(works.npz), each cached in --workdir, so rerunning the command resumes.
Override any config key with e.g. --config.train.num_steps=500. Then
`python -m scripts.tfep_report --workdir=...` makes the table and plots.
"""

import os
import time


def main():
  start = time.time()
  from absl import app, flags
  from absl import logging as absl_logging
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file('config', None, 'TFEP config.', lock_config=True)
  workdir_flag = flags.DEFINE_string('workdir', None, 'Run directory.')
  flags.mark_flags_as_required(['config', 'workdir'])

  def _main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    from experiments import tfep_stages

    works = tfep_stages.run(config_flag.value, workdir_flag.value, start)
    print(
      f'step {int(works["step"])}: works written to {os.path.join(workdir_flag.value, "works.npz")}'
    )

  app.run(_main)


if __name__ == '__main__':
  main()
