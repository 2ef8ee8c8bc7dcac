"""bfloat16 mixed precision of the transformer (compute_dtype='bfloat16').

The bfloat16 products must have exact float32-accumulated gradients of the
rounded operands, leave every coupling an exact bijection (a coupling is one
for any conditioner, and its log-det stays the autodiff one), keep
permutation equivariance, and give the float32 loss and gradient to within
bfloat16 rounding. Trained runs are evaluated in float32: through a chain, a
bfloat16 rounding flip can make the inverse differ visibly from the forward
map on a few samples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import runs, training
from experiments.configs import monatomic_water
from flows import SolidFlow, SplitCoupling
from flows.transformer import attention as transformer

BOX = np.full(3, 2.0)
LATTICE = np.stack(np.meshgrid(*[np.arange(2.0)] * 3, indexing='ij'), -1).reshape(
  -1, 3
)  # simple cubic 2x2x2, N = 8
SMALL = dict(
  num_layers=2,
  num_bins=4,
  embedding_size=32,
  num_heads=2,
  num_blocks=1,
  num_frequencies=2,
  noise_scale=0.15,
)


def _bf16(a):
  return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bf16_matmul_value_and_gradients_are_those_of_the_rounded_operands():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (3, 5, 16))
  w = jax.random.normal(keys[1], (16, 24))
  g = jax.random.normal(keys[2], (3, 5, 24))
  y, vjp = jax.vjp(transformer._bf16_matmul, x, w)
  dx, dw = vjp(g)
  assert y.dtype == dx.dtype == dw.dtype == jnp.float32
  xr, wr, gr = _bf16(x), _bf16(w), _bf16(g)
  np.testing.assert_allclose(y, xr @ wr, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, gr @ wr.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, np.einsum('btk,btn->kn', xr, gr), rtol=1e-5, atol=1e-4)
  # ... and they differ from the float32 product by bfloat16 rounding only.
  exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  assert 1e-4 < np.abs(y - exact).max() / np.abs(exact).max() < 2e-2


def test_unknown_compute_dtype_is_refused():
  with pytest.raises(ValueError, match="compute_dtype='float16'"):
    transformer.Transformer(
      8, num_heads=2, num_blocks=1, use_layernorm=False, compute_dtype='float16', rngs=nnx.Rngs(0)
    )


def test_bf16_coupling_is_an_exact_bijection(perturb):
  coupling = SplitCoupling(
    (1, 2),
    lower=-1.0,
    upper=1.0,
    num_bins=4,
    embedding_size=32,
    num_heads=2,
    num_blocks=1,
    num_frequencies=2,
    use_layernorm=False,
    compute_dtype='bfloat16',
    rngs=nnx.Rngs(0),
  )
  coupling = perturb(coupling, 0.3, seed=1)
  x = jax.random.uniform(jax.random.key(2), (16, 7, 3), minval=-1.0, maxval=1.0)
  # The same parameters with float32 products: bfloat16 really is in use.
  graphdef, state = nnx.split(coupling)
  twin = SplitCoupling(
    (1, 2),
    lower=-1.0,
    upper=1.0,
    num_bins=4,
    embedding_size=32,
    num_heads=2,
    num_blocks=1,
    num_frequencies=2,
    use_layernorm=False,
    rngs=nnx.Rngs(0),
  )
  nnx.update(twin, state)

  @jax.jit  # compiled, not op by op; the inverse apart, so it recomputes its conditioner
  def forward(x):
    y, log_det = coupling.forward(x)
    flat = lambda v: coupling.forward(v.reshape(x.shape[1:]))[0].reshape(-1)
    jacobians = jax.vmap(jax.jacrev(flat))(x[:3].reshape(3, -1))
    return y, log_det, twin.forward(x)[0], jnp.linalg.slogdet(jacobians)[1]

  y, log_det, y_float32, jacobian_log_det = forward(x)
  x_back, inv_log_det = jax.jit(coupling.inverse)(y)
  assert 1e-5 < np.abs(y_float32 - y).max() < 0.1
  assert np.abs(log_det).max() > 0.1  # far from identity
  np.testing.assert_allclose(x_back, x, atol=2e-5)
  np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)
  # The log-det is the autodiff one although the bfloat16 conditioner is only
  # piecewise smooth: the Jacobian is block-triangular, the conditioner's
  # (straight-through) derivative sits off the diagonal. In a chain the
  # log-dets of the couplings add up.
  np.testing.assert_allclose(log_det[:3], jacobian_log_det, atol=1e-4)


def test_runs_trained_in_bf16_are_evaluated_in_float32(tmp_path):
  config = monatomic_water.get_config('mw_cubic_8,tiny')
  config.model.transformer.compute_dtype = 'bfloat16'
  config.train.num_steps = 3
  training.train(config, str(tmp_path))
  loaded, setup, state = runs.load_run(str(tmp_path))
  assert loaded.model.transformer.compute_dtype == 'float32'

  @jax.jit  # one compiled program, not one per operation
  def sample_and_log_prob(params, key):
    x, log_q, _ = setup.sample(params, key, 32)
    return setup.flow(params).log_prob(x), log_q

  log_prob, log_q = sample_and_log_prob(state['params'], jax.random.key(5))
  np.testing.assert_allclose(log_prob, log_q, atol=1e-4)


def test_bf16_flow_is_permutation_equivariant(perturb):
  flow = perturb(
    SolidFlow(LATTICE, BOX, compute_dtype='bfloat16', rngs=nnx.Rngs(0), **SMALL), 0.3, seed=1
  )
  z, _ = flow.base.sample_and_log_prob(jax.random.key(3), 8)
  perm = np.array([3, 0, 6, 1, 5, 2, 4])
  (y, y_perm), (log_det, log_det_perm) = jax.jit(  # one compiled program
    lambda z: jax.tree.map(lambda a: a.reshape(2, -1, *a.shape[1:]), flow.forward(z))
  )(jnp.concatenate([z, z[:, perm]]))
  np.testing.assert_allclose(y_perm, y[:, perm], atol=1e-5)
  np.testing.assert_allclose(log_det_perm, log_det, atol=1e-4)


def test_bf16_training_loss_and_gradient_match_float32(perturb):
  results = {}
  for dtype in ('float32', 'bfloat16'):
    config = monatomic_water.get_config('mw_cubic_8,tiny')
    config.model.transformer.compute_dtype = dtype
    setup, state = training.build(config)
    loss_fn = training.make_loss_fn(setup, 64)
    params = perturb(state['params'], 0.05)
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, _), grad = jax.jit(value_and_grad)(params, jax.random.key(4), None)
    results[dtype] = loss, grad
  (loss32, grad32), (loss16, grad16) = results['float32'], results['bfloat16']
  assert np.isfinite(loss16)
  assert abs(float(loss16 - loss32)) < 1e-2 * abs(float(loss32))
  flat = lambda g: np.concatenate([np.ravel(v) for v in jax.tree.leaves(g)])
  a, b = flat(grad32), flat(grad16)
  assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
