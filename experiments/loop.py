"""One guarded, resumable training loop, shared by the solid flows and the targeted maps.

The objective is a loss function (params, key, data) -> (loss, metrics): a
scalar to minimise and a dict of scalar diagnostics (e.g. the parts of a
mixed objective), evaluated on a fresh minibatch drawn with `key` (from the
flow, or from `data`: training samples, a pytree of arrays passed to every
step as an argument, so that large arrays are never compiled into the step). One compiled step
takes the gradient and applies the optax update; the training state is a dict
of arrays, checkpointed whole:

  params, ema_params   parameters and their exponential moving average
                       ema ← d·ema + (1 − d)·params, d = train.ema_decay
  opt_state            optimiser state
  key                  RNG key data; step k uses fold_in(key, k)
  step                 optimiser steps taken (skipped ones included)
  wall_time            seconds of training so far, across resumes
  num_skipped          steps with a non-finite loss or gradient
  consecutive_nonfinite  such steps in a row, up to now

A step whose loss or gradient norm is not finite changes neither parameters
nor optimiser state nor moving average; it only counts. After
train.max_consecutive_nonfinite of them in a row the loop saves the state
(the last finite parameters) and stops with NonFiniteLossError.

`train` resumes from the newest checkpoint in the workdir that restores
(checkpointing.Checkpointer.restore_newest), drops the metrics rows past it,
writes config.json, and then steps, logs, evaluates and checkpoints:
metrics.jsonl gets one training row every train.log_every_steps (step,
wall_time, loss, grad_norm, num_skipped, steps_per_second and the objective's
metrics, each averaged over the steps since the last row, skipped steps left
out) and one row per evaluation; checkpoints are written every
train.checkpoint_every_seconds, every train.checkpoint_every_steps (0: off)
and at the end.
"""

import concurrent.futures
import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import checkpointing

# (params, key, data) -> (scalar loss, {name: scalar diagnostic}).
LossFn = Callable[[Any, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]]

# Keys of a training row that the loop itself fills in.
ROW_KEYS = ('step', 'wall_time', 'loss', 'grad_norm', 'num_skipped', 'steps_per_second')


class NonFiniteLossError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with global-norm clipping, optional linear warm-up and step decays of `train`."""
  schedule = optax.piecewise_constant_schedule(
    train.learning_rate, {int(s): train.lr_decay_factor for s in train.lr_decay_steps}
  )
  if train.lr_warmup_steps:
    warmup = optax.linear_schedule(0.0, train.learning_rate, train.lr_warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [train.lr_warmup_steps])
  return optax.chain(
    optax.clip_by_global_norm(train.max_gradient_norm), optax.adam(schedule, b2=train.adam_b2)
  )


def initial_state(params, optimizer: optax.GradientTransformation, seed: int) -> dict:
  """The step-0 training state (see the module docstring) of `params`."""
  return dict(
    params=params,
    ema_params=jax.tree.map(jnp.copy, params),
    opt_state=optimizer.init(params),
    key=jax.random.key_data(jax.random.key(seed)),
    step=jnp.asarray(0, jnp.int32),
    wall_time=jnp.asarray(0.0, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
    num_skipped=jnp.asarray(0, jnp.int32),
    consecutive_nonfinite=jnp.asarray(0, jnp.int32),
  )


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, ema_decay: float):
  """Compiled (state, data) -> (state, out): gradient of `loss_fn`, guarded update,
  moving average.

  `out` holds the step's loss, grad_norm (global norm before clipping) and
  the objective's metrics. The state argument is donated; `data` is the
  objective's (None if it has none).
  """

  def step_fn(state, data):
    key = jax.random.fold_in(jax.random.wrap_key_data(state['key']), state['step'])
    loss_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = loss_and_grad(state['params'], key, data)
    clash = set(metrics) & set(ROW_KEYS)
    if clash:
      raise ValueError(
        f'The objective returns metrics named {sorted(clash)}; those names are '
        f"the loop's own ({', '.join(ROW_KEYS)})."
      )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    # Non-finite gradients are zeroed before the (then discarded) update, and a
    # skipped step sets ema = 1·ema + 0·params, exactly ema (params are
    # finite): these forms, rather than keep() alone, leave the compiled
    # arithmetic of finite steps, and so the solid flows' trained parameters,
    # bit for bit as they were before this loop.
    grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = keep(optax.apply_updates(state['params'], updates), state['params'])
    decay = jnp.where(finite, ema_decay, 1.0)
    weight = jnp.where(finite, 1 - ema_decay, 0.0)
    ema_params = jax.tree.map(lambda e, p: decay * e + weight * p, state['ema_params'], params)
    new_state = dict(
      state,
      params=params,
      ema_params=ema_params,
      opt_state=keep(opt_state, state['opt_state']),
      step=state['step'] + 1,
      num_skipped=state['num_skipped'] + (~finite).astype(jnp.int32),
      consecutive_nonfinite=jnp.where(finite, 0, state['consecutive_nonfinite'] + 1),
    )
    return new_state, dict(loss=loss, grad_norm=grad_norm, **metrics)

  return jax.jit(step_fn, donate_argnums=0)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """An evaluation of the parameters' moving average during training.

  compile: example params -> run, with run: (params, step) -> JSON-ready dict
    of scalars (written as a metrics row with step and wall_time). The loop
    calls it on a second thread while it compiles the train step (XLA
    compiles on the calling thread), so on a multi-core host the
    evaluation's compile time leaves the critical path.
  every_steps: evaluate every this many steps, and at the end.
  stop: row -> True to end training early (default: never).
  describe: row -> a short text for the progress display.
  """

  compile: Callable[[Any], Callable[[Any, int], dict]]
  every_steps: int
  stop: Callable[[dict], bool] = lambda row: False
  describe: Callable[[dict], str] = lambda row: ''


class MetricsLog:
  """JSON rows of `<workdir>/metrics.jsonl`, written by process 0 only."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._active = jax.process_index() == 0

  def write(self, row: dict) -> None:
    if self._active:
      with open(self.path, 'a') as f:
        f.write(json.dumps(row) + '\n')

  def drop_after(self, step: int) -> None:
    """Rewrites the file without the rows past `step` (written after the
    checkpoint a run resumes from) and without unreadable lines (a line cut
    off by a kill), so that every step has one row of each kind."""
    if not self._active or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    kept, unreadable = [], 0
    for line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        unreadable += 1
        continue
      if row['step'] <= step:
        kept.append(line if line.endswith('\n') else line + '\n')
    if unreadable:
      warnings.warn(f'{self.path}: dropped {unreadable} unreadable line(s).', stacklevel=2)
    if len(kept) == len(lines):
      return
    with open(self.path + '.tmp', 'w') as f:
      f.writelines(kept)
    os.replace(self.path + '.tmp', self.path)


class Progress:
  """A tqdm bar on a terminal, plain log lines otherwise (process 0 only)."""

  def __init__(self, start: int, total: int):
    self._active = jax.process_index() == 0
    self._bar = None
    if sys.stderr.isatty() and self._active:
      from tqdm import tqdm

      self._bar = tqdm(total=total, initial=start, unit='step', dynamic_ncols=True)
    self._last = start

  def update(self, step: int, text: str) -> None:
    if self._bar is not None:
      self._bar.update(step - self._last)
      self._bar.set_postfix_str(text)
    elif self._active:
      print(f'step {step}: {text}', flush=True)
    self._last = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _training_row(
  step: int, wall_time: float, num_skipped: int, window: list[dict], seconds: float
) -> dict:
  """The metrics row of the step outputs in `window`, taken in `seconds`.

  Loss, grad_norm and the objective's metrics are averaged over the steps,
  non-finite values (skipped steps) left out; NaN if every step was skipped.
  """
  means = {}
  for name in window[0]:
    values = np.array([float(out[name]) for out in window])
    finite = values[np.isfinite(values)]
    means[name] = float(finite.mean()) if finite.size else float('nan')
  return dict(
    step=step,
    wall_time=wall_time,
    loss=means.pop('loss'),
    grad_norm=means.pop('grad_norm'),
    num_skipped=num_skipped,
    steps_per_second=len(window) / max(seconds, 1e-9),
    **means,
  )


@dataclasses.dataclass(frozen=True)
class Result:
  """state: the final training state; evaluation: the last evaluation row (None without one)."""

  state: dict
  evaluation: dict | None


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  loss_fn: LossFn,
  params: Any,
  optimizer: optax.GradientTransformation,
  meta: dict,
  data: Any = None,
  evaluation: Evaluation | None = None,
  sharding: jax.sharding.Sharding | None = None,
  start_time: float | None = None,
) -> Result:
  """Trains until config.train.num_steps, resuming from `workdir` if it holds a checkpoint.

  Args:
    config: a validated config (experiments.validation); the loop reads
      config.seed and config.train (num_steps, ema_decay, log_every_steps,
      checkpoint_every_seconds, checkpoint_every_steps,
      max_checkpoints_to_keep, max_consecutive_nonfinite, max_wall_seconds) and writes the
      whole config to `<workdir>/config.json`.
    workdir: run directory for metrics.jsonl, config.json and checkpoints/.
    loss_fn: the objective, (params, key, data) -> (loss, metrics).
    params: initial parameters of a fresh run (e.g. another run's); a
      resumed run restores into their structure.
    optimizer: the optax transformation (make_optimizer).
    meta: what a checkpoint must match (checkpointing.checkpoint_meta).
    data: the objective's training data (a pytree of arrays, placed like the
      state), or None.
    evaluation: optional evaluation of the moving average during training.
    sharding: where the state lives (e.g. replicated over a mesh whose batch
      axis the objective shards); default: where `params` are.
    start_time: time.time() at command start; wall times count from it.

  Raises:
    NonFiniteLossError: after train.max_consecutive_nonfinite bad steps in a
      row (the state is saved first).
    checkpointing.CheckpointMismatchError: if the workdir's checkpoint was
      written for another model or system.
    checkpointing.CorruptCheckpointError: if it holds checkpoints and none
      restores.
  """
  start_time = time.time() if start_time is None else start_time
  t = config.train
  os.makedirs(workdir, exist_ok=True)
  place = (lambda tree: jax.device_put(tree, sharding)) if sharding is not None else (lambda x: x)
  state = place(initial_state(params, optimizer, config.seed))
  data = place(data) if data is not None else None
  metrics = MetricsLog(workdir)
  ckpt = checkpointing.Checkpointer(workdir, t.max_checkpoints_to_keep)
  progress = None
  try:
    restored = ckpt.restore_newest(lambda step: ckpt.restore(state, meta, step))
    if restored is not None:
      state = place(restored[1])
    metrics.drop_after(int(state['step']))
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))
    wall_offset = float(state['wall_time'])
    wall = lambda: wall_offset + time.time() - start_time
    out_of_time = lambda: 0 < t.max_wall_seconds <= wall()

    step = int(state['step'])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      compiling = pool.submit(evaluation.compile, state['ema_params']) if evaluation else None
      if step < t.num_steps and not out_of_time():  # a finished run compiles no step
        step_fn = make_train_step(loss_fn, optimizer, t.ema_decay).lower(state, data).compile()
      evaluate = compiling.result() if compiling else None

    def evaluate_row(step: int) -> dict:
      return dict(step=step, **evaluate(state['ema_params'], step), wall_time=wall())

    def save(step: int) -> None:
      saved = dict(state, wall_time=jnp.asarray(wall(), state['wall_time'].dtype))
      ckpt.save(step, saved, meta)

    progress = Progress(step, t.num_steps)
    last_save, last_evaluation = time.time(), None
    window, window_start = [], time.time()
    stop = out_of_time()  # read once per step, so the step that ends the run is logged
    while step < t.num_steps and not stop:
      state, out = step_fn(state, data)
      step += 1
      stop = out_of_time()
      last = step == t.num_steps or stop
      window.append(out)
      if int(state['consecutive_nonfinite']) >= t.max_consecutive_nonfinite:
        save(step)  # the parameters are the last finite ones: keep them
        raise NonFiniteLossError(
          f'{int(state["consecutive_nonfinite"])} consecutive steps up to step {step} had a '
          f'non-finite loss or gradient (limit train.max_consecutive_nonfinite='
          f'{t.max_consecutive_nonfinite}); they changed no parameters. The state is saved '
          f'at step {step} in {ckpt.directory}. Lower the learning rate or check the objective.'
        )
      if step % t.log_every_steps == 0 or last:
        now = time.time()
        num_skipped = int(state['num_skipped'])
        row = _training_row(step, wall(), num_skipped, window, now - window_start)
        metrics.write(row)
        progress.update(step, f'loss {row["loss"]:.4f}')
        window, window_start = [], now
      if evaluation and (step % evaluation.every_steps == 0 or last):
        last_evaluation = evaluate_row(step)
        metrics.write(last_evaluation)
        progress.update(step, evaluation.describe(last_evaluation))
        if evaluation.stop(last_evaluation):
          break
      periodic = t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0
      if periodic or time.time() - last_save > t.checkpoint_every_seconds:
        save(step)
        last_save = time.time()
    if ckpt.latest_step != step:
      save(step)
    if evaluation and last_evaluation is None:
      # No step was taken in this call. A resumed run evaluated its final
      # parameters before its last checkpoint, so the row is returned, not
      # written again; a fresh run out of time before its first step writes it.
      last_evaluation = evaluate_row(step)
      if restored is None:
        metrics.write(last_evaluation)
  finally:
    if progress is not None:
      progress.close()
    ckpt.close()
  return Result(state, last_evaluation)
