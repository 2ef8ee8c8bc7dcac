r"""Reference sampler: Hamiltonian Monte Carlo of exp(−β U(x)), many chains at once.

Each chain runs exact, Metropolis-corrected HMC (unit mass, `num_leapfrog`
leapfrog steps of length `step_size`, jittered per proposal to break the
resonances of fixed-length trajectories; `num_leapfrog=1` is MALA) on the reduced
potential β U. Chains are vmapped, steps run in `jax.lax.scan`. During
`burn_in` each chain's step size is adapted (Robbins–Monro on ln ε, gain
decaying as 1/√t) toward `target_acceptance`, then frozen, so the production
chain is a fixed, detailed-balance-preserving kernel.

With `fix_centre_of_mass=True` the chain lives on the affine subspace
{x : Σ_i x_i = Σ_i x0_i} with its Lebesgue measure: momenta and forces are
projected onto Σ_i v_i = 0 (an isotropic Gaussian projected is the isotropic
Gaussian of the subspace), and every leapfrog position is re-centred to remove
rounding drift. Positions are never wrapped; energies must be periodic or
otherwise defined on all of R^{N×3}.

A non-finite energy (e.g. an overflowing neighbour list) rejects the proposal.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from systems.estimators import statistical_inefficiency

JITTER = 0.2  # each proposal's step is uniform in step_size·(1 ± JITTER)


@dataclasses.dataclass(frozen=True)
class SamplerResult:
  """Production output of `sample` for C chains and T = num_steps // thin records.

  samples: (C, T, N, 3) positions, every `thin`-th production step.
  energies: (C, T) energy_fn of the stored samples (energy_fn's unit).
  acceptance: (C,) mean Metropolis acceptance probability in production.
  step_size: (C,) step size used in production (after adaptation).
  statistical_inefficiency: (C,) g of each chain's stored energies (≥ 1).
  """

  samples: np.ndarray
  energies: np.ndarray
  acceptance: np.ndarray
  step_size: np.ndarray
  statistical_inefficiency: np.ndarray


def _centre(v: jnp.ndarray) -> jnp.ndarray:
  """Projects per-particle vectors (N, 3) onto Σ_i v_i = 0."""
  return v - jnp.mean(v, axis=-2, keepdims=True)


def _check_positive(name: str, value, integer: bool = False):
  value = np.asarray(value)
  ok = np.all((value > 0) & np.isfinite(value)) and (
    not integer or value.ndim == 0 and int(value) == value
  )
  if not ok:
    kind = 'a positive integer' if integer else 'positive and finite'
    raise ValueError(f'{name}={value!r} must be {kind}.')


def sample(
  energy_fn: Callable,
  x0,
  key: jax.Array,
  *,
  step_size,
  energy_args: tuple = (),
  **settings,
) -> SamplerResult:
  """Samples exp(−β energy_fn(x)) with C independent HMC chains.

  One call of `make_sampler(energy_fn, **settings)`; to run several chunks of
  the same chains, make the sampler once and call it per chunk (it compiles once).

  Args:
    energy_fn: energy of one configuration, `energy_fn(x, *args) -> ()` for
      x (N, 3); jax-differentiable.
    x0: (C, N, 3) initial positions (length unit).
    key: PRNG key.
    step_size: initial leapfrog step, scalar or per chain (C,) (length unit;
      unit mass, reduced energy βU).
    energy_args: per-chain extra arguments of energy_fn, each with leading
      axis C (e.g. a coupling parameter λ per chain).
    **settings: beta, num_steps, burn_in, thin, num_leapfrog,
      target_acceptance, fix_centre_of_mass (see make_sampler).
  """
  return make_sampler(energy_fn, **settings)(x0, key, step_size, energy_args)


def make_sampler(
  energy_fn: Callable,
  *,
  beta: float,
  num_steps: int,
  burn_in: int = 0,
  thin: int = 1,
  num_leapfrog: int = 5,
  target_acceptance: float = 0.8,
  fix_centre_of_mass: bool = False,
) -> Callable[..., SamplerResult]:
  """A compiled HMC run: (x0 (C,N,3), key, step_size, energy_args=()) -> SamplerResult.

  Args:
    energy_fn: as in `sample`.
    beta: inverse temperature (1 / energy unit).
    num_steps: production HMC steps per chain.
    burn_in: equilibration steps (step size adapted, nothing stored).
    thin: store every `thin`-th production step; must divide num_steps.
    num_leapfrog: leapfrog steps per proposal (1 gives MALA).
    target_acceptance: acceptance probability aimed at during burn-in, in (0, 1).
    fix_centre_of_mass: sample on Σ_i x_i = Σ_i x0_i (see module docstring).
  """
  _check_positive('beta', beta)
  for name, value in (('num_steps', num_steps), ('thin', thin), ('num_leapfrog', num_leapfrog)):
    _check_positive(name, value, integer=True)
  if int(burn_in) != burn_in or burn_in < 0:
    raise ValueError(f'burn_in={burn_in!r} must be a non-negative integer.')
  if num_steps % thin:
    raise ValueError(f'thin={thin} must divide num_steps={num_steps}.')
  if not 0 < target_acceptance < 1:
    raise ValueError(f'target_acceptance={target_acceptance} must be in (0, 1).')
  run = _make_runner(
    energy_fn,
    float(beta),
    int(num_steps),
    int(burn_in),
    int(thin),
    int(num_leapfrog),
    float(target_acceptance),
    bool(fix_centre_of_mass),
  )

  def sample_chains(x0, key: jax.Array, step_size, energy_args: tuple = ()) -> SamplerResult:
    x0 = jnp.asarray(x0)
    if x0.ndim != 3 or x0.shape[-1] != 3:
      raise ValueError(f'x0 must have shape (chains, N, 3), got {x0.shape}.')
    _check_positive('step_size', step_size)
    chains = x0.shape[0]
    for i, arg in enumerate(energy_args):
      if jnp.shape(arg)[:1] != (chains,):
        raise ValueError(
          f'energy_args[{i}] must have leading axis {chains} (chains), got shape {jnp.shape(arg)}.'
        )
    if np.ndim(step_size) not in (0, 1) or np.size(step_size) not in (1, chains):
      raise ValueError(
        f'step_size must be a scalar or have shape ({chains},), got shape {np.shape(step_size)}.'
      )
    step0 = jnp.broadcast_to(jnp.asarray(step_size, x0.dtype), (chains,))
    samples, energies, acceptance, steps = jax.device_get(
      run(x0, jax.random.split(key, chains), step0, tuple(jnp.asarray(a) for a in energy_args))
    )
    return SamplerResult(
      samples=np.asarray(samples),
      energies=np.asarray(energies),
      acceptance=np.asarray(acceptance),
      step_size=np.asarray(steps),
      statistical_inefficiency=statistical_inefficiency(np.asarray(energies)),
    )

  return sample_chains


def _make_runner(
  energy_fn, beta, num_steps, burn_in, thin, num_leapfrog, target_acceptance, fix_centre_of_mass
):
  """Jitted (x0 (C,N,3), keys (C,), step (C,), args) -> samples, energies, acc, step."""
  project = _centre if fix_centre_of_mass else (lambda v: v)

  def one_chain(x, key, step, args):
    centre = jnp.mean(x, axis=-2, keepdims=True)
    restore = (lambda y: _centre(y) + centre) if fix_centre_of_mass else (lambda y: y)
    reduced = jax.value_and_grad(lambda y: beta * energy_fn(y, *args))

    def hmc_step(state, key, step):
      x, u, grad = state
      key_p, key_a, key_e = jax.random.split(key, 3)
      step = step * jax.random.uniform(key_e, (), x.dtype, 1.0 - JITTER, 1.0 + JITTER)
      p = project(jax.random.normal(key_p, x.shape, x.dtype))
      h0 = u + 0.5 * jnp.sum(p * p)

      def leapfrog(carry, _):
        y, p, _, g = carry
        p = p - 0.5 * step * project(g)
        y = restore(y + step * p)
        u_new, g = reduced(y)
        p = p - 0.5 * step * project(g)
        return (y, p, u_new, g), None

      (y, p, u_new, g), _ = jax.lax.scan(leapfrog, (x, p, u, grad), None, length=num_leapfrog)
      log_ratio = h0 - (u_new + 0.5 * jnp.sum(p * p))
      log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
      accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
      accept = jax.random.uniform(key_a, (), x.dtype) < accept_prob
      new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), (y, u_new, g), (x, u, grad))
      return new, accept_prob

    def adapt(carry, inputs):
      state, step = carry
      key, t = inputs
      state, accept_prob = hmc_step(state, key, step)
      step = step * jnp.exp((accept_prob - target_acceptance) / jnp.sqrt(t + 10.0))
      return (state, step), None

    state = (x, *reduced(x))
    key_burn, key_run = jax.random.split(key)
    (state, step), _ = jax.lax.scan(
      adapt,
      (state, step),
      (jax.random.split(key_burn, burn_in), jnp.arange(burn_in, dtype=x.dtype)),
    )

    def produce(state, keys):
      def inner(carry, key):
        state, acc = carry
        state, accept_prob = hmc_step(state, key, step)
        return (state, acc + accept_prob), None

      (state, acc), _ = jax.lax.scan(inner, (state, 0.0), keys)
      return state, (state[0], state[1] / beta, acc)

    run_keys = jax.random.split(key_run, num_steps)
    run_keys = run_keys.reshape((num_steps // thin, thin) + run_keys.shape[1:])
    _, (samples, energies, acc) = jax.lax.scan(produce, state, run_keys)
    return samples, energies, jnp.sum(acc) / num_steps, step

  return jax.jit(jax.vmap(one_chain))
