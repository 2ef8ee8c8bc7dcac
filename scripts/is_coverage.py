"""Coverage of importance-sampling error bars: chunks of stored flow samples against a reference.

  python -m scripts.free_energy --workdir=W --flow_only --num_flow_samples=131072 \
    --out=F.json --flow_samples_out=S.npz
  python -m scripts.is_coverage --samples=S.npz[,S2.npz] --reference=R.json --out=C.json \
    [--chunk_sizes=4096,8192,16384,32768]
  python -m scripts.is_coverage --combine=C.json,C2.json --out=ALL.json  # one table of many flows

Tests the reliability rules of importance sampling (systems.estimators: at least
MIN_EFFECTIVE_SAMPLES effective samples, n·ESS and n·exp(−σ₊²), σ₊ the spread of
ln w above its median) and the Pareto k̂ warning on a flow's own weights. The samples
(`scripts.free_energy --flow_samples_out`, several files of one system joined
in the order given) are cut into disjoint chunks of each size. Each chunk is
one importance-sampling estimate, exactly as `scripts.free_energy` makes it
(experiments.evaluation.summarize), and its error of ln Z is compared with an
independent reference, the `lbar` section of R.json
(a `scripts.free_energy` record of the same system, with its own HMC samples):

    z = (ln Z_chunk − ln Z_ref) / √(σ_chunk² + σ_ref²).

For each selection of chunks (all; those with n·ESS ≥ 100, the first rule
alone; those judged reliable, both rules; those the second rule refuses; the
first rule with k̂ below the PSIS sample-size threshold 1 − 1/log₁₀ n or a
fixed cut) the table gives the fraction whose ±1σ and ±2σ
intervals cover the reference (nominal 68 % and 95 %) and the RMS of z (1).
The chunks are not independent of the reference's error, which all share:
with σ_ref well below σ_chunk that correlation is small. --combine joins the
chunks of earlier outputs (several flows or systems) into one table.
"""

import argparse
import json
import os
import sys

import numpy as np

from experiments import evaluation
from scripts.einstein_coverage import interval_coverage
from systems import estimators, get_system

DEFAULT_CHUNK_SIZES = (4096, 8192, 16384, 32768)
KHAT_CUTS = (0.7, 0.8)  # PSIS's usual cap, and the cut that the sixth round's flows suggested


def load_samples(paths: list[str]) -> tuple[dict, str]:
  """`log_q` and `energy` of the files joined in order, and their one system's name.

  Refuses a file given twice, two files drawn from one run with one seed (the same
  samples twice), files of several systems, and a file whose β is not its system's.
  """
  if not paths:
    raise ValueError('--samples is empty: expected one or more .npz files')
  repeated = sorted({p for p in paths if paths.count(p) > 1})
  if repeated:
    raise ValueError(f'--samples names {repeated} more than once: expected each file once')
  parts, systems, draws = [], set(), {}
  for path in paths:
    with np.load(path) as f:
      missing = {'log_q', 'energy', 'system', 'beta', 'seed'} - set(f.files)
      if missing:
        raise ValueError(
          f'{path} lacks {sorted(missing)}: expected the file of '
          'scripts.free_energy --flow_samples_out'
        )
      parts.append({k: np.asarray(f[k], np.float64) for k in ('log_q', 'energy')})
      name, beta = str(f['system']), float(f['beta'])
      draw = (str(f['workdir']) if 'workdir' in f.files else '', int(f['seed']))
    if draw in draws and draw[0]:
      raise ValueError(
        f'{path} and {draws[draw]} were both drawn from run {draw[0]} with seed {draw[1]}: '
        'expected independent samples (another --seed)'
      )
    draws[draw] = path
    if beta != get_system(name).beta:
      raise ValueError(f'{path} has beta={beta}: expected {get_system(name).beta}, that of {name}')
    systems.add(name)
  if len(systems) != 1:
    raise ValueError(f'--samples mix systems {sorted(systems)}: expected samples of one system')
  joined = {k: np.concatenate([p[k] for p in parts]) for k in ('log_q', 'energy')}
  return joined, systems.pop()


def load_reference(path: str, system: str) -> tuple[float, float]:
  """(ln Z, its error) of the `lbar` section of a scripts.free_energy record of `system`."""
  with open(path) as f:
    record = json.load(f)
  if record.get('system') != system:
    raise ValueError(
      f'--reference={path} is a record of {record.get("system")!r}: expected one of '
      f"{system!r}, the samples' system"
    )
  lbar = record.get('lbar')
  if not lbar:
    raise ValueError(
      f'--reference={path} has no lbar section (a --flow_only record?): expected an '
      'LBAR estimate with its own HMC samples, independent of the samples checked'
    )
  if not lbar.get('reliable', False):
    raise ValueError(
      f'--reference={path}: its LBAR is judged unreliable ({lbar.get("unreliable_reasons")}): '
      'expected a reliable reference'
    )
  return float(lbar['log_z']), float(lbar['log_z_stderr'])


def chunk_rows(samples: dict, system, reference: tuple[float, float], sizes) -> list[dict]:
  """One row per disjoint chunk of each size: its estimate, ESS, k̂, judgement and z."""
  ref, ref_stderr = reference
  total = len(samples['log_q'])
  rows = []
  for size in sizes:
    for i in range(total // size):
      part = {k: v[i * size : (i + 1) * size] for k, v in samples.items()}
      row = evaluation.summarize(part, system)
      rows.append(
        dict(
          size=size,
          chunk=i,
          log_z=row['log_z'],
          log_z_stderr=row['log_z_stderr'],
          effective_samples=row['ess'] * row['num_samples'],
          lognormal_effective_samples=row['lognormal_ess'] * row['num_samples'],
          pareto_khat=row['pareto_khat'],
          reliable=row['reliable'],
          reverse_kl=ref - row['mean_log_weight'],
          z=(row['log_z'] - ref) / float(np.hypot(row['log_z_stderr'], ref_stderr)),
        )
      )
  return rows


def selections() -> dict:
  """The named selections of chunk rows that the table reports: the judgement
  (`reliable`), its first rule alone (n·ESS), and that rule with k̂ cuts."""
  least = estimators.MIN_EFFECTIVE_SAMPLES
  ess_rule = lambda r: r['effective_samples'] >= least
  below_threshold = lambda r: r['pareto_khat'] < estimators.psis_khat_threshold(r['size'])
  chosen = {
    'all': lambda r: True,
    f'n·ESS ≥ {least}': ess_rule,
    'judged reliable': lambda r: r['reliable'],
    f'n·ESS ≥ {least}, refused by the spread': lambda r: ess_rule(r) and not r['reliable'],
    f'n·ESS ≥ {least}, k̂ < 1 − 1/log₁₀ n': lambda r: ess_rule(r) and below_threshold(r),
  }
  for cut in KHAT_CUTS:
    chosen[f'n·ESS ≥ {least}, k̂ < {cut}'] = lambda r, c=cut: ess_rule(r) and r['pareto_khat'] < c
  return chosen


def coverage_table(rows: list[dict]) -> list[dict]:
  """Per selection: chunks, 1σ and 2σ coverage of the reference, RMS and mean of z."""
  table = []
  for name, keep in selections().items():
    z = np.array([r['z'] for r in rows if np.isfinite(r['z']) and keep(r)])
    table.append(
      dict(selection=name, chunks=len(z), **interval_coverage(z), mean_z=_mean_or_nan(z))
    )
  return table


def _mean_or_nan(values: np.ndarray) -> float:
  return float(np.mean(values)) if len(values) else float('nan')


def _write(path: str, record: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(record, f, indent=2)


def _print_table(table: list[dict]) -> None:
  print(f'{"selection":>36}  chunks  1σ coverage  2σ coverage  RMS z  mean z')
  for row in table:
    print(
      f'{row["selection"]:>36}  {row["chunks"]:>6}  {row["coverage_1sigma"]:>11.2f}  '
      f'{row["coverage_2sigma"]:>11.2f}  {row["rms_z"]:>5.2f}  {row["mean_z"]:>+6.2f}'
    )


def combine(paths: list[str]) -> dict:
  """One record of the chunks of earlier outputs (`pools`: each one's system, samples,
  reference and whole estimate), with their joint table."""
  repeated = sorted({p for p in paths if paths.count(p) > 1})
  if repeated:
    raise ValueError(f'--combine names {repeated} more than once: expected each output once')
  pools, rows = [], []
  for path in paths:
    with open(path) as f:
      record = json.load(f)
    if 'chunks' not in record or 'whole' not in record:
      raise ValueError(f'--combine: {path} is not an output of scripts.is_coverage --samples')
    pools.append({k: record[k] for k in ('system', 'samples', 'reference', 'whole')})
    rows += [dict(r, pool=len(pools) - 1) for r in record['chunks']]
  return dict(pools=pools, table=coverage_table(rows), chunks=rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--samples', help='comma-separated .npz files of --flow_samples_out')
  parser.add_argument('--reference', help='scripts.free_energy record with LBAR')
  parser.add_argument('--combine', help='comma-separated outputs of earlier runs, instead')
  parser.add_argument('--out', required=True, help='JSON output path')
  parser.add_argument(
    '--chunk_sizes', default=','.join(map(str, DEFAULT_CHUNK_SIZES)), help='comma-separated'
  )
  args = parser.parse_args(argv)
  command = ' '.join(['python -m scripts.is_coverage', *(argv or sys.argv[1:])])
  if args.combine is not None:
    if args.samples is not None or args.reference is not None:
      parser.error('--combine with --samples or --reference: expected one or the other')
    record = dict(command=command, **combine([p for p in args.combine.split(',') if p]))
    _write(args.out, record)
    print(f'{len(record["pools"])} pools, {len(record["chunks"])} chunks')
    _print_table(record['table'])
    return 0
  if args.samples is None or args.reference is None:
    parser.error('expected --samples and --reference (or --combine)')
  try:
    sizes = sorted({int(s) for s in args.chunk_sizes.split(',')})
  except ValueError:
    sizes = []
  if not sizes or sizes[0] < 2:
    parser.error(f'--chunk_sizes={args.chunk_sizes}: expected integers >= 2, comma-separated')
  paths = [p for p in args.samples.split(',') if p]
  samples, name = load_samples(paths)
  system = get_system(name)
  reference = load_reference(args.reference, name)
  too_large = [size for size in sizes if size > len(samples['log_q'])]
  if too_large:
    parser.error(
      f'--chunk_sizes={args.chunk_sizes}: {too_large} more than the '
      f'{len(samples["log_q"])} samples given'
    )
  rows = chunk_rows(samples, system, reference, sizes)
  whole = chunk_rows(samples, system, reference, [len(samples['log_q'])])[0]
  record = dict(
    command=command,
    system=name,
    samples=paths,
    num_samples=len(samples['log_q']),
    reference=dict(file=args.reference, log_z=reference[0], log_z_stderr=reference[1]),
    whole=whole,
    table=coverage_table(rows),
    chunks=rows,
  )
  _write(args.out, record)
  print(
    f'{name}: {record["num_samples"]} samples, all of them: z = {whole["z"]:+.2f} '
    f'({whole["effective_samples"]:.0f} effective samples, '
    f'{whole["lognormal_effective_samples"]:.0f} by the spread, k̂ {whole["pareto_khat"]:.2f}, '
    f'reverse KL {whole["reverse_kl"]:.3f} kT)'
  )
  _print_table(record['table'])
  return 0


if __name__ == '__main__':
  sys.exit(main())
