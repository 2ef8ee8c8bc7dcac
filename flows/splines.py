"""Monotone rational-quadratic splines (Durkan et al. 2019), elementwise.

A spline with K bins maps [lower, upper] onto itself, fixing both ends, and is
parametrised by 3K+1 unconstrained numbers per element, laid out as
[K width logits, K height logits, K+1 slope parameters]. Boundary slopes are
either circular (default): the slope at `upper` is tied to the slope at
`lower` (the last slope parameter is unused), so the map is C¹ on the circle
[lower, upper); or identity: both boundary slopes are 1 (the first and last
slope parameters are unused), so the map with its identity tails outside
[lower, upper] is a C¹ bijection of the real line. All-zero parameters give
exactly the identity. Values outside [lower, upper] pass through unchanged
with log-derivative 0.

Every function is a pure function of arrays, vectorised over leading axes
without Python loops, and safe under jit/vmap/grad.
"""

import math

import jax
import jax.numpy as jnp

MIN_BIN_FRACTION = 1e-4  # minimum bin width/height, as a fraction of the range
MIN_SLOPE = 1e-4  # minimum knot slope


def num_params(num_bins: int) -> int:
  """Raw parameters per element for `num_bins` bins: 3K+1."""
  if num_bins < 1:
    raise ValueError(f'num_bins={num_bins} must be >= 1.')
  return 3 * num_bins + 1


def _bin_num(raw: jnp.ndarray) -> int:
  size = raw.shape[-1]
  if size < 4 or (size - 1) % 3:
    raise ValueError(f'raw parameters have last axis {size}; expected 3K+1 with K >= 1.')
  return (size - 1) // 3


def _knot_positions(logits: jnp.ndarray, lower: float, upper: float) -> jnp.ndarray:
  """(..., K) logits -> (..., K+1) increasing knots from lower to upper."""
  num_bins = logits.shape[-1]
  width = upper - lower
  min_size = MIN_BIN_FRACTION * width
  sizes = min_size + (width - num_bins * min_size) * jax.nn.softmax(logits)
  inner = lower + jnp.cumsum(sizes[..., :-1], axis=-1)
  pad = jnp.ones(logits.shape[:-1] + (1,), logits.dtype)
  return jnp.concatenate([lower * pad, inner, upper * pad], axis=-1)


BOUNDARY_SLOPES = ('circular', 'identity')


def knots(raw: jnp.ndarray, lower: float, upper: float, boundary_slopes: str = 'circular'):
  """Spline knots from raw parameters.

  Args:
    raw: (..., 3K+1) unconstrained parameters.
    lower, upper: the range (scalars, length units).
    boundary_slopes: 'circular' (slopes[..., K] == slopes[..., 0]) or
      'identity' (slopes[..., 0] == slopes[..., K] == 1).

  Returns:
    x_knots, y_knots, slopes: each (..., K+1).
  """
  if boundary_slopes not in BOUNDARY_SLOPES:
    raise ValueError(f'boundary_slopes={boundary_slopes!r}; expected one of {BOUNDARY_SLOPES}.')
  num_bins = _bin_num(raw)
  if not upper > lower:
    raise ValueError(f'upper={upper} must be greater than lower={lower}.')
  x_knots = _knot_positions(raw[..., :num_bins], lower, upper)
  y_knots = _knot_positions(raw[..., num_bins : 2 * num_bins], lower, upper)
  offset = math.log(math.expm1(1.0 - MIN_SLOPE))  # softplus(offset) + MIN = 1
  slopes = _softplus(raw[..., 2 * num_bins : 3 * num_bins] + offset)
  slopes = slopes + MIN_SLOPE
  if boundary_slopes == 'identity':
    one = jnp.ones_like(slopes[..., :1])
    return x_knots, y_knots, jnp.concatenate([one, slopes[..., 1:], one], axis=-1)
  slopes = jnp.concatenate([slopes, slopes[..., :1]], axis=-1)
  return x_knots, y_knots, slopes


def _softplus(z: jnp.ndarray) -> jnp.ndarray:
  """ln(1 + e^z), exact in float32; its gradient compiles to faster CPU code
  than jax.nn.softplus's."""
  return jnp.log1p(jnp.exp(jnp.minimum(z, 20.0))) + jnp.maximum(z - 20.0, 0.0)


def _select_bin(v: jnp.ndarray, edges: jnp.ndarray, *arrays: jnp.ndarray):
  """Left and right values of `arrays` at the bin of `edges` containing v.

  v: (...); edges and arrays: (..., K+1). Returns a flat tuple
  (left_0, right_0, left_1, right_1, ...), each of shape (...).
  """
  num_bins = edges.shape[-1] - 1
  idx = jnp.sum(v[..., None] >= edges[..., 1:-1], axis=-1)
  one_hot = (idx[..., None] == jnp.arange(num_bins)).astype(v.dtype)
  out = []
  for a in arrays:
    out.append(jnp.sum(one_hot * a[..., :-1], axis=-1))
    out.append(jnp.sum(one_hot * a[..., 1:], axis=-1))
  return tuple(out)


def _log_derivative(xi, s, d0, d1):
  """log dy/dx inside a bin at relative position xi ∈ [0, 1]."""
  xi1 = xi * (1 - xi)
  denominator = s + (d0 + d1 - 2 * s) * xi1
  numerator = s * s * (d1 * xi * xi + 2 * s * xi1 + d0 * (1 - xi) ** 2)
  return jnp.log(numerator) - 2 * jnp.log(denominator)


def _in_range(v, lower, upper):
  return (v >= lower) & (v <= upper)


def _unit_clamp(t):
  """Clamps to [0, 1] with unit gradient at the ends (unlike jnp.clip)."""
  return jnp.where(t < 0, 0.0, jnp.where(t > 1, 1.0, t))


def forward(
  x: jnp.ndarray, raw: jnp.ndarray, lower: float, upper: float, boundary_slopes: str = 'circular'
):
  """Applies the spline elementwise.

  Args:
    x: (...) inputs.
    raw: (..., 3K+1) parameters for each element of x.
    lower, upper: the range.
    boundary_slopes: 'circular' or 'identity' (see `knots`).

  Returns:
    y: (...) outputs; log_det: (...) log |dy/dx|.
  """
  xk, yk, dk = knots(raw, lower, upper, boundary_slopes)
  inside = _in_range(x, lower, upper)
  x_safe = jnp.where(inside, x, lower)  # keeps the unused branch finite
  x0, x1, y0, y1, d0, d1 = _select_bin(x_safe, xk, xk, yk, dk)
  w, h = x1 - x0, y1 - y0
  s = h / w
  xi = _unit_clamp((x_safe - x0) / w)
  xi1 = xi * (1 - xi)
  y = y0 + h * (s * xi * xi + d0 * xi1) / (s + (d0 + d1 - 2 * s) * xi1)
  log_det = _log_derivative(xi, s, d0, d1)
  return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)


def inverse(
  y: jnp.ndarray, raw: jnp.ndarray, lower: float, upper: float, boundary_slopes: str = 'circular'
):
  """Inverts the spline elementwise.

  Args:
    y: (...) outputs of `forward`.
    raw: (..., 3K+1) parameters, as given to `forward`.
    lower, upper: the range.
    boundary_slopes: 'circular' or 'identity' (see `knots`).

  Returns:
    x: (...) inputs; log_det: (...) log |dx/dy| = −log |dy/dx| at x.
  """
  xk, yk, dk = knots(raw, lower, upper, boundary_slopes)
  inside = _in_range(y, lower, upper)
  y_safe = jnp.where(inside, y, lower)
  y0, y1, x0, x1, d0, d1 = _select_bin(y_safe, yk, yk, xk, dk)
  w, h = x1 - x0, y1 - y0
  s = h / w
  dy = y_safe - y0
  t = d0 + d1 - 2 * s
  # Quadratic a·xi² + b·xi + c = 0 for the relative position xi in the bin.
  a = h * (s - d0) + dy * t
  b = h * d0 - dy * t
  c = -s * dy
  disc = jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0))
  # Two algebraically equal forms of the root in [0, 1]; pick the one without
  # cancellation (b < 0 implies a > h·s > 0, so 2a never vanishes there).
  safe_b = jnp.where(b >= 0, b, -1.0)
  safe_a = jnp.where(b >= 0, 1.0, a)
  xi = jnp.where(b >= 0, 2 * c / (-safe_b - disc), (-b + disc) / (2 * safe_a))
  xi = _unit_clamp(xi)
  x = x0 + xi * w
  log_det = -_log_derivative(xi, s, d0, d1)
  return jnp.where(inside, x, y), jnp.where(inside, log_det, 0.0)
