"""Equivariant conditioner: spline parameters of every particle from the others."""

import math

import jax.numpy as jnp
from flax import nnx

from flows import embeddings, splines
from flows.bijector import zero_linear
from flows.transformer.attention import Transformer


class Conditioner(nnx.Module):
  """circular features -> Linear(embedding_size) -> Transformer -> zero Linear.

  Maps the conditioning coordinates of all M particles, (..., M, num_inputs),
  to raw spline parameters (..., M, num_outputs, 3K+1), equivariantly in the
  particle axis. The output layer starts at zero, so a fresh conditioner
  outputs zeros (the identity spline). The embedding and output layers run
  in float32; `compute_dtype` sets the transformer's matrix products.
  """

  def __init__(
    self,
    num_inputs: int,
    num_outputs: int,
    *,
    num_bins: int,
    lower: float,
    upper: float,
    embedding_size: int,
    num_frequencies: int,
    num_heads: int,
    num_blocks: int,
    use_layernorm: bool,
    compute_dtype: str = 'float32',
    rngs: nnx.Rngs,
  ):
    self.lower, self.upper = float(lower), float(upper)
    self.num_frequencies = num_frequencies
    self.num_outputs = num_outputs
    self.params_per_output = splines.num_params(num_bins)
    features = 2 * num_frequencies * num_inputs
    self.embed = nnx.Linear(
      features,
      embedding_size,
      kernel_init=nnx.initializers.truncated_normal(1 / math.sqrt(features)),
      rngs=rngs,
    )
    self.transformer = Transformer(
      embedding_size,
      num_heads=num_heads,
      num_blocks=num_blocks,
      use_layernorm=use_layernorm,
      compute_dtype=compute_dtype,
      rngs=rngs,
    )
    self.head = zero_linear(embedding_size, num_outputs * self.params_per_output, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(..., M, num_inputs) in [lower, upper) -> (..., M, num_outputs, 3K+1)."""
    h = embeddings.circular_features(x, self.lower, self.upper, self.num_frequencies)
    h = self.head(self.transformer(self.embed(h)))
    return h.reshape(h.shape[:-1] + (self.num_outputs, self.params_per_output))
