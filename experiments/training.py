"""Reverse-KL training of a lattice flow from the energy alone, resumable.

The loss is E_q[β U_train(x) + ln q(x)] over flow samples, i.e. KL(q‖p) − ln Z.
One compiled update step draws the samples, evaluates the loss and its
gradient and applies the optax update; the batch is sharded over every device
(parameters replicated), so the same code runs on a CPU, a GPU or many hosts.
"""

import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import checkpointing, evaluation
from flows import SolidFlow
from systems import System, get_system


class NonFiniteLossError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


def make_flow(config: ml_collections.ConfigDict, system: System) -> SolidFlow:
  """Builds the flow of `config.model` for `system`, seeded by `config.seed`."""
  m = config.model
  return SolidFlow(
    system.lattice,
    system.box,
    num_layers=m.num_layers,
    num_bins=m.num_bins,
    embedding_size=m.embedding_size,
    num_heads=m.num_heads,
    num_blocks=m.num_blocks,
    num_frequencies=m.num_frequencies,
    noise_scale=m.noise_scale,
    use_layernorm=m.use_layernorm,
    remat=m.remat,
    compute_dtype=m.compute_dtype,
    rngs=nnx.Rngs(config.seed),
  )


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with global-norm clipping, optional warm-up and step decays."""
  schedule = optax.piecewise_constant_schedule(
    train.learning_rate, {int(s): train.lr_decay_factor for s in train.lr_decay_steps}
  )
  if train.lr_warmup_steps:
    warmup = optax.linear_schedule(0.0, train.learning_rate, train.lr_warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [train.lr_warmup_steps])
  return optax.chain(
    optax.clip_by_global_norm(train.max_gradient_norm), optax.adam(schedule, b2=train.adam_b2)
  )


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything a run compiles against: system, model split and sharding."""

  system: System
  graphdef: Any
  rest: Any  # non-parameter model state (constants), replicated
  optimizer: optax.GradientTransformation
  mesh: jax.sharding.Mesh

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P('batch'))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def flow(self, params) -> SolidFlow:
    return nnx.merge(self.graphdef, params, self.rest)

  def sample(self, params, key, num_samples: int):
    """Flow samples (n, N, 3) and log q (n,), sharded over the batch axis."""
    return self.flow(params).sample_and_log_prob(key, num_samples, sharding=self.batch_sharding)


def build(config: ml_collections.ConfigDict, devices: list | None = None) -> tuple[Setup, dict]:
  """Returns the setup and a fresh (step 0) training state.

  Args:
    config: an experiment config.
    devices: devices to shard the batch over (default: all).
  """
  system = get_system(config.system)
  devices = jax.devices() if devices is None else list(devices)
  if config.train.batch_size % len(devices):
    raise ValueError(
      f'train.batch_size={config.train.batch_size} must be a '
      f'multiple of the number of devices ({len(devices)}).'
    )
  mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  flow = make_flow(config, system)
  graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
  optimizer = make_optimizer(config.train)
  setup = Setup(system, graphdef, rest, optimizer, mesh)
  state = dict(
    params=params,
    ema_params=jax.tree.map(jnp.copy, params),  # what evaluations sample
    opt_state=optimizer.init(params),
    key=jax.random.key_data(jax.random.key(config.seed)),
    step=jnp.asarray(0, jnp.int32),
    wall_time=jnp.asarray(0.0, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
    num_skipped=jnp.asarray(0, jnp.int32),
    consecutive_nonfinite=jnp.asarray(0, jnp.int32),
  )
  state = jax.device_put(state, setup.replicated)
  return setup, state


def make_loss_fn(setup: Setup, batch_size: int):
  """(params, key) -> reverse-KL loss E_q[β U_train + ln q] on a fresh batch."""
  beta = setup.system.beta

  def loss_fn(params, key):
    x, log_q = setup.sample(params, key, batch_size)
    energy = setup.system.training_energy(x)
    return jnp.mean(beta * energy + log_q)

  return loss_fn


def make_train_step(setup: Setup, batch_size: int, ema_decay: float = 0.0):
  """One compiled update: sample, loss, gradient, guarded optax update.

  A step whose loss or gradient norm is not finite leaves parameters and
  optimiser state untouched and increments the skip counters. The
  exponential moving average ema ← d·ema + (1 − d)·params (d = `ema_decay`)
  follows the parameters; evaluations use it.
  """
  loss_fn = make_loss_fn(setup, batch_size)

  def step_fn(state):
    key = jax.random.fold_in(jax.random.wrap_key_data(state['key']), state['step'])
    loss, grads = jax.value_and_grad(loss_fn)(state['params'], key)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = setup.optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params = keep(params, state['params'])
    new_state = dict(
      state,
      params=params,
      ema_params=jax.tree.map(
        lambda e, p: ema_decay * e + (1 - ema_decay) * p, state['ema_params'], params
      ),
      opt_state=keep(opt_state, state['opt_state']),
      step=state['step'] + 1,
      num_skipped=state['num_skipped'] + (~finite).astype(jnp.int32),
      consecutive_nonfinite=jnp.where(finite, 0, state['consecutive_nonfinite'] + 1),
    )
    return new_state, dict(loss=loss, grad_norm=grad_norm)

  return jax.jit(step_fn, donate_argnums=0)


def make_eval_sample_fn(setup: Setup):
  """Compiled (params, key, n) -> samples, log q and physical energy."""

  def sample_fn(params, key, num_samples):
    x, log_q = setup.sample(params, key, num_samples)
    return x, log_q, setup.system.energy(x)

  return jax.jit(sample_fn, static_argnums=2)


def compile_concurrently(setup: Setup, state: dict, config: ml_collections.ConfigDict):
  """Compiles the train step and the evaluation sampler at the same time.

  XLA compiles on the calling thread, so the evaluation function is compiled
  on a second thread while the train step compiles here: on a multi-core host
  its compile time leaves the critical path.

  Returns:
    (train step: state -> (state, metrics); eval sampler: (params, key) ->
    (x, log q, energy) for `config.eval.batch_size` samples).
  """
  eval_batch = min(config.eval.batch_size, config.eval.num_samples)
  eval_fn = make_eval_sample_fn(setup)
  key = jax.random.key(0)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    eval_compiled = pool.submit(
      lambda: eval_fn.lower(state['ema_params'], key, eval_batch).compile()
    )
    step_compiled = (
      make_train_step(setup, config.train.batch_size, config.train.ema_decay).lower(state).compile()
    )
    return step_compiled, eval_compiled.result()


class MetricsWriter:
  """Appends JSON rows to `<workdir>/metrics.jsonl` (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._active = jax.process_index() == 0

  def write(self, row: dict) -> None:
    if self._active:
      with open(self.path, 'a') as f:
        f.write(json.dumps(row) + '\n')


class Progress:
  """A tqdm bar on a terminal, plain log lines otherwise."""

  def __init__(self, start: int, total: int):
    self._bar = None
    if sys.stderr.isatty() and jax.process_index() == 0:
      from tqdm import tqdm

      self._bar = tqdm(total=total, initial=start, unit='step', dynamic_ncols=True)
    self._last = start

  def update(self, step: int, text: str) -> None:
    if self._bar is not None:
      self._bar.update(step - self._last)
      self._bar.set_postfix_str(text)
    elif jax.process_index() == 0:
      print(f'step {step}: {text}', flush=True)
    self._last = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def checkpoint_meta(config: ml_collections.ConfigDict) -> dict:
  """The part of the config a checkpoint must match, plus the full config."""
  return dict(
    system=config.system,
    model=config.model.to_dict(),
    config=json.loads(config.to_json_best_effort()),
  )


def train(config: ml_collections.ConfigDict, workdir: str, start_time: float | None = None) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint).

  Args:
    config: an experiment config (see experiments/configs).
    workdir: run directory for metrics.jsonl, checkpoints/ and config.json.
    start_time: time.time() at command start; wall times count from it.

  Returns:
    The last evaluation row.

  Raises:
    NonFiniteLossError: after `train.max_consecutive_nonfinite` bad steps.
    checkpointing.CheckpointMismatchError: if the workdir's checkpoint was
      written for another model or system.
  """
  start_time = time.time() if start_time is None else start_time
  os.makedirs(workdir, exist_ok=True)
  setup, state = build(config)
  ckpt = checkpointing.Checkpointer(workdir, config.train.max_checkpoints_to_keep)
  meta = checkpoint_meta(config)
  if ckpt.latest_step is not None:
    state = ckpt.restore(state, meta)
    state = jax.device_put(state, setup.replicated)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  wall_offset = float(state['wall_time'])
  wall = lambda: wall_offset + time.time() - start_time
  metrics = MetricsWriter(workdir)
  step_fn, eval_sample = compile_concurrently(setup, state, config)
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 1)

  def run_eval(step: int) -> dict:
    samples = evaluation.draw_samples(
      lambda key, n: eval_sample(state['ema_params'], key),
      jax.random.fold_in(eval_key, step),
      config.eval.num_samples,
      min(config.eval.batch_size, config.eval.num_samples),
    )
    row = dict(step=step, **evaluation.summarize(samples, setup.system))
    row['wall_time'] = wall()
    metrics.write(row)
    return row

  def save(step: int) -> None:
    saved = dict(state, wall_time=jnp.asarray(wall(), state['wall_time'].dtype))
    ckpt.save(step, saved, meta)

  step = int(state['step'])
  total = config.train.num_steps
  progress = Progress(step, total)
  last_ckpt_time = time.time()
  last_eval = None
  window = []
  t_window = time.time()
  try:
    while step < total:
      state, out = step_fn(state)
      step += 1
      window.append(out)
      if int(state['consecutive_nonfinite']) >= config.train.max_consecutive_nonfinite:
        save(step)  # the parameters are the last finite ones: keep them
        raise NonFiniteLossError(
          f'{int(state["consecutive_nonfinite"])} consecutive steps up to step '
          f'{step} had a non-finite loss or gradient (limit '
          f'train.max_consecutive_nonfinite={config.train.max_consecutive_nonfinite}); '
          'parameters were not updated by them. Lower the learning rate or check '
          'the training energy.'
        )
      if step % config.train.log_every_steps == 0 or step == total:
        losses = np.array([float(o['loss']) for o in window])
        norms = np.array([float(o['grad_norm']) for o in window])
        now = time.time()
        row = dict(
          step=step,
          wall_time=wall(),
          loss=float(np.nanmean(losses)),
          grad_norm=float(np.nanmean(norms)),
          num_skipped=int(state['num_skipped']),
          steps_per_second=len(window) / max(now - t_window, 1e-9),
        )
        metrics.write(row)
        progress.update(step, f'loss {row["loss"]:.4f}')
        window, t_window = [], now
      if step % config.eval.every_steps == 0 or step == total:
        last_eval = run_eval(step)
        progress.update(
          step,
          f'βF/N {last_eval["beta_f_per_particle"]:.4f} ± '
          f'{last_eval["beta_f_per_particle_stderr"]:.4f}, '
          f'ESS {last_eval["ess"]:.3f}',
        )
        stop = config.eval.stop_at_stderr
        if stop and last_eval['beta_f_per_particle_stderr'] <= stop:
          break
      periodic = (
        config.train.checkpoint_every_steps and step % config.train.checkpoint_every_steps == 0
      )
      if periodic or time.time() - last_ckpt_time > config.train.checkpoint_every_seconds:
        save(step)
        last_ckpt_time = time.time()
    if ckpt.latest_step != step:
      save(step)
  finally:
    progress.close()
    ckpt.close()
  if last_eval is None:
    last_eval = run_eval(step)
  return last_eval
