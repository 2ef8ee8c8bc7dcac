"""Einstein-crystal baseline: βF/N of a named solid by HMC along a λ path and MBAR.

  python -m scripts.einstein_baseline --system=mw_cubic_8 --out=F.json

Steps: a short HMC run of the solid (centre of mass fixed) fits the spring
constant k by equipartition of the mean squared displacement; then all λ
stages (einstein.lambda_schedule) run together and MBAR joins them (systems.einstein).
Exits with status 1 and names the pair if adjacent stages overlap too little.
Flags left unset take per-system defaults (`DEFAULTS`, by particle number).
The record says whether its error bar is to be trusted (`reliable`,
`unreliable_reasons`: systems.estimators.mbar_reasons, judging the adjacent
overlap and `samples_per_stage`, the decorrelated samples of the sparsest
stage, per chain), and so does the printed line.
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from experiments import flag_checks
from systems import einstein, estimators, get_system, sampler

# Per particle number: stages, chains per stage, production steps, burn-in,
# stored every `thin` steps, leapfrog steps per HMC proposal. Chains are long
# enough for the sparsest stage to keep ~1.5x estimators.MIN_CHAIN_SAMPLES
# decorrelated samples per chain: g (in steps) grows with N, ~45 at 64, 65-85
# at 216, 130 at 512 from 500-step chains, which underestimate it; thin keeps
# ~16 records per g. Stages: the adjacent overlap is far above MIN_OVERLAP with few
# stages (0.235 with 12 at N = 64, 0.150 with 24 at 512, where g = 194 steps).
DEFAULTS = {
  8: dict(stages=24, chains=16, steps=2500, burn_in=500, thin=1, leapfrog=2),
  32: dict(stages=44, chains=8, steps=2000, burn_in=400, thin=2, leapfrog=2),
  64: dict(stages=16, chains=4, steps=1400, burn_in=200, thin=2, leapfrog=2),
  # Adjacent overlap falls as the variance of ΔU grows ∝ N: stages ∝ √N at most.
  216: dict(stages=24, chains=4, steps=2400, burn_in=400, thin=4, leapfrog=2),
  512: dict(stages=24, chains=2, steps=4000, burn_in=600, thin=8, leapfrog=2),
}
FIT_CHAINS, FIT_STEPS = 8, 300


def _defaults(num_particles: int) -> dict:
  return DEFAULTS[min(DEFAULTS, key=lambda n: abs(n - num_particles))]


def fit_spring(system, key) -> float:
  """k from the mean squared displacement of a short centre-of-mass-fixed run."""
  x0 = jnp.broadcast_to(
    jnp.asarray(system.lattice, jnp.float32), (FIT_CHAINS, system.num_particles, 3)
  )
  run = sampler.sample(
    system.energy,
    x0,
    key,
    beta=system.beta,
    num_steps=FIT_STEPS,
    burn_in=FIT_STEPS,
    step_size=0.05,
    fix_centre_of_mass=True,
  )
  return einstein.spring_from_displacements(run.samples - system.lattice, system.beta)


def check_flags(args, settings: dict) -> None:
  """Ends the command (exit 2, one line) if a numeric flag is out of range, before any work."""
  flag_checks.check(
    {
      '--stages': (args.stages, flag_checks.at_least(2)),
      '--chains': (args.chains, flag_checks.POSITIVE_INT),
      '--steps': (args.steps, flag_checks.POSITIVE_INT),
      '--burn_in': (args.burn_in, flag_checks.NON_NEGATIVE_INT),
      '--thin': (args.thin, flag_checks.POSITIVE_INT),
      '--leapfrog': (args.leapfrog, flag_checks.POSITIVE_INT),
      '--spring': (args.spring, flag_checks.POSITIVE),
      '--min_overlap': (args.min_overlap, flag_checks.between(0, 0.5)),
      '--seed': (args.seed, flag_checks.SEED),
    },
    # systems.sampler: thin divides steps, at least two stored samples per chain.
    [
      lambda: flag_checks.multiple_of(
        '--steps', settings['steps'], '--thin', settings['thin'], minimum=2
      )
    ],
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--system', required=True)
  parser.add_argument('--out', required=True, help='JSON output path')
  for name in ('stages', 'chains', 'steps', 'burn_in', 'thin', 'leapfrog'):
    parser.add_argument(f'--{name}', type=int, default=None)
  parser.add_argument(
    '--spring', type=float, default=None, help='Einstein spring constant (default: fitted)'
  )
  parser.add_argument('--min_overlap', type=float, default=0.05)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  start, cpu_start = time.time(), time.process_time()
  system = get_system(args.system)
  settings = {
    **_defaults(system.num_particles),
    **{k: v for k, v in vars(args).items() if v is not None},
  }
  check_flags(args, settings)
  key_fit, key_path = jax.random.split(jax.random.PRNGKey(args.seed))
  spring = args.spring or fit_spring(system, key_fit)
  try:
    path = einstein.lambda_path(
      system.energy,
      system.lattice,
      system.beta,
      spring,
      einstein.lambda_schedule(settings['stages']),
      key_path,
      chains_per_stage=settings['chains'],
      num_steps=settings['steps'],
      burn_in=settings['burn_in'],
      thin=settings['thin'],
      num_leapfrog=settings['leapfrog'],
      min_overlap=args.min_overlap,
    )
  except einstein.InsufficientOverlapError as error:
    print(f'einstein_baseline: refusing to report βF/N: {error}', file=sys.stderr)
    return 1

  n = system.num_particles
  record = {
    'system': system.name,
    'num_particles': n,
    'temperature': system.temperature,
    'beta': system.beta,
    'box': system.box.tolist(),
    'thermal_wavelength': system.thermal_wavelength,
    'energy_unit': system.energy_unit,
    'beta_f_per_particle': einstein.beta_f_per_particle(
      path.log_z, n, system.volume, system.thermal_wavelength
    ),
    'beta_f_per_particle_stderr': path.log_z_stderr / n,
    'mean_energy': path.mean_energy,
    'mean_energy_stderr': path.mean_energy_stderr,
    'spring_constant': spring,
    'num_stages': int(path.lambdas.size),
    'lambdas': path.lambdas.tolist(),
    'samples_per_stage': int(path.samples_per_stage.min()),
    'samples_per_stage_all': path.samples_per_stage.tolist(),
    'min_adjacent_overlap': float(path.adjacent_overlap.min()),
    'adjacent_overlap': path.adjacent_overlap.tolist(),
    'statistical_inefficiency': float(path.statistical_inefficiency.max()),
    'statistical_inefficiency_all': path.statistical_inefficiency.tolist(),
    'acceptance': path.acceptance.tolist(),
    'reliable': path.reliable,
    'unreliable_reasons': list(path.reasons),
    'settings': {**settings, 'min_overlap': args.min_overlap, 'seed': args.seed},
    'wall_time_seconds': time.time() - start,
    'cpu_time_seconds': time.process_time() - cpu_start,
  }
  with open(args.out, 'w') as f:
    json.dump(record, f, indent=2)
  print(
    f'{system.name}: βF/N = {record["beta_f_per_particle"]:.5f} ± '
    f'{record["beta_f_per_particle_stderr"]:.5f}, <U> = {path.mean_energy:.3f} '
    f'{system.energy_unit}, {record["num_stages"]} stages, min overlap '
    f'{record["min_adjacent_overlap"]:.3f}, {record["samples_per_stage"]} decorrelated samples '
    f'in the sparsest stage ({record["samples_per_stage"] / settings["chains"]:.3g} per chain), '
    f'{record["wall_time_seconds"]:.0f} s; '
    f'{estimators.unreliable_note(path.reasons) or "reliable"}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
