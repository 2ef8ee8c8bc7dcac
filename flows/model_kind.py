"""ModelKind: what flows.registry knows of one model family (see flows/registry.py)."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """One model family: its config keys, their checks, its builder and how it transfers.

  A config's model section names the family in `model.conditioner` and holds
  its keys under `model.<name>`; the keys shared by every family of a role
  (flows.registry.SHARED_KEYS) sit at `model.*`.

  Attributes:
    name: the family's name, unique within its role (the value of model.conditioner).
    role: 'solid' (a flow of a system's configurations, flows.solid_flow) or
      'map' (a TFEP map, flows.targeted.TargetedMap).
    defaults: the family's own keys and their defaults (commented in its module).
    rules: family key -> (test, what is expected), as experiments.validation's RULES.
    build: (model section (dict, migrated), geometry, nnx.Rngs) -> the module;
      geometry is a systems.System (solid) or a systems.ladders.Ladder (map).
    check: model section -> problems between keys (strings naming key and value).
    compute_only_keys: family keys that change how a step is computed, not the
      parameters (a run may resume with them switched).
    size_free_keys: family keys that may differ when weights move to another run
      (--init_from, another size) because no parameter depends on them.
    transferable: whether the weights run at another N of the system's family.
    depth_key: the family key that counts its stacked layers
      (flows.bijector.stack_layers), where a run with more layers may start from
      one with fewer (--init_from): the trained layers come first and the new
      ones start as the identity (flows.bijector.grow_stacked). '': no growth.
    tiny: overrides of `defaults` for a model that builds and runs in seconds
      (tests, smoke runs).
  """

  name: str
  role: str
  defaults: Mapping[str, Any]
  rules: Mapping[str, tuple[Callable[[Any], bool], str]]
  build: Callable[[dict, Any, nnx.Rngs], nnx.Module]
  check: Callable[[dict], list[str]] | None = None
  compute_only_keys: tuple[str, ...] = ()
  size_free_keys: tuple[str, ...] = ()
  transferable: bool = False
  depth_key: str = ''
  tiny: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.role not in ('solid', 'map'):
      raise ValueError(f"role={self.role!r}; expected 'solid' or 'map'.")
    named = set(self.rules) | set(self.tiny) | set(self.compute_only_keys)
    unknown = (named | ({self.depth_key} - {''})) - set(self.defaults)
    if unknown:
      raise ValueError(f'{self.name}: keys {sorted(unknown)} are not among its defaults.')

  def section(self, model: Mapping) -> dict:
    """The family's keys of a (migrated) model section, defaults filling missing ones."""
    return dict(self.defaults, **model.get(self.name, {}))
