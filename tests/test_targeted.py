"""Learned targeted FEP: generalised works, exact maps, the work identity, TargetedMap.

TargetedMap's bijector properties (round trip, log-det against autodiff,
periodicity, permutation equivariance) are checked with every other bijector
in tests/test_flows_bijectors.py; here are the works, the losses and the
properties particular to it.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flows import registry, targeted
from systems.box import minimum_image

LOWER, UPPER = -1.0, 2.0
BOX = np.full(3, UPPER - LOWER)


class AffineMap:
  """Test fixture: y = shift + scale·x (scale > 0, scalar), ln|det| = 3M ln scale."""

  def __init__(self, scale, shift):
    self.scale, self.shift = scale, shift

  def _log_det(self, x, sign):
    return jnp.full(x.shape[:-2], sign * x.shape[-2] * 3 * math.log(self.scale))

  def forward(self, x):
    return self.shift + self.scale * x, self._log_det(x, 1.0)

  def inverse(self, y):
    return (y - self.shift) / self.scale, self._log_det(y, -1.0)


def gaussian(mean, std):
  """Unnormalised reduced potential |x − mean|²/(2 std²) of an isotropic Gaussian."""
  return lambda x: jnp.sum((x - mean) ** 2, axis=(-2, -1)) / (2 * std**2)


def periodic_potential(phase):
  """A smooth periodic reduced potential on [LOWER, UPPER)³."""
  k = 2 * jnp.pi / (UPPER - LOWER)
  return lambda x: jnp.sum(jnp.cos(k * x + phase) + 0.5 * jnp.sin(2 * k * x), axis=(-2, -1))


# Small coupling layers of each map family.
SMALL = {
  'transformer': dict(num_bins=4, embedding_size=8, num_heads=2, num_blocks=1, num_frequencies=2),
  'column': dict(num_bins=4, width=8, num_frequencies=2),
}


def small_map(
  num_mapped=3, num_layers=1, seed=0, sites=None, radial_bins=0, conditioner='transformer', **keys
):
  """A TargetedMap built through flows.registry, as experiments.tfep_stages builds one."""
  geometry = types.SimpleNamespace(num_particles=num_mapped, lower=LOWER, upper=UPPER, sites=sites)
  model = dict(
    conditioner=conditioner,
    num_layers=num_layers,
    radial_bins=radial_bins,
    centre_on_sites=sites is not None,
    **{conditioner: dict(SMALL.get(conditioner, {}), **keys)},
  )
  return registry.build(model, geometry, nnx.Rngs(seed))


SITES = np.array([[0.1, 0.2, 1.9], [1.5, -0.8, 0.3], [-0.9, 1.2, 0.7]])


def box_samples(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape + (3,), minval=LOWER, maxval=UPPER)


def test_identity_map_work_is_plain_work():
  u_a, u_b = periodic_potential(0.0), periodic_potential(1.0)
  x = box_samples((16, 3))
  bijector = small_map()
  works = jax.jit(
    lambda x: (
      targeted.forward_work(bijector, x, u_a, u_b),
      targeted.reverse_work(bijector, x, u_a, u_b),
    )
  )
  work_forward, work_reverse = works(x)
  np.testing.assert_allclose(work_forward, u_b(x) - u_a(x), atol=1e-5)
  np.testing.assert_allclose(work_reverse, u_a(x) - u_b(x), atol=1e-5)


def test_exact_map_has_zero_variance_and_exact_delta_f():
  mean_a, std_a, mean_b, std_b = 0.5, 1.0, -2.0, 1.7
  u_a, u_b = gaussian(mean_a, std_a), gaussian(mean_b, std_b)
  exact = AffineMap(std_b / std_a, mean_b - std_b / std_a * mean_a)
  num_particles = 2
  delta_f = -3 * num_particles * math.log(std_b / std_a)  # −ln(Z_B/Z_A)
  x_a = mean_a + std_a * jax.random.normal(jax.random.key(0), (1000, num_particles, 3))
  y_b = mean_b + std_b * jax.random.normal(jax.random.key(1), (1000, num_particles, 3))
  w_f = np.asarray(targeted.forward_work(exact, x_a, u_a, u_b), np.float64)
  w_r = np.asarray(targeted.reverse_work(exact, y_b, u_a, u_b), np.float64)
  assert np.std(w_f) < 1e-4 and np.std(w_r) < 1e-4
  np.testing.assert_allclose(targeted.estimate(w_f).value, delta_f, atol=1e-4)
  np.testing.assert_allclose(targeted.estimate(w_f, w_r).value, delta_f, atol=1e-4)
  assert targeted.estimate(w_f).stderr < 1e-4
  np.testing.assert_allclose(targeted.lfep_loss(exact, x_a, u_a, u_b), delta_f, atol=1e-4)
  np.testing.assert_allclose(targeted.lbar_loss(exact, x_a, y_b, u_a, u_b), 0.0, atol=1e-4)


def test_work_identity_for_an_imperfect_map():
  """⟨exp(−Φ_F)⟩_A = exp(−ΔF) and the losses bound ΔF, for a map that is not exact."""
  std_a, std_b = 1.0, 1.3
  u_a, u_b = gaussian(0.0, std_a), gaussian(0.4, std_b)
  delta_f = -3 * math.log(std_b / std_a)
  imperfect = AffineMap(1.15, 0.3)
  x_a = std_a * jax.random.normal(jax.random.key(2), (100_000, 1, 3))
  w_f = np.asarray(targeted.forward_work(imperfect, x_a, u_a, u_b), np.float64)
  estimate = targeted.estimate(w_f)
  assert abs(estimate.value - delta_f) < 4 * estimate.stderr + 1e-3
  assert np.std(w_f) > 0.1  # the map is far from exact
  assert float(targeted.lfep_loss(imperfect, x_a, u_a, u_b)) > delta_f


@pytest.mark.parametrize(
  'num_layers,sites,radial_bins',
  [(n, None, 4) for n in (0, 1, 2, 3)] + [(n, SITES, 0) for n in (1, 2, 3)],
)
def test_fresh_targeted_map_is_the_identity(num_layers, sites, radial_bins):
  x = box_samples((4, 3), seed=5)
  y, log_det = small_map(num_layers=num_layers, sites=sites, radial_bins=radial_bins).forward(x)
  np.testing.assert_allclose(y, x, atol=1e-5)
  np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_site_centred_map_commutes_with_translations(perturb):
  """M(x + c) = M(x) + c on the torus, with the same log-det, for any c."""
  x = box_samples((4, 3), seed=6)
  shift = jnp.array([0.37, -0.81, 1.23])
  forward = nnx.jit(lambda bijector, x: bijector.forward(x))
  bijector = perturb(small_map(num_layers=2, sites=SITES), 0.07, seed=1)
  y, log_det = forward(bijector, x)
  assert np.max(np.abs(log_det)) > 1e-2  # not the identity
  y_shift, log_det_shift = forward(bijector, x + shift)
  np.testing.assert_allclose(minimum_image(y_shift - y - shift, BOX), 0.0, atol=1e-5)
  np.testing.assert_allclose(log_det_shift, log_det, atol=1e-4)
  with pytest.raises(ValueError, match='sites has shape'):
    small_map(sites=SITES[:2])


def test_bad_input_raises():
  with pytest.raises(ValueError, match='num_mapped=0'):
    small_map(num_mapped=0)
  with pytest.raises(ValueError, match='expected'):
    small_map().forward(box_samples((2, 4)))
  with pytest.raises(ValueError, match='num_layers=-1'):
    small_map(num_layers=-1)
  with pytest.raises(ValueError, match='num_layers=0 needs radial_bins'):
    small_map(num_layers=0, radial_bins=0)
  with pytest.raises(
    ValueError, match=r"model.conditioner='mlp': expected one of \('transformer', 'column'\)"
  ):
    small_map(conditioner='mlp')
  with pytest.raises(ValueError, match="'local' is now called 'column'"):
    small_map(conditioner='local')
  for cutoff in (0.0, -1.0):
    with pytest.raises(
      ValueError, match=rf'model.column.cutoff={cutoff}: expected a finite number > 0'
    ):
      small_map(conditioner='column', cutoff=cutoff)
  half = 0.5 * (UPPER - LOWER)
  cutoff = 1.01 * half
  with pytest.raises(ValueError, match=rf'cutoff={cutoff}.*half the box width, {half}'):
    small_map(conditioner='column', cutoff=cutoff)
  with pytest.raises(ValueError, match=r"centre_on_sites=True: expected False with .*'column'"):
    small_map(conditioner='column', sites=SITES)
  with pytest.raises(ValueError, match='upper'):
    targeted.TargetedMap(2, 1.0, 1.0, num_layers=1, make_layer=lambda rngs: None, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='needs make_layer'):
    targeted.TargetedMap(2, 0.0, 1.0, num_layers=1, rngs=nnx.Rngs(0))
