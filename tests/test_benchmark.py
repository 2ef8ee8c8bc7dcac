"""Smoke test of scripts.benchmark on the tiny mw_cubic_8 model (two timed steps)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_writes_positive_figures(tmp_path):
  out = tmp_path / 'bench.json'
  subprocess.run(
    [
      sys.executable,
      '-m',
      'scripts.benchmark',
      '--config=experiments/configs/monatomic_water.py:mw_cubic_8,tiny',
      '--steps',
      '2',
      '--warmup=1',
      f'--out={out}',
    ],
    cwd=ROOT,
    check=True,
  )
  row = json.loads(out.read_text())
  assert row['config'] == 'mw_cubic_8,tiny'
  assert row['jax_version'] and row['device_kind']
  for key in (
    'train_steps_per_second',
    'train_samples_per_second',
    'median_step_seconds',
    'compile_seconds',
    'peak_rss_gib',
    'eval_samples_per_second',
    'energy_grad_evals_per_second',
    'flops_per_step',
  ):
    assert row[key] > 0, key
  assert row['num_params'] > 0 and isinstance(row['num_params'], int)
  assert row['train_samples_per_second'] == (row['batch_size'] * row['train_steps_per_second'])
  if row['device_kind'] == 'cpu':
    assert row['peak_device_memory_gib'] is None and row['mfu_fp32'] is None
