"""Registry entry of the scalable flow (flows.LocalSolidFlow): model.conditioner='local'."""

import numpy as np

from flows import rules
from flows.local.model import LocalSolidFlow
from flows.model_kind import ModelKind
from systems import harmonic

DEFAULTS = dict(
  base='harmonic',  # Gaussian base: 'harmonic' (the crystal's covariance) or 'isotropic'
  num_layers=4,  # LocalLayers (each moves every colour class once); >= 0
  num_bins=8,  # bins of each spline
  embedding_size=32,  # width of the local conditioners (context and MLPs)
  num_neighbours=16,  # conditioning neighbours of other colours (closes a shell)
  colour_shells=1,  # sites within this many shells move in different couplings (2: 8 for ice Ic)
  filter_width=16,  # hidden width of the filter MLP of lattice offsets
  pair_width=0,  # features of each pair's relative displacement (0: linear context only)
  spline_range=5.0,  # splines act on [-B, B] base standard deviations
  noise_scale=0.2,  # std of the isotropic base (length units; unused by 'harmonic')
)

RULES = dict(
  base=rules.one_of('harmonic', 'isotropic'),
  num_layers=rules.NON_NEGATIVE_INT,
  num_bins=rules.POSITIVE_INT,
  embedding_size=rules.POSITIVE_INT,
  num_neighbours=rules.POSITIVE_INT,
  colour_shells=rules.POSITIVE_INT,
  filter_width=rules.POSITIVE_INT,
  pair_width=rules.NON_NEGATIVE_INT,
  spline_range=rules.POSITIVE,
  noise_scale=rules.POSITIVE,
)


def build(model: dict, system, rngs) -> LocalSolidFlow:
  """LocalSolidFlow of model['local'] for a systems.System (its own covariance)."""
  m = model['local']
  if m['base'] == 'harmonic':
    covariance = harmonic.covariance(system)
  else:
    covariance = m['noise_scale'] ** 2 * np.eye(3 * (system.num_particles - 1))
  return LocalSolidFlow(
    system.lattice,
    system.box,
    system.basis_index,
    covariance=covariance,
    num_layers=m['num_layers'],
    num_bins=m['num_bins'],
    num_neighbours=m['num_neighbours'],
    colour_shells=m['colour_shells'],
    width=m['embedding_size'],
    filter_width=m['filter_width'],
    pair_width=m['pair_width'],
    spline_range=m['spline_range'],
    remat=model.get('remat', False),
    rngs=rngs,
  )


SOLID = ModelKind(
  name='local',
  role='solid',
  defaults=DEFAULTS,
  rules=RULES,
  build=build,
  size_free_keys=('num_neighbours',),  # messages are means over neighbours
  transferable=True,  # no parameter depends on N
  depth_key='num_layers',  # fresh layers start as the identity (zero heads)
  tiny=dict(num_layers=1, num_bins=4, embedding_size=8, filter_width=4),
)
