"""How far Gaussian bases are from a solid: reverse KL of the harmonic and moment-matched bases.

  python -m scripts.base_quality --hmc_samples=W/hmc_samples.npz --reference=F.json \
    [--scales=1.0,0.9,1.1] [--num_samples=4096] [--out=B.json]

For the system of HMC samples W/hmc_samples.npz (experiments.hmc_samples), draws
`num_samples` from each Gaussian base of flows.LocalSolidFlow with no layers,
particle 0 pinned:

- `harmonic ×s`: N(0, s²·C_h), C_h = (βH)⁻¹ the harmonic crystal
  (systems.harmonic.covariance), for each s of --scales;
- `moment-matched`: N(0, C_p), C_p the covariance of the HMC samples'
  displacements (systems.harmonic.empirical_covariance), the Gaussian of
  least forward KL to the target: no Gaussian base captures more of its
  second moments.

For each it prints and writes the mean log-weight E_q[ln w] and, with the
reference ln Z of F.json (a scripts.free_energy record of the same system:
its LBAR, else its importance sampling), the reverse KL divergence
ln Z − E_q[ln w] in kT, in all and per particle, with the ESS. The reverse
KL is what training lowers, and it is well estimated from a few thousand
samples where the ESS of a poor base is not (an ESS below 100/num_samples is
noise). Compare with `mean_log_weight` of a trained flow's record.
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import evaluation
from experiments.configs import lennard_jones, monatomic_water
from flows.local.model import LocalSolidFlow
from systems import get_system, harmonic

# The config file of each potential, for the `local` variant's neighbour count (a
# LatticeGraph is built even without layers, and its k must close a shell).
CONFIGS = {'lennard_jones': lennard_jones, 'monatomic_water': monatomic_water}


def base_flow(system, covariance: np.ndarray) -> LocalSolidFlow:
  """The local flow of `system` with no layers over N(0, covariance)."""
  config = CONFIGS[system.potential].get_config(f'{system.name},local')
  return LocalSolidFlow(
    system.lattice,
    system.box,
    system.basis_index,
    covariance=covariance,
    num_layers=0,
    num_bins=2,
    num_neighbours=config.model.local.num_neighbours,
    width=1,
    filter_width=1,
    spline_range=1.0,
    rngs=nnx.Rngs(0),
  )


@jax.jit(static_argnums=(0, 1, 4))
def _sample(graphdef, system, state, key, num_samples: int):
  """Positions, ln q and energy (+∞ outside the basin) of the flow nnx.merge(graphdef, state)."""
  x, log_q, in_basin = nnx.merge(graphdef, state).sample(key, num_samples)
  return x, log_q, jnp.where(in_basin, system.energy(x), jnp.inf)


def base_rows(system, positions, reference_log_z: float, scales, num_samples: int, seed=0):
  """One row per base: name, mean_log_weight, reverse_kl (kT), per particle, and ESS."""
  bases = [(f'harmonic x{s:g}', s**2 * harmonic.covariance(system)) for s in scales]
  bases.append(('moment-matched', harmonic.empirical_covariance(system, positions)))
  out = []
  for name, covariance in bases:
    graphdef, state = nnx.split(base_flow(system, covariance))
    samples = evaluation.draw_samples(
      lambda k, n, g=graphdef, state=state: _sample(g, system, state, k, n),
      jax.random.key(seed),
      num_samples,
      512,
    )
    row = evaluation.summarize(samples, system)
    kl = reference_log_z - row['mean_log_weight']
    out.append(
      dict(
        base=name,
        mean_log_weight=row['mean_log_weight'],
        reverse_kl=kl,
        reverse_kl_per_particle=kl / system.num_particles,
        ess=row['ess'],
        num_samples=row['num_samples'],
        num_outside_basin=row['num_zero_weight'],
      )
    )
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--hmc_samples', required=True, help='an hmc_samples.npz of a run')
  parser.add_argument('--reference', required=True, help='a free_energy.json of the system')
  parser.add_argument('--scales', default='1.0', help='comma-separated s of the harmonic bases')
  parser.add_argument('--num_samples', type=int, default=4096)
  parser.add_argument('--out', default='', help='write the rows to this JSON file')
  args = parser.parse_args(argv)
  drawn = np.load(args.hmc_samples)
  system = get_system(str(drawn['system']))
  with open(args.reference) as f:
    reference = json.load(f)
  if reference['system'] != system.name:
    raise SystemExit(
      f'--reference is a record of {reference["system"]}; the HMC samples are of {system.name}.'
    )
  estimate = reference['lbar'] or reference['importance_sampling']
  scales = [float(s) for s in args.scales.split(',')]
  rows = base_rows(system, drawn['positions'], estimate['log_z'], scales, args.num_samples)
  for row in rows:
    print(
      f'{system.name} {row["base"]:>16}: E_q[ln w] {row["mean_log_weight"]:.2f}, reverse KL '
      f'{row["reverse_kl"]:.2f} kT ({row["reverse_kl_per_particle"]:.4f} per particle), '
      f'ESS {row["ess"]:.2g}'
    )
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(dict(system=system.name, reference=args.reference, rows=rows), f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
