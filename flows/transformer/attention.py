"""Permutation-equivariant transformer encoder (no positional encoding), NNX.

Acts on (..., M, d) sets of M feature vectors; permuting the M inputs permutes
the outputs. Pre-norm residual blocks h += SelfAttention(LN(h)),
h += MLP(LN(h)), where the layer norms are present only if `use_layernorm`
(the published flows-for-solids model uses none).

With `compute_dtype='bfloat16'` the blocks' Linear layers multiply bfloat16
copies of their inputs and kernels with float32 accumulation, in the forward
and the backward pass (mixed precision; on CPUs with AMX and on GPUs these
products run several times faster). Parameters, biases, the residual stream,
attention logits and softmax, layer norms and the output keep the input's
dtype.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

SMALL_SET = 16  # up to this many tokens, attention uses broadcast products
COMPUTE_DTYPES = ('float32', 'bfloat16')  # dtypes of the Linear layers' products


@jax.custom_vjp
def _bf16_matmul(x, w):
  """x (..., K) @ w (K, N) -> (..., N) in x's dtype, from bfloat16 operands."""
  return _bf16_matmul_fwd(x, w)[0]


# Products as einsums over the leading axes, accumulated in float32: on XLA:CPU
# these hit the fast bfloat16 kernels, where 2-d products with a transposed
# operand (the textbook backward pass) run 3-4x slower.
def _bf16_matmul_fwd(x, w):
  x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  y = jnp.einsum('...k,kn->...n', x16, w16, preferred_element_type=jnp.float32)
  return y.astype(x.dtype), (x16, w16)


def _bf16_matmul_bwd(residuals, g):
  # nnx.Linear promotes x and w to one dtype, which the cotangent g has too.
  x16, w16 = residuals
  g16 = g.astype(jnp.bfloat16)
  dx = jnp.einsum('...n,kn->...k', g16, w16, preferred_element_type=jnp.float32)
  dw = jnp.einsum('...k,...n->kn', x16, g16, preferred_element_type=jnp.float32)
  return dx.astype(g.dtype), dw.astype(g.dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def _bf16_dot_general(
  lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None
):
  """nnx.Linear's dot_general (contract lhs's last axis with rhs's first)."""
  del precision, preferred_element_type, out_sharding
  if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())):
    raise ValueError(f'unsupported dimension_numbers={dimension_numbers}.')
  return _bf16_matmul(lhs, rhs)


def _linear(
  in_size: int, out_size: int, kernel_init, compute_dtype: str, rngs: nnx.Rngs
) -> nnx.Linear:
  """A biased nnx.Linear whose products run in `compute_dtype`."""
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(
      f'compute_dtype={compute_dtype!r}; expected one of {", ".join(COMPUTE_DTYPES)}.'
    )
  extra = dict(dot_general=_bf16_dot_general) if compute_dtype == 'bfloat16' else {}
  return nnx.Linear(in_size, out_size, kernel_init=kernel_init, rngs=rngs, **extra)


def _kernel_init(num_blocks: int):
  """VarianceScaling(2/sqrt(num_blocks), fan_in, truncated normal)."""
  return nnx.initializers.variance_scaling(
    2.0 / math.sqrt(num_blocks), 'fan_in', 'truncated_normal'
  )


def _maybe_layer_norm(width: int, use_layernorm: bool, rngs: nnx.Rngs):
  return nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs) if use_layernorm else None


def _apply(norm, h):
  return h if norm is None else norm(h)


class SelfAttention(nnx.Module):
  """Multi-head dot-product self-attention over the set axis.

  Queries, keys, values and output are biased Linear maps of width d; each of
  the `num_heads` heads has size d / num_heads.
  """

  def __init__(
    self, width: int, num_heads: int, kernel_init, *, compute_dtype: str = 'float32', rngs: nnx.Rngs
  ):
    if width % num_heads:
      raise ValueError(f'width={width} must be divisible by num_heads={num_heads}.')
    self.num_heads = num_heads
    make = lambda: _linear(width, width, kernel_init, compute_dtype, rngs)
    self.query, self.key, self.value, self.out = make(), make(), make(), make()

  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    """(..., M, d) -> (..., M, d)."""
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, -1))
    q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
    q = q / math.sqrt(q.shape[-1])
    if h.shape[-2] <= SMALL_SET:
      # Broadcast products: for a few tokens these beat XLA's batched matmuls
      # of tiny matrices on CPU (measured: 17% of an 8-particle training step).
      logits = jnp.sum(q[..., :, None, :, :] * k[..., None, :, :, :], axis=-1)
      weights = jax.nn.softmax(logits, axis=-2)  # (..., i, j, h)
      attended = jnp.sum(weights[..., None] * v[..., None, :, :, :], axis=-3)
    else:
      logits = jnp.einsum('...ihc,...jhc->...hij', q, k)
      attended = jnp.einsum('...hij,...jhc->...ihc', jax.nn.softmax(logits), v)
    return self.out(attended.reshape(h.shape))


class MLP(nnx.Module):
  """d -> 4d -> d with a gelu in between."""

  def __init__(self, width: int, kernel_init, *, compute_dtype: str = 'float32', rngs: nnx.Rngs):
    self.hidden = _linear(width, 4 * width, kernel_init, compute_dtype, rngs)
    self.output = _linear(4 * width, width, kernel_init, compute_dtype, rngs)

  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    return self.output(jax.nn.gelu(self.hidden(h)))


class TransformerBlock(nnx.Module):
  """h += SelfAttention(maybe_LN(h)); h += MLP(maybe_LN(h))."""

  def __init__(
    self,
    width: int,
    num_heads: int,
    kernel_init,
    use_layernorm: bool,
    *,
    compute_dtype: str = 'float32',
    rngs: nnx.Rngs,
  ):
    self.attention_norm = _maybe_layer_norm(width, use_layernorm, rngs)
    self.attention = SelfAttention(
      width, num_heads, kernel_init, compute_dtype=compute_dtype, rngs=rngs
    )
    self.mlp_norm = _maybe_layer_norm(width, use_layernorm, rngs)
    self.mlp = MLP(width, kernel_init, compute_dtype=compute_dtype, rngs=rngs)

  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    h = h + self.attention(_apply(self.attention_norm, h))
    return h + self.mlp(_apply(self.mlp_norm, h))


class Transformer(nnx.Module):
  """`num_blocks` transformer blocks and, with layer norm on, a final LN.

  Linear kernels use VarianceScaling(2/sqrt(num_blocks), fan_in, truncated
  normal); biases start at zero. `compute_dtype`: 'float32' or 'bfloat16'
  (the Linear layers' products, see the module docstring).
  """

  def __init__(
    self,
    width: int,
    *,
    num_heads: int,
    num_blocks: int,
    use_layernorm: bool,
    compute_dtype: str = 'float32',
    rngs: nnx.Rngs,
  ):
    if num_blocks < 1:
      raise ValueError(f'num_blocks={num_blocks} must be >= 1.')
    init = _kernel_init(num_blocks)
    self.blocks = nnx.List(
      [
        TransformerBlock(
          width, num_heads, init, use_layernorm, compute_dtype=compute_dtype, rngs=rngs
        )
        for _ in range(num_blocks)
      ]
    )
    self.final_norm = _maybe_layer_norm(width, use_layernorm, rngs)

  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    """(..., M, d) -> (..., M, d)."""
    for block in self.blocks:
      h = block(h)
    return _apply(self.final_norm, h)
