"""The command-line entry points define their flags in main(), so libraries and
entry points import side by side (no DuplicateFlagError)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMPORTS = r"""
from absl import flags
import experiments.train, experiments.evaluate, experiments.tfep
import experiments.runs, experiments.training, experiments.tfep_stages
import scripts.reference_samples, scripts.tfep_report
defined = {'config', 'workdir', 'num_samples', 'multihost'} & set(flags.FLAGS)
assert not defined, defined
print('OK')
"""


def test_entry_points_and_libraries_import_together():
  out = subprocess.run(
    [sys.executable, '-c', IMPORTS], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == 'OK'
