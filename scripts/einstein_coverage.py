"""Coverage of Einstein-baseline error bars against the sparsest stage's decorrelated samples.

  python -m scripts.einstein_coverage --system=mw_cubic_8 --out=coverage.json

Calibrates `systems.estimators.MIN_CHAIN_SAMPLES`. One HMC batch runs
repeats × chains chains per λ stage (einstein.sample_stages); each repeat's
chains, cut to each of --steps production steps, make one short baseline
(einstein.path_from_stages), and the truth is the same MBAR on all chains at
full length (repeats × as many samples as one repeat; its error is printed).
Runs are binned by the decorrelated samples per chain of their sparsest
stage (the rule's measure); per bin the table gives the fraction whose ±1σ
and ±2σ intervals cover the truth (nominal 68 % and 95 %) and the RMS of
(estimate − truth)/σ (nominal 1).
"""

import argparse
import json
import sys
import time

import jax
import numpy as np

from scripts.einstein_baseline import fit_spring
from systems import einstein, get_system

BIN_EDGES = (0, 5, 10, 20, 40, 80, 160, np.inf)


def interval_coverage(z: np.ndarray) -> dict:
  """Of standardised errors z = (estimate − truth)/σ: the fractions with |z| < 1 and
  |z| < 2 (nominal 0.68 and 0.95 for honest error bars) and the RMS of z (nominal 1);
  NaN for no z."""
  if not len(z):
    return dict(coverage_1sigma=float('nan'), coverage_2sigma=float('nan'), rms_z=float('nan'))
  return dict(
    coverage_1sigma=float(np.mean(np.abs(z) < 1.0)),
    coverage_2sigma=float(np.mean(np.abs(z) < 2.0)),
    rms_z=float(np.sqrt(np.mean(z * z))),
  )


def coverage_table(runs: list[dict], truth: float, chains: int) -> list[dict]:
  """Rows per bin of `min_stage_samples / chains`: runs, 1σ/2σ coverage of truth, RMS z."""
  rows = []
  for low, high in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
    inside = [r for r in runs if low <= r['min_stage_samples'] / chains < high]
    if not inside:
      continue
    z = np.array([(r['log_z'] - truth) / r['log_z_stderr'] for r in inside])
    rows.append(
      dict(samples_per_chain=f'[{low}, {high})', runs=len(inside), **interval_coverage(z))
    )
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--system', default='mw_cubic_8')
  parser.add_argument('--out', required=True, help='JSON output path')
  parser.add_argument('--repeats', type=int, default=48)
  parser.add_argument('--chains', type=int, default=4, help='chains per stage and repeat')
  parser.add_argument('--stages', type=int, default=24)
  parser.add_argument('--steps', default='12,24,48,96,192,384', help='comma-separated lengths')
  parser.add_argument('--burn_in', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  lengths = sorted(int(s) for s in args.steps.split(','))

  start = time.time()
  system = get_system(args.system)
  key_fit, key_path = jax.random.split(jax.random.PRNGKey(args.seed))
  spring = fit_spring(system, key_fit)
  lambdas = einstein.lambda_schedule(args.stages)
  stages = einstein.sample_stages(
    system.energy,
    system.lattice,
    system.beta,
    spring,
    lambdas,
    key_path,
    chains_per_stage=args.repeats * args.chains,
    num_steps=lengths[-1],
    burn_in=args.burn_in,
  )
  sampled = time.time() - start

  def path(selection):
    return einstein.path_from_stages(selection, lambdas, system.beta, spring)

  reference = path(stages)
  runs, refused = [], 0
  for length in lengths:
    for r in range(args.repeats):
      chains = slice(r * args.chains, (r + 1) * args.chains)
      try:
        result = path(stages.select(chains, length))
      except einstein.InsufficientOverlapError:
        refused += 1
        continue
      runs.append(
        dict(
          steps=length,
          repeat=r,
          log_z=result.log_z,
          log_z_stderr=result.log_z_stderr,
          min_stage_samples=int(result.samples_per_stage.min()),
          max_statistical_inefficiency=float(result.statistical_inefficiency.max()),
        )
      )
  table = coverage_table(runs, reference.log_z, args.chains)
  record = dict(
    command=' '.join(['python -m scripts.einstein_coverage', *(argv or sys.argv[1:])]),
    system=system.name,
    spring_constant=spring,
    settings={k: v for k, v in vars(args).items() if k != 'out'},
    truth_log_z=reference.log_z,
    truth_log_z_stderr=reference.log_z_stderr,
    truth_min_stage_samples=int(reference.samples_per_stage.min()),
    refused_for_overlap=refused,
    table=table,
    runs=runs,
    sampling_seconds=sampled,
    wall_time_seconds=time.time() - start,
  )
  with open(args.out, 'w') as f:
    json.dump(record, f, indent=2)
  print(
    f'{system.name}: truth ln Z_W = {reference.log_z:.4f} ± {reference.log_z_stderr:.4f} '
    f'({record["truth_min_stage_samples"]} samples in its sparsest stage), {len(runs)} runs, '
    f'{refused} refused for overlap, {record["wall_time_seconds"]:.0f} s'
  )
  print('sparsest-stage samples per chain   runs  1σ coverage  2σ coverage  RMS z')
  for row in table:
    print(
      f'{row["samples_per_chain"]:>32}  {row["runs"]:>5}  {row["coverage_1sigma"]:>11.2f}  '
      f'{row["coverage_2sigma"]:>11.2f}  {row["rms_z"]:>5.2f}'
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
