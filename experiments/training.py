"""Training of a solid flow from its energy, from HMC samples, or both; resumable.

The objective, with w = train.forward_kl_weight, is

    (1 − w)·E_q[β U_train(x) + ln q(x)] + w·E_p[−ln q(x)],

reverse KL (KL(q‖p) − ln Z, from the energy alone; w = 0, the default),
forward KL (KL(p‖q) + const, from HMC samples of p; w = 1) or a mixture.
train.renyi2_weight λ adds λ·D₂, the Rényi divergence of order 2 of p from q,
D₂ = ln E_q[v²] − 2 ln E_q[v] with v = e^{−βU}/q, estimated on the reverse
part's batch: ln(1/ESS) of its importance weights. It is mass-covering (it
grows with the weights' upper tail, where q puts too little mass) and needs
no HMC samples; its gradient is the plain reparameterised one.
With train.path_gradient the reverse part's gradient is the path gradient
(Roeder et al. 2017; Vaitl et al. 2022): ln q is evaluated at the sample x
with the parameters held fixed, so only x's dependence on them carries
gradient. Its value and mean are those of the plain gradient, but it drops the
score term E_q[∇_θ ln q_θ], zero on average and noisy, so its variance
vanishes as q approaches p; it costs one more pass of the flow's density. The
HMC samples are drawn once into the workdir (experiments.hmc_samples) and
reused on resume. The shared loop (experiments.loop) trains it and evaluates
the moving average of the parameters by importance sampling every
eval.every_steps. The batch is sharded over every device (training state
replicated), so the same code runs on a CPU, a GPU or many hosts.

model.conditioner picks the flow among the registered solid families
(flows.registry): 'transformer' (flows.SolidFlow, the paper's model) or
'local' (flows.LocalSolidFlow: local, size-transferable couplings on a
Gaussian base), with its keys under model.<conditioner>.
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

from experiments import checkpointing, evaluation, hmc_samples, loop, validation
from flows import registry
from flows.solid_flow import SolidFlowBase
from systems import System, get_system


def make_flow(config: ml_collections.ConfigDict, system: System) -> SolidFlowBase:
  """Builds the flow of `config.model` (flows.registry) for `system`, seeded by `config.seed`."""
  return registry.build(config.model.to_dict(), system, nnx.Rngs(config.seed))


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

  def flow(self, params) -> SolidFlowBase:
    return nnx.merge(self.graphdef, params, self.rest)

  def sample(self, params, key, num_samples: int):
    """Flow samples (n, N, 3), log q (n,) and the basin mask (n,), sharded over the batch."""
    return self.flow(params).sample(key, num_samples, sharding=self.batch_sharding)

  def reference_data(self, params, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the flow's density of HMC samples takes, and which samples it covers
    (flows.solid_flow.SolidFlowBase.reference_data)."""
    return self.flow(params).reference_data(positions)

  def log_prob_reference(self, params, data):
    """ln q (n,) of reference_data rows."""
    return self.flow(params).log_prob_reference(data)


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


def make_loss_fn(
  setup: Setup,
  batch_size: int,
  forward_kl_weight: float = 0.0,
  path_gradient: bool = False,
  renyi2_weight: float = 0.0,
) -> loop.LossFn:
  """(params, key, reference) -> (loss, parts): (1 − w)·E_q[βU_train + ln q] + w·E_p[−ln q]
  + λ·D₂ (module docstring).

  The reverse part averages over `batch_size` fresh flow samples (with
  `path_gradient`, its gradient is the path gradient: module docstring), the forward
  part over `batch_size` rows drawn from `reference` (Setup.reference_data of
  HMC samples; None when w = 0). Parts (kT): `reduced_energy` E_q[β U_train]
  and `log_q` E_q[ln q] of the reverse part; `forward_kl` E_p[−ln q] over the
  reference rows the flow covers and `outside_support` the fraction it does
  not (ln q = −∞, left out of the mean and counted here); `renyi2` the batch's
  D₂ if λ > 0 (samples outside the basin left out).
  """
  if not 0 <= forward_kl_weight <= 1:
    raise ValueError(f'forward_kl_weight={forward_kl_weight} must be in [0, 1].')
  if not renyi2_weight >= 0 or (renyi2_weight > 0 and forward_kl_weight == 1):
    raise ValueError(
      f'renyi2_weight={renyi2_weight} must be >= 0, and 0 when forward_kl_weight = 1 '
      '(it is estimated on the flow samples of the reverse part).'
    )
  beta, w, lam = setup.system.beta, float(forward_kl_weight), float(renyi2_weight)

  def loss_fn(params, key, reference):
    loss, parts = 0.0, {}
    key_q, key_p = (key, None) if w == 0 else jax.random.split(key)
    if w < 1:
      x, log_q, in_basin = setup.sample(params, key_q, batch_size)
      reduced_energy = beta * setup.system.training_energy(x)
      if lam > 0:
        log_v = jnp.where(in_basin, -reduced_energy - log_q, -jnp.inf)
        renyi2 = jax.nn.logsumexp(2 * log_v) - 2 * jax.nn.logsumexp(log_v) + jnp.log(batch_size)
        loss = lam * renyi2
        parts.update(renyi2=renyi2)
      if path_gradient:  # ln q at x, the parameters held fixed; samples outside the basin
        # (zero weight, rare) keep their value without a gradient.
        at_x = setup.flow(jax.lax.stop_gradient(params)).log_prob_of_samples(x)
        log_q = jnp.where(in_basin, at_x, jax.lax.stop_gradient(log_q))
      loss = loss + (1 - w) * jnp.mean(reduced_energy + log_q)
      parts.update(reduced_energy=jnp.mean(reduced_energy), log_q=jnp.mean(log_q))
    if w > 0:
      rows = jax.random.randint(key_p, (batch_size,), 0, reference.shape[0])
      batch = jax.lax.with_sharding_constraint(reference[rows], setup.batch_sharding)
      log_q = setup.log_prob_reference(params, batch)
      covered = jnp.isfinite(log_q)
      nll = -jnp.sum(jnp.where(covered, log_q, 0.0)) / jnp.maximum(jnp.sum(covered), 1)
      loss = loss + w * nll
      parts.update(forward_kl=nll, outside_support=1.0 - jnp.mean(covered))
    return loss, parts

  return loss_fn


def make_train_step(
  setup: Setup,
  batch_size: int,
  ema_decay: float = 0.0,
  forward_kl_weight: float = 0.0,
  path_gradient: bool = False,
  renyi2_weight: float = 0.0,
):
  """The loop's compiled step (experiments.loop.make_train_step): (state, reference) ->
  (state, out)."""
  return loop.make_train_step(
    make_loss_fn(setup, batch_size, forward_kl_weight, path_gradient, renyi2_weight),
    setup.optimizer,
    ema_decay,
  )


def make_eval_sample_fn(setup: Setup):
  """Compiled (params, key, n) -> samples, log q and physical energy (+∞ outside the basin)."""

  def sample_fn(params, key, num_samples):
    x, log_q, in_basin = setup.sample(params, key, num_samples)
    return x, log_q, jnp.where(in_basin, setup.system.energy(x), jnp.inf)

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
  reference = None
  if config.train.forward_kl_weight > 0:
    samples = hmc_samples.load_or_draw(config, setup.system, workdir)
    data, covered = setup.reference_data(state['params'], samples['positions'])
    hmc_samples.report_coverage(workdir, covered)
    reference = data[covered]
  result = loop.train(
    config,
    workdir,
    loss_fn=make_loss_fn(
      setup,
      config.train.batch_size,
      config.train.forward_kl_weight,
      config.train.path_gradient,
      config.train.renyi2_weight,
    ),
    params=state['params'] if initial_params is None else initial_params,
    optimizer=setup.optimizer,
    meta=checkpointing.checkpoint_meta(config, config.system),
    data=reference,
    evaluation=make_evaluation(setup, config),
    sharding=setup.replicated,
    start_time=start_time,
  )
  return result.evaluation
