"""The stages of a learned targeted-FEP run, each cached in the workdir.

For the ladder of config.benchmark (systems.ladders) with λ linear from
states.lambda_a (A) to states.lambda_b (B):

1. samples.npz (`load_samples`): HMC samples of every state
   (systems.sampler), time-major over chains, the first `sampling.num_train`
   of A and B for training, the rest held out; plus u[k, l, i], the reduced
   potential of sample i of state l under state k. The MBAR reference needs
   fewer held-out samples than the end states' table at large sample sizes: with
   `sampling.num_ladder_held_out` below the ends' held-out count (`num_held_out`),
   every state holds that many and the ends' remaining held-out samples are drawn
   by chains of A and B alone into endpoints.npz (`held_out_ends` joins the two).
2. checkpoints/ + metrics.jsonl (`train`): the TargetedMap trained with the
   LFEP or LBAR loss on the training samples by the shared loop
   (experiments.loop; resumable).
3. works.npz (`compute_works`): held-out forward/reverse works with the
   identity and the trained map (its parameters' moving average), read by
   scripts/tfep_report.py.

`run` does all three; rerunning it resumes.
"""

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import checkpointing, loop, validation
from flows import registry, targeted
from systems import ladders, sampler

# Config file of each benchmark, for the commands named in error messages.
CONFIG_FILES = {
  'solvation': 'experiments/configs/tfep_solvation.py',
  'lj_32': 'experiments/configs/tfep_solid.py',
}


def command(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The command that runs `config` in `workdir` (add the run's key overrides)."""
  config_file = CONFIG_FILES.get(config.benchmark, '<tfep config file>')
  return f'python -m experiments.tfep --config={config_file}:{config.variant} --workdir={workdir}'


def make_ladder(config: ml_collections.ConfigDict) -> ladders.Ladder:
  """The ladder of `config.benchmark` with λ linear from states.lambda_a to states.lambda_b."""
  constructor = ladders.LADDERS.get(config.benchmark)
  if constructor is None:
    raise ValueError(
      f'benchmark={config.benchmark!r}; expected one of {", ".join(ladders.LADDERS)}.'
    )
  s = config.states
  return constructor(np.linspace(s.lambda_a, s.lambda_b, s.num_states))


def num_held_out(config: ml_collections.ConfigDict) -> int:
  """Held-out samples of each end state: eval.num_subsets blocks of the largest sample size."""
  e = config.eval
  return e.num_subsets * max(e.sample_sizes)


def num_ladder_held_out(config: ml_collections.ConfigDict) -> int:
  """Held-out samples of every ladder state in samples.npz (at most `num_held_out`)."""
  ladder_held = config.sampling.get('num_ladder_held_out', 0)
  return min(ladder_held, num_held_out(config)) if ladder_held else num_held_out(config)


def samples_per_state(config: ml_collections.ConfigDict) -> int:
  """Training plus held-out samples drawn per ladder state (samples.npz)."""
  return config.sampling.num_train + num_ladder_held_out(config)


def batched(fn, x, batch_size: int) -> np.ndarray:
  """Applies a jitted fn to x (n, ...) in batches; concatenates along axis 0."""
  return np.concatenate(
    [np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
  )


def _sample_states(
  config: ml_collections.ConfigDict, ladder: ladders.Ladder, states: list[int], n: int, key
) -> dict:
  """n HMC samples of each of `states` (ladder indices), time-major over chains.

  Returns:
    dict: samples (len(states), n, M, 3), acceptance and statistical_inefficiency
    (len(states),), averaged over chains.
  """
  s = config.sampling
  if n % s.num_chains:
    raise ValueError(
      f'{n} samples per state must be a multiple of sampling.num_chains={s.num_chains}.'
    )
  params = ladder.parameters[np.asarray(states)]
  x0 = np.concatenate(
    [
      ladder.initial_positions(jax.random.fold_in(key, k), s.num_chains, lam)
      for k, lam in zip(states, params)
    ]
  )
  result = sampler.sample(
    ladder.reduced,
    x0,
    jax.random.fold_in(key, len(ladder.parameters)),
    beta=1.0,
    num_steps=n // s.num_chains * s.thin,
    step_size=s.step_size,
    burn_in=s.burn_in,
    thin=s.thin,
    num_leapfrog=s.num_leapfrog,
    energy_args=(np.repeat(params, s.num_chains).astype(np.float32),),
  )
  per_state = lambda a: a.reshape((len(states), s.num_chains) + a.shape[1:])
  # (S, C, T, M, 3) -> time-major (S, T·C, M, 3)
  x = np.swapaxes(per_state(result.samples), 1, 2).reshape(
    (len(states), n, ladder.num_particles, 3)
  )
  return dict(
    samples=x,
    acceptance=per_state(result.acceptance).mean(1),
    statistical_inefficiency=per_state(result.statistical_inefficiency).mean(1),
  )


def _reduced(config, ladder: ladders.Ladder, states: list[int], samples: np.ndarray) -> np.ndarray:
  """u[k, l, i] (len(states), S, n) in kT: sample i of set l under ladder state states[k]."""
  batch = config.eval.batch_size
  rows = []
  for k in states:
    energy = jax.jit(ladder.reduced_at(k))  # one compile per state, not per sample set
    rows.append(np.stack([batched(energy, x, batch) for x in samples]))
  return np.stack(rows)


def draw_samples(config: ml_collections.ConfigDict, ladder: ladders.Ladder, path: str) -> dict:
  """Samples every state, evaluates u[k, l, i], saves them to `path`.

  Returns:
    dict: samples (K, n, M, 3), reduced (K, K, n) in kT, parameters (K,),
    acceptance (K,) and statistical_inefficiency (K,), averaged over chains.
  """
  states = list(range(len(ladder.parameters)))
  data = _sample_states(
    config, ladder, states, samples_per_state(config), jax.random.PRNGKey(config.seed)
  )
  data.update(
    reduced=_reduced(config, ladder, states, data['samples']), parameters=ladder.parameters
  )
  np.savez(path, **data)
  return data


def draw_end_samples(config: ml_collections.ConfigDict, ladder: ladders.Ladder, path: str) -> dict:
  """The end states' held-out samples beyond samples.npz's, with their u under A and B.

  Returns:
    dict: samples (2, n_extra, M, 3) of A and B, reduced (2, 2, n_extra) in kT (u[k, l, i]:
    sample i of end l under end k), acceptance (2,) and statistical_inefficiency (2,).
  """
  ends = end_states(ladder)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), len(ladder.parameters) + 1)
  n_extra = num_held_out(config) - num_ladder_held_out(config)
  data = _sample_states(config, ladder, ends, n_extra, key)
  data.update(
    reduced=_reduced(config, ladder, ends, data['samples']), parameters=ladder.parameters[ends]
  )
  np.savez(path, **data)
  return data


def end_states(ladder: ladders.Ladder) -> list[int]:
  """Ladder indices of A and B."""
  return [0, len(ladder.parameters) - 1]


def load_samples(
  config: ml_collections.ConfigDict, ladder: ladders.Ladder, workdir: str, draw: bool = False
) -> dict:
  """samples.npz of the workdir (see draw_samples) and, if the config draws more held-out
  samples of the ends, endpoints.npz as data['ends'] (see draw_end_samples).

  Args:
    draw: draw a missing file (an HMC run of minutes to hours) instead of raising.

  Raises:
    FileNotFoundError: if a file is missing and not `draw`, naming the command that draws it.
    checkpointing.CheckpointMismatchError: if it was drawn for another ladder or sample count.
  """
  n_extra = num_held_out(config) - num_ladder_held_out(config)
  every_state = list(range(len(ladder.parameters)))
  files = {'samples.npz': (draw_samples, every_state, samples_per_state(config))}
  if n_extra:
    files['endpoints.npz'] = (draw_end_samples, end_states(ladder), n_extra)
  loaded = []
  for name, (draw_fn, states, n) in files.items():
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      if not draw:
        raise FileNotFoundError(
          f'{path} is missing. Draw the samples and train the map first (an HMC run of '
          f'minutes to hours): {command(config, workdir)}'
        )
      loaded.append(draw_fn(config, ladder, path))
      continue
    with np.load(path) as f:
      part = dict(f)
    wanted = ladder.parameters[states]
    if part['samples'].shape[:2] != (len(states), n) or not np.allclose(part['parameters'], wanted):
      raise checkpointing.CheckpointMismatchError(
        f'{path} holds {part["samples"].shape[1]} samples per state at λ = '
        f'{part["parameters"]}; this config wants {n} at λ = {wanted}. Use another --workdir.'
      )
    loaded.append(part)
  data = loaded[0]
  if n_extra:
    data['ends'] = loaded[1]
  return data


def held_out_ends(config: ml_collections.ConfigDict, data: dict) -> dict:
  """The held-out samples of A and B with their u under A and B, samples.npz's first.

  Returns:
    dict: samples (2, n_held, M, 3) and, if `data` has them, reduced (2, 2, n_held) in kT
    (u[k, l, i]: sample i of end l under end k), n_held = num_held_out(config).
  """
  held = slice(config.sampling.num_train, None)
  ends = [0, -1]
  result = dict(samples=data['samples'][ends, held])
  if 'reduced' in data:
    result['reduced'] = data['reduced'][np.ix_(ends, ends)][:, :, held]
  if 'ends' in data:
    for name, axis in (('samples', 1), ('reduced', 2)):
      result[name] = np.concatenate([result[name], data['ends'][name]], axis=axis)
  return result


def make_map(config: ml_collections.ConfigDict, ladder: ladders.Ladder) -> targeted.TargetedMap:
  """The TargetedMap of `config.model` (a map family of flows.registry) for `ladder`,
  seeded by `config.seed`."""
  if config.model.centre_on_sites and ladder.sites is None:
    raise ValueError(
      f'model.centre_on_sites=True needs lattice sites, and benchmark '
      f'{config.benchmark!r} has none; set it to False.'
    )
  return registry.build(config.model.to_dict(), ladder, nnx.Rngs(config.seed))


def make_loss_fn(
  config: ml_collections.ConfigDict, ladder: ladders.Ladder, bijector_of
) -> loop.LossFn:
  """(params, key, (x_a, y_b)) -> (LFEP or LBAR loss in kT, {}) on random minibatches.

  Args:
    config: reads train.loss and train.batch_size.
    ladder: its end states are A and B.
    bijector_of: params -> the map.

  The data are the (n, M, 3) training samples x_a of A and y_b of B.
  """
  t = config.train
  if t.loss not in ('lfep', 'lbar'):
    raise ValueError(f"train.loss={t.loss!r}; expected 'lfep' or 'lbar'.")
  u_a, u_b = ladder.reduced_at(0), ladder.reduced_at(-1)

  def loss_fn(params, key, data):
    x_a, y_b = data
    bijector = bijector_of(params)
    key_a, key_b = jax.random.split(key)
    xa = x_a[jax.random.randint(key_a, (t.batch_size,), 0, len(x_a))]
    if t.loss == 'lfep':
      return targeted.lfep_loss(bijector, xa, u_a, u_b), {}
    yb = y_b[jax.random.randint(key_b, (t.batch_size,), 0, len(y_b))]
    return targeted.lbar_loss(bijector, xa, yb, u_a, u_b), {}

  return loss_fn


def _split_map(config: ml_collections.ConfigDict, ladder: ladders.Ladder):
  """(params of the fresh map, params -> map)."""
  graphdef, params, rest = nnx.split(make_map(config, ladder), nnx.Param, ...)
  return params, lambda p: nnx.merge(graphdef, p, rest)


def train(
  config: ml_collections.ConfigDict,
  ladder: ladders.Ladder,
  data: dict,
  workdir: str,
  start_time: float | None = None,
  initial_params: Any = None,
) -> dict:
  """Trains the map (resuming) until train.num_steps; returns the final training state.

  Args:
    config: a validated TFEP config.
    ladder: the config's ladder (make_ladder).
    data: the samples (load_samples); the first sampling.num_train
      of A and of B are trained on.
    workdir: run directory (checkpoints/, metrics.jsonl, config.json).
    start_time: time.time() at command start; wall times count from it.
    initial_params: parameters to start a fresh run from (default: the
      freshly initialised map's).
  """
  params, bijector_of = _split_map(config, ladder)
  num_train = config.sampling.num_train
  x_a = jnp.asarray(data['samples'][0, :num_train])
  y_b = jnp.asarray(data['samples'][-1, :num_train])
  result = loop.train(
    config,
    workdir,
    loss_fn=make_loss_fn(config, ladder, bijector_of),
    params=params if initial_params is None else initial_params,
    data=(x_a, y_b),
    optimizer=loop.make_optimizer(config.train),
    meta=checkpointing.checkpoint_meta(config, config.benchmark),
    start_time=start_time,
  )
  return result.state


def restore_map(config: ml_collections.ConfigDict, ladder: ladders.Ladder, workdir: str):
  """(trained map, step) of the newest checkpoint of `workdir`: its parameters' moving average.

  Raises:
    FileNotFoundError: if there is no checkpoint, naming the command that trains one.
  """
  params, bijector_of = _split_map(config, ladder)
  target = loop.initial_state(params, loop.make_optimizer(config.train), config.seed)
  meta = checkpointing.checkpoint_meta(config, config.benchmark)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    restored = ckpt.restore_newest(lambda step: ckpt.restore(target, meta, step))
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(
      f'No checkpoint under {ckpt.directory}; train the map first: {command(config, workdir)}'
    )
  step, state = restored
  return bijector_of(state['ema_params']), step


def compute_works(
  config: ml_collections.ConfigDict, ladder: ladders.Ladder, data: dict, workdir: str
) -> dict:
  """Held-out works (kT) of A and B, identity and trained map, cached in works.npz.

  Returns:
    dict: step (of the map), plain_forward, plain_reverse, mapped_forward and
    mapped_reverse, each (n_held,); works.npz is recomputed when the newest
    checkpoint is not the step it was computed at.
  """
  path = os.path.join(workdir, 'works.npz')
  bijector, step = restore_map(config, ladder, workdir)
  if os.path.exists(path):
    with np.load(path) as f:
      if int(f['step']) == step:
        return dict(f)
  ends = held_out_ends(config, data)
  u = ends['reduced']
  u_a, u_b = ladder.reduced_at(0), ladder.reduced_at(-1)
  fwd = jax.jit(lambda x: targeted.forward_work(bijector, x, u_a, u_b))
  rev = jax.jit(lambda y: targeted.reverse_work(bijector, y, u_a, u_b))
  batch = config.eval.batch_size
  works = dict(
    step=step,
    plain_forward=u[1, 0] - u[0, 0],
    plain_reverse=u[0, 1] - u[1, 1],
    mapped_forward=batched(fwd, ends['samples'][0], batch),
    mapped_reverse=batched(rev, ends['samples'][1], batch),
  )
  np.savez(path, **works)
  return works


def run(config: ml_collections.ConfigDict, workdir: str, start_time: float | None = None) -> dict:
  """Validates `config`, then samples, trains and computes the works; returns the works."""
  start_time = time.time() if start_time is None else start_time
  validation.validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  ladder = make_ladder(config)
  data = load_samples(config, ladder, workdir, draw=True)
  train(config, ladder, data, workdir, start_time)
  return compute_works(config, ladder, data, workdir)
