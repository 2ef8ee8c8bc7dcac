"""Atomic solids: periodic boxes, lattices, Lennard-Jones and mW potentials, and
the registry of named systems (`get_system`, `SYSTEM_NAMES`)."""

from systems.registry import POTENTIALS, SYSTEM_NAMES, System, get_system, make_system

__all__ = ['POTENTIALS', 'SYSTEM_NAMES', 'System', 'get_system', 'make_system']
