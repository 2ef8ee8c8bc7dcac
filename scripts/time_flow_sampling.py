"""Times one jitted SolidFlow.sample_and_log_prob with the paper's model.

Usage: python -m scripts.time_flow_sampling [--system mw_cubic_64]
       [--num_samples 128] [--repeats 5] [--num_layers 24]

Builds the published architecture (24 layers, 16 bins, width 256, 8
frequencies, 2 heads, 2 blocks) for a named system from systems.get_system,
compiles once, then prints the parameter count and the median wall time of
`repeats` further calls.
"""

import argparse
import time

import jax
import numpy as np
from flax import nnx

from flows import SolidFlow
from systems import get_system


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--system', default='mw_cubic_64')
  parser.add_argument('--num_samples', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--num_layers', type=int, default=24)
  args = parser.parse_args()

  system = get_system(args.system)
  flow = SolidFlow(
    system.lattice,
    system.box,
    num_layers=args.num_layers,
    num_bins=16,
    embedding_size=256,
    num_heads=2,
    num_blocks=2,
    num_frequencies=8,
    noise_scale=0.2,
    rngs=nnx.Rngs(0),
  )
  sample = nnx.jit(lambda f, k: f.sample_and_log_prob(k, args.num_samples))
  start = time.perf_counter()
  jax.block_until_ready(sample(flow, jax.random.key(0)))
  compile_s = time.perf_counter() - start
  times = []
  for i in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(sample(flow, jax.random.key(i + 1)))
    times.append(time.perf_counter() - start)
  print(
    f'system={args.system} N={system.num_particles} '
    f'device={jax.devices()[0].device_kind} params={flow.num_params} '
    f'samples={args.num_samples} first_call_s={compile_s:.2f} '
    f'median_s={np.median(times):.4f}'
  )


if __name__ == '__main__':
  main()
