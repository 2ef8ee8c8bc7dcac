"""Inputs of `scripts.report`: a training run directory and the optional sample files.

Lengths are in the system's length unit, energies in its energy unit, log q in
nats over the N − 1 relative coordinates.
"""

import dataclasses
import json
import os

import numpy as np

from systems import System, get_system


@dataclasses.dataclass(frozen=True)
class Samples:
  """Samples of one source (the num_nonfinite others, with NaN or disallowed
  infinite entries, dropped).

  positions: (n, N, 3), length unit, finite. energy: (n,) physical energy,
  energy unit; +inf (kept) for the num_infinite_energy flow samples of zero
  target density (overlapping particles, or outside a LocalSolidFlow's basin).
  log_q: (n,) flow log-density over the N − 1 relative coordinates (nats), or
  None; −inf (kept) for the num_outside_support reference samples that lie
  outside the flow's support.
  """

  positions: np.ndarray
  energy: np.ndarray
  log_q: np.ndarray | None
  num_nonfinite: int
  num_outside_support: int = 0
  num_infinite_energy: int = 0


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything the report reads (None where the file or flag is absent).

  training, evaluation: the metrics.jsonl rows of each kind. final_eval:
  eval.json. baseline: the --baseline JSON, checked against the system.
  flow: samples.npz (with log_q). hmc: the --hmc_samples file, whose path is
  hmc_path; baseline_path is the --baseline path.
  """

  workdir: str
  system: System
  training: list[dict]
  evaluation: list[dict]
  final_eval: dict | None
  baseline: dict | None
  flow: Samples | None
  hmc: Samples | None
  baseline_path: str | None
  hmc_path: str | None


def read_json(path: str, what: str) -> dict:
  """A JSON object from `path`; `what` names the file in errors."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} not found at {path!r}.')
  with open(path) as f:
    try:
      record = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f'{what} {path!r} is not valid JSON: {error}.') from None
  if not isinstance(record, dict):
    raise ValueError(f'{what} {path!r} must hold a JSON object, got {type(record).__name__}.')
  return record


_TRAINING_KEYS = ('step', 'wall_time', 'loss', 'num_skipped', 'steps_per_second')
_EVALUATION_KEYS = (
  'step',
  'wall_time',
  'num_samples',
  'ess',
  'beta_f_per_particle',
  'beta_f_per_particle_stderr',
)


def read_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  """Training rows (with `loss`) and evaluation rows (with `beta_f_per_particle`)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'No metrics.jsonl in --workdir={workdir!r}: expected a training run '
      f'directory written by python -m experiments.train (missing {path!r}).'
    )
  training, evaluation = [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f'{path}:{number} is not a JSON row: {error}.') from None
      kind, keys = (
        (training, _TRAINING_KEYS)
        if isinstance(row, dict) and 'loss' in row
        else (evaluation, _EVALUATION_KEYS)
      )
      if not isinstance(row, dict) or any(k not in row for k in keys):
        raise ValueError(
          f'{path}:{number} is neither a training row (keys '
          f'{", ".join(_TRAINING_KEYS)}) nor an evaluation row (keys '
          f'{", ".join(_EVALUATION_KEYS)}): {line.strip()[:120]!r}.'
        )
      kind.append(row)
  if not training and not evaluation:
    raise ValueError(f'{path} has no rows; expected training and evaluation rows.')
  return training, evaluation


def read_samples(
  path: str,
  system: System,
  what: str,
  need_log_q: bool,
  outside_support_ok: bool = False,
  infinite_energy_ok: bool = False,
) -> Samples:
  """Samples from an .npz with positions (n, N, 3), energy (n,), optional log_q (n,).

  Checks N, and box and beta where the file stores them, against `system`.
  With `outside_support_ok` (target samples) log_q = −inf is kept: LBAR must
  count those samples, and dropping them would bias it. With
  `infinite_energy_ok` (flow samples) energy = +inf is kept: importance
  sampling counts those as zero weights and LBAR as infinite forward works, as
  `experiments.evaluation.summarize` does; dropping them would bias ln Z upward.
  At least two samples need a finite energy.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} not found at {path!r}.')
  with np.load(path) as data:
    arrays = {k: np.asarray(data[k]) for k in data.files}
  required = {'positions', 'energy'} | ({'log_q'} if need_log_q else set())
  if missing := required - set(arrays):
    raise ValueError(f'{what} {path!r} lacks {sorted(missing)}; found {sorted(arrays)}.')
  positions = np.asarray(arrays['positions'], np.float64)
  n, num_samples = system.num_particles, positions.shape[0]
  if positions.shape[1:] != (n, 3):
    raise ValueError(
      f'{what} {path!r}: positions must have shape (n, {n}, 3) for '
      f'{system.name}, got {positions.shape}.'
    )
  per_sample = {k: np.asarray(arrays[k], np.float64) for k in ('energy', 'log_q') if k in arrays}
  for key, value in per_sample.items():
    if value.shape != (num_samples,):
      raise ValueError(
        f'{what} {path!r}: {key} must have shape ({num_samples},), got {value.shape}.'
      )
  if 'box' in arrays and not np.allclose(arrays['box'], system.box, rtol=1e-6):
    raise ValueError(
      f'{what} {path!r}: box {arrays["box"]} differs from the box {system.box} of {system.name}.'
    )
  if 'beta' in arrays and not np.isclose(float(arrays['beta']), system.beta, rtol=1e-6):
    raise ValueError(
      f'{what} {path!r}: beta={float(arrays["beta"])} differs from '
      f'beta={system.beta} of {system.name}.'
    )
  infinities = {'log_q': (-np.inf, outside_support_ok), 'energy': (np.inf, infinite_energy_ok)}
  kept = np.isfinite(positions).all(axis=(1, 2))
  for key, value in per_sample.items():
    infinity, allowed = infinities[key]
    kept &= np.isfinite(value) | (allowed & (value == infinity))
  finite_energy = kept & np.isfinite(per_sample['energy'])
  if finite_energy.sum() < 2:
    raise ValueError(
      f'{what} {path!r} has {int(finite_energy.sum())} usable samples of finite energy '
      f'(of {num_samples}); need >= 2.'
    )
  if not kept.all():
    positions = positions[kept]
    per_sample = {k: v[kept] for k, v in per_sample.items()}
  log_q = per_sample.get('log_q')
  return Samples(
    positions=positions,
    energy=per_sample['energy'],
    log_q=log_q,
    num_nonfinite=int(kept.size - kept.sum()),
    num_outside_support=0 if log_q is None else int(np.sum(log_q == -np.inf)),
    num_infinite_energy=int(np.sum(per_sample['energy'] == np.inf)),
  )


def read_baseline(path: str, system: System) -> dict:
  """The JSON of `scripts.einstein_baseline` at `path`, checked to be for `system`."""
  baseline = read_json(path, '--baseline')
  if missing := {'beta_f_per_particle', 'beta_f_per_particle_stderr'} - set(baseline):
    raise ValueError(f'--baseline {path!r} lacks {sorted(missing)}.')
  if baseline.get('system', system.name) != system.name:
    raise ValueError(
      f'--baseline {path!r} is for system {baseline["system"]!r}, the run for {system.name!r}.'
    )
  return baseline


def read_run(workdir: str, baseline_path: str | None = None, hmc_path: str | None = None) -> Run:
  """Reads metrics.jsonl and config.json of `workdir` (required), eval.json and
  samples.npz there if present, and the --baseline and --hmc_samples files if given."""
  training, evaluation = read_metrics(workdir)
  config = read_json(os.path.join(workdir, 'config.json'), 'config.json of the run')
  if 'system' not in config:
    raise ValueError(f'config.json in {workdir!r} has no "system" key.')
  system = get_system(config['system'])
  eval_path = os.path.join(workdir, 'eval.json')
  samples_path = os.path.join(workdir, 'samples.npz')
  return Run(
    workdir=workdir,
    system=system,
    training=training,
    evaluation=evaluation,
    baseline=None if baseline_path is None else read_baseline(baseline_path, system),
    final_eval=read_json(eval_path, 'eval.json') if os.path.isfile(eval_path) else None,
    flow=(
      read_samples(samples_path, system, 'samples.npz', need_log_q=True, infinite_energy_ok=True)
      if os.path.isfile(samples_path)
      else None
    ),
    hmc=(
      None
      if hmc_path is None
      else read_samples(hmc_path, system, '--hmc_samples', False, outside_support_ok=True)
    ),
    baseline_path=baseline_path,
    hmc_path=hmc_path,
  )
