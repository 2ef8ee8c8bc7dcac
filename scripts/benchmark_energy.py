"""Throughput of jitted energy + gradient evaluations (configurations per second).

  python -m scripts.benchmark_energy --systems=mw_cubic_64,mw_cubic_512 --batch=128

Compares the neighbour-list mW energy (`System.energy`) with the dense all-triplets
reference, in float32, on lattices perturbed by 0.05 σ. Each figure is the median
of several timed calls after a warm-up (compile) call. The dense sum costs
O(N^3) per configuration, so above `--dense_max_n` particles it runs on a
smaller batch (`--dense_batch`); configurations per second stay comparable.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import flag_checks
from systems import System, get_system, monatomic_water

METHODS = ('neighbour_list', 'dense')


def _energy_fn(system: System, method: str):
  if method == 'neighbour_list':
    return system.energy
  if method == 'dense' and system.potential == 'monatomic_water':
    return lambda x: monatomic_water.reference_energy(x, system.box)
  raise ValueError(
    f'Method {method!r} is not available for {system.name} '
    f'({system.potential}); expected one of {METHODS} '
    f'(dense only for monatomic water).'
  )


def energy_grad_throughput(
  system: System, batch: int, method: str = 'neighbour_list', repeats: int = 5, seed: int = 0
) -> dict:
  """Times jit(value_and_grad) of the summed energy of `batch` float32 configurations.

  Returns:
    dict with system, method, batch, repeats, median_s (per call) and
    configs_per_s (batch / median_s).
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
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--systems', default='mw_cubic_64,mw_cubic_512')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
    '--dense_max_n', type=int, default=256, help='above this N the dense method uses --dense_batch'
  )
  parser.add_argument('--dense_batch', type=int, default=8)
  parser.add_argument('--out', default='', help='optional JSON output path')
  args = parser.parse_args()
  flag_checks.check(
    {
      '--batch': (args.batch, flag_checks.POSITIVE_INT),
      '--repeats': (args.repeats, flag_checks.POSITIVE_INT),
      '--dense_max_n': (args.dense_max_n, flag_checks.NON_NEGATIVE_INT),
      '--dense_batch': (args.dense_batch, flag_checks.POSITIVE_INT),
    }
  )

  rows = []
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32')
  print(
    f'{"system":14s} {"N":>4s} {"method":15s} {"batch":>5s} {"median s":>10s} {"configs/s":>11s}'
  )
  for name in args.systems.split(','):
    system = get_system(name)
    methods = METHODS if system.potential == 'monatomic_water' else METHODS[:1]
    for method in methods:
      batch = args.batch
      if method == 'dense' and system.num_particles > args.dense_max_n:
        batch = min(batch, args.dense_batch)
      row = energy_grad_throughput(system, batch, method, args.repeats)
      row['num_particles'] = system.num_particles
      rows.append(row)
      note = ' (smaller batch: dense O(N^3))' if batch != args.batch else ''
      print(
        f'{name:14s} {system.num_particles:4d} {method:15s} {batch:5d} '
        f'{row["median_s"]:10.4f} {row["configs_per_s"]:11.1f}{note}',
        flush=True,
      )
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(dict(device=jax.devices()[0].device_kind, dtype='float32', rows=rows), f, indent=2)


if __name__ == '__main__':
  main()
