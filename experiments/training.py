"""Reverse-KL training of a lattice flow from the energy alone, resumable.

The loss is E_q[β U_train(x) + ln q(x)] over flow samples, i.e. KL(q‖p) − ln Z,
trained by the shared loop (experiments.loop), which evaluates the moving
average of the parameters by importance sampling every eval.every_steps.
The batch is sharded over every device (training state replicated), so the
same code runs on a CPU, a GPU or many hosts.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import checkpointing, evaluation, loop, validation
from flows import SolidFlow
from systems import System, get_system


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
  """Validates `config`; returns the setup and a fresh (step 0) training state.

  Args:
    config: an experiment config.
    devices: devices to shard the batch over (default: all).
  """
  devices = jax.devices() if devices is None else list(devices)
  validation.validate_config(config, num_devices=len(devices))
  system = get_system(config.system)
  mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  graphdef, params, rest = nnx.split(make_flow(config, system), nnx.Param, ...)
  optimizer = loop.make_optimizer(config.train)
  setup = Setup(system, graphdef, rest, optimizer, mesh)
  state = jax.device_put(loop.initial_state(params, optimizer, config.seed), setup.replicated)
  return setup, state


def make_loss_fn(setup: Setup, batch_size: int) -> loop.LossFn:
  """(params, key) -> (reverse-KL loss E_q[β U_train + ln q], its parts) on a fresh batch.

  The parts (kT) are `reduced_energy` E_q[β U_train] and `log_q` E_q[ln q].
  """
  beta = setup.system.beta

  def loss_fn(params, key):
    x, log_q = setup.sample(params, key, batch_size)
    reduced_energy = beta * setup.system.training_energy(x)
    loss = jnp.mean(reduced_energy + log_q)
    return loss, dict(reduced_energy=jnp.mean(reduced_energy), log_q=jnp.mean(log_q))

  return loss_fn


def make_train_step(setup: Setup, batch_size: int, ema_decay: float = 0.0):
  """The loop's compiled step (experiments.loop.make_train_step) of the reverse-KL loss."""
  return loop.make_train_step(make_loss_fn(setup, batch_size), setup.optimizer, ema_decay)


def make_eval_sample_fn(setup: Setup):
  """Compiled (params, key, n) -> samples, log q and physical energy."""

  def sample_fn(params, key, num_samples):
    x, log_q = setup.sample(params, key, num_samples)
    return x, log_q, setup.system.energy(x)

  return jax.jit(sample_fn, static_argnums=2)


def make_evaluation(setup: Setup, config: ml_collections.ConfigDict) -> loop.Evaluation:
  """Importance-sampling evaluation (evaluation.summarize) on eval.num_samples fresh samples.

  Stops training once the stderr of βF/N is at most eval.stop_at_stderr (if > 0).
  """
  e = config.eval
  batch = min(e.batch_size, e.num_samples)
  sample_fn = make_eval_sample_fn(setup)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)

  def compile_run(params):
    sample = sample_fn.lower(params, jax.random.key(0), batch).compile()

    def run(params, step: int) -> dict:
      samples = evaluation.draw_samples(
        lambda k, n: sample(params, k), jax.random.fold_in(key, step), e.num_samples, batch
      )
      return evaluation.summarize(samples, setup.system)

    return run

  return loop.Evaluation(
    compile=compile_run,
    every_steps=e.every_steps,
    stop=lambda row: 0 < e.stop_at_stderr and row['beta_f_per_particle_stderr'] <= e.stop_at_stderr,
    describe=lambda row: (
      f'βF/N {row["beta_f_per_particle"]:.4f} ± {row["beta_f_per_particle_stderr"]:.4f}, '
      f'ESS {row["ess"]:.3f}'
    ),
  )


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  start_time: float | None = None,
  initial_params: Any = None,
) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the last evaluation row.

  Args:
    config: an experiment config (see experiments/configs); validated here.
    workdir: run directory for metrics.jsonl, checkpoints/ and config.json.
    start_time: time.time() at command start; wall times count from it.
    initial_params: parameters to start a fresh run from (default: the
      freshly initialised flow's); their structure must be the model's.

  Raises:
    validation.ConfigError: naming every bad config value.
    loop.NonFiniteLossError: after `train.max_consecutive_nonfinite` bad steps.
    checkpointing.CheckpointMismatchError: if the workdir's checkpoint was
      written for another model or system.
  """
  setup, state = build(config)
  result = loop.train(
    config,
    workdir,
    loss_fn=make_loss_fn(setup, config.train.batch_size),
    params=state['params'] if initial_params is None else initial_params,
    optimizer=setup.optimizer,
    meta=checkpointing.checkpoint_meta(config, config.system),
    evaluation=make_evaluation(setup, config),
    sharding=setup.replicated,
    start_time=start_time,
  )
  return result.evaluation
