"""Normalizing flows for atomic solids (Flax NNX) and free-energy estimators."""

from flows.conditioner import Conditioner
from flows.couplings import CircularShift, CouplingLayer, SplitCoupling
from flows.embeddings import circular_features
from flows.lattice_base import LatticeBase, wigner_seitz_half_width
from flows.local_model import LocalSolidFlow
from flows.model import SolidFlow
from flows.transformer import Transformer

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
