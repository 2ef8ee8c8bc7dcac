"""scripts.benchmark: its FLOP count by hand, and a smoke test of the CLI on the
tiny mw_cubic_8 model (two timed steps)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from scripts import benchmark, benchmark_energy
from systems import get_system

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
    'median_forward_kl_step_seconds',
  ):
    assert row[key] > 0, key
  assert row['num_params'] > 0 and isinstance(row['num_params'], int)
  if row['device_kind'] == 'cpu':
    assert row['peak_device_memory_gib'] is None and row['mfu_fp32'] is None


def test_matmul_flops_by_hand():
  """2·M·N·K per matrix product; a scan body counts `length` times; of a cond's
  branches the largest counts."""

  def f(x, w, predicate):
    y = x @ w  # (3, 4) @ (4, 5): 2·3·5·4 = 120
    y, _ = jax.lax.scan(lambda c, _: (c @ jnp.ones((5, 5)), None), y, None, length=7)  # 7·150
    return jax.lax.cond(
      predicate,
      lambda y: y @ jnp.ones((5, 2)),  # 2·3·2·5 = 60
      lambda y: y[:, :2],  # 0
      y,
    )

  jaxpr = jax.make_jaxpr(f)(jnp.ones((3, 4)), jnp.ones((4, 5)), True).jaxpr
  assert benchmark.matmul_flops(jaxpr) == 120 + 7 * 150 + 60


def test_sweep_slopes_by_hand():
  """t = c·N^1.5 exactly gives slope 1.5 for each family; the table states it."""
  rows = [
    dict(
      system=f'{family}_{n}',
      num_particles=n,
      median_step_cpu_seconds=c * n**1.5,
      median_forward_kl_step_cpu_seconds=c * n,
    )
    for family, c in (('mw_cubic', 1e-3), ('lj', 5e-4))
    for n in (64, 216, 512)
  ]
  for family, sub in benchmark.families(rows).items():
    assert [r['num_particles'] for r in sub] == [64, 216, 512], family
    assert abs(benchmark.slope(sub, 'median_step_cpu_seconds') - 1.5) < 1e-9
    assert abs(benchmark.slope(sub, 'median_forward_kl_step_cpu_seconds') - 1.0) < 1e-9


def test_sweep_plot_draws_an_earlier_sweep_without_forward_kl_times(tmp_path):
  """A --compare sweep written before the forward-KL timing existed is drawn where it can be."""

  def rows(variant, forward_kl):
    return [
      dict(
        system=f'mw_cubic_{n}',
        num_particles=n,
        variant=variant,
        batch_size=16,
        device_kind='cpu',
        jax_version='0',
        peak_rss_gib=1.0 + n / 512,
        median_step_cpu_seconds=1e-3 * n,
        **({'median_forward_kl_step_cpu_seconds': 5e-4 * n} if forward_kl else {}),
      )
      for n in (64, 216, 512)
    ]

  path = tmp_path / 'sweep.png'
  benchmark.plot({'local': rows('local', True), 'tutorial': rows('tutorial', False)}, str(path))
  assert path.stat().st_size > 1000


def test_energy_benchmark_forces_the_pair_search_where_it_applies():
  small, mw_216 = get_system('mw_cubic_64'), get_system('mw_cubic_216')
  assert 'cell list needs >= 3' in benchmark_energy.unavailable(small, 'cell_list')
  assert 'monatomic water only' in benchmark_energy.unavailable(get_system('lj_32'), 'dense')
  assert benchmark_energy.unavailable(mw_216, 'cell_list') is None
  row = benchmark_energy.energy_grad_throughput(mw_216, 2, 'cell_list', repeats=1)
  assert row['method'] == 'cell_list' and row['seconds_per_config'] * 2 == row['median_s'] > 0
