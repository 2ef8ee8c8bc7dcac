"""Registry entries of the TFEP map's coupling layers: model.conditioner='transformer'
(flows.CouplingLayer) or 'column' (flows.targeted.column_coupling.ColumnCoupling).

The keys every map shares (num_layers, radial_bins, centre_on_sites) sit at
`model.*` (flows.registry.SHARED_KEYS); each family's own under `model.<name>`.
"""

from flows import rules
from flows.model_kind import ModelKind
from flows.targeted.column_coupling import ColumnCoupling
from flows.targeted.map import TargetedMap
from flows.transformer.couplings import CouplingLayer


def _build_map(model: dict, ladder, make_layer, rngs) -> TargetedMap:
  """The TargetedMap of the model section for a systems.ladders.Ladder (its particles, cube
  and, with model.centre_on_sites, its lattice sites)."""
  return TargetedMap(
    ladder.num_particles,
    ladder.lower,
    ladder.upper,
    num_layers=model['num_layers'],
    make_layer=make_layer,
    radial_bins=model['radial_bins'],
    sites=ladder.sites if model['centre_on_sites'] else None,
    rngs=rngs,
  )


TRANSFORMER_DEFAULTS = dict(
  num_bins=8,  # bins of each circular rational-quadratic spline
  embedding_size=32,  # transformer width
  num_heads=2,  # attention heads
  num_blocks=1,  # transformer blocks per conditioner
  num_frequencies=4,  # circular Fourier frequencies of the embedding
  use_layernorm=False,  # layer norm in the transformer
)


def _build_transformer(model: dict, ladder, rngs) -> TargetedMap:
  keys = model['transformer']
  return _build_map(
    model,
    ladder,
    lambda layer_rngs: CouplingLayer(
      lower=ladder.lower, upper=ladder.upper, **keys, rngs=layer_rngs
    ),
    rngs,
  )


TRANSFORMER = ModelKind(
  name='transformer',
  role='map',
  defaults=TRANSFORMER_DEFAULTS,
  rules=dict(
    num_bins=rules.POSITIVE_INT,
    embedding_size=rules.POSITIVE_INT,
    num_heads=rules.POSITIVE_INT,
    num_blocks=rules.POSITIVE_INT,
    num_frequencies=rules.POSITIVE_INT,
    use_layernorm=rules.BOOL,
  ),
  build=_build_transformer,
  tiny=dict(num_bins=4, embedding_size=8, num_frequencies=1),
)

COLUMN_DEFAULTS = dict(
  num_bins=8,  # bins of each circular spline
  width=32,  # hidden width of the message and output networks
  num_frequencies=4,  # circular Fourier frequencies of the coordinates
  cutoff=2.5,  # cylinder radius (length units, at most half the box edge)
)


def _build_column(model: dict, ladder, rngs) -> TargetedMap:
  keys = model['column']
  return _build_map(
    model,
    ladder,
    lambda layer_rngs: ColumnCoupling(ladder.lower, ladder.upper, **keys, rngs=layer_rngs),
    rngs,
  )


def _column_check(model: dict) -> list[str]:
  if model.get('centre_on_sites'):
    return [
      "model.centre_on_sites=True: expected False with model.conditioner='column' "
      '(its neighbourhoods need positions, not displacements from sites)'
    ]
  return []


COLUMN = ModelKind(
  name='column',
  role='map',
  defaults=COLUMN_DEFAULTS,
  rules=dict(
    num_bins=rules.POSITIVE_INT,
    width=rules.POSITIVE_INT,
    num_frequencies=rules.POSITIVE_INT,
    cutoff=rules.POSITIVE,
  ),
  build=_build_column,
  check=_column_check,
  tiny=dict(num_bins=4, width=8, num_frequencies=1),
)
