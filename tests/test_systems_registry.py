"""The named-system interface, dtypes, batching and every bad-input error."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scripts import list_systems
from systems import SYSTEM_NAMES, System, get_system, lennard_jones, make_system
from systems import monatomic_water as mw

SMALL = ('lj_32', 'mw_cubic_8')
MW = dict(
  potential='monatomic_water',
  lattice_name='cubic_diamond',
  num_particles=64,
  density=0.033567184,
  temperature=200.0,
  linearize_below=1.2,
  min_distance=0.01,
)


def test_names():
  assert SYSTEM_NAMES == (
    'lj_32',
    'lj_256',
    'lj_500',
    'lj_864',
    'lj_1372',
    'mw_cubic_8',
    'mw_cubic_64',
    'mw_cubic_216',
    'mw_cubic_512',
    'mw_cubic_1000',
    'mw_cubic_1728',
    'mw_hex_64',
    'mw_hex_216',
    'mw_hex_512',
    'mw_hex_1000',
    'mw_hex_1728',
  )


@pytest.mark.parametrize('name', SYSTEM_NAMES)
def test_attributes(name):
  s = get_system(name)
  n = int(name.rsplit('_', 1)[1])
  assert isinstance(s, System) and s.name == name and s.num_particles == n
  assert s.lattice.shape == (n, 3) and s.lattice.dtype == np.float64
  np.testing.assert_array_equal(s.lattice[0], 0.0)
  assert s.box.shape == (3,) and np.isclose(s.volume, np.prod(s.box))
  if name.startswith('lj'):
    assert (s.beta, s.temperature, s.density, s.cutoff) == (0.5, 2.0, pytest.approx(1.28), 2.7)
    assert (s.thermal_wavelength, s.energy_unit, s.lattice_name) == (1.0, 'epsilon', 'fcc')
    assert (s.linearization.linearize_below, s.linearization.min_distance) == (0.8, 0.01)
    assert s.sites_per_primitive_cell == 1
  else:
    assert s.beta == pytest.approx(1 / (0.0019872067 * 200.0), rel=1e-12)
    assert s.temperature == 200.0 and s.density == pytest.approx(0.033567184)
    assert (s.thermal_wavelength, s.energy_unit) == (2.3925, 'kcal/mol')
    assert s.cutoff == pytest.approx(1.8 * 2.3925)
    assert (s.linearization.linearize_below, s.linearization.min_distance) == (1.2, 0.01)
    hexagonal = name.startswith('mw_hex')
    assert s.lattice_name == ('hexagonal_ice' if hexagonal else 'cubic_diamond')
    assert s.sites_per_primitive_cell == (4 if hexagonal else 2)
    assert s.neighbour_capacity == min(n - 1, 24)


def test_small_boxes_are_noted_once_not_warned_on_every_call():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    systems = {name: get_system(name) for name in SYSTEM_NAMES}
  for name, s in systems.items():
    if name in SMALL:
      (note,) = s.notes
      assert 'shorter than twice the cutoff' in note and 'minimum-image' in note
    else:
      assert s.notes == ()


def test_list_systems_shows_the_notes(monkeypatch, capsys):
  monkeypatch.setattr(list_systems, 'SYSTEM_NAMES', ('lj_32', 'lj_256'))
  list_systems.main()
  out = capsys.readouterr().out
  assert out.count('note (lj_32): Box edge') == 1 and 'note (lj_256)' not in out


LATTICE_ENERGY_PER_PARTICLE = {
  'lj_32': -4.735996,
  **{f'lj_{n}': -6.303226 for n in (256, 500, 864, 1372)},
}


def _lattice_and_non_finite(system):
  """(4, N, 3) float32: the lattice, then with one coordinate NaN, +inf and -inf."""
  batch = np.stack([np.asarray(system.lattice, np.float32)] * 4)
  for row, bad in zip(batch[1:], (np.nan, np.inf, -np.inf)):
    row[1, 2] = bad
  return batch


@pytest.mark.parametrize('name', SYSTEM_NAMES)
def test_non_finite_coordinates_give_nan_energy_and_leave_finite_ones_alone(name):
  s = get_system(name)
  expected = LATTICE_ENERGY_PER_PARTICLE.get(name, -12.377985) * s.num_particles
  for fn in (s.energy, s.training_energy):
    e = np.asarray(fn(_lattice_and_non_finite(s)))
    assert np.isnan(e[1:]).all(), (fn.__name__, e)
    assert e[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('name', ['lj_32', 'mw_cubic_64'])
def test_non_finite_energy_is_nan_when_traced_and_alone_never_an_overflow(name):
  s = get_system(name)
  batch = _lattice_and_non_finite(s)
  for fn in (s.energy, s.training_energy):
    e = np.asarray(jax.jit(jax.vmap(fn))(batch))
    assert np.isnan(e[1:]).all() and np.isfinite(e[0]), (fn.__name__, e)
  for x in batch[1:]:  # eager, one configuration: NaN, not an mW neighbour-list overflow
    assert np.isnan(s.energy(x))


def test_a_non_finite_sample_leaves_the_others_training_gradients_alone():
  s = get_system('lj_32')
  e, g = jax.vmap(jax.value_and_grad(s.training_energy))(_lattice_and_non_finite(s))
  assert np.isnan(e[1:]).all() and np.isfinite(g[0]).all()


def test_float32_by_default_and_batched_jit_vmap_grad():
  s = get_system('mw_cubic_64')
  x = np.stack([s.lattice, s.lattice + 0.1]).reshape(2, 1, 64, 3)
  e = s.energy(x)
  assert e.shape == (2, 1) and e.dtype == jnp.float32
  np.testing.assert_allclose(e / 64, -12.377985, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.vmap(s.training_energy))(x), e, rtol=1e-6)
  g = jax.grad(lambda y: jnp.sum(s.energy(y)))(x)
  assert g.shape == x.shape and g.dtype == jnp.float32
  np.testing.assert_allclose(g, 0.0, atol=1e-3)  # perfect lattice: no forces
  assert get_system('lj_32').energy(np.zeros((32, 3), dtype=np.int32)).dtype == jnp.float32


def test_float64_when_enabled():
  s = get_system('lj_32')
  with jax.enable_x64(True):
    assert s.energy(jnp.asarray(s.lattice)).dtype == jnp.float64


def test_unknown_system():
  with pytest.raises(ValueError, match="'lj_64'.*lj_32.*mw_hex_512"):
    get_system('lj_64')


@pytest.mark.parametrize('shape', [(63, 3), (64, 2), (2, 64, 4), (64,)])
def test_wrong_shape(shape):
  s = get_system('mw_cubic_64')
  for fn in (s.energy, s.training_energy):
    with pytest.raises(ValueError, match='shape'):
      fn(np.zeros(shape))


@pytest.mark.parametrize(
  'change, match',
  [
    (dict(density=0.0), 'Density'),
    (dict(density=-1.0), 'Density'),
    (dict(temperature=0.0), 'Temperature'),
    (dict(temperature=-5.0), 'Temperature'),
    (dict(num_particles=60), 'num_particles=60'),
    (dict(potential='morse'), 'morse'),
    (dict(cutoff=3.0), 'cutoff=3.0'),
    (dict(min_distance=2.0), 'min_distance'),
    (dict(neighbour_capacity=0), 'capacity'),
    (dict(cell_capacity=0), 'cell_capacity=0'),
    (dict(cell_capacity=2.5), 'cell_capacity=2.5'),
    (dict(pair_method='cells'), "'cells'.*'auto', 'dense', 'cell_list'"),
    (dict(pair_method='cell_list'), r'cell list needs >= 3 cells.*gives \(2, 2, 2\)'),
    (dict(lattice_name='bcc'), 'bcc'),
  ],
)
def test_make_system_rejects_bad_input(change, match):
  with pytest.raises(ValueError, match=match):
    make_system('bad', **{**MW, **change})


def test_small_box_needs_allow_small_box():
  small = {**MW, 'num_particles': 8}
  with pytest.raises(ValueError, match='allow_small_box'):
    make_system('small', **small)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    allowed = make_system('small', **small, allow_small_box=True)
  assert allowed.num_particles == 8 and 'minimum-image' in allowed.notes[0]
  with pytest.raises(ValueError, match='allow_small_box'):
    make_system(
      'lj',
      'lennard_jones',
      'fcc',
      256,
      1.28,
      2.0,
      cutoff=3.0,
      linearize_below=0.8,
      min_distance=0.01,
    )


def test_lennard_jones_needs_a_cutoff():
  with pytest.raises(ValueError, match='cutoff'):
    make_system(
      'lj', 'lennard_jones', 'fcc', 256, 1.28, 2.0, linearize_below=0.8, min_distance=0.01
    )


@pytest.mark.parametrize('box', [[0.0, 5.0, 5.0], [5.0, -5.0, 5.0], [5.0, 5.0]])
def test_low_level_energies_reject_bad_box(box):
  x = np.zeros((4, 3))
  with pytest.raises(ValueError, match='Box'):
    lennard_jones.energy(x, box, 2.7)
  with pytest.raises(ValueError, match='Box'):
    mw.energy(x, box)
