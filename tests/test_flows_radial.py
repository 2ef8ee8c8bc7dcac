"""RadialSpline properties beyond the common bijector suite: rays, surface, cube symmetry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flows.targeted.radial import RadialSpline

LOWER, UPPER = -1.0, 3.0  # centre 1, half-edge 2


@pytest.fixture
def perturbed(perturb):
  """perturbed(seed): a RadialSpline with its parameters moved off the identity."""
  return lambda seed=0: perturb(
    RadialSpline(LOWER, UPPER, num_bins=6, hidden_size=8, rngs=nnx.Rngs(seed)), 0.5, seed + 1
  )


def _points(num=32, seed=3):
  return jax.random.uniform(jax.random.key(seed), (num, 4, 3), minval=LOWER, maxval=UPPER)


def test_particles_stay_on_their_rays_and_the_surface_is_fixed(perturbed):
  module = perturbed()
  x = _points()
  y, _ = module.forward(x)
  d, e = np.asarray(x) - 1.0, np.asarray(y) - 1.0
  cos = np.sum(d * e, -1) / np.linalg.norm(d, axis=-1) / np.linalg.norm(e, axis=-1)
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)
  moved = np.abs(np.linalg.norm(e, axis=-1) - np.linalg.norm(d, axis=-1))
  assert moved.max() > 0.05  # the perturbed spline really moves particles
  # points on the box surface (|d|_∞ = 2) do not move
  surface = np.asarray(x).copy()
  surface[..., 0] = LOWER
  y_surface, _ = module.forward(jnp.asarray(surface))
  np.testing.assert_allclose(y_surface, surface, atol=1e-5)


def test_commutes_with_the_symmetries_of_the_cube(perturbed):
  module = perturbed(seed=4)
  x = _points(seed=5)
  y, log_det = module.forward(x)
  for transform in (
    lambda v: v[..., ::-1],  # swap axes 0 and 2
    lambda v: v[..., [1, 2, 0]],  # cyclic axes
    lambda v: v.at[..., 1].set(2.0 - v[..., 1]),
  ):  # mirror y about c
    y_t, log_det_t = module.forward(transform(x))
    np.testing.assert_allclose(y_t, transform(y), atol=1e-5)
    np.testing.assert_allclose(log_det_t, log_det, rtol=1e-5, atol=1e-4)


def test_log_det_is_the_sum_of_per_particle_radial_terms(perturbed):
  """One particle's log-det is 2 ln(f(ρ)/ρ) + ln f'(ρ), with f(ρ) read off the
  output's cubic radius and f' a central difference along the ray."""
  module = perturbed(seed=6)
  x = _points(num=4, seed=7)[:, :1]  # one particle
  _, log_det = module.forward(x)
  rho = lambda v: jnp.max(jnp.abs(v - 1.0), -1) / 2.0
  eps = 1e-3
  direction = (x - 1.0) / jnp.linalg.norm(x - 1.0, axis=-1, keepdims=True)
  r_of = lambda v: rho(module.forward(v)[0])
  slope = (r_of(x + eps * direction) - r_of(x - eps * direction)) / (
    rho(x + eps * direction) - rho(x - eps * direction)
  )
  expected = 2 * jnp.log(r_of(x) / rho(x)) + jnp.log(slope)
  np.testing.assert_allclose(log_det, expected[:, 0], atol=2e-3)
