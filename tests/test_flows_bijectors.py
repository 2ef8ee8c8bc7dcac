"""One property suite that every bijector of the flows passes.

Cases: CircularShift, SplitCoupling A (coordinate 0 | 1, 2), SplitCoupling B
(coordinates 1, 2 | 0), CouplingLayer, RadialSpline, the SolidFlow chain with remat
off/on and with layer norm, the TargetedMap of learned targeted FEP: plain, site-centred
(`sites`), with radial splines, a radial spline alone (num_layers=0), and with the
column conditioner (ColumnCouplings) with and without radial splines, and the
LocalSolidFlow chain of local couplings (remat off/on); and every solid family of
flows.registry (so a new family is picked up), through the solid-flow contract
(`check_solid_family`). Properties: identity at initialisation (up to the layers' fixed
coordinate rolls), exact round trip (over the whole box, incl. its boundary; for the
local chain, which maps displacements from lattice sites in R³, over Gaussian
displacements and the ends of its splines' range), log-det equal to the autodiff
Jacobian, periodicity (for the local chain: its density of positions is unchanged by box
shifts of particles), particle-permutation equivariance (for the site-centred map and
the local chain: of particles permuted together with their sites, particle 0 being the
origin; for the column TargetedMap: of particles of the same index parity). Parameters
are perturbed away from the identity except for the identity test.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flows import (
  CircularShift,
  CouplingLayer,
  LocalSolidFlow,
  SolidFlow,
  SplitCoupling,
  bijector,
  registry,
)
from flows.targeted.radial import RadialSpline
from systems import get_system
from systems.box import minimum_image

M = 3  # particles seen by each bijector
LOWER, UPPER = -0.7, 1.3  # layer-level periodic range
BOX = np.array([2.0, 2.4, 2.2])  # non-cubic box for the chain
LATTICE = np.array(
  [[0.0, 0.0, 0.0], [1.0, 1.2, 0.0], [1.0, 0.0, 1.1], [0.0, 1.2, 1.1]]
)  # N = 4 sites, M = N - 1 = 3 flowed
TINY = dict(num_bins=4, embedding_size=16, num_heads=2, num_blocks=1, num_frequencies=2)
CONDITIONER = dict(TINY, use_layernorm=False)
del CONDITIONER['num_bins']
SITES = np.array([[0.1, 0.2, 1.2], [1.1, -0.6, 0.3], [-0.5, 1.0, 0.7]])  # (M, 3) in the cube


def _chain(remat=False, use_layernorm=False):
  return SolidFlow(
    LATTICE,
    BOX,
    num_layers=2,
    noise_scale=0.1,
    remat=remat,
    use_layernorm=use_layernorm,
    rngs=nnx.Rngs(0),
    **TINY,
  )


# Small coupling layers of each TFEP map family (column: cylinders of radius 0.8, half
# the box width is 1, so some pairs of the 3 particles fall outside them).
MAP_KEYS = {
  'transformer': CONDITIONER | dict(num_bins=4),
  'column': dict(num_bins=4, width=8, num_frequencies=2, cutoff=0.8),
}


def _targeted(num_layers=2, radial_bins=0, sites=None, conditioner='transformer'):
  """A TargetedMap built through flows.registry (as experiments.tfep_stages does)."""
  geometry = types.SimpleNamespace(num_particles=M, lower=LOWER, upper=UPPER, sites=sites)
  model = dict(
    conditioner=conditioner,
    num_layers=num_layers,
    radial_bins=radial_bins,
    centre_on_sites=sites is not None,
    **{conditioner: MAP_KEYS[conditioner]},
  )
  return registry.build(model, geometry, nnx.Rngs(5))


def _local(order=None, remat=False, pair_width=0, colour_shells=1):
  """The local chain on LATTICE's sites (and their basis indices) taken in `order`."""
  order = np.arange(4) if order is None else order
  return LocalSolidFlow(
    LATTICE[order],
    BOX,
    order,
    covariance=0.2**2 * np.eye(3 * M),
    num_layers=2,
    num_bins=4,
    num_neighbours=2,
    width=16,
    filter_width=8,
    spline_range=3.0,
    pair_width=pair_width,
    colour_shells=colour_shells,
    remat=remat,
    rngs=nnx.Rngs(6),
  )


BUILDERS = {
  'circular_shift': lambda: CircularShift(LOWER, UPPER),
  'split_coupling_a': lambda: SplitCoupling(
    (0,), lower=LOWER, upper=UPPER, num_bins=4, rngs=nnx.Rngs(1), **CONDITIONER
  ),
  'split_coupling_b': lambda: SplitCoupling(
    (1, 2), lower=LOWER, upper=UPPER, num_bins=4, rngs=nnx.Rngs(2), **CONDITIONER
  ),
  'coupling_layer': lambda: CouplingLayer(
    lower=LOWER, upper=UPPER, num_bins=4, rngs=nnx.Rngs(3), **CONDITIONER
  ),
  'radial_spline': lambda: RadialSpline(LOWER, UPPER, num_bins=4, hidden_size=8, rngs=nnx.Rngs(4)),
  'chain': _chain,
  'chain_remat': lambda: _chain(remat=True),
  'chain_layernorm': lambda: _chain(use_layernorm=True),
  'targeted_map': _targeted,
  'targeted_map_sites': lambda: _targeted(sites=SITES),
  'targeted_map_radial': lambda: _targeted(radial_bins=4),
  'targeted_map_radial_only': lambda: _targeted(num_layers=0, radial_bins=4),
  'targeted_map_column': lambda: _targeted(conditioner='column'),
  'targeted_map_column_radial': lambda: _targeted(radial_bins=4, conditioner='column'),
  'local_chain': _local,
  'local_chain_remat': lambda: _local(remat=True),
  'local_chain_pairs': lambda: _local(pair_width=4),
  'local_chain_shells': lambda: _local(colour_shells=3),  # a colour per site
}

PERMUTATION = np.array([2, 0, 1])
# The site-centred map is equivariant under permutations that fix particle 0
# (its origin) and move the others together with their sites: the twin is the
# same map built on the permuted sites, evaluated on the permuted particles.
SITE_PERMUTATION = np.array([0, 2, 1])
# The local chain's particle i + 1 sits at site i + 1 (site 0 is the pinned
# origin): its twin is built on the sites, and their basis indices, permuted
# accordingly.
LOCAL_SITES = np.concatenate([[0], 1 + PERMUTATION])
TWINS = {
  'targeted_map_sites': lambda: _targeted(sites=SITES[SITE_PERMUTATION]),
  'local_chain': lambda: _local(LOCAL_SITES),
  'local_chain_remat': lambda: _local(LOCAL_SITES, remat=True),
  'local_chain_pairs': lambda: _local(LOCAL_SITES, pair_width=4),
  'local_chain_shells': lambda: _local(LOCAL_SITES, colour_shells=3),
}
# The column TargetedMap's couplings split the particles by index parity
# (0, 2 | 1): it is equivariant under permutations within each group.
PARITY_PERMUTATION = np.array([2, 1, 0])
# Per-case permutations (default PERMUTATION).
SITE_PERMUTATIONS = {
  'targeted_map_sites': SITE_PERMUTATION,
  'targeted_map_column': PARITY_PERMUTATION,
  'targeted_map_column_radial': PARITY_PERMUTATION,
}
# A RadialSpline's spline depends on the direction of the ray, so its Jacobian
# at the centre itself depends on the direction of approach (the map is still
# continuous). Where a chain returns a particle to the centre only up to
# rounding, the inverse's log-det is that of some other direction: the round
# trip of the log-det is checked away from the centre.
SINGULAR_AT_CENTRE = {'targeted_map_radial', 'targeted_map_column_radial'}


def _box_shifts(width):
  """Whole-box shifts of some coordinates of particles 1 and 2, (M, 3)."""
  shift = np.zeros((M, 3))
  shift[1] = width * np.array([1, -1, 2])
  shift[2, 0] = -width[0]
  return shift


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(graphdef, permuted_graphdef, state, permuted_state, x, shift, permutation):
  """Everything the suite checks, in one compiled program.

  x: (P, M, 3) points. Returns forward outputs and log-dets on x and on
  x + shift, those of the module in `permuted_state` on x[:, permutation], the
  inverse of the outputs on x, and log|det| of the autodiff Jacobian of
  forward at the first 4 points.
  """
  module = nnx.merge(graphdef, state)
  num = x.shape[0]
  if isinstance(module, LocalSolidFlow):
    # It maps displacements in R³, not the torus: its periodicity is that of
    # its density of positions, x + shift giving the same y and log-det iff
    # that density is unchanged by box shifts of particles.
    positions = module.positions(x)
    before, after = module.log_prob(positions), module.log_prob(positions.at[..., 1:, :].add(shift))
    change = jnp.where(jnp.isneginf(before) & jnp.isneginf(after), 0.0, after - before)
    y, log_det = module.forward(x)
    y, log_det = jnp.concatenate([y, y]), jnp.concatenate([log_det, log_det + change])
  else:
    y, log_det = module.forward(jnp.concatenate([x, x + shift]))
  permuted_module = nnx.merge(permuted_graphdef, permuted_state)
  y_permuted, log_det_permuted = permuted_module.forward(x[:, permutation])
  x_back, inv_log_det = module.inverse(y[:num])
  flat = lambda v: module.forward(v.reshape(M, 3))[0].reshape(-1)
  jacobians = jax.vmap(jax.jacfwd(flat))(x[:4].reshape(4, -1))
  return dict(
    y=y[:num],
    log_det=log_det[:num],
    y_shifted=y[num:],
    log_det_shifted=log_det[num:],
    y_permuted=y_permuted,
    log_det_permuted=log_det_permuted,
    x_back=x_back,
    inv_log_det=inv_log_det,
    jacobian_log_det=jnp.linalg.slogdet(jacobians)[1],
  )


class Case:
  """A bijector's results on a fixed set of points, computed in float64.

  Float64 makes the round trip and Jacobian checks exact to ~1e-9; float32
  behaviour is covered by tests/test_flows_splines.py and by the model's
  log_prob(sample) check in tests/test_flows_model.py.
  """

  def __init__(self, name, perturb):
    module = BUILDERS[name]()
    self.on_torus = not isinstance(module, LocalSolidFlow)
    shift_period = BOX if isinstance(module, LocalSolidFlow) else None
    if isinstance(module, SolidFlow):
      self.lower, self.upper = -BOX / 2, BOX / 2
      self.coordinate_roll = 0  # the chain undoes its layers' rolls
    elif isinstance(module, LocalSolidFlow):  # displacements: the splines' range
      half = module.base.unit * 3.0
      self.lower, self.upper = np.full(3, -half), np.full(3, half)
      self.coordinate_roll = 0
    else:
      self.lower, self.upper = np.full(3, LOWER), np.full(3, UPPER)
      self.coordinate_roll = int(isinstance(module, CouplingLayer))
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    initial = nnx.merge_state(params, rest)
    params = perturb(params, 0.3, seed=7)
    randomised = nnx.merge_state(params, rest)
    self.permutation = SITE_PERMUTATIONS.get(name, PERMUTATION)
    twin_graphdef, permuted, permuted_initial = graphdef, randomised, initial
    if name in TWINS:  # the twin's sites may be state or static structure
      twin_graphdef, twin_params, twin_rest = nnx.split(TWINS[name](), nnx.Param, ...)
      permuted = nnx.merge_state(params, twin_rest)
      permuted_initial = nnx.merge_state(twin_params, twin_rest)
    with jax.enable_x64(True):
      self.x = np.asarray(self.points())
      shift = _box_shifts(self.width if shift_period is None else shift_period)
      args = (self.x, jnp.asarray(shift), self.permutation)
      # Both calls share their static arguments: one compiled program per case.
      self.initial = jax.tree.map(
        np.asarray, _evaluate(graphdef, twin_graphdef, initial, permuted_initial, *args)
      )
      self.results = jax.tree.map(
        np.asarray, _evaluate(graphdef, twin_graphdef, randomised, permuted, *args)
      )

  @property
  def width(self):
    return self.upper - self.lower

  def points(self, num=64):
    """(2·num, M, 3) float64: uniform points, then points on and near the
    boundary of the box."""
    u = jax.random.uniform(jax.random.key(0), (num, M, 3), jnp.float64)
    edge = jnp.array([0.0, 1e-7, 0.5, 1 - 1e-7])
    grid = jnp.stack(jnp.meshgrid(edge, edge, edge, indexing='ij'), -1)
    grid = jnp.broadcast_to(grid.reshape(-1, 1, 3), (64, M, 3))
    grid = grid.at[:, 1:].set(u[:1, 1:])
    return self.lower + self.width * jnp.concatenate([u, grid])

  def initial_map(self, x):
    """The map at initialisation: the layers' coordinate rolls, in box units."""
    scaled = (x - self.lower) / self.width
    return self.lower + self.width * np.roll(scaled, self.coordinate_roll, -1)

  def periodic_difference(self, a, b):
    """a − b, wrapped into [−width/2, width/2) on the torus, in float64 numpy."""
    difference = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return minimum_image(difference, self.width) if self.on_torus else difference


@functools.cache
def _case(name, perturb):
  return Case(name, perturb)


NAMES = list(BUILDERS)


@pytest.mark.parametrize('name', NAMES)
def test_identity_at_initialisation(name, perturb):
  case = _case(name, perturb)
  y = case.initial['y']
  np.testing.assert_allclose(case.periodic_difference(y, case.initial_map(case.x)), 0.0, atol=1e-12)
  np.testing.assert_allclose(case.initial['log_det'], 0.0, atol=1e-12)


@pytest.mark.parametrize('name', NAMES)
def test_round_trip(name, perturb):
  case, r = _case(name, perturb), _case(name, perturb).results
  assert np.all((r['y'] >= case.lower) & (r['y'] <= case.upper))
  np.testing.assert_allclose(case.periodic_difference(r['x_back'], case.x), 0.0, atol=1e-9)
  regular = np.ones(len(case.x), bool)
  if name in SINGULAR_AT_CENTRE:
    regular = ~np.any(np.all(np.isclose(case.x, case.lower + case.width / 2), -1), -1)
    assert regular.sum() == len(case.x) - 1  # one grid point has a particle there
  np.testing.assert_allclose(r['inv_log_det'][regular], -r['log_det'][regular], atol=1e-8)
  if name != 'circular_shift':
    assert np.abs(r['log_det']).max() > 0.1  # really away from the identity


@pytest.mark.parametrize('name', NAMES)
def test_log_det_matches_autodiff_jacobian(name, perturb):
  r = _case(name, perturb).results
  assert r['log_det'].dtype == np.float64
  np.testing.assert_allclose(r['log_det'][:4], r['jacobian_log_det'], atol=1e-9)


@pytest.mark.parametrize('name', NAMES)
def test_periodicity(name, perturb):
  case, r = _case(name, perturb), _case(name, perturb).results
  np.testing.assert_allclose(case.periodic_difference(r['y_shifted'], r['y']), 0.0, atol=1e-9)
  np.testing.assert_allclose(r['log_det_shifted'], r['log_det'], atol=1e-9)


@pytest.mark.parametrize('name', NAMES)
def test_permutation_equivariance(name, perturb):
  case, r = _case(name, perturb), _case(name, perturb).results
  np.testing.assert_allclose(
    case.periodic_difference(r['y_permuted'], r['y'][:, case.permutation]), 0.0, atol=1e-10
  )
  np.testing.assert_allclose(r['log_det_permuted'], r['log_det'], atol=1e-9)


# The system the registered solid families are checked on (the local family's
# default 16 neighbours need a 64-site ice lattice).
FAMILY_SYSTEM = 'mw_cubic_64'


@functools.partial(jax.jit, static_argnums=0)
def _family_results(graphdef, state, key, shift):
  flow = nnx.merge(graphdef, state)
  z, _ = flow.base_sample(key, 8)
  y, log_det = flow.forward(z)
  z_back, inv_log_det = flow.inverse(y)
  flat = lambda v: flow.forward(v.reshape(z.shape[1:]))[0].reshape(-1)
  jacobians = jax.vmap(jax.jacfwd(flat))(z[:2].reshape(2, -1))
  x, log_q, weighted = flow.sample(key, 16)
  return dict(
    z=z,
    y=y,
    log_det=log_det,
    z_back=z_back,
    inv_log_det=inv_log_det,
    jacobian_log_det=jnp.linalg.slogdet(jacobians)[1],
    log_q=log_q,
    weighted=weighted,
    log_prob=flow.log_prob(x),
    log_prob_of_samples=flow.log_prob_of_samples(x),
    log_prob_box_shifted=flow.log_prob(x + shift),
    log_prob_translated=flow.log_prob(x + jnp.array([0.3, -0.2, 0.1], x.dtype)),
  )


def check_solid_family(name: str, perturb, system: str = FAMILY_SYSTEM):
  """The suite's properties for the registered solid family `name` (its `tiny` model on
  `system`), through the solid-flow contract (flows.solid_flow) and the Bijector protocol,
  in float64: identity at initialisation on base samples; exact round trip and log-det
  against autodiff away from it; log_prob (and log_prob_of_samples) of its samples equal
  to their ln q; log_prob unchanged by box shifts of particles and by a translation of the
  configuration."""
  kind = registry.get('solid', name)
  s = get_system(system)
  model = dict(conditioner=name, remat=False, **{name: dict(kind.defaults, **kind.tiny)})
  flow = registry.build(model, s, nnx.Rngs(0))
  assert flow.num_params > 0
  graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
  shift = np.zeros((s.num_particles, 3))
  shift[1] = s.box * np.array([1, -1, 2])
  shift[2, 0] = -s.box[0]
  with jax.enable_x64(True):
    key, shift = jax.random.key(1), jnp.asarray(shift)
    fresh = _family_results(graphdef, nnx.merge_state(params, rest), key, shift)
    np.testing.assert_allclose(fresh['y'], fresh['z'], atol=1e-10)
    np.testing.assert_allclose(fresh['log_det'], 0.0, atol=1e-10)
    trained = nnx.merge_state(perturb(params, 0.1, seed=7), rest)
    r = jax.tree.map(np.asarray, _family_results(graphdef, trained, key, shift))
  assert np.abs(r['log_det']).max() > 0.1  # really away from the identity
  np.testing.assert_allclose(r['z_back'], r['z'], atol=1e-8)
  np.testing.assert_allclose(r['inv_log_det'], -r['log_det'], atol=1e-7)
  np.testing.assert_allclose(r['log_det'][:2], r['jacobian_log_det'], atol=1e-7)
  weighted = r['weighted']
  assert weighted.sum() >= 8
  np.testing.assert_allclose(r['log_prob'][weighted], r['log_q'][weighted], atol=1e-6)
  np.testing.assert_allclose(r['log_prob_of_samples'][weighted], r['log_q'][weighted], atol=1e-6)
  np.testing.assert_allclose(r['log_prob_box_shifted'], r['log_prob'], atol=1e-6)
  np.testing.assert_allclose(r['log_prob_translated'], r['log_prob'], atol=1e-6)


@pytest.mark.parametrize('name', registry.names('solid'))
def test_registered_solid_family(name, perturb):
  check_solid_family(name, perturb)


def test_grow_stacked_appends_fresh_layers_and_names_a_bad_leaf():
  trained = {'layers': {'w': jnp.ones((2, 3))}, 'base': jnp.full((4,), 7.0)}
  fresh = {'layers': {'w': jnp.zeros((5, 3))}, 'base': jnp.zeros((4,))}
  grown = bijector.grow_stacked(trained, fresh, 2)
  np.testing.assert_array_equal(grown['layers']['w'], [[1] * 3] * 2 + [[0] * 3] * 3)
  np.testing.assert_array_equal(grown['base'], [7.0] * 4)  # not stacked: the trained leaf
  with pytest.raises(ValueError, match=r"\['layers'\]\['w'\] has shape \(2, 3\).*\(5, 4\)"):
    bijector.grow_stacked(trained, dict(fresh, layers={'w': jnp.zeros((5, 4))}), 2)
