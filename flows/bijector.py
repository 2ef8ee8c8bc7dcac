"""The bijector protocol and the one scanned chain of layers that every flow family uses.

A bijector maps (..., M, 3) to (..., M, 3) and returns the log-determinant of
its Jacobian, shaped like the batch dims (...). Extra static context (e.g. a
local layer's colour classes) passes through unchanged.

The chain's layers are `num_layers` copies of one layer with their parameters
stacked on a leading axis (`stack_layers`), applied by `jax.lax.scan`
(`run_chain`). The stacked layers are a plain attribute of the flow (not
wrapped in a module of their own), so the parameter paths of checkpoints
written before this module existed are unchanged.
"""

from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
from flax import nnx


class Bijector(Protocol):
  """forward(x, *context) -> (y, ln|det ∂y/∂x|) and inverse(y, *context) -> (x, ln|det ∂x/∂y|);
  x, y (..., M, 3), log-dets (...)."""

  def forward(self, x, *context) -> tuple[jnp.ndarray, jnp.ndarray]: ...

  def inverse(self, y, *context) -> tuple[jnp.ndarray, jnp.ndarray]: ...


def stack_layers(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs):
  """`num_layers` layers make_layer(rngs), parameters stacked on a leading axis; None for 0."""
  if num_layers < 0:
    raise ValueError(f'num_layers={num_layers} must be >= 0.')
  if num_layers == 0:
    return None

  @nnx.split_rngs(splits=num_layers)
  @nnx.vmap(in_axes=0, out_axes=0)
  def make_layers(layer_rngs):
    return make_layer(layer_rngs)

  return make_layers(rngs)


def grow_stacked(trained, fresh, num_trained: int):
  """Parameters of a deeper chain whose first `num_trained` layers are `trained`'s.

  `trained` and `fresh` are parameter trees of the same structure, of a model
  with `num_trained` stacked layers (stack_layers) and of the same model with
  more. A leaf of the stacked layers (leading axis num_trained there and longer
  here, the same trailing shape) takes the trained layers followed by the fresh
  ones beyond them; every other leaf is `trained`'s. Fresh layers output the
  identity where their heads start at zero (zero_linear), so the deeper flow
  starts as the trained one.

  Raises:
    ValueError: naming the first leaf whose shapes differ otherwise.
  """

  def splice(path, old, new):
    if old.shape == new.shape:
      return old
    if old.shape[1:] == new.shape[1:] and old.shape[0] == num_trained < new.shape[0]:
      return jnp.concatenate([old, new[num_trained:]], axis=0)
    raise ValueError(
      f'Parameter {jax.tree_util.keystr(path)} has shape {old.shape} in the trained model and '
      f'{new.shape} in the deeper one; expected the same, or {num_trained} stacked layers '
      'growing to more.'
    )

  return jax.tree_util.tree_map_with_path(splice, trained, fresh)


def run_chain(layers, x, method: str, *context, remat: bool = False):
  """Applies stacked `layers` (stack_layers; None: identity) to x (..., M, 3).

  Args:
    layers: stacked layers, each a Bijector.
    x: (..., M, 3) input.
    method: 'forward' (layers in order) or 'inverse' (in reverse order).
    context: static extra arguments of every layer's method.
    remat: rematerialise each layer in the backward pass (saves memory).

  Returns:
    (output (..., M, 3), summed log-det (...)).
  """
  if method not in ('forward', 'inverse'):
    raise ValueError(f"method={method!r}; expected 'forward' or 'inverse'.")
  log_det = jnp.zeros(x.shape[:-2], x.dtype)
  if layers is None:
    return x, log_det
  graphdef, params = nnx.split(layers)

  def step(carry, layer_params):
    v, total = carry
    v, ld = getattr(nnx.merge(graphdef, layer_params), method)(v, *context)
    return (v, total + ld), None

  if remat:
    step = jax.checkpoint(step)
  (x, log_det), _ = jax.lax.scan(step, (x, log_det), params, reverse=(method == 'inverse'))
  return x, log_det


def zero_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs) -> nnx.Linear:
  """A Linear layer whose kernel and bias start at zero: the output head of a conditioner,
  so that a fresh layer outputs zeros (the identity spline or shift)."""
  return nnx.Linear(
    in_features,
    out_features,
    kernel_init=nnx.initializers.zeros,
    bias_init=nnx.initializers.zeros,
    rngs=rngs,
    **kwargs,
  )
