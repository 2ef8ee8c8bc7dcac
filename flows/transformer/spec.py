"""Registry entry of the paper's solid flow (flows.SolidFlow): model.conditioner='transformer'."""

from flows import rules
from flows.model_kind import ModelKind
from flows.transformer.model import SolidFlow

DEFAULTS = dict(
  base='lattice',  # the base: 'lattice' (flows.LatticeBase; the only one)
  num_layers=24,  # flow layers (>= 1); each = shift + 2 spline couplings
  num_bins=16,  # bins of each rational-quadratic spline
  embedding_size=256,  # transformer width
  num_heads=2,  # attention heads
  num_blocks=2,  # transformer blocks per conditioner
  num_frequencies=8,  # circular Fourier frequencies of the embedding
  noise_scale=0.2,  # std of the lattice base's noise about the sites (length units)
  use_layernorm=False,  # layer norm in the transformer (published: off)
  compute_dtype='float32',  # transformer matmuls: 'float32' or 'bfloat16' (mixed precision)
)

RULES = dict(
  base=rules.one_of('lattice'),
  num_layers=rules.POSITIVE_INT,
  num_bins=rules.POSITIVE_INT,
  embedding_size=rules.POSITIVE_INT,
  num_heads=rules.POSITIVE_INT,
  num_blocks=rules.POSITIVE_INT,
  num_frequencies=rules.POSITIVE_INT,
  noise_scale=rules.POSITIVE,
  use_layernorm=rules.BOOL,
  compute_dtype=rules.one_of('float32', 'bfloat16'),
)


def build(model: dict, system, rngs) -> SolidFlow:
  """SolidFlow of model['transformer'] for a systems.System."""
  keys = dict(model['transformer'])
  del keys['base']
  return SolidFlow(system.lattice, system.box, **keys, remat=model.get('remat', False), rngs=rngs)


SOLID = ModelKind(
  name='transformer',
  role='solid',
  defaults=DEFAULTS,
  rules=RULES,
  build=build,
  compute_only_keys=('compute_dtype',),
  tiny=dict(num_layers=1, num_bins=4, embedding_size=8, num_blocks=1, num_frequencies=1),
)
