"""Atomic solids: periodic boxes, lattices, Lennard-Jones and mW potentials, and
the registry of named systems (`get_system`, `SYSTEM_NAMES`)."""

from systems.registry import POTENTIALS
from systems.registry import SYSTEM_NAMES
from systems.registry import System
from systems.registry import get_system
from systems.registry import make_system

__all__ = ['POTENTIALS', 'SYSTEM_NAMES', 'System', 'get_system', 'make_system']
