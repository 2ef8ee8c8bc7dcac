"""Loading a solid-flow training run from its workdir, for evaluation, analysis and transfer.

A run of a transferable flow family (flows.registry: model.conditioner =
'local') can be loaded for another system of the same family
(systems.System.family: same potential, lattice, density and temperature;
another N): its layers' parameters do not depend on N, and the base is
rebuilt for the new system (flows.LocalSolidFlow).
"""

import json
import os

import ml_collections

from experiments import checkpointing, training
from flows import bijector, registry
from systems import get_system


def for_system(
  config: ml_collections.ConfigDict, system: str | None, num_neighbours: int | None = None
) -> ml_collections.ConfigDict:
  """A copy of a run's config for `system` (None: the run's own), checked for transfer.

  The copy's model section is in the nested layout (flows.registry.migrate).

  Args:
    config: the run's config.
    system: a size of the run's family (None: its own).
    num_neighbours: a local flow's conditioning neighbours k (None: the run's
      own). The weights do not depend on k, and a larger box can hold whole a
      shell that the run's box split: mw_hex 64 (k = 12) evaluates at 216 and
      512 with k = 14.

  Raises:
    ValueError: if `system` is of another family than the run's, or the run's
      flow family does not transfer (the transformer's weights are trained for
      one N) where `system` differs, or has no size-free num_neighbours where
      it is given.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = ml_collections.ConfigDict(registry.migrate(config.model.to_dict()))
  kind = registry.kind_of(config.model)
  if num_neighbours is not None:
    if 'num_neighbours' not in kind.size_free_keys:
      raise ValueError(
        f"num_neighbours={num_neighbours} applies to a local flow only; this run's "
        f'model.conditioner is {kind.name!r}.'
      )
    config.model[kind.name].num_neighbours = num_neighbours
  if system is None or system == config.system:
    return config
  trained, wanted = get_system(config.system), get_system(system)
  if trained.family != wanted.family:
    raise ValueError(
      f'The run trained {config.system}; {system} is of another family (potential, lattice, '
      f'density, temperature: {trained.family} against {wanted.family}).'
    )
  if not kind.transferable:
    raise ValueError(
      f"Only a local flow transfers to another size; this run's model.conditioner is "
      f'{kind.name!r}, whose weights are trained for one N.'
    )
  config.system = system
  return config


def load_run(
  workdir: str, system: str | None = None, num_neighbours: int | None = None
) -> tuple[ml_collections.ConfigDict, training.Setup, dict]:
  """Returns (config, setup, state) of the newest readable checkpoint in `workdir`.

  The config is the one stored in the checkpoint, for `system` and
  `num_neighbours` if given (see `for_system`; the state's parameters then
  drive a flow built for that system). The model computes in float32
  (a family's compute_dtype is overridden); callers evaluate under
  jax.default_matmul_precision('highest'), so that GPUs and TPUs do not
  round float32 products to TF32 or bfloat16 either.

  Raises:
    FileNotFoundError: if the workdir holds no checkpoint.
    checkpointing.CorruptCheckpointError: if none of its checkpoints can be read.
    ValueError: for a `system` the run cannot be evaluated at.
  """

  def load(step: int):
    stored = ml_collections.ConfigDict(ckpt.read_meta(step)['config'])
    # Densities are evaluated with float32 products whatever the training used:
    # sampling (forward) and log q of given configurations (inverse) then agree
    # to float32 round-off, as LBAR against HMC samples needs; with bfloat16 a
    # rounding flip in a conditioner can make them differ on a few samples.
    config = for_system(stored, system, num_neighbours)
    family = config.model[config.model.conditioner]
    if 'compute_dtype' in family:
      family.compute_dtype = 'float32'
    setup, state = training.build(config)
    meta = checkpointing.checkpoint_meta(stored, stored.system)
    return config, setup, ckpt.restore(state, meta, step)

  ckpt = checkpointing.Checkpointer(workdir)
  try:
    restored = ckpt.restore_newest(load)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(
      f'No checkpoint under {ckpt.directory}; train first with python -m experiments.train.'
    )
  return restored[1]


def trained_system(workdir: str) -> str:
  """The system a run was trained for (its config.json)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    return json.load(f)['system']


def initial_params(workdir: str, config: ml_collections.ConfigDict):
  """Parameters of another run to start `config`'s run from (`--init_from`).

  The moving average of the newest checkpoint of `workdir` (what that run
  evaluated), for config.system (a size of its family). The model sections
  must agree in every key that shapes parameters (flows.registry.shape_keys),
  but for the family's size_free_keys: a local flow's `num_neighbours` does
  not shape them (its messages are a mean over neighbours of a
  filter of the lattice offset), so it may differ, as it must where a shell
  that the small box truncates is whole at the larger N (mw_hex 64 -> 216).
  A family with a depth_key (flows.model_kind) may also have more layers here:
  the trained layers come first, and the new ones start as the identity, so
  the deeper flow starts as the trained one (flows.bijector.grow_stacked).

  Raises:
    ValueError: for a system of another family, or a family that does not transfer
      at another N.
    checkpointing.CheckpointMismatchError: naming the model keys that differ.
  """
  other, _, state = load_run(workdir)
  for_system(other, config.system)  # the same family, and a local flow if N differs
  there = registry.shape_keys(other.model.to_dict(), size_free=True)
  here = registry.shape_keys(config.model.to_dict(), size_free=True)
  kind = registry.kind_of(config.model)
  depth = f'{kind.name}.{kind.depth_key}'
  grows = bool(kind.depth_key) and here.get('conditioner') == there.get('conditioner')
  grows = grows and here[depth] > there[depth]
  differences = sorted(
    k for k in set(there) | set(here) if there.get(k) != here.get(k) and not (grows and k == depth)
  )
  if differences:
    raise checkpointing.CheckpointMismatchError(
      f'--init_from={workdir} trained another model; these model keys differ: '
      + ', '.join(f'{k} ({there.get(k)!r} there, {here.get(k)!r} here)' for k in differences)
    )
  if not grows:
    return state['ema_params']
  fresh = training.build(config)[1]['params']
  return bijector.grow_stacked(state['ema_params'], fresh, there[depth])
