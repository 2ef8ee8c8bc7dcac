"""The model registry: model kind -> how to build, check, checkpoint and transfer it.

A config's model section names its family in `model.conditioner` and holds
that family's keys under `model.<conditioner>` (e.g. `model.local.num_neighbours`);
the keys every family of a role shares (SHARED_KEYS) sit at `model.*`. Two
roles: 'solid' (a flow of a system, flows.solid_flow.SolidFlowBase) and 'map'
(a TFEP map, flows.targeted.TargetedMap); a TFEP model section is told by its
`centre_on_sites` key. This module is the only place that dispatches on a
family's name; a new family is one module with a ModelKind plus one line in
BUILTIN (or, in tests, `with register(kind):`).

Model sections written before the families were nested (flat keys, e.g. the
shipped experiments/pretrained checkpoints) are read through `migrate`.
"""

import contextlib
from collections.abc import Iterator, Mapping

from flows.local import spec as local_spec
from flows.model_kind import ModelKind
from flows.targeted import spec as targeted_spec
from flows.transformer import spec as transformer_spec

# Keys every family of a role shares, at model.* (the others nest under model.<name>).
SHARED_KEYS = {
  'solid': ('conditioner', 'remat'),
  'map': ('conditioner', 'num_layers', 'radial_bins', 'centre_on_sites'),
}
# Shared keys that change how a step is computed, not the parameters.
SHARED_COMPUTE_ONLY_KEYS = ('remat',)

BUILTIN = (
  transformer_spec.SOLID,
  local_spec.SOLID,
  targeted_spec.TRANSFORMER,
  targeted_spec.COLUMN,
)
_KINDS: dict[tuple[str, str], ModelKind] = {(k.role, k.name): k for k in BUILTIN}


def names(role: str) -> tuple[str, ...]:
  """The registered family names of `role`."""
  return tuple(name for r, name in _KINDS if r == role)


def get(role: str, name: str) -> ModelKind:
  """The ModelKind of family `name` in `role`; ValueError listing the known names."""
  if (role, name) in _KINDS:
    return _KINDS[(role, name)]
  if role == 'map' and name == 'local':
    raise ValueError(
      "The TFEP map's conditioner 'local' is now called 'column': set "
      "model.conditioner='column' (its keys under model.column: width, cutoff, ...)."
    )
  raise ValueError(
    f'model.conditioner={name!r}: expected one of {names(role)} (registered {role} families).'
  )


@contextlib.contextmanager
def register(kind: ModelKind) -> Iterator[ModelKind]:
  """Registers `kind` for the duration of a `with` block (tests, experiments)."""
  key = (kind.role, kind.name)
  if key in _KINDS:
    raise ValueError(f'A {kind.role} family named {kind.name!r} is already registered.')
  _KINDS[key] = kind
  try:
    yield kind
  finally:
    del _KINDS[key]


def role_of(model: Mapping) -> str:
  """'map' for a TFEP model section (it has centre_on_sites), else 'solid'."""
  return 'map' if 'centre_on_sites' in model else 'solid'


def migrate(model: Mapping) -> dict:
  """A model section in the nested layout (a copy); flat (old) sections are converted.

  A flat section's family keys move under model.<conditioner> (keys of other
  families are dropped). Either way, family keys the section lacks (added
  since it was written) take the family's defaults, which keep the behaviour
  of before. A section without `conditioner` (older still) is a transformer.
  A TFEP section whose conditioner is 'local' is refused with a message naming
  'column'.
  """
  model = {k: dict(v) if isinstance(v, Mapping) else v for k, v in model.items()}
  role = role_of(model)
  name = model.setdefault('conditioner', 'transformer')
  kind = get(role, name)
  if isinstance(model.get(name), Mapping):
    model[name] = dict(kind.defaults, **model[name])
    return model
  shared = {k: model[k] for k in SHARED_KEYS[role] if k in model}
  return dict(shared, **{name: {k: model.get(k, v) for k, v in kind.defaults.items()}})


def kind_of(model: Mapping) -> ModelKind:
  """The ModelKind that a (flat or nested) model section names."""
  return get(role_of(model), model.get('conditioner', 'transformer'))


def section(model: Mapping) -> dict:
  """The family's own keys of a model section (model.<conditioner>, defaults filled in)."""
  return kind_of(model).section(migrate(model))


def build(model: Mapping, geometry, rngs):
  """The module of a model section: a solid flow for a systems.System, or a TFEP map for a
  systems.ladders.Ladder. ValueError naming every bad family key (`problems`)."""
  model = migrate(model)
  kind = kind_of(model)
  model[kind.name] = kind.section(model)
  bad = problems(model)
  if bad:
    raise ValueError('Bad model config values:\n  ' + '\n  '.join(bad))
  return kind.build(model, geometry, rngs)


def shape_keys(model: Mapping | None, size_free: bool = False) -> dict | None:
  """The keys of a model section that shape its parameters, flat and dotted
  (e.g. {'conditioner': 'local', 'local.num_layers': 4, ...}); None stays None.

  Compute-only keys are left out, and with `size_free` the family's
  size_free_keys too (the comparison of --init_from and transfer).
  """
  if model is None:
    return None
  model = migrate(model)
  kind, role = kind_of(model), role_of(model)
  drop = set(kind.compute_only_keys) | (set(kind.size_free_keys) if size_free else set())
  keys = {k: model[k] for k in SHARED_KEYS[role] if k in model}
  for k in SHARED_COMPUTE_ONLY_KEYS:
    keys.pop(k, None)
  keys.update({f'{kind.name}.{k}': v for k, v in kind.section(model).items() if k not in drop})
  return keys


def problems(model: Mapping) -> list[str]:
  """Every bad value of a model section's family keys (model.<name>.<key>=...: expected ...),
  and the family's cross-key problems."""
  role = role_of(model)
  name = model.get('conditioner')
  try:
    kind = get(role, name)
  except ValueError as error:
    return [str(error)]
  if not isinstance(model.get(name), Mapping):
    return [f'model.{name}: missing (the keys of family {name!r}, {kind.role} role)']
  own = model[name]
  out = [f'model.{name}.{k}: missing' for k in kind.defaults if k not in own]
  out += [f'model.{name}.{k}: not a key of family {name!r}' for k in own if k not in kind.defaults]
  for key, (test, expected) in kind.rules.items():
    if key in own and not test(own[key]):
      out.append(f'model.{name}.{key}={own[key]!r}: expected {expected}')
  if kind.check is not None and not out:
    out += kind.check(dict(model))
  return out


def default_sections(role: str) -> dict:
  """{name: defaults} of every registered family of `role`: the sections a config carries
  (so that --config.model.conditioner=<name> picks a family with its defaults)."""
  return {name: dict(_KINDS[(role, name)].defaults) for name in names(role)}
