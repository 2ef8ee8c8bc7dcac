"""Speed and memory of one training configuration, or of a sweep over system size.

  python -m scripts.benchmark \
    --config=experiments/configs/monatomic_water.py:mw_cubic_8,tutorial --out=bench.json

After compiling and warming up, times the compiled training step
(experiments.training.make_train_step: sample, loss, gradient, Adam update, one
call, no host round trip; the path gradient and the Rényi-2 term as the config
sets them), the evaluation sampler (sample + log q + physical energy) and the
system's energy + gradient alone, and reads the peak host RSS, peak device
memory (accelerators only), the matmul FLOPs of one step (and XLA's own cost
analysis), and the model FLOP utilisation on known GPUs (`mfu`, against the peak
of the model's compute_dtype; `mfu_fp32` and `mfu_bf16` against each). Step
times are also given in process CPU time, which other processes' load disturbs
less than wall time. Config keys are overridden as usual, e.g.
--config.model.transformer.compute_dtype=float32.

  python -m scripts.benchmark --config=...:mw_cubic_8,tutorial --sweep \
    --steps=3 --batch_size=16 --out=sweep.json

runs the same architecture (the model section of --config) on every system of
--sweep_systems, each in its own process so that peak RSS is per system, and
writes sweep.json, sweep.md (table and the log-log slopes of the step times
against N) and sweep.png (log-log CPU time of the reverse-KL and forward-KL
steps and peak RSS against N, with fitted slopes; --compare=other.json
draws an earlier sweep, e.g. of the other conditioner, beside it). The
forward-KL step (the flow's density of given samples, no energy) is timed on
the flow's own samples.
"""

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.extend.core import ClosedJaxpr, Jaxpr
from ml_collections import config_flags

from experiments import flag_checks, training
from flows import registry
from scripts.benchmark_energy import energy_grad_throughput, families, slope

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config.', lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed calls of each workload.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed training steps after compiling.')
_BATCH = flags.DEFINE_integer(
  'batch_size', 0, "Samples per step (0: the config's train.batch_size)."
)
_OUT = flags.DEFINE_string('out', '', 'JSON output path (sweep: also .md and .png).')
_SWEEP = flags.DEFINE_bool('sweep', False, 'Sweep over --sweep_systems.')
_SWEEP_SYSTEMS = flags.DEFINE_list(
  'sweep_systems',
  ['mw_cubic_8', 'mw_cubic_64', 'mw_cubic_216', 'mw_cubic_512', 'lj_32', 'lj_256', 'lj_500'],
  'Systems of the sweep (architecture and optimiser from --config).',
)
_COMPARE = flags.DEFINE_string(
  'compare', '', 'JSON of an earlier sweep (another architecture) to draw beside this one.'
)
flags.mark_flag_as_required('config')

GIB = 2.0**30
# Dense peak FLOP/s (bf16, fp32) by device_kind substring, first match wins.
PEAK_FLOPS = (
  ('H100 PCIe', 756e12, 51e12),
  ('H100', 989e12, 67e12),
  ('H200', 989e12, 67e12),
  ('A100', 312e12, 19.5e12),
)


def peak_flops(device_kind: str) -> tuple[float, float] | None:
  """(bf16, fp32) dense peak FLOP/s of a known GPU, else None."""
  for name, bf16, fp32 in PEAK_FLOPS:
    if name in device_kind:
      return bf16, fp32
  return None


def peak_rss_gib() -> float:
  """Peak resident set size of this process so far (GiB)."""
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return maxrss / (GIB if sys.platform == 'darwin' else GIB / 1024)  # bytes or KiB


def _median_seconds(fn, repeats: int) -> tuple[float, float]:
  """Median wall and process-CPU seconds of `repeats` calls of fn(), each
  run to completion (CPU time is less sensitive to other processes' load).
  """
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall), statistics.median(cpu)


def xla_flops(compiled) -> float | None:
  """FLOPs of one call from XLA's cost analysis (None if unavailable).

  XLA counts the body of a loop once, so with the flow's layers in a
  lax.scan this undercounts by about the number of layers; see matmul_flops.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def matmul_flops(jaxpr) -> float:
  """2·M·N·K summed over every dot_general of a jaxpr, scan bodies × length.

  Remat recomputation is included (it is executed); of a cond's branches the
  largest counts; a while loop's body counts once (trip count unknown).
  """
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    subs = []
    for value in eqn.params.values():
      for v in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(v, (ClosedJaxpr, Jaxpr)):
          subs.append(matmul_flops(getattr(v, 'jaxpr', v)))
    if subs:
      inner = max(subs) if eqn.primitive.name == 'cond' else sum(subs)
      total += inner * eqn.params.get('length', 1)
  return total


def measure(config, steps: int, warmup: int) -> dict:
  """Benchmarks `config`; returns the JSON row (times in s, memory in GiB)."""
  batch = config.train.batch_size
  setup, state = training.build(config)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(state['params']))

  train_step = training.make_train_step(
    setup,
    batch,
    path_gradient=config.train.path_gradient,
    renyi2_weight=config.train.renyi2_weight,
  )
  start = time.perf_counter()
  step = train_step.lower(state, None).compile()
  compile_s = time.perf_counter() - start
  flops = matmul_flops(jax.make_jaxpr(train_step)(state, None).jaxpr)
  xla_step_flops = xla_flops(step)

  def train_call():
    nonlocal state
    state, metrics = step(state, None)
    return metrics['loss']

  for _ in range(warmup):
    jax.block_until_ready(train_call())
  load_before = os.getloadavg()[0]
  step_s, step_cpu_s = _median_seconds(train_call, steps)

  eval_fn = training.make_eval_sample_fn(setup)
  key = jax.random.key(config.seed)
  jax.block_until_ready(eval_fn(state['params'], key, batch))  # compile
  eval_s, _ = _median_seconds(lambda: eval_fn(state['params'], key, batch), steps)

  # The forward-KL step (density of given samples, no energy): the flow's own cost.
  x = eval_fn(state['params'], key, batch)[0]
  reference = jnp.asarray(setup.reference_data(state['params'], np.asarray(x))[0])
  forward_step = training.make_train_step(setup, batch, forward_kl_weight=1.0)
  forward_step = forward_step.lower(state, reference).compile()

  def forward_call():
    nonlocal state
    state, metrics = forward_step(state, reference)
    return metrics['loss']

  jax.block_until_ready(forward_call())
  forward_s, forward_cpu_s = _median_seconds(forward_call, steps)

  energy = energy_grad_throughput(setup.system, batch, repeats=steps)

  device = jax.devices()[0]
  memory = device.memory_stats() if device.platform != 'cpu' else None
  peaks = peak_flops(device.device_kind) if device.platform == 'gpu' else None
  achieved = flops / step_s if flops else None
  return dict(
    config=f'{config.system},{config.variant}',
    system=config.system,
    variant=config.variant,
    num_particles=setup.system.num_particles,
    model=config.model.to_dict(),
    batch_size=batch,
    num_params=int(num_params),
    device=str(device),
    device_kind=device.device_kind,
    num_devices=jax.device_count(),
    jax_version=jax.__version__,
    xla_flags=os.environ.get('XLA_FLAGS', ''),
    steps=steps,
    warmup=warmup,
    load_average=[load_before, os.getloadavg()[0]],
    compile_seconds=compile_s,
    median_step_seconds=step_s,
    median_step_cpu_seconds=step_cpu_s,
    median_forward_kl_step_seconds=forward_s,
    median_forward_kl_step_cpu_seconds=forward_cpu_s,
    train_steps_per_second=1.0 / step_s,
    train_samples_per_second=batch / step_s,
    eval_samples_per_second=batch / eval_s,
    energy_grad_evals_per_second=energy['configs_per_s'],
    peak_rss_gib=peak_rss_gib(),
    peak_device_memory_gib=(
      memory['peak_bytes_in_use'] / GIB if memory and 'peak_bytes_in_use' in memory else None
    ),
    flops_per_step=flops,
    xla_cost_analysis_flops=xla_step_flops,
    achieved_flops_per_second=achieved,
    mfu_fp32=achieved / peaks[1] if achieved and peaks else None,
    mfu_bf16=achieved / peaks[0] if achieved and peaks else None,
    mfu=(
      achieved / peaks[0 if compute_dtype(config.model.to_dict()) == 'bfloat16' else 1]
      if achieved and peaks
      else None
    ),
  )


def compute_dtype(model: dict) -> str:
  """The matmul dtype of a model section, flat (old rows) or nested: its family's
  compute_dtype (flows.registry), 'float32' for a family without one."""
  return registry.section(model).get('compute_dtype', 'float32')


def summary(row: dict) -> str:
  """One human-readable line."""
  dtype = compute_dtype(row['model'])
  mfu = f', MFU ({dtype} peak) {row["mfu"]:.1%}' if row.get('mfu') else ''
  flops = f', {row["flops_per_step"] / 1e9:.1f} GFLOP/step' if row['flops_per_step'] else ''
  return (
    f'{row["config"]} ({row["num_params"]:,} params, {dtype} matmuls, '
    f'batch {row["batch_size"]}) '
    f'on {row["device_kind"]}, jax {row["jax_version"]}: '
    f'{row["median_step_seconds"]:.4f} s/step '
    f'(CPU {row["median_step_cpu_seconds"]:.3f} s) = '
    f'{row["train_steps_per_second"]:.2f} steps/s '
    f'({row["train_samples_per_second"]:.0f} samples/s), compile '
    f'{row["compile_seconds"]:.1f} s, eval {row["eval_samples_per_second"]:.0f} '
    f'samples/s, energy+grad {row["energy_grad_evals_per_second"]:.0f}/s, '
    f'peak RSS {row["peak_rss_gib"]:.2f} GiB{flops}{mfu}'
  )


def _run_child(system: str, out: str) -> dict:
  """Benchmarks `system` in a fresh process with this command's --config flags."""
  passed = [a for a in sys.argv[1:] if a.startswith('--config')]
  command = [
    sys.executable,
    '-m',
    'scripts.benchmark',
    *passed,
    f'--config.system={system}',
    f'--steps={_STEPS.value}',
    f'--warmup={_WARMUP.value}',
    f'--batch_size={_BATCH.value}',
    f'--out={out}',
  ]
  subprocess.run(command, check=True)
  with open(out) as f:
    return json.load(f)


# The step times of a sweep: (row key, what it times).
STEP_TIMES = (
  ('median_step_cpu_seconds', 'reverse-KL step (sample, energy, gradient)'),
  ('median_forward_kl_step_cpu_seconds', 'forward-KL step (density of samples)'),
)


def table(rows: list[dict]) -> str:
  """Markdown table of a sweep, then the log-log slopes of its step times."""
  lines = [
    '| system | N | params | batch | s/step | CPU s/step | forward-KL CPU s/step | '
    'compile s | eval samples/s | energy+grad/s | peak RSS GiB | GFLOP/step |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in rows:
    gflops = f'{r["flops_per_step"] / 1e9:.2f}' if r['flops_per_step'] else '–'
    lines.append(
      f'| {r["system"]} | {r["num_particles"]} | {r["num_params"]:,} | '
      f'{r["batch_size"]} | {r["median_step_seconds"]:.3f} | '
      f'{r["median_step_cpu_seconds"]:.3f} | {r["median_forward_kl_step_cpu_seconds"]:.3f} | '
      f'{r["compile_seconds"]:.1f} | {r["eval_samples_per_second"]:.0f} | '
      f'{r["energy_grad_evals_per_second"]:.0f} | {r["peak_rss_gib"]:.2f} | {gflops} |'
    )
  for family, sub in families(rows).items():
    if len(sub) > 1:
      fits = ', '.join(f'{what} {slope(sub, key):.2f}' for key, what in STEP_TIMES)
      lines.append(f'\nLog-log slope of CPU time against N ({family}): {fits}.')
  return '\n'.join(lines) + '\n'


def plot(sweeps: dict[str, list[dict]], path: str) -> None:
  """Log-log CPU step times (reverse and forward KL) and peak RSS against N, one
  curve per sweep (label: its name) and family, with fitted slopes."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  panels = [(ax, key, what) for ax, (key, what) in zip(axes, STEP_TIMES)]
  panels.append((axes[2], 'peak_rss_gib', 'peak RSS of the process (GiB)'))
  for ax, key, what in panels:
    for (name, rows), marker in zip(sweeps.items(), 'osD^v'):
      # An earlier sweep may predate a timing (e.g. the forward-KL step): no curve.
      for family, sub in families([r for r in rows if key in r]).items():
        label = f'{name} {family}'
        if len(sub) > 1 and key != 'peak_rss_gib':
          label += f' (slope {slope(sub, key):.2f})'
        ax.loglog(
          [r['num_particles'] for r in sub], [r[key] for r in sub], marker=marker, label=label
        )
    plain = ticker.FuncFormatter(lambda v, _: f'{v:g}')
    ax.yaxis.set_major_formatter(plain)
    ax.xaxis.set_major_formatter(plain)
    ax.set(
      xlabel='N (particles)', ylabel='CPU seconds' if key != 'peak_rss_gib' else 'GiB', title=what
    )
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
  r = next(iter(sweeps.values()))[0]
  fig.suptitle(f'batch {r["batch_size"]}, {r["device_kind"]}, jax {r["jax_version"]}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def sweep(out: str) -> None:
  """Runs every sweep system in its own process; writes JSON, markdown, PNG.

  With --compare, the figure also shows that earlier sweep's rows.
  """
  stem = os.path.splitext(out)[0]
  rows = [_run_child(s, f'{stem}.{s}.json') for s in _SWEEP_SYSTEMS.value]
  with open(out, 'w') as f:
    json.dump(rows, f, indent=2)
  with open(stem + '.md', 'w') as f:
    f.write(table(rows))
  sweeps = {rows[0]['variant']: rows}
  if _COMPARE.value:
    with open(_COMPARE.value) as f:
      other = json.load(f)
    sweeps[other[0]['variant']] = other
  plot(sweeps, stem + '.png')
  print(table(rows))


def main(argv):
  del argv
  flag_checks.check(
    {
      '--steps': (_STEPS.value, flag_checks.POSITIVE_INT),
      '--warmup': (_WARMUP.value, flag_checks.NON_NEGATIVE_INT),
      '--batch_size': (
        _BATCH.value,
        (flag_checks.NON_NEGATIVE_INT[0], "an integer >= 0 (0: the config's train.batch_size)"),
      ),
    }
  )
  if _SWEEP.value:
    if not _OUT.value:
      raise app.UsageError('--sweep needs --out.')
    sweep(_OUT.value)
    return
  config = _CONFIG.value
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
  row = measure(config, _STEPS.value, _WARMUP.value)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(row, f, indent=2)
  print(summary(row))


if __name__ == '__main__':
  app.run(main)
