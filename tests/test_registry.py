"""The model registry: a new solid family is one ModelKind, picked up everywhere.

A dummy family (an affine flow of the displacements from the lattice sites on
an isotropic Gaussian base), registered for the duration of a test only, is
built through experiments.training from a config that names it, trained for 2
steps, checkpointed and reloaded, validated, and put through the bijection
suite's checks (tests/test_flows_bijectors.check_solid_family), with no edit
outside this file. Also: lookups name the known families, registration does
not outlive its block, and old flat model sections migrate.
"""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_flows_bijectors import check_solid_family

from experiments import checkpointing, runs, training, validation
from experiments.configs import monatomic_water
from flows import registry, rules
from flows.bijector import run_chain, stack_layers
from flows.local.gaussian_base import GaussianDisplacementBase
from flows.model_kind import ModelKind
from flows.solid_flow import SolidFlowBase
from systems.box import minimum_image, wrap


class AffineLayer(nnx.Module):
  """u -> u·exp(s) + t, per particle and coordinate; identity at initialisation."""

  def __init__(self, num_flowed: int, rngs: nnx.Rngs):
    del rngs
    self.log_scale = nnx.Param(jnp.zeros((num_flowed, 3)))
    self.shift = nnx.Param(jnp.zeros((num_flowed, 3)))

  def forward(self, u):
    s = self.log_scale[...].astype(u.dtype)
    log_det = jnp.broadcast_to(jnp.sum(s), u.shape[:-2])
    return u * jnp.exp(s) + self.shift[...].astype(u.dtype), log_det

  def inverse(self, y):
    s = self.log_scale[...].astype(y.dtype)
    log_det = jnp.broadcast_to(-jnp.sum(s), y.shape[:-2])
    return (y - self.shift[...].astype(y.dtype)) * jnp.exp(-s), log_det


class AffineFlow(SolidFlowBase):
  """Affine layers on the displacements u (M, 3) of particles 1..N−1 from their sites,
  relative to particle 0 (pinned at site 0), on a Gaussian base N(0, σ²I)."""

  def __init__(self, lattice, box, *, num_layers: int, noise_scale: float, rngs: nnx.Rngs):
    lattice = np.asarray(lattice, np.float64)
    self.num_particles = len(lattice)
    self.box = tuple(float(b) for b in box)
    self.origin = tuple(float(o) for o in lattice[0])
    self.sites = tuple(map(tuple, minimum_image(lattice[1:] - lattice[0], np.asarray(box))))
    m = self.num_particles - 1
    self.base = GaussianDisplacementBase(noise_scale**2 * np.eye(3 * m))
    self.layers = stack_layers(lambda r: AffineLayer(m, r), num_layers, rngs)

  def forward(self, u):
    return run_chain(self.layers, u, 'forward')

  def inverse(self, u):
    return run_chain(self.layers, u, 'inverse')

  def sample(self, key, num_samples: int, sharding=None):
    u0, log_base = self.base_sample(key, num_samples, sharding)
    u, log_det = self.forward(u0)
    sites, origin = jnp.asarray(self.sites, u.dtype), jnp.asarray(self.origin, u.dtype)
    moved = wrap(origin + sites + u, 0.0, jnp.asarray(self.box, u.dtype))
    x = jnp.concatenate([jnp.broadcast_to(origin, (num_samples, 1, 3)), moved], axis=-2)
    return x, log_base - log_det, jnp.ones(num_samples, bool)

  def log_prob(self, x):
    box, sites = jnp.asarray(self.box, x.dtype), jnp.asarray(self.sites, x.dtype)
    u = minimum_image(x[..., 1:, :] - x[..., :1, :] - sites, box)
    u0, log_det = self.inverse(u)
    return self.base.log_prob(u0) + log_det


def _build(model, system, rngs):
  keys = model['affine']
  return AffineFlow(
    system.lattice,
    system.box,
    num_layers=keys['num_layers'],
    noise_scale=keys['noise_scale'],
    rngs=rngs,
  )


AFFINE = ModelKind(
  name='affine',
  role='solid',
  defaults=dict(num_layers=2, noise_scale=0.05),
  rules=dict(num_layers=rules.NON_NEGATIVE_INT, noise_scale=rules.POSITIVE),
  build=_build,
  tiny=dict(num_layers=1),
)


def test_a_registered_family_trains_checkpoints_validates_and_is_a_bijection(tmp_path, perturb):
  with registry.register(AFFINE):
    config = monatomic_water.get_config('mw_cubic_64,tiny')
    config.model.conditioner = 'affine'
    config.train.num_steps = 2
    validation.validate_config(config)
    setup, state = training.build(config)
    assert type(setup.flow(state['params'])) is AffineFlow
    workdir = str(tmp_path / 'run')
    row = training.train(config, workdir)
    assert np.isfinite(row['beta_f_per_particle'])
    loaded, setup, restored = runs.load_run(workdir)  # its checkpoint restores
    assert int(restored['step']) == 2 and loaded.model.conditioner == 'affine'
    other = monatomic_water.get_config('mw_cubic_64,tiny')
    other.model.conditioner = 'affine'
    other.model.affine.num_layers = 3
    with pytest.raises(checkpointing.CheckpointMismatchError, match='affine.num_layers'):
      training.train(other, workdir)
    with pytest.raises(ValueError, match="conditioner is 'affine'"):
      runs.for_system(loaded, 'mw_cubic_216')  # not transferable
    config.model.affine.noise_scale = -1.0
    with pytest.raises(validation.ConfigError, match=r'model.affine.noise_scale=-1.0: expected'):
      validation.validate_config(config)
    check_solid_family('affine', perturb)
  with pytest.raises(ValueError, match=r"'affine': expected one of \('transformer', 'local'\)"):
    registry.get('solid', 'affine')


def test_registration_is_scoped_and_names_are_unique_per_role():
  assert registry.names('solid') == ('transformer', 'local')
  assert registry.names('map') == ('transformer', 'column')
  with pytest.raises(ValueError, match="solid family named 'local' is already registered"):
    with registry.register(dataclasses.replace(AFFINE, name='local')):
      pass
  with registry.register(AFFINE):
    assert registry.names('solid') == ('transformer', 'local', 'affine')
    assert 'affine' in monatomic_water.get_config('mw_cubic_8,tiny').model
  assert 'affine' not in monatomic_water.get_config('mw_cubic_8,tiny').model


def test_a_kind_refuses_rules_for_keys_it_lacks():
  with pytest.raises(ValueError, match=r"keys \['width'\] are not among its defaults"):
    ModelKind(
      name='x', role='solid', defaults={}, rules=dict(width=rules.POSITIVE_INT), build=_build
    )
  with pytest.raises(ValueError, match="role='flow'"):
    ModelKind(name='x', role='flow', defaults={}, rules={}, build=_build)


def test_migrate_nests_old_flat_sections():
  flat_transformer = dict(num_layers=4, num_bins=16, embedding_size=32, noise_scale=0.04)
  migrated = registry.migrate(flat_transformer)  # before `conditioner` existed
  assert migrated['conditioner'] == 'transformer'
  assert migrated['transformer']['embedding_size'] == 32
  assert migrated['transformer']['base'] == 'lattice'  # a default filled in
  assert 'num_layers' not in migrated
  old_map = dict(num_layers=2, radial_bins=8, centre_on_sites=False, num_bins=4, local_cutoff=2.0)
  migrated = registry.migrate(old_map)
  assert migrated['num_layers'] == 2 and migrated['transformer']['num_bins'] == 4
  assert 'local_cutoff' not in migrated['transformer']
  assert registry.migrate(migrated) == migrated  # nested sections stay as they are
  with pytest.raises(ValueError, match="'local' is now called 'column'"):
    registry.migrate(dict(old_map, conditioner='local'))


def test_migrate_gives_a_nested_section_the_keys_added_since_it_was_written():
  local = registry.get('solid', 'local').defaults
  older = dict(conditioner='local', local={k: v for k, v in local.items() if k != 'colour_shells'})
  older['local']['num_layers'] = 7
  migrated = registry.migrate(older)
  assert migrated['local'] == dict(local, num_layers=7)  # colour_shells: the old colouring
  assert registry.problems(migrated) == []


def test_the_shipped_configs_name_their_family_flat_or_nested():
  # mw_cubic_64 was shipped before model sections were nested; the others after.
  for name, flat in (('mw_cubic_64', True), ('lj_256', False), ('mw_cubic_64_flow_only', False)):
    with open(f'experiments/pretrained/{name}/config.json') as f:
      stored = json.load(f)
    assert ('local' not in stored['model']) == flat
    section = registry.section(stored['model'])
    given = stored['model'] if flat else stored['model']['local']
    assert section['num_neighbours'] == given['num_neighbours']
    assert registry.kind_of(stored['model']).transferable
