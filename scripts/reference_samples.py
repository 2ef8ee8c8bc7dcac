"""Reference (HMC) samples of a solid's Boltzmann distribution, for the report and LBAR.

  python -m scripts.reference_samples --system=mw_cubic_8 --out=W/hmc_samples.npz \
    [--workdir=W] [--chains=16 --steps=4000 --burn_in=1000 --thin=20 --seed=0]

Runs `systems.sampler` (HMC, centre of mass fixed, chains started on the
lattice) on exp(−β U) with the physical energy and writes an .npz with
positions (m, N, 3) (length unit), energy (m,) (energy unit), the system's
name, β and box, and the per-chain acceptance and statistical inefficiency of
the energy. With --workdir (a training run) it also stores log_q (m,), the
density of the run's evaluated parameters at each sample: the flow's density
is translation invariant (particle 0 is its origin), so fixing the centre of
mass loses nothing. That file is what `scripts.report --hmc_samples` needs for
LBAR, energy histograms and g(r).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import flag_checks
from experiments.runs import load_run
from systems import get_system, sampler

LOG_Q_BATCH = 1024  # samples per compiled log q call


def flow_log_prob(workdir: str, system_name: str, positions: np.ndarray) -> np.ndarray:
  """ln q (m,) of positions (m, N, 3) under the latest checkpoint of `workdir`."""
  config, setup, state = load_run(workdir)
  if config.system != system_name:
    raise ValueError(
      f'--workdir {workdir!r} trained {config.system!r}, not --system={system_name!r}.'
    )
  log_prob = jax.jit(lambda params, x: setup.flow(params).log_prob(x))
  chunks = []
  with jax.default_matmul_precision('highest'):  # as experiments.evaluate
    for i in range(0, len(positions), LOG_Q_BATCH):
      batch = jnp.asarray(positions[i : i + LOG_Q_BATCH], jnp.float32)
      chunks.append(np.asarray(log_prob(state['ema_params'], batch)))
  return np.concatenate(chunks).astype(np.float64)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--system', required=True)
  parser.add_argument('--out', required=True, help='.npz output path')
  parser.add_argument('--workdir', default=None, help='training run: adds log_q')
  parser.add_argument('--chains', type=int, default=16)
  parser.add_argument('--steps', type=int, default=4000, help='production steps per chain')
  parser.add_argument('--burn_in', type=int, default=1000)
  parser.add_argument('--thin', type=int, default=20, help='keep every thin-th step')
  parser.add_argument(
    '--step_size',
    type=float,
    default=0.05,
    help='initial leapfrog step (length unit; adapted in burn-in)',
  )
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  flag_checks.check(
    {
      '--chains': (args.chains, flag_checks.POSITIVE_INT),
      '--steps': (args.steps, flag_checks.POSITIVE_INT),
      '--burn_in': (args.burn_in, flag_checks.NON_NEGATIVE_INT),
      '--thin': (args.thin, flag_checks.POSITIVE_INT),
      '--step_size': (args.step_size, flag_checks.POSITIVE),
      '--seed': (args.seed, flag_checks.SEED),
    },
    # systems.sampler stores steps/thin samples per chain, at least two for their g.
    [lambda: flag_checks.multiple_of('--steps', args.steps, '--thin', args.thin, minimum=2)],
  )

  start = time.time()
  system = get_system(args.system)
  x0 = jnp.broadcast_to(
    jnp.asarray(system.lattice, jnp.float32), (args.chains, system.num_particles, 3)
  )
  run = sampler.sample(
    system.energy,
    x0,
    jax.random.key(args.seed),
    beta=system.beta,
    num_steps=args.steps,
    step_size=args.step_size,
    burn_in=args.burn_in,
    thin=args.thin,
    fix_centre_of_mass=True,
  )
  positions = np.asarray(run.samples, np.float64).reshape(-1, system.num_particles, 3)
  arrays = dict(
    positions=positions,
    energy=np.asarray(run.energies, np.float64).reshape(-1),
    system=system.name,
    beta=system.beta,
    box=np.asarray(system.box),
    acceptance=np.asarray(run.acceptance),
    statistical_inefficiency=np.asarray(run.statistical_inefficiency),
  )
  if args.workdir:
    arrays['log_q'] = flow_log_prob(args.workdir, system.name, positions)
  np.savez_compressed(args.out, **arrays)
  summary = dict(
    system=system.name,
    num_samples=len(positions),
    mean_energy=float(arrays['energy'].mean()),
    acceptance=float(run.acceptance.mean()),
    statistical_inefficiency=float(np.max(run.statistical_inefficiency)),
    log_q=bool(args.workdir),
    wall_time_seconds=time.time() - start,
  )
  print(json.dumps(summary))
  return summary


if __name__ == '__main__':
  main()
