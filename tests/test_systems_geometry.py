"""Periodic box and lattice geometry, checked against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flows import SolidFlow
from systems import box as box_lib
from systems import lattices

MW_DENSITY = 0.033567184
TINY_MODEL = dict(num_bins=4, embedding_size=8, num_heads=2, num_blocks=1, num_frequencies=2)


def _neighbour_shells(lattice, num_shells):
  """(distance, count) of the first shells around every site; asserts all sites agree."""
  dx = lattice.positions[None] - lattice.positions[:, None]
  r = np.linalg.norm(box_lib.minimum_image(dx, lattice.box), axis=-1)
  rows = np.sort(np.round(r, 9), axis=1)[:, 1:]
  np.testing.assert_array_equal(rows, np.broadcast_to(rows[0], rows.shape))
  values, counts = np.unique(rows[0], return_counts=True)
  return values[:num_shells], counts[:num_shells]


def test_wrap_and_minimum_image_by_hand():
  box = np.array([2.0, 3.0, 4.0])
  x = jnp.array([[-0.5, 7.0, 4.0], [2.0, -3.0, 1.5]])
  np.testing.assert_allclose(box_lib.wrap(x, 0.0, box), [[1.5, 1.0, 0.0], [0.0, 0.0, 1.5]])
  np.testing.assert_allclose(box_lib.wrap(x, -1.0, 2.0), [[-0.5, 1.0, 1.0], [-1.0, 0.0, 1.5]])
  dx = jnp.array([[1.5, -2.0, 9.0], [0.4, 1.4, -1.9]])
  np.testing.assert_allclose(
    box_lib.minimum_image(dx, box), [[-0.5, 1.0, 1.0], [0.4, 1.4, -1.9]], atol=1e-6
  )
  assert box_lib.volume(box) == 24.0


# Edges that are not powers of two, so that d/L rounds, but with k·L/2 exact
# for small k in float32 and float64.
TIE_BOX = np.array([3.0, 2.75, 4.5])
PRECISIONS = [(np, np.float64), (np, np.float32), (jnp, jnp.float32)]


def _ulp_steps(value, dtype, steps=3):
  """value and its `steps` neighbouring floats of `dtype` on either side, (2·steps + 1, 3)."""
  out = [np.asarray(value, dtype)]
  for direction in (np.inf, -np.inf):
    v = out[0]
    for _ in range(steps):
      v = np.nextafter(v, np.asarray(direction, dtype))
      out.append(v)
  return np.stack(out)


def assert_same_on_circle(a, b, box, dtype, turns=1):
  """a − b is a whole number of box edges, to a few ulps of `dtype` per box turn."""
  periods = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / box
  np.testing.assert_allclose(periods, np.round(periods), atol=4 * turns * np.finfo(dtype).eps)


@pytest.mark.parametrize('xp, dtype', PRECISIONS)
def test_minimum_image_sends_exact_half_box_ties_to_minus_half(xp, dtype):
  half = (TIE_BOX / 2).astype(dtype)  # exact
  # ±L/2 and the tie images ±3L/2, ±5L/2 (round-half-even sends these both ways)
  for k in (-5, -3, -1, 1, 3, 5):
    ties = xp.asarray(k * half, dtype)
    d = box_lib.minimum_image(ties, TIE_BOX)
    assert type(d) is type(ties) and d.dtype == dtype
    np.testing.assert_array_equal(np.asarray(d), -half)
    if xp is jnp:
      np.testing.assert_array_equal(jax.jit(box_lib.minimum_image)(ties, TIE_BOX), -half)
    np.testing.assert_array_equal(np.asarray(box_lib.wrap(ties, -half, half)), -half)


@pytest.mark.parametrize('xp, dtype', PRECISIONS)
@pytest.mark.parametrize('box', [TIE_BOX, np.array([2.2, 2.4, 1.1])], ids=['exact', 'inexact'])
@pytest.mark.parametrize('k', [-21, -9, -5, -1, 1, 3, 9])
def test_minimum_image_a_few_ulps_about_half_box(xp, dtype, box, k):
  """Displacements within 3 ulps of k·L/2 (odd k) land in [−L/2, L/2), on the same
  point of the circle. With an inexact L and k ≠ ±1 the rounded d − L·round(d/L)
  falls just outside [−L/2, L/2] for some of them, which minimum_image corrects."""
  half = box.astype(dtype) / 2
  dx = _ulp_steps(k * half, dtype)  # (7, 3): k·L/2, 3 above, 3 below
  d = np.asarray(box_lib.minimum_image(xp.asarray(dx), box))
  assert d.dtype == dtype
  assert np.all((d >= -half) & (d < half))
  assert_same_on_circle(d, dx, box, dtype, turns=abs(k))
  # Two independent routes, round (minimum_image) and mod (wrap), agree (on the
  # circle: just below −L/2 the mod route may round onto −L/2 itself).
  w = np.asarray(box_lib.wrap(xp.asarray(dx), -half, half))
  assert np.all((w >= -half) & (w < half))
  assert_same_on_circle(d, w, box, dtype, turns=abs(k))


@pytest.mark.parametrize('xp, dtype', PRECISIONS)
def test_wrap_is_half_open_where_mod_rounds_up(xp, dtype):
  lower, upper = np.asarray(-0.7, dtype), np.asarray(1.3, dtype)
  tiny = np.finfo(dtype).tiny
  x = xp.asarray([lower, upper, upper + (upper - lower), lower - tiny, upper - tiny], dtype)
  y = np.asarray(box_lib.wrap(x, lower, upper))
  assert y.dtype == dtype and np.all((y >= lower) & (y < upper))
  np.testing.assert_array_equal(y[:4], lower)  # lower − tiny: mod rounds up to the width


def test_minimum_image_agrees_with_wrap_everywhere():
  rng = np.random.default_rng(0)
  dx = rng.uniform(-4, 4, (1000, 3)) * TIE_BOX
  for xp, dtype in PRECISIONS:
    x = xp.asarray(dx, dtype)
    d = np.asarray(box_lib.minimum_image(x, TIE_BOX))
    w = np.asarray(box_lib.wrap(x, -TIE_BOX / 2, TIE_BOX / 2))
    assert np.all((d >= -TIE_BOX / 2) & (d < TIE_BOX / 2))
    assert_same_on_circle(d, dx, TIE_BOX, dtype, turns=4)
    assert_same_on_circle(d, w, TIE_BOX, dtype, turns=4)
    assert np.mean(d == w) > 0.2  # often to the last bit, from different arithmetic


def test_numpy_stays_numpy_and_jax_stays_jax():
  dx = np.array([[0.1, 2.9, -1.7]])
  for fn in (lambda v: box_lib.minimum_image(v, TIE_BOX), lambda v: box_lib.wrap(v, 0.0, TIE_BOX)):
    assert type(fn(dx)) is np.ndarray and fn(dx).dtype == np.float64
    assert isinstance(fn(jnp.asarray(dx)), jax.Array)
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(dx))), fn(dx), rtol=1e-6)


def test_flow_base_and_energies_see_the_same_images_at_ties():
  """An FCC box of 2 cells puts sites exactly half a box from site 0: the energies'
  displacements from particle 0, the flow's relative sites and its relative
  coordinates all take the −L/2 image there, in float64 and float32."""
  lattice = lattices.make_lattice('fcc', 32, 1.28)
  flow = SolidFlow(
    lattice.positions, lattice.box, num_layers=1, noise_scale=0.05, rngs=nnx.Rngs(0), **TINY_MODEL
  )
  images = {}
  for dtype in (np.float64, np.float32):
    x, box = lattice.positions.astype(dtype), lattice.box.astype(dtype)
    offsets = x[1:] - x[0]  # in [0, L)
    ties = offsets == box / 2
    assert ties.sum() == 24
    # By hand: the image in [−L/2, L/2) of d in [0, L) is d, or d − L from L/2 on.
    expected = images[dtype] = np.where(offsets >= box / 2, offsets - box, offsets)
    with jax.enable_x64(dtype == np.float64):
      for xp in (np, jnp):
        displacements = box_lib.pairwise_displacements(xp.asarray(x), xp.asarray(box))
        np.testing.assert_array_equal(displacements[0, 1:], expected)
      relative = np.asarray(box_lib.wrap(jnp.asarray(x[1:] - x[0]), -box / 2, box / 2))
    np.testing.assert_array_equal(relative[ties], -box[np.nonzero(ties)[1]] / 2)
    np.testing.assert_allclose(relative, expected, atol=4 * np.finfo(dtype).eps)
  # The flow's relative sites: computed in float64, kept in float32.
  sites = images[np.float64].astype(np.float32)
  np.testing.assert_array_equal(flow.base.sites[...], sites)
  # The perfect lattice is the mode of the base: u = 0 for every particle. Its log-density
  # is a float32 sum of 3m terms, whose rounding (up to a few 1e-6 of it) depends on the
  # order XLA's reduction takes.
  m = flow.base.num_sites
  np.testing.assert_allclose(
    flow.base.log_prob(jnp.asarray(sites)),
    -3 * m * flow.base.log_normaliser - math.lgamma(m + 1),
    rtol=1e-5,
  )


@pytest.mark.parametrize('bad', [[1.0, 0.0, 1.0], [1.0, -2.0, 1.0], [1.0, 1.0], [np.inf, 1, 1]])
def test_bad_box_is_rejected(bad):
  with pytest.raises(ValueError, match='Box'):
    box_lib.check_box(bad)
  with pytest.raises(ValueError, match='Box'):
    box_lib.minimum_image(jnp.zeros((2, 3)), bad)


@pytest.mark.parametrize(
  'name, n, cells, density',
  [
    ('simple_cubic', 27, 3, 1.0),
    ('fcc', 32, 2, 1.28),
    ('fcc', 256, 4, 1.28),
    ('fcc', 500, 5, 1.28),
    ('cubic_diamond', 8, 1, MW_DENSITY),
    ('cubic_diamond', 512, 4, MW_DENSITY),
    ('hexagonal_ice', 64, 2, MW_DENSITY),
    ('hexagonal_ice', 216, 3, MW_DENSITY),
    ('hexagonal_ice', 512, 4, MW_DENSITY),
  ],
)
def test_lattice_counts_density_and_placement(name, n, cells, density):
  lattice = lattices.make_lattice(name, n, density)
  assert lattice.positions.shape == (n, 3) and lattice.positions.dtype == np.float64
  np.testing.assert_array_equal(lattice.positions[0], 0.0)
  assert np.all((lattice.positions >= 0) & (lattice.positions < lattice.box))
  np.testing.assert_allclose(n / np.prod(lattice.box), density, rtol=1e-12)
  a = lattice.box[0] / cells  # edge of the conventional cell
  if name == 'hexagonal_ice':
    np.testing.assert_allclose(lattice.box / cells, a * np.array([1, np.sqrt(3), np.sqrt(8 / 3)]))
  else:
    np.testing.assert_allclose(lattice.box, lattice.box[0])
  # No two sites coincide modulo the box.
  assert len(np.unique(np.round(lattice.positions, 6), axis=0)) == n


def test_sites_per_primitive_cell():
  assert [lattices.UNIT_CELLS[k].sites_per_primitive_cell for k in lattices.LATTICE_NAMES] == [
    1,
    1,
    2,
    4,
  ]


def test_fcc_shells():
  lattice = lattices.make_lattice('fcc', 256, 1.28)
  a = (4 / 1.28) ** (1 / 3)
  r, counts = _neighbour_shells(lattice, 3)
  np.testing.assert_allclose(r, a * np.array([1 / np.sqrt(2), 1, np.sqrt(1.5)]))
  np.testing.assert_array_equal(counts, [12, 6, 24])


@pytest.mark.parametrize('name', ['cubic_diamond', 'hexagonal_ice'])
def test_ice_shells_are_tetrahedral(name):
  # Both ices at the same density: 4 nearest neighbours at 3/4 of the cubic
  # diamond cell's body diagonal / 2, then 12 second neighbours at a/√2.
  lattice = lattices.make_lattice(name, 512 if name == 'cubic_diamond' else 216, MW_DENSITY)
  a = (8 / MW_DENSITY) ** (1 / 3)
  r, counts = _neighbour_shells(lattice, 2)
  np.testing.assert_allclose(r, [a * np.sqrt(3) / 4, a / np.sqrt(2)], rtol=1e-9)
  np.testing.assert_array_equal(counts, [4, 12])
  # Bond angles about site 0 are all tetrahedral: cos θ = -1/3.
  dx = box_lib.minimum_image(lattice.positions - lattice.positions[0], lattice.box)
  bonds = dx[np.isclose(np.linalg.norm(dx, axis=1), r[0])]
  cosines = (bonds @ bonds.T)[np.triu_indices(4, 1)] / r[0] ** 2
  np.testing.assert_allclose(cosines, -1 / 3, atol=1e-12)


def test_simple_cubic_positions_by_hand():
  lattice = lattices.make_lattice('simple_cubic', 8, 1 / 8)
  np.testing.assert_allclose(lattice.box, [4.0, 4.0, 4.0])
  assert {tuple(p) for p in lattice.positions} == {
    (i, j, k) for i in (0, 2) for j in (0, 2) for k in (0, 2)
  }


@pytest.mark.parametrize(
  'name, n',
  [('fcc', 31), ('fcc', 64), ('cubic_diamond', 16), ('hexagonal_ice', 8 * 5), ('simple_cubic', 0)],
)
def test_lattice_must_tile(name, n):
  with pytest.raises(ValueError, match=f'num_particles={n}'):
    lattices.make_lattice(name, n, 1.0)


@pytest.mark.parametrize('density', [0.0, -1.0, np.nan])
def test_lattice_density_must_be_positive(density):
  with pytest.raises(ValueError, match='Density'):
    lattices.make_lattice('fcc', 32, density)


def test_unknown_lattice():
  with pytest.raises(ValueError, match="'bcc'.*fcc"):
    lattices.make_lattice('bcc', 16, 1.0)
