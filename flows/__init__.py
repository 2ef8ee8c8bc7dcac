"""Normalizing flows for atomic solids (Flax NNX) and free-energy estimators.

flows.registry maps each model family (model.conditioner) to its builder,
config keys and transfer rules; flows.bijector holds the one scanned chain of
layers and flows.solid_flow the contract every solid flow keeps.
"""

from flows.embeddings import circular_features
from flows.local.model import LocalSolidFlow
from flows.transformer.attention import Transformer
from flows.transformer.conditioner import Conditioner
from flows.transformer.couplings import CircularShift, CouplingLayer, SplitCoupling
from flows.transformer.lattice_base import LatticeBase, wigner_seitz_half_width
from flows.transformer.model import SolidFlow

__all__ = [
  'CircularShift',
  'Conditioner',
  'CouplingLayer',
  'LatticeBase',
  'LocalSolidFlow',
  'SolidFlow',
  'SplitCoupling',
  'Transformer',
  'circular_features',
  'wigner_seitz_half_width',
]
