"""Circular rational-quadratic spline and circular embedding."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flows import embeddings, splines

LOWER, UPPER, BINS = -0.7, 1.3, 8

forward = jax.jit(lambda x, raw: splines.forward(x, raw, LOWER, UPPER))
inverse = jax.jit(lambda y, raw: splines.inverse(y, raw, LOWER, UPPER))


@jax.jit
def distrax_forward_inverse(x, raw):
  """distrax's circular spline: (y, log_det) at x and (x', log_det') at y."""
  ref = distrax.RationalQuadraticSpline(
    raw,
    range_min=LOWER,
    range_max=UPPER,
    boundary_slopes='circular',
    min_bin_size=(UPPER - LOWER) * 1e-4,
  )
  y, log_det = ref.forward_and_log_det(x)
  return y, log_det, *ref.inverse_and_log_det(y)


def _points_and_params(seed, n=400, scale=1.5):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(k1, (n,), minval=LOWER, maxval=UPPER)
  edges = jnp.array([LOWER, UPPER, LOWER + 1e-6, UPPER - 1e-6, 0.0, 0.3])
  x = jnp.concatenate([x, edges])
  raw = scale * jax.random.normal(k2, x.shape + (splines.num_params(BINS),))
  return x, raw


def test_zero_params_are_identity():
  x, raw = _points_and_params(0)
  raw = jnp.zeros_like(raw)
  for fn in (forward, inverse):
    y, log_det = fn(x, raw)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)


def test_matches_distrax_circular_spline():
  """Two independent implementations agree to float64 precision."""
  with jax.enable_x64(True):
    x, raw = _points_and_params(1)
    x, raw = x.astype(jnp.float64), raw.astype(jnp.float64)
    _compare_with_distrax(x, raw)


def _compare_with_distrax(x, raw):
  y_ref, log_det_ref, x_ref, inv_log_det_ref = distrax_forward_inverse(x, raw)
  y, log_det = forward(x, raw)
  np.testing.assert_allclose(y, y_ref, atol=1e-12)
  np.testing.assert_allclose(log_det, log_det_ref, atol=1e-10)
  x_back, inv_log_det = inverse(y_ref, raw)
  np.testing.assert_allclose(x_back, x_ref, atol=1e-10)
  np.testing.assert_allclose(x_back, x, atol=1e-10)
  np.testing.assert_allclose(inv_log_det, inv_log_det_ref, atol=1e-9)


def test_round_trip_derivative_and_circular_slopes():
  x, raw = _points_and_params(2, scale=0.5)
  y, log_det = forward(x, raw)
  assert jnp.all((y >= LOWER) & (y <= UPPER))
  x_back, inv_log_det = inverse(y, raw)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)
  grad = jax.jit(jax.vmap(jax.grad(lambda a, r: forward(a, r)[0])))
  np.testing.assert_allclose(jnp.log(grad(x, raw)), log_det, atol=1e-4)
  # Circular boundary: both ends fixed, with equal slopes.
  ends = jnp.array([LOWER, UPPER])
  raw2 = jnp.broadcast_to(raw[0], (2,) + raw.shape[1:])
  y_ends, ld_ends = forward(ends, raw2)
  np.testing.assert_allclose(y_ends, ends, atol=1e-6)
  np.testing.assert_allclose(ld_ends[0], ld_ends[1], atol=1e-5)


def test_float32_inverse_no_worse_than_distrax_on_steep_splines():
  """Near-flat bins make any float32 inverse ill-conditioned; ours must cope
  as well as distrax's."""
  x, raw = _points_and_params(3, n=4000, scale=3.0)
  y, _ = forward(x, raw)
  ours = jnp.abs(inverse(y, raw)[0] - x)
  theirs = jnp.abs(distrax_forward_inverse(x, raw)[2] - x)
  assert jnp.all(jnp.isfinite(ours))
  assert float(jnp.max(ours)) <= 1.1 * float(jnp.max(theirs)) + 1e-6
  assert float(jnp.median(ours)) <= 1.1 * float(jnp.median(theirs)) + 1e-7


def test_bad_parameter_count_raises():
  with pytest.raises(ValueError, match='3K\\+1'):
    splines.forward(jnp.zeros(3), jnp.zeros((3, 5)), LOWER, UPPER)
  with pytest.raises(ValueError, match='num_bins'):
    splines.num_params(0)


def test_circular_embedding_is_periodic():
  x = jnp.array([[0.1, -0.4], [0.9, 0.2]])
  features = embeddings.circular_features(x, LOWER, UPPER, 3)
  assert features.shape == (2, 12)
  shifted = embeddings.circular_features(x + (UPPER - LOWER), LOWER, UPPER, 3)
  np.testing.assert_allclose(shifted, features, atol=1e-5)
  np.testing.assert_allclose(
    features[:, 0], jnp.cos(2 * jnp.pi * (x[:, 0] - LOWER) / (UPPER - LOWER)), atol=1e-6
  )
