"""From a trained flow to a free energy: importance sampling and LBAR with HMC samples.

  python -m scripts.free_energy --workdir=W [--system=S [--num_neighbours=K]] --out=F.json \
    [--num_flow_samples=65536] [--hmc_chains=C --hmc_steps=T --hmc_thin=K] [--seed=0]
  python -m scripts.free_energy --workdir=W --out=F.json --flow_only [--target_stderr=5e-4]
  python -m scripts.free_energy ... --flow_samples_out=S.npz   # keep ln q and U of every sample

Loads the newest checkpoint of run W (experiments.runs.load_run; with
--system a local flow is evaluated at another size of its family, with
--num_neighbours at another k, e.g. 14 for an mw_hex_64 run at 216 or 512,
where the larger box holds the whole shell that the 64 box split) and:

1. draws flow samples: importance sampling of ln Z_fixed, with its ESS and the
   reweighted ⟨U⟩;
2. draws HMC samples of the target (experiments.hmc_samples.draw: chains on
   the lattice, centre of mass fixed; the run's hmc settings unless flags
   override them) and evaluates the flow's ln q on them;
3. LBAR between the two sample sets (systems.estimators.lbar), whose error
   counts the HMC chains' correlation (statistical inefficiency of the
   reverse Fermi terms). HMC samples outside the flow's support (two
   particles in one lattice cell) have ln q = −∞: they are counted in the
   estimate and reported, never dropped.

--flow_only skips steps 2 and 3: the flow alone, the cheap path when its
importance sampling is judged reliable. --target_stderr=E draws flow samples
in rounds until the importance-sampling estimate is judged reliable with an
error of βF/N of at most E (or --max_flow_samples are drawn):
--num_flow_samples first, then as many more as the error so far says are
needed (the error falls as 1/√n), at least twice as many while unreliable.

Writes F.json with `importance_sampling` and `lbar` sections (`lbar` and
`hmc` are null with --flow_only), each with `beta_f_per_particle`,
`beta_f_per_particle_stderr` (and, for importance sampling, `ess`,
`lognormal_ess`, `pareto_khat`, `mean_energy`, and `mean_log_weight` and
`log_weight_std` of ln w = −βU − ln q: the lbar log_z minus mean_log_weight is
the flow's reverse KL), whether the estimate is reliable and why not, plus the
sample counts and timings, and prints one line per estimate. βF/N is in the
project convention (systems.convention).
--flow_samples_out=S.npz keeps the flow samples' `log_q` and `energy`, in the
order drawn, with `system`, `beta`, `workdir` and `seed`: `scripts.is_coverage` cuts them
into chunks and checks each chunk's error bar against a reference.
Progress bars follow the long parts on a terminal.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments import evaluation, flag_checks, hmc_samples, runs, training
from flows import registry
from systems import convention, estimators


def _bar(total: int, description: str):
  if not sys.stderr.isatty():
    return None
  from tqdm import tqdm

  return tqdm(total=total, desc=description, dynamic_ncols=True)


def flow_samples(sample, params, num_samples: int, batch_size: int, key) -> dict:
  """log_q (n,) and energy (n,; +∞ outside the basin) of fresh flow samples.

  sample: the compiled sampler of training.make_eval_sample_fn, built once per run so
  that rounds of samples reuse its compilation.
  """
  bar = _bar(-(-num_samples // batch_size), 'flow samples')

  def sample_fn(k, n):
    out = sample(params, k, n)
    if bar is not None:
      bar.update(1)
    return out

  samples = evaluation.draw_samples(sample_fn, key, num_samples, batch_size)
  if bar is not None:
    bar.close()
  return samples


DEFAULT_MAX_FLOW_SAMPLES = 1 << 20  # the cap of --target_stderr's rounds

# Each further round of --target_stderr draws this much more than the error so far
# says is needed, so that one round usually suffices.
_ROUND_MARGIN = 1.2


def flow_samples_to_target(
  draw, system, first: int, target_stderr: float, max_samples: int
) -> tuple[dict, dict]:
  """Flow samples in rounds until the importance-sampling estimate is judged reliable and
  its error of βF/N is ≤ target_stderr (an error bar of an unreliable estimate means
  nothing, however small).

  Args:
    draw: (round index, n) -> samples dict of `flow_samples`.
    system: the target system.
    first: samples of the first round.
    target_stderr: the error of βF/N aimed at (per particle, dimensionless).
    max_samples: no more samples than this in all.

  Returns:
    (samples, summary of the rounds: `target_stderr`, `target_reached`, `rounds`).
  """
  samples = draw(0, min(first, max_samples))
  rounds = 1
  while True:
    row = evaluation.summarize(samples, system)
    stderr, drawn = row['beta_f_per_particle_stderr'], len(samples['log_q'])
    reached = bool(row['reliable'] and stderr <= target_stderr)
    if reached or drawn >= max_samples:
      break
    # stderr² ∝ 1/n: n·(stderr/target)² in all; while unreliable, at least twice as many
    # and as many as the smaller ESS so far (the samples' own, or the log-weights'
    # spread's) says give MIN_EFFECTIVE_SAMPLES effective ones.
    wanted = drawn * (stderr / target_stderr) ** 2 * _ROUND_MARGIN if np.isfinite(stderr) else 0
    if not row['reliable']:
      ess = np.nanmin([row['ess'], row['lognormal_ess'], np.inf])
      ess = ess if np.isfinite(ess) and ess > 0 else 0.0
      enough = estimators.MIN_EFFECTIVE_SAMPLES / ess * _ROUND_MARGIN if ess else 0
      wanted = max(wanted, 2 * drawn, enough)
    more = int(min(max(wanted - drawn, drawn // 4, 1), max_samples - drawn))
    extra = draw(rounds, more)
    samples = {k: np.concatenate([samples[k], extra[k]]) for k in samples}
    rounds += 1
  return samples, dict(target_stderr=target_stderr, target_reached=reached, rounds=rounds)


def save_flow_samples(path: str, flow: dict, system, workdir: str, seed: int) -> None:
  """Writes `log_q` and `energy` (n,; float64, the system's energy unit) to `path`
  (.npz), with the `system` name, its `beta`, the run's `workdir` and the `seed`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  np.savez(
    path,
    log_q=np.asarray(flow['log_q'], np.float64),
    energy=np.asarray(flow['energy'], np.float64),
    system=system.name,
    beta=system.beta,
    workdir=os.path.abspath(workdir),
    seed=seed,
  )


def log_q_of(setup, params, positions: np.ndarray, batch_size: int) -> np.ndarray:
  """ln q (m,) of positions (m, N, 3) under the flow (−∞ outside its support)."""
  log_prob = jax.jit(lambda p, x: setup.flow(p).log_prob(x))
  bar = _bar(-(-len(positions) // batch_size), 'ln q of HMC samples')
  parts = []
  for i in range(0, len(positions), batch_size):
    parts.append(np.asarray(log_prob(params, jnp.asarray(positions[i : i + batch_size]))))
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  return np.concatenate(parts).astype(np.float64)


def _beta_f(log_z: float, system) -> float:
  return float(
    convention.beta_f_per_particle(
      log_z, system.num_particles, system.volume, system.thermal_wavelength
    )
  )


def estimate(
  workdir: str,
  system: str | None = None,
  num_flow_samples: int = 65536,
  hmc: dict | None = None,
  seed: int = 0,
  batch_size: int = 1024,
  num_neighbours: int | None = None,
  flow_only: bool = False,
  target_stderr: float | None = None,
  max_flow_samples: int = DEFAULT_MAX_FLOW_SAMPLES,
  flow_samples_out: str | None = None,
) -> dict:
  """Both estimates for run `workdir` at `system` (importance sampling alone if
  `flow_only`); returns the JSON record.

  Args:
    workdir: a training run (experiments.train).
    system: a size of the run's family (None: its own).
    num_flow_samples: flow samples for importance sampling and LBAR.
    hmc: overrides of the run's config.hmc (num_chains, num_steps, burn_in,
      thin, num_leapfrog, step_size).
    seed: seeds both samplers.
    batch_size: configurations per compiled call.
    num_neighbours: a local flow's conditioning neighbours (None: the run's).
    flow_only: skip the HMC samples and LBAR (`lbar` and `hmc` are None).
    target_stderr: if given, draw flow samples in rounds (num_flow_samples
      first) until importance sampling is judged reliable with an error of
      βF/N of at most this.
    max_flow_samples: the most flow samples drawn with target_stderr.
    flow_samples_out: if given, an .npz path for the flow samples' `log_q` and
      `energy` (n,), in the order drawn, with `system`, `beta`, `workdir` and `seed`.
  """
  start = time.time()
  config, setup, state = runs.load_run(workdir, system, num_neighbours)
  config.hmc.update(hmc or {})
  params = state['ema_params']
  s = setup.system
  timings = {}
  with jax.default_matmul_precision('highest'):
    t = time.time()
    key = jax.random.key(seed)  # further rounds: a branch of their own (split, not fold_in:
    # round 0's batches are fold_in(key, batch), the HMC's fold_in(key, 2))
    round_key = lambda i: key if i == 0 else jax.random.fold_in(jax.random.split(key)[1], i)
    sample = training.make_eval_sample_fn(setup)
    draw = lambda i, n: flow_samples(sample, params, n, batch_size, round_key(i))
    rounds = None
    if target_stderr is None:
      flow = draw(0, num_flow_samples)
    else:
      flow, rounds = flow_samples_to_target(
        draw, s, num_flow_samples, target_stderr, max_flow_samples
      )
    timings['flow_samples'] = time.time() - t
    if flow_samples_out is not None:
      save_flow_samples(flow_samples_out, flow, s, workdir, seed)
    if not flow_only:
      t = time.time()
      drawn = hmc_samples.draw(s, config.hmc, jax.random.fold_in(jax.random.key(seed), 2))
      timings['hmc_samples'] = time.time() - t
      t = time.time()
      log_q_hmc = log_q_of(setup, params, drawn['positions'], min(batch_size, 256))
      timings['log_q_hmc'] = time.time() - t

  row = evaluation.summarize(flow, s)
  importance = dict(
    beta_f_per_particle=row['beta_f_per_particle'],
    beta_f_per_particle_stderr=row['beta_f_per_particle_stderr'],
    ess=row['ess'],
    pareto_khat=row['pareto_khat'],  # tail shape of the weights, beside the rules
    lognormal_ess=row['lognormal_ess'],  # ESS from the log-weights' spread, the second rule
    log_z=row['log_z'],
    log_z_stderr=row['log_z_stderr'],
    mean_energy=row['mean_energy'],
    energy_unit=s.energy_unit,
    mean_log_weight=row['mean_log_weight'],  # E_q[ln w] ≤ ln Z: ln Z − it = reverse KL (kT)
    log_weight_std=row['log_weight_std'],
    num_samples=row['num_samples'],
    num_outside_basin=row['num_zero_weight'],
    num_nonfinite=row['num_nonfinite'],  # left out (NaN energy or ln q), see evaluation
    reliable=row['reliable'],
    unreliable_reasons=row['unreliable_reasons'],
    **(rounds or {}),
  )
  record = dict(
    workdir=workdir,
    trained_system=runs.trained_system(workdir),
    conditioner=config.model.conditioner,
    num_neighbours=registry.section(config.model.to_dict()).get('num_neighbours'),
    system=s.name,
    num_particles=s.num_particles,
    step=int(state['step']),
    importance_sampling=importance,
    lbar=None,
    hmc=None,
    seed=seed,
  )
  if not flow_only:
    record.update(_lbar_sections(flow, drawn, log_q_hmc, s, config))
  record['timings_seconds'] = dict(timings, total=time.time() - start)
  return record


def _lbar_sections(flow: dict, drawn: dict, log_q_hmc: np.ndarray, s, config) -> dict:
  """The `lbar` and `hmc` sections of the record: LBAR between the flow samples and
  the HMC samples `drawn` (experiments.hmc_samples.draw), whose ln q is log_q_hmc."""
  used = np.isfinite(flow['log_q']) & ~np.isnan(flow['energy'])
  num_chains = int(drawn['num_chains'])
  lbar = estimators.lbar(
    flow['log_q'][used],
    -s.beta * flow['energy'][used],
    log_q_hmc,
    -s.beta * drawn['energy'],
    target_chains=num_chains,
  )
  outside = int(np.sum(log_q_hmc == -np.inf))
  lbar_record = dict(
    beta_f_per_particle=_beta_f(lbar.value, s),
    beta_f_per_particle_stderr=lbar.stderr / s.num_particles,
    log_z=lbar.value,
    log_z_stderr=lbar.stderr,
    overlap=lbar.overlap,
    statistical_inefficiency=lbar.statistical_inefficiency,
    num_flow_samples=int(used.sum()),
    num_hmc_samples=len(log_q_hmc),
    num_hmc_chains=num_chains,
    num_hmc_outside_support=outside,
    fraction_hmc_outside_support=outside / len(log_q_hmc),
    reliable=lbar.reliable,
    unreliable_reasons=list(lbar.reasons),
  )
  return dict(
    lbar=lbar_record,
    hmc=dict(
      settings=config.hmc.to_dict(),
      acceptance=float(np.mean(drawn['acceptance'])),
      energy_statistical_inefficiency=float(np.mean(drawn['statistical_inefficiency'])),
      mean_energy=float(np.mean(drawn['energy'])),
    ),
  )


def lines(record: dict) -> str:
  """One line per estimate, an UNRELIABLE line under an unreliable one, and a TAIL
  line under importance sampling whose Pareto k̂ is above the PSIS threshold."""
  out = []
  name = record['system']
  for key, label in (('importance_sampling', 'importance sampling'), ('lbar', 'LBAR')):
    r = record[key]
    if r is None:  # --flow_only
      continue
    detail = (
      f'ESS {r["ess"]:.3g} (by the spread {r["lognormal_ess"]:.3g}), '
      f'Pareto k̂ {r["pareto_khat"]:.2f}, '
      f'⟨U⟩ = {r["mean_energy"]:.5g} {r["energy_unit"]}'
      if key == 'importance_sampling'
      else f'overlap {r["overlap"]:.3g}, {r["num_hmc_outside_support"]} of '
      f'{r["num_hmc_samples"]} HMC samples outside the support'
    )
    out.append(
      f'{name} {label}: βF/N = {r["beta_f_per_particle"]:.5f} ± '
      f'{r["beta_f_per_particle_stderr"]:.5f} ({detail})'
    )
    note = estimators.unreliable_note(r['unreliable_reasons'])
    if note:
      out.append(f'  {note}')
    if key == 'importance_sampling':
      threshold = estimators.psis_khat_threshold(r['num_samples'])
      if r['pareto_khat'] >= threshold:  # NaN (no tail to fit) never warns
        out.append(
          f'  TAIL: Pareto k̂ {r["pareto_khat"]:.2f} >= {threshold:.2f} = 1 − 1/log₁₀ n: '
          'the error bar may miss the unsampled tail; compare with LBAR '
          '(docs/standalone_flows.md, sixth round)'
        )
  return '\n'.join(out)


def _run_hmc(workdir: str) -> dict:
  """The hmc section of run `workdir`'s config.json ({} without one: load_run then says why)."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f).get('hmc', {})
  except (OSError, json.JSONDecodeError):
    return {}


def check_flags(args) -> None:
  """Exits with one line naming every bad flag, before anything is loaded.

  --hmc_steps must suit --hmc_thin (experiments.hmc_samples.draw); a flag left
  unset takes the run's value from its config.json.
  """
  relations = []
  if args.hmc_steps is not None or args.hmc_thin is not None:
    run = _run_hmc(args.workdir)
    steps, thin = (
      (f'--hmc_{name}', flag) if flag is not None else (f"the run's hmc.{key}", run.get(key))
      for name, flag, key in (
        ('steps', args.hmc_steps, 'num_steps'),
        ('thin', args.hmc_thin, 'thin'),
      )
    )
    if steps[1] is not None and thin[1] is not None:
      relations.append(
        lambda: flag_checks.multiple_of(*steps, *thin, factor=hmc_samples.NUM_CHUNKS, minimum=2)
      )
  hmc_flags = {
    f'--hmc_{name}': getattr(args, f'hmc_{name}') for name in ('chains', 'steps', 'thin', 'burn_in')
  }
  given = [f'{flag}={value}' for flag, value in hmc_flags.items() if value is not None]
  if args.max_flow_samples is not None and args.target_stderr is None:
    relations.append(
      lambda: (
        f'--max_flow_samples={args.max_flow_samples} without --target_stderr: expected '
        'it only with --target_stderr (without one, --num_flow_samples are drawn)'
      )
    )
  if args.target_stderr is not None:
    cap = args.max_flow_samples or DEFAULT_MAX_FLOW_SAMPLES
    relations.append(
      lambda: (
        None
        if args.num_flow_samples <= cap
        else f'--num_flow_samples={args.num_flow_samples}: expected at most the '
        f'--max_flow_samples={cap} of --target_stderr'
      )
    )
  if args.flow_samples_out is not None and not args.flow_samples_out.endswith('.npz'):
    relations.append(
      lambda: f'--flow_samples_out={args.flow_samples_out}: expected a path ending in .npz'
    )
  if args.flow_only and given:
    relations.append(
      lambda: f'{", ".join(given)} with --flow_only: expected no HMC flag (no HMC sampling)'
    )
  flag_checks.check(
    {
      '--num_neighbours': (args.num_neighbours, flag_checks.POSITIVE_INT),
      '--num_flow_samples': (args.num_flow_samples, flag_checks.at_least(2)),
      '--target_stderr': (args.target_stderr, flag_checks.POSITIVE),
      '--max_flow_samples': (args.max_flow_samples, flag_checks.at_least(2)),
      '--hmc_chains': (args.hmc_chains, flag_checks.POSITIVE_INT),
      '--hmc_steps': (args.hmc_steps, flag_checks.POSITIVE_INT),
      '--hmc_thin': (args.hmc_thin, flag_checks.POSITIVE_INT),
      '--hmc_burn_in': (args.hmc_burn_in, flag_checks.NON_NEGATIVE_INT),
      '--seed': (args.seed, flag_checks.SEED),
    },
    relations,
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='training run directory')
  parser.add_argument('--system', default=None, help="another size of the run's family")
  parser.add_argument(
    '--num_neighbours', type=int, default=None, help="a local flow's k (default: the run's)"
  )
  parser.add_argument('--out', required=True, help='JSON output path')
  parser.add_argument('--num_flow_samples', type=int, default=65536)
  parser.add_argument('--hmc_chains', type=int, default=None, help="default: the run's hmc")
  parser.add_argument('--hmc_steps', type=int, default=None, help='production steps per chain')
  parser.add_argument('--hmc_thin', type=int, default=None)
  parser.add_argument('--hmc_burn_in', type=int, default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--flow_only', action='store_true', help='importance sampling alone: no HMC, no LBAR'
  )
  parser.add_argument(
    '--target_stderr',
    type=float,
    default=None,
    help='draw flow samples until the importance-sampling error of βF/N is at most this',
  )
  parser.add_argument(
    '--max_flow_samples',
    type=int,
    default=None,
    help=f'the most flow samples, with --target_stderr (default {DEFAULT_MAX_FLOW_SAMPLES})',
  )
  parser.add_argument(
    '--flow_samples_out',
    default=None,
    help="an .npz path: keep the flow samples' log_q and energy (for scripts.is_coverage)",
  )
  args = parser.parse_args(argv)
  check_flags(args)
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  hmc = {
    key: value
    for key, value in (
      ('num_chains', args.hmc_chains),
      ('num_steps', args.hmc_steps),
      ('thin', args.hmc_thin),
      ('burn_in', args.hmc_burn_in),
    )
    if value is not None
  }
  record = estimate(
    args.workdir,
    args.system,
    args.num_flow_samples,
    hmc,
    args.seed,
    num_neighbours=args.num_neighbours,
    flow_only=args.flow_only,
    target_stderr=args.target_stderr,
    max_flow_samples=args.max_flow_samples or DEFAULT_MAX_FLOW_SAMPLES,
    flow_samples_out=args.flow_samples_out,
  )
  directory = os.path.dirname(os.path.abspath(args.out))
  os.makedirs(directory, exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(record, f, indent=2)
  print(lines(record))
  return 0


if __name__ == '__main__':
  sys.exit(main())
