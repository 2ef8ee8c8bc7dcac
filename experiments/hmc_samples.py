"""HMC reference samples of a solid, drawn once per run directory and reused.

Forward-KL training (train.forward_kl_weight > 0) and the LBAR estimates of
scripts.free_energy need samples of the target p ∝ exp(−βU). They come from
systems.sampler (exact HMC, chains started on the lattice, centre of mass
fixed), run in chunks so that a progress bar can follow them, and are stored
in `<workdir>/hmc_samples.npz`:

  positions (n, N, 3)   float32, time-major over the chains (row t·C + c is
                        chain c's t-th stored sample, so any prefix holds
                        every chain)
  energy (n,)           physical energy (energy unit)
  num_chains            C
  statistical_inefficiency (C,), acceptance (C,), step_size (C,)
  system, beta, box     what they sample
  settings              JSON of the config's hmc section and the seed

A rerun reuses the file if it was drawn for the same system and settings and
refuses it otherwise (naming the difference), never drawing twice.
"""

import json
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.checkpointing import CheckpointMismatchError
from systems import System, sampler

FILENAME = 'hmc_samples.npz'
COVERAGE_FILENAME = 'hmc_coverage.json'
NUM_CHUNKS = 10  # production is run in this many chunks, for the progress bar


def draw(
  system: System, hmc: ml_collections.ConfigDict, key: jax.Array, progress: bool = True
) -> dict:
  """Runs hmc.num_chains HMC chains of `system`; returns the arrays of the module docstring.

  Args:
    system: the solid; chains start on its lattice.
    hmc: num_chains, num_steps (production steps per chain, a multiple of
      10·thin and at least 20·thin), burn_in, thin, num_leapfrog, step_size (initial, adapted during
      burn-in).
    key: PRNG key.
    progress: show a progress bar (tqdm) on a terminal.
  """
  chunk = hmc.num_steps // NUM_CHUNKS
  if hmc.num_steps % NUM_CHUNKS or chunk % hmc.thin or chunk < 2 * hmc.thin:
    raise ValueError(
      f'hmc.num_steps={hmc.num_steps} must be a multiple of {NUM_CHUNKS}·hmc.thin='
      f'{NUM_CHUNKS * hmc.thin}, and at least twice that.'
    )
  x = jnp.broadcast_to(
    jnp.asarray(system.lattice, jnp.float32), (hmc.num_chains, system.num_particles, 3)
  )
  # Two compiled runs: the first chunk with burn-in, the others continuing the chains.
  settings = dict(
    beta=system.beta,
    num_steps=chunk,
    thin=hmc.thin,
    num_leapfrog=hmc.num_leapfrog,
    fix_centre_of_mass=True,
  )
  first = sampler.make_sampler(system.energy, burn_in=hmc.burn_in, **settings)
  rest = sampler.make_sampler(system.energy, **settings)
  step_size = hmc.step_size
  samples, energies, acceptance = [], [], []
  bar = _bar(NUM_CHUNKS, f'HMC {system.name}', progress)
  for i in range(NUM_CHUNKS):
    run = (rest if i else first)(x, jax.random.fold_in(key, i), step_size)
    samples.append(run.samples)
    energies.append(run.energies)
    acceptance.append(run.acceptance)
    x, step_size = run.samples[:, -1], run.step_size  # continue the chains
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  samples, energies = np.concatenate(samples, axis=1), np.concatenate(energies, axis=1)
  return dict(
    positions=np.swapaxes(samples, 0, 1).reshape(-1, system.num_particles, 3),
    energy=np.swapaxes(energies, 0, 1).reshape(-1).astype(np.float64),
    num_chains=np.asarray(hmc.num_chains),
    statistical_inefficiency=sampler.statistical_inefficiency(energies),
    acceptance=np.mean(acceptance, axis=0),
    step_size=np.asarray(step_size),
  )


def _bar(total: int, description: str, enabled: bool):
  if not (enabled and sys.stderr.isatty() and jax.process_index() == 0):
    return None
  from tqdm import tqdm

  return tqdm(total=total, desc=description, unit='chunk', dynamic_ncols=True)


def settings(config: ml_collections.ConfigDict) -> str:
  """The JSON that identifies a draw: the config's hmc section and seed."""
  return json.dumps(dict(config.hmc.to_dict(), seed=config.seed), sort_keys=True)


def load_or_draw(config: ml_collections.ConfigDict, system: System, workdir: str) -> dict:
  """`<workdir>/hmc_samples.npz`, drawn first (seeded by config.seed) if absent.

  Raises:
    CheckpointMismatchError: if the file holds samples of another system or
      other settings.
  """
  path = os.path.join(workdir, FILENAME)
  wanted = settings(config)
  if os.path.exists(path):
    with np.load(path) as f:
      stored = {k: f[k] for k in f.files}
    found = (str(stored['system']), str(stored['settings']))
    if found != (system.name, wanted):
      raise CheckpointMismatchError(
        f'{path} holds HMC samples of {found[0]} with settings {found[1]}; this run wants '
        f'{system.name} with {wanted}. Use another --workdir or remove the file.'
      )
    return stored
  key = jax.random.fold_in(jax.random.key(config.seed), 2)
  drawn = draw(system, config.hmc, key)
  drawn.update(system=system.name, beta=system.beta, box=system.box, settings=wanted)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    partial = path + '.partial.npz'
    np.savez(partial, **drawn)
    os.replace(partial, path)  # a killed run never leaves half a file
  return drawn


def report_coverage(workdir: str, covered: np.ndarray) -> dict:
  """Counts the HMC samples outside the flow's support, writes hmc_coverage.json, warns if any.

  Those samples are left out of the forward-KL objective (their −ln q is
  infinite); they are never dropped silently.
  """
  outside = int(np.size(covered) - np.sum(covered))
  record = dict(
    num_samples=int(np.size(covered)),
    num_outside_support=outside,
    fraction_outside_support=outside / max(int(np.size(covered)), 1),
  )
  if jax.process_index() == 0:
    with open(os.path.join(workdir, COVERAGE_FILENAME), 'w') as f:
      json.dump(record, f, indent=2)
  if outside:
    warnings.warn(
      f"{outside} of {record['num_samples']} HMC samples lie outside the flow's support "
      '(two particles in one lattice cell) and are left out of the forward-KL objective.',
      stacklevel=2,
    )
  return record
