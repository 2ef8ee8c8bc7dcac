"""The contract that every flow of a solid (every 'solid' family of flows.registry) keeps.

A solid flow models N particles in a periodic box, particle 0 pinned at its
lattice site. Subclasses set `num_particles` and `base` (an object with
sample_and_log_prob(key, n) -> (z (n, M, 3), ln p (n,)), M = N − 1), are
Bijectors on (..., M, 3) (flows.bijector) and implement `sample` and
`log_prob`. Training reads a flow's density of reference (HMC) samples
through `reference_data` and `log_prob_reference`; the defaults take the
positions themselves.
"""

import math

import jax
import numpy as np
from flax import nnx


class SolidFlowBase(nnx.Module):
  """Shared base of the solid flows: sample, log_prob, parameter count and reference hooks."""

  num_particles: int

  @property
  def num_params(self) -> int:
    """Total number of trainable parameters."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(self, nnx.Param)))

  def base_sample(self, key, num_samples: int, sharding=None):
    """(z (n, M, 3), ln p_base (n,)) from the base; `sharding`, if given, constrains
    their batch layout (e.g. NamedSharding over a 'batch' axis)."""
    z, log_base = self.base.sample_and_log_prob(key, num_samples)
    if sharding is not None:
      z, log_base = jax.lax.with_sharding_constraint((z, log_base), sharding)
    return z, log_base

  def sample(self, key, num_samples: int, sharding=None):
    """Draws x (n, N, 3) in the box frame [0, L), ln q (n,) and the mask (n,) of samples
    that carry weight (False: outside the flow's support, zero weight)."""
    raise NotImplementedError

  def log_prob(self, x):
    """ln q (...) of positions x (..., N, 3) (any real values, periodic); −∞ off the support."""
    raise NotImplementedError

  def log_prob_of_samples(self, x):
    """ln q (n,) of the flow's own samples x (n, N, 3) (as `sample` labels them),
    finite where `sample`'s mask is True; elsewhere unspecified. Default: log_prob."""
    return self.log_prob(x)

  def reference_data(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `log_prob_reference` takes for reference positions (n, N, 3), and the mask (n,)
    of the samples it covers. Default: the positions (float32), all covered."""
    return np.asarray(positions, np.float32), np.ones(len(positions), bool)

  def log_prob_reference(self, data):
    """ln q (n,) of `reference_data` rows. Default: log_prob."""
    return self.log_prob(data)
