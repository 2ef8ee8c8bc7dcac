"""Learned targeted FEP between the end states of a ladder: sample, train, evaluate.

  python -m experiments.tfep \
    --config=experiments/configs/tfep_solvation.py:cpu --workdir=runs/tfep_solvation_cpu

A ladder is a family of states k = 0..K−1 with parameter λ_k (solute radius
or inverse temperature); A = state 0, B = state K−1, the others only serve the
staged-MBAR estimates. Each stage is cached in the workdir, so rerunning the
command resumes:

1. samples.npz: HMC samples of every state (systems.sampler), time-major over
   chains, the first `sampling.num_train` of A and B for training, the rest
   held out; plus u[k, l, i], the reduced potential of sample i of state l
   under state k.
2. checkpoints/ + metrics.jsonl: the TargetedMap trained with the LFEP or LBAR
   loss on the training samples (orbax, resumable).
3. works.npz: held-out forward/reverse works with the identity and the trained
   map, read by scripts/tfep_report.py.
"""

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import checkpointing, training
from flows import targeted
from systems import get_system, sampler, solvation


@dataclasses.dataclass(frozen=True)
class Ladder:
  """States of one family on the periodic cube [lower, upper)³.

  reduced: (x (..., M, 3), λ) -> reduced potential (...) in kT.
  parameters: (K,) λ_k; A = parameters[0], B = parameters[-1].
  initial_positions: (key, n, λ) -> (n, M, 3) starting configurations.
  sites: (M, 3) lattice sites of a solid (None for a fluid).
  solute: (3,) position of a fixed solute of radius λ (None: no solute).
  """

  parameters: np.ndarray
  reduced: Callable
  num_particles: int
  lower: float
  upper: float
  initial_positions: Callable
  sites: np.ndarray | None = None
  solute: np.ndarray | None = None

  def reduced_at(self, k: int) -> targeted.ReducedPotential:
    return lambda x: self.reduced(x, self.parameters[k])


def _solvation_ladder(parameters) -> Ladder:
  """λ = solute radius R (σ)."""
  return Ladder(
    parameters,
    lambda x, r: solvation.BETA * solvation.energy(x, r),
    solvation.NUM_SOLVENT,
    solvation.LOWER,
    solvation.UPPER,
    solvation.initial_positions,
    solute=np.zeros(3),
  )


def _temperature_ladder(system_name: str, parameters) -> Ladder:
  """λ = β (1/ε) of a named Lennard-Jones solid in a cubic box [0, L)³."""
  system = get_system(system_name)
  if not np.allclose(system.box, system.box[0]):
    raise ValueError(f'{system_name} has box {system.box}; expected a cube.')

  def initial_positions(key, n, beta):
    noise = 0.02 * np.asarray(jax.random.normal(key, (n,) + system.lattice.shape))
    return (system.lattice + noise / np.sqrt(beta)).astype(np.float32)

  return Ladder(
    parameters,
    lambda x, beta: beta * system.energy(x),
    system.num_particles,
    0.0,
    float(system.box[0]),
    initial_positions,
    sites=np.asarray(system.lattice),
  )


def make_ladder(config: ml_collections.ConfigDict) -> Ladder:
  """The ladder of `config.benchmark` with λ linear from lambda_a to lambda_b."""
  s = config.states
  if s.num_states < 2:
    raise ValueError(f'states.num_states={s.num_states} must be >= 2.')
  parameters = np.linspace(s.lambda_a, s.lambda_b, s.num_states)
  if config.benchmark == 'solvation':
    return _solvation_ladder(parameters)
  if config.benchmark == 'lj_32':
    return _temperature_ladder('lj_32', parameters)
  raise ValueError(f'benchmark={config.benchmark!r}; expected solvation or lj_32.')


def samples_per_state(config) -> int:
  """Training plus held-out samples drawn per state."""
  e = config.eval
  return config.sampling.num_train + e.num_subsets * max(e.sample_sizes)


def batched(fn, x, batch_size: int) -> np.ndarray:
  """Applies a jitted fn to x (n, ...) in batches; concatenates along axis 0."""
  return np.concatenate(
    [np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
  )


def draw_samples(config, ladder: Ladder, path: str) -> dict:
  """Samples every state, evaluates u[k, l, i], saves them to `path`."""
  s = config.sampling
  n = samples_per_state(config)
  if n % s.num_chains:
    raise ValueError(
      f'samples per state {n} must be a multiple of sampling.num_chains={s.num_chains}.'
    )
  num_states = len(ladder.parameters)
  key = jax.random.PRNGKey(config.seed)
  x0 = np.concatenate(
    [
      ladder.initial_positions(jax.random.fold_in(key, k), s.num_chains, lam)
      for k, lam in enumerate(ladder.parameters)
    ]
  )
  lam = np.repeat(ladder.parameters, s.num_chains).astype(np.float32)
  result = sampler.sample(
    ladder.reduced,
    x0,
    jax.random.fold_in(key, num_states),
    beta=1.0,
    num_steps=n // s.num_chains * s.thin,
    step_size=s.step_size,
    burn_in=s.burn_in,
    thin=s.thin,
    num_leapfrog=s.num_leapfrog,
    energy_args=(lam,),
  )
  per_state = lambda a: a.reshape((num_states, s.num_chains) + a.shape[1:])
  # (K, C, T, M, 3) -> time-major (K, T·C, M, 3)
  x = np.swapaxes(per_state(result.samples), 1, 2).reshape((num_states, n, ladder.num_particles, 3))
  u = np.stack(
    [
      np.stack(
        [
          batched(jax.jit(lambda y, k=k: ladder.reduced_at(k)(y)), x[s], config.eval.batch_size)
          for s in range(num_states)
        ]
      )
      for k in range(num_states)
    ]
  )
  data = dict(
    samples=x,
    reduced=u,
    parameters=ladder.parameters,
    acceptance=per_state(result.acceptance).mean(1),
    statistical_inefficiency=per_state(result.statistical_inefficiency).mean(1),
  )
  np.savez(path, **data)
  return data


def load_or_draw_samples(config, ladder: Ladder, workdir: str) -> dict:
  """samples.npz of the workdir, drawn first if absent."""
  path = os.path.join(workdir, 'samples.npz')
  if not os.path.exists(path):
    return draw_samples(config, ladder, path)
  with np.load(path) as f:
    data = dict(f)
  if data['samples'].shape[1] != samples_per_state(config) or not np.allclose(
    data['parameters'], ladder.parameters
  ):
    raise checkpointing.CheckpointMismatchError(
      f'{path} holds {data["samples"].shape[1]} samples at λ = '
      f'{data["parameters"]}; this config wants {samples_per_state(config)} '
      f'at λ = {ladder.parameters}. Use another --workdir.'
    )
  return data


def make_map(config, ladder: Ladder) -> targeted.TargetedMap:
  """The TargetedMap of `config.model`, seeded by `config.seed`."""
  model = config.model.to_dict()
  centre_on_sites = model.pop('centre_on_sites')
  if centre_on_sites and ladder.sites is None:
    raise ValueError(
      f'model.centre_on_sites=True needs lattice sites, and benchmark '
      f'{config.benchmark!r} has none; set it to False.'
    )
  return targeted.TargetedMap(
    ladder.num_particles,
    ladder.lower,
    ladder.upper,
    **model,
    sites=ladder.sites if centre_on_sites else None,
    rngs=nnx.Rngs(config.seed),
  )


def checkpoint_meta(config) -> dict:
  return dict(
    system=config.benchmark,
    model=config.model.to_dict(),
    config=json.loads(config.to_json_best_effort()),
  )


def _initial_state(config, ladder):
  graphdef, params, rest = nnx.split(make_map(config, ladder), nnx.Param, ...)
  optimizer = training.make_optimizer(config.train)
  state = dict(
    params=params,
    opt_state=optimizer.init(params),
    key=jax.random.key_data(jax.random.key(config.seed)),
    step=jnp.asarray(0, jnp.int32),
    wall_time=jnp.asarray(0.0, jnp.float32),
  )
  return graphdef, rest, optimizer, state


def restore_map(config, ladder: Ladder, workdir: str):
  """(trained map, step) from the latest checkpoint of `workdir`."""
  graphdef, rest, _, state = _initial_state(config, ladder)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    if ckpt.latest_step is None:
      raise FileNotFoundError(f'No checkpoint in {workdir}; run experiments.tfep.')
    state = ckpt.restore(state, checkpoint_meta(config))
  finally:
    ckpt.close()
  return nnx.merge(graphdef, state['params'], rest), int(state['step'])


def _make_train_step(config, ladder, graphdef, rest, optimizer, x_a, y_b):
  """Compiled step: random minibatches of x_a / y_b, loss, optax update."""
  t = config.train
  if t.loss not in ('lfep', 'lbar'):
    raise ValueError(f'train.loss={t.loss!r}; expected lfep or lbar.')
  u_a, u_b = ladder.reduced_at(0), ladder.reduced_at(-1)

  def loss_fn(params, key):
    bijector = nnx.merge(graphdef, params, rest)
    key_a, key_b = jax.random.split(key)
    xa = x_a[jax.random.randint(key_a, (t.batch_size,), 0, len(x_a))]
    if t.loss == 'lfep':
      return targeted.lfep_loss(bijector, xa, u_a, u_b)
    yb = y_b[jax.random.randint(key_b, (t.batch_size,), 0, len(y_b))]
    return targeted.lbar_loss(bijector, xa, yb, u_a, u_b)

  def step_fn(state):
    key = jax.random.fold_in(jax.random.wrap_key_data(state['key']), state['step'])
    loss, grads = jax.value_and_grad(loss_fn)(state['params'], key)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
    grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    return dict(
      state,
      params=optax.apply_updates(state['params'], updates),
      opt_state=opt_state,
      step=state['step'] + 1,
    ), loss

  return jax.jit(step_fn, donate_argnums=0)


def train(config, ladder: Ladder, data: dict, workdir: str, start_time: float) -> int:
  """Trains (resuming) until config.train.num_steps; returns the final step."""
  graphdef, rest, optimizer, state = _initial_state(config, ladder)
  ckpt = checkpointing.Checkpointer(workdir, config.train.max_checkpoints_to_keep)
  meta = checkpoint_meta(config)
  if ckpt.latest_step is not None:
    state = ckpt.restore(state, meta)
  num_train = config.sampling.num_train
  x_a = jnp.asarray(data['samples'][0, :num_train])
  y_b = jnp.asarray(data['samples'][-1, :num_train])
  step_fn = _make_train_step(config, ladder, graphdef, rest, optimizer, x_a, y_b)
  metrics = training.MetricsWriter(workdir)
  wall_offset = float(state['wall_time'])
  wall = lambda: wall_offset + time.time() - start_time
  save = lambda: ckpt.save(step, dict(state, wall_time=jnp.asarray(wall(), jnp.float32)), meta)
  step, losses, last_save = int(state['step']), [], time.time()
  try:
    while step < config.train.num_steps:
      state, loss = step_fn(state)
      step += 1
      losses.append(loss)
      if step % config.train.log_every_steps == 0:
        row = dict(step=step, wall_time=wall(), loss=float(np.nanmean(np.asarray(losses))))
        metrics.write(row)
        print(json.dumps(row), flush=True)
        losses = []
      if time.time() - last_save > config.train.checkpoint_every_seconds:
        save()
        last_save = time.time()
    if ckpt.latest_step != step:
      save()
  finally:
    ckpt.close()
  return step


def compute_works(config, ladder: Ladder, data: dict, workdir: str) -> dict:
  """Held-out works (identity and trained map) of A and B, cached in works.npz."""
  path = os.path.join(workdir, 'works.npz')
  bijector, step = restore_map(config, ladder, workdir)
  if os.path.exists(path):
    with np.load(path) as f:
      if int(f['step']) == step:
        return dict(f)
  held = slice(config.sampling.num_train, None)
  u = data['reduced']
  u_a, u_b = ladder.reduced_at(0), ladder.reduced_at(-1)
  fwd = jax.jit(lambda x: targeted.forward_work(bijector, x, u_a, u_b))
  rev = jax.jit(lambda y: targeted.reverse_work(bijector, y, u_a, u_b))
  batch = config.eval.batch_size
  works = dict(
    step=step,
    plain_forward=u[-1, 0, held] - u[0, 0, held],
    plain_reverse=u[0, -1, held] - u[-1, -1, held],
    mapped_forward=batched(fwd, data['samples'][0, held], batch),
    mapped_reverse=batched(rev, data['samples'][-1, held], batch),
  )
  np.savez(path, **works)
  return works


def run(config: ml_collections.ConfigDict, workdir: str, start_time: float | None = None) -> dict:
  """All three stages; returns the works dict."""
  start_time = time.time() if start_time is None else start_time
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  ladder = make_ladder(config)
  data = load_or_draw_samples(config, ladder, workdir)
  train(config, ladder, data, workdir, start_time)
  return compute_works(config, ladder, data, workdir)


def main():
  from absl import app, flags
  from absl import logging as absl_logging
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file('config', None, 'TFEP config.', lock_config=True)
  workdir_flag = flags.DEFINE_string('workdir', None, 'Run directory.')
  flags.mark_flags_as_required(['config', 'workdir'])
  start = time.time()

  def _main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    works = run(config_flag.value, workdir_flag.value, start)
    print(
      f'step {int(works["step"])}: works written to {os.path.join(workdir_flag.value, "works.npz")}'
    )

  app.run(_main)


if __name__ == '__main__':
  main()
