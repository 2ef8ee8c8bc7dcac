"""Lattice base distribution: truncated Gaussian noise about sites, then a
uniformly random relabelling of the particles.

Given M sites s_i in an orthorhombic periodic box, a sample is z_{π(i)} =
s_i + u_i wrapped into [−L/2, L/2) (systems.box.minimum_image), with every
coordinate of u_i drawn independently from a normal N(0, σ²) truncated to
[−h, h], and π a uniform random permutation. The half-width is h = r/√3,
where r is half the smallest minimum-image distance between two distinct
sites (or between a site and its own nearest periodic image, whichever is
smaller): the cube |u_d| ≤ h lies in the ball of radius r about its site, so
no particle can leave its Wigner–Seitz cell and the site a particle came from
is its nearest site.

Hence the density is exact and normalised:
  ln q(z) = Σ_{i,d} ln TN(u_{i,d}) − ln M!
if assigning every particle to its nearest site (minimum image) is a
permutation and every displacement u lies within the cube, and −∞ otherwise.
The ln M! counts the M! labelled copies of each unlabelled configuration.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.scipy.special import ndtr, ndtri

from systems.box import minimum_image


def wigner_seitz_half_width(sites, box) -> float:
  """h = r/√3 for sites (K, 3) in box (3,), r as in the module docstring."""
  sites = np.asarray(sites, np.float64)
  box = np.asarray(box, np.float64)
  dist = np.linalg.norm(minimum_image(sites[:, None, :] - sites[None, :, :], box), axis=-1)
  np.fill_diagonal(dist, np.inf)
  r = 0.5 * min(dist.min(), box.min())
  if not r > 0:
    raise ValueError(
      f'sites must be distinct modulo the box; smallest minimum-image distance is {2 * r}.'
    )
  return float(r / math.sqrt(3.0))


class LatticeBase(nnx.Module):
  """The lattice base distribution over (..., M, 3) positions in the box.

  Args:
    sites: (M, 3) site positions (length units), any periodic image.
    box: (3,) edge lengths of the orthorhombic box.
    noise_scale: σ > 0, the standard deviation of the untruncated normal.
    half_width: h, the truncation half-width; default computed from `sites`
      (pass the value of a larger lattice when these sites are a subset).
  """

  def __init__(self, sites, box, noise_scale: float, *, half_width: float | None = None):
    sites = np.asarray(sites, np.float64)
    box = np.asarray(box, np.float64)
    if sites.ndim != 2 or sites.shape[-1] != 3 or sites.shape[0] < 1:
      raise ValueError(f'sites has shape {sites.shape}; expected (M, 3), M>=1.')
    if box.shape != (3,) or not np.all(box > 0):
      raise ValueError(f'box={box} must be three positive edge lengths.')
    if not noise_scale > 0:
      raise ValueError(f'noise_scale={noise_scale} must be positive.')
    if half_width is None:
      half_width = wigner_seitz_half_width(sites, box)
    if not 0 < half_width <= wigner_seitz_half_width(sites, box) * (1 + 1e-9):
      raise ValueError(f'half_width={half_width} must be in (0, r/√3] for these sites.')
    self.num_sites = sites.shape[0]
    self.noise_scale = float(noise_scale)
    self.half_width = float(half_width)
    self.sites = nnx.Variable(jnp.asarray(sites, jnp.float32))
    self.box = tuple(float(b) for b in box)  # static, exact period
    a = self.half_width / self.noise_scale
    # ln of the truncated-normal normaliser σ√(2π)·erf(a/√2), per coordinate.
    self.log_normaliser = (
      math.log(self.noise_scale)
      + 0.5 * math.log(2 * math.pi)
      + math.log(math.erf(a / math.sqrt(2.0)))
    )
    self.log_num_permutations = math.lgamma(self.num_sites + 1)

  def _noise_log_prob(self, u):
    """Σ over (M, 3) of ln TN(u) for u (..., M, 3) inside the cube."""
    lp = -0.5 * (u / self.noise_scale) ** 2 - self.log_normaliser
    return jnp.sum(lp, axis=(-2, -1))

  def sample_and_log_prob(self, key, num_samples: int):
    """Returns z (n, M, 3) wrapped into [−box/2, box/2) and ln q(z) (n,)."""
    shape = (num_samples, self.num_sites, 3)
    k_mag, k_sign, k_perm = jax.random.split(key, 3)
    # Inverse CDF on the lower half [−h, 0] (accurate tails), then a random sign.
    p_lo = ndtr(-self.half_width / self.noise_scale)
    p = p_lo + (0.5 - p_lo) * jax.random.uniform(k_mag, shape)
    u = self.noise_scale * ndtri(p) * jax.random.rademacher(k_sign, shape, jnp.float32)
    u = jnp.clip(u, -self.half_width, self.half_width)
    order = jnp.argsort(jax.random.uniform(k_perm, shape[:2]), axis=-1)
    rows = jnp.arange(num_samples)[:, None]
    z = minimum_image(self.sites[...] + u, self.box)[rows, order]
    return z, self._noise_log_prob(u) - self.log_num_permutations

  def log_prob(self, z):
    """ln q(z) for z (..., M, 3) (any periodic image) -> (...); −∞ off support."""
    if z.shape[-2:] != (self.num_sites, 3):
      raise ValueError(f'z has shape {z.shape}; expected (..., {self.num_sites}, 3).')
    sites = self.sites[...]
    d = minimum_image(z[..., :, None, :] - sites, self.box)  # (..., M, M, 3)
    nearest = jnp.argmin(jnp.sum(d * d, axis=-1), axis=-1)  # (..., M)
    counts = jnp.sum(jax.nn.one_hot(nearest, self.num_sites), axis=-2)
    is_permutation = jnp.all(counts == 1, axis=-1)
    u = minimum_image(z - sites[nearest], self.box)
    inside = jnp.all(jnp.abs(u) <= self.half_width, axis=(-2, -1))
    log_q = self._noise_log_prob(u) - self.log_num_permutations
    return jnp.where(is_permutation & inside, log_q, -jnp.inf)
