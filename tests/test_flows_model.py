"""SolidFlow, its lattice base distribution and the counting convention."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from flows import LatticeBase, SolidFlow
from systems import convention
from systems.box import minimum_image

BOX = np.full(3, 2.0)
LATTICE = np.stack(np.meshgrid(*[np.arange(2.0)] * 3, indexing='ij'), -1).reshape(
  -1, 3
)  # simple cubic 2x2x2, N = 8
NOISE = 0.15
TINY = dict(
  num_bins=4, embedding_size=16, num_heads=2, num_blocks=1, num_frequencies=2, noise_scale=NOISE
)


def _count(**kwargs):
  flow = nnx.eval_shape(
    lambda: SolidFlow(LATTICE, BOX, rngs=nnx.Rngs(0), noise_scale=0.2, **kwargs)
  )
  return flow.num_params


def test_parameter_counts_match_published_models():
  tutorial = dict(
    num_layers=4, num_bins=16, embedding_size=32, num_frequencies=2, num_heads=2, num_blocks=2
  )
  lj_32 = dict(
    num_layers=24, num_bins=16, embedding_size=256, num_frequencies=8, num_heads=2, num_blocks=2
  )
  assert _count(**tutorial) == 222_424
  assert _count(**lj_32) == 76_932_624


# --- Base distribution -------------------------------------------------------


def test_base_single_particle_density_is_normalised_truncated_normal():
  base = LatticeBase(np.zeros((1, 3)), BOX, NOISE, half_width=0.4)
  h = 0.4
  # Midpoint quadrature over the cube: exact product structure, so use 1D.
  n = 2001
  t = (np.arange(n) + 0.5) / n * 2 * h - h
  line = np.zeros((n, 1, 3))
  line[:, 0, 0] = t
  log_q = np.asarray(base.log_prob(jnp.asarray(line, jnp.float32)))
  ref = stats.truncnorm(-h / NOISE, h / NOISE, scale=NOISE)
  np.testing.assert_allclose(log_q, ref.logpdf(t) + 2 * ref.logpdf(0.0), rtol=1e-5, atol=1e-5)
  marginal = np.exp(log_q - 2 * ref.logpdf(0.0))
  assert abs(marginal.sum() * (2 * h / n) - 1.0) < 1e-5
  outside = np.array([[[h * 1.01, 0.0, 0.0]]], np.float32)
  assert base.log_prob(jnp.asarray(outside))[0] == -np.inf


def test_base_samples_match_log_prob_and_support():
  sites = LATTICE[1:]
  base = LatticeBase(sites, BOX, NOISE)
  h = base.half_width
  assert h == pytest.approx(0.5 / math.sqrt(3))
  z, log_q = jax.jit(base.sample_and_log_prob, static_argnums=1)(jax.random.key(0), 256)
  np.testing.assert_allclose(base.log_prob(z), log_q, rtol=1e-5, atol=1e-4)
  # log_prob is invariant to relabelling particles and to periodic images.
  perm = np.random.default_rng(0).permutation(len(sites))
  np.testing.assert_allclose(base.log_prob(z[:, perm] + BOX), log_q, rtol=1e-5, atol=1e-4)
  # Two particles on one site: not a permutation of the sites.
  collided = z.at[:, 1].set(z[:, 0])
  assert np.all(np.isneginf(base.log_prob(collided)))
  assert np.all((np.asarray(z) >= -BOX / 2) & (np.asarray(z) < BOX / 2))


def test_base_rejects_bad_input():
  with pytest.raises(ValueError, match='noise_scale'):
    LatticeBase(LATTICE, BOX, 0.0)
  with pytest.raises(ValueError, match='box'):
    LatticeBase(LATTICE, np.array([2.0, -1.0, 2.0]), NOISE)
  with pytest.raises(ValueError, match='distinct'):
    LatticeBase(np.zeros((2, 3)), BOX, NOISE)


# --- The model ---------------------------------------------------------------


def _pair_energy(x):
  """A soft pairwise test energy Σ_{i<j} exp(−r_ij²) with minimum image."""
  d = minimum_image(x[..., :, None, :] - x[..., None, :, :], BOX)
  r2 = jnp.sum(d * d, axis=-1)
  n = x.shape[-2]
  return 0.5 * jnp.sum(jnp.where(jnp.eye(n, dtype=bool), 0.0, jnp.exp(-r2)), axis=(-2, -1))


@pytest.fixture(scope='module')
def trained_like_flow(perturb):
  """A tiny flow with all parameters moved away from the identity."""
  return perturb(SolidFlow(LATTICE, BOX, num_layers=2, rngs=nnx.Rngs(0), **TINY), 0.05, seed=3)


@nnx.jit(static_argnums=2)
def _sample_and_checks(flow, key, num_samples):
  x, log_q = flow.sample_and_log_prob(key, num_samples)
  shift = jnp.array([0.37, -1.21, 5.3])
  return dict(
    x=x,
    log_q=log_q,
    log_prob=flow.log_prob(x),
    log_prob_translated=flow.log_prob(x + shift),
    energy=_pair_energy(x),
    energy_translated=_pair_energy(x + shift),
  )


def test_model_log_prob_of_samples_and_translation_invariance(trained_like_flow):
  out = _sample_and_checks(trained_like_flow, jax.random.key(1), 128)
  x = np.asarray(out['x'])
  assert x.shape == (128, 8, 3)
  np.testing.assert_array_equal(x[:, 0], np.broadcast_to(LATTICE[0], (128, 3)))
  assert np.all((x >= 0) & (x < BOX))
  assert np.all(np.isfinite(out['log_q']))
  np.testing.assert_allclose(out['log_prob'], out['log_q'], rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(out['log_prob_translated'], out['log_q'], rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(out['energy_translated'], out['energy'], rtol=1e-5)


def test_model_rejects_bad_input(trained_like_flow):
  with pytest.raises(ValueError, match='N, 3'):
    SolidFlow(LATTICE[:1], BOX, num_layers=1, rngs=nnx.Rngs(0), **TINY)
  with pytest.raises(ValueError, match='expected'):
    trained_like_flow.log_prob(jnp.zeros((2, 7, 3)))
  with pytest.raises(ValueError, match='expected'):
    trained_like_flow.forward(jnp.zeros((2, 8, 3)))


# --- Counting convention -----------------------------------------------------


def test_convention_hand_computed():
  log_z_fixed, n, volume, wavelength = 3.5, 4, 8.0, 0.5
  assert convention.log_z_published(log_z_fixed, volume) == pytest.approx(3.5 + math.log(8.0))
  # (−(3.5 + ln 8) + ln 24)/4 + 3 ln 0.5
  expected = (-(3.5 + 2.0794415416798357) + 3.1780538303479458) / 4 + 3 * -0.6931471805599453
  assert convention.beta_f_per_particle(log_z_fixed, n, volume, wavelength) == pytest.approx(
    expected, abs=1e-12
  )
  assert convention.beta_f_per_particle_all_space(
    log_z_fixed, n, volume, wavelength, 2
  ) == pytest.approx(expected - math.log(2) / 4, abs=1e-12)
  values = convention.beta_f_per_particle(np.array([3.5, 4.5]), n, volume, wavelength)
  assert values.dtype == np.float64
  np.testing.assert_allclose(np.diff(values), -0.25)
  with pytest.raises(ValueError, match='volume'):
    convention.log_z_published(1.0, -1.0)
  with pytest.raises(ValueError, match='sites_per_cell'):
    convention.beta_f_per_particle_all_space(1.0, 4, 8.0, 1.0, 0)


# --- Transformer attention ----------------------------------------------------


@pytest.mark.parametrize('num_tokens', [5, 20])
def test_attention_paths_agree_and_are_permutation_equivariant(monkeypatch, num_tokens):
  from flows.transformer import attention as transformer

  with jax.enable_x64(True):
    attention = transformer.SelfAttention(8, 2, nnx.initializers.lecun_normal(), rngs=nnx.Rngs(3))
    h = jax.random.normal(jax.random.key(1), (3, num_tokens, 8), jnp.float64)
    perm = jax.random.permutation(jax.random.key(2), num_tokens)
    outputs = []
    for small_set in (0, 10_000):  # einsum path, then broadcast-product path
      monkeypatch.setattr(transformer, 'SMALL_SET', small_set)
      out = attention(h)
      np.testing.assert_allclose(attention(h[:, perm]), out[:, perm], atol=1e-12)
      outputs.append(out)
  np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-12)
