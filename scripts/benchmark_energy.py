"""Throughput of jitted energy + gradient evaluations (configurations per second).

  python -m scripts.benchmark_energy --systems=mw_cubic_64,mw_cubic_512 --batch=128
  python -m scripts.benchmark_energy --systems=mw_cubic_216,mw_cubic_512,mw_cubic_1000,\
mw_cubic_1728 --methods=all_pairs,cell_list --batch=8

Methods: `neighbour_list` is `System.energy` as it runs (pairs by the system's
`pair_method`, 'auto'); `all_pairs` and `cell_list` force its pair search
(`systems.cell_list`: the full N x N distance matrix, or the cell list where
the box has >= 3 cells per axis); `dense` is the mW all-triplets reference.
In float32, on lattices perturbed by 0.05 σ. Each figure is the median of
several timed calls after a warm-up (compile) call. The dense sum costs
O(N^3) per configuration, so above `--dense_max_n` particles it runs on a
smaller batch (`--dense_batch`); configurations per second stay comparable.
Ends with the log-log slope of the time per configuration against N, per
system family and method.
"""

import argparse
import dataclasses
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import flag_checks
from systems import System, cell_list, get_system, monatomic_water

METHODS = ('neighbour_list', 'dense', 'all_pairs', 'cell_list')
_PAIR_METHODS = {'neighbour_list': 'auto', 'all_pairs': 'dense', 'cell_list': 'cell_list'}


def unavailable(system: System, method: str) -> str | None:
  """Why `method` cannot run on `system`, or None if it can."""
  if method not in METHODS:
    return f'unknown method {method!r}; expected one of {METHODS}'
  if method == 'dense' and system.potential != 'monatomic_water':
    return 'the dense all-triplets sum is for monatomic water only'
  if method == 'cell_list':
    try:
      cell_list.choose('cell_list', system.box, system.cutoff, system.num_particles)
    except ValueError as error:
      return str(error)
  return None


def _energy_fn(system: System, method: str):
  reason = unavailable(system, method)
  if reason is not None:
    raise ValueError(f'Method {method!r} is not available for {system.name}: {reason}.')
  if method == 'dense':
    return lambda x: monatomic_water.reference_energy(x, system.box)
  return dataclasses.replace(system, pair_method=_PAIR_METHODS[method]).energy


def energy_grad_throughput(
  system: System, batch: int, method: str = 'neighbour_list', repeats: int = 5, seed: int = 0
) -> dict:
  """Times jit(value_and_grad) of the summed energy of `batch` float32 configurations.

  Returns:
    dict with system, method, batch, repeats, median_s (per call),
    configs_per_s (batch / median_s) and seconds_per_config (median_s / batch).
  """
  if batch < 1 or repeats < 1:
    raise ValueError(f'batch and repeats must be >= 1, got {batch} and {repeats}.')
  energy = _energy_fn(system, method)
  noise = np.random.default_rng(seed).normal(size=(batch, *system.lattice.shape))
  x = jnp.asarray(system.lattice + 0.05 * system.thermal_wavelength * noise, dtype=jnp.float32)
  step = jax.jit(jax.value_and_grad(lambda y: jnp.sum(energy(y))))
  jax.block_until_ready(step(x))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(x))
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return dict(
    system=system.name,
    method=method,
    batch=batch,
    repeats=repeats,
    median_s=median,
    configs_per_s=batch / median,
    seconds_per_config=median / batch,
  )


def slope(rows: list[dict], key: str) -> float:
  """Least-squares slope of log(row[key]) against log N over `rows` (>= 2 sizes)."""
  n = np.log([r['num_particles'] for r in rows])
  return float(np.polyfit(n, np.log([r[key] for r in rows]), 1)[0])


def families(rows: list[dict]) -> dict[str, list[dict]]:
  """Rows by system family prefix ('mw_cubic', 'lj', ...), each sorted by N."""
  out = {}
  for r in sorted(rows, key=lambda r: r['num_particles']):
    out.setdefault(r['system'].rsplit('_', 1)[0], []).append(r)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--systems', default='mw_cubic_64,mw_cubic_512')
  parser.add_argument(
    '--methods',
    default='neighbour_list,dense',
    help=f'comma-separated, of {",".join(METHODS)} (each where it applies)',
  )
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
    '--dense_max_n', type=int, default=256, help='above this N the dense method uses --dense_batch'
  )
  parser.add_argument('--dense_batch', type=int, default=8)
  parser.add_argument('--out', default='', help='optional JSON output path')
  args = parser.parse_args()
  methods = args.methods.split(',')
  flag_checks.check(
    {
      '--methods': (
        args.methods,
        (lambda v: set(v.split(',')) <= set(METHODS), f'comma-separated of {",".join(METHODS)}'),
      ),
      '--batch': (args.batch, flag_checks.POSITIVE_INT),
      '--repeats': (args.repeats, flag_checks.POSITIVE_INT),
      '--dense_max_n': (args.dense_max_n, flag_checks.NON_NEGATIVE_INT),
      '--dense_batch': (args.dense_batch, flag_checks.POSITIVE_INT),
    }
  )

  rows = []
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32')
  print(
    f'{"system":14s} {"N":>4s} {"method":15s} {"batch":>5s} {"median s":>10s} '
    f'{"ms/config":>10s} {"configs/s":>11s}'
  )
  for name in args.systems.split(','):
    system = get_system(name)
    for method in methods:
      reason = unavailable(system, method)
      if reason is not None:
        print(f'{name:14s} {system.num_particles:4d} {method:15s} skipped: {reason}')
        continue
      batch = args.batch
      if method == 'dense' and system.num_particles > args.dense_max_n:
        batch = min(batch, args.dense_batch)
      row = energy_grad_throughput(system, batch, method, args.repeats)
      row['num_particles'] = system.num_particles
      rows.append(row)
      note = ' (smaller batch: dense O(N^3))' if batch != args.batch else ''
      print(
        f'{name:14s} {system.num_particles:4d} {method:15s} {batch:5d} '
        f'{row["median_s"]:10.4f} {1e3 * row["seconds_per_config"]:10.2f} '
        f'{row["configs_per_s"]:11.1f}{note}',
        flush=True,
      )
  for method in methods:
    for family, sub in families([r for r in rows if r['method'] == method]).items():
      if len(sub) > 1:
        sizes = f'N = {sub[0]["num_particles"]} to {sub[-1]["num_particles"]}'
        print(
          f'log-log slope of time per configuration against N, {family} {method} '
          f'({sizes}): {slope(sub, "seconds_per_config"):.2f}'
        )
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(dict(device=jax.devices()[0].device_kind, dtype='float32', rows=rows), f, indent=2)


if __name__ == '__main__':
  main()
