"""Orbax checkpoints of a training run, refusing any that do not match the config.

A checkpoint holds two items: `state` (parameters, optimiser state, RNG key,
step, counters; a pytree of arrays) and `meta` (JSON: the model config, the
system name and every parameter's shape). Restoring compares `meta` and the
state's entries with the current run first, so a mismatch (another model, or
a checkpoint of an older state layout) is a clear error, never a silent
re-init and never taken for damage. A checkpoint that cannot be read (damaged
files) is set aside with a warning and the next older one is restored
(`Checkpointer.restore_newest`).
"""

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from flows import registry

T = TypeVar('T')

# Where unreadable checkpoints are moved, under the workdir.
CORRUPT_DIRECTORY = 'corrupt_checkpoints'


def _shapes(tree: Any) -> dict[str, list[int]]:
  """Maps each leaf's path to its shape."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): list(np.shape(leaf)) for path, leaf in flat}


def model_shape_keys(model: dict | None) -> dict | None:
  """The keys of a model config that shape parameters (flows.registry.shape_keys: old flat
  sections migrated, compute-only keys left out); None stays None. So a run may resume
  with remat or compute_dtype switched, and checkpoints written before the model
  sections were nested still match the configs that nest them."""
  return registry.shape_keys(model)


def checkpoint_meta(config: ml_collections.ConfigDict, system: str) -> dict:
  """What a checkpoint of `config` must match: the `system` (or benchmark) name
  and config.model; plus the full config, for the record and for loading the run."""
  return dict(
    system=system,
    model=config.model.to_dict(),
    config=json.loads(config.to_json_best_effort()),
  )


class CheckpointMismatchError(ValueError):
  """The checkpoint in the workdir was written by a different model or system."""


class CorruptCheckpointError(RuntimeError):
  """A checkpoint's files cannot be read (or, from restore_newest, no checkpoint's can)."""


class Checkpointer:
  """Saves and restores training states under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()},
    )

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Writes `state` and `meta` for `step` and waits until they are on disk."""
    meta = dict(meta, shapes=_shapes(state['params']))
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore_newest(self, restore: Callable[[int], T]) -> tuple[int, T] | None:
    """(step, restore(step)) of the newest checkpoint that restores; None if there is none.

    Args:
      restore: step -> the restored value, reading the checkpoint with
        read_meta and restore (which raise CorruptCheckpointError on
        damaged files).

    A checkpoint whose files cannot be read is tried no further: the next
    older one is, and once one restores the unreadable ones are moved to
    `<workdir>/corrupt_checkpoints/` (so that new checkpoints can take their
    steps) with a warning naming each. Any other error of `restore` (e.g.
    CheckpointMismatchError) is raised at once.

    Raises:
      CorruptCheckpointError: if no checkpoint can be read, naming each and
        leaving them in place.
    """
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = restore(step)
      except CorruptCheckpointError as error:
        failures.append((step, str(error)))
        continue
      if failures:
        self._set_aside([s for s, _ in failures])
        warnings.warn(
          f'Restored the checkpoint at step {step} of {self.directory}: the newer '
          + ', '.join(f'step {s} ({why})' for s, why in failures)
          + f' could not be read and were moved to {self._corrupt_directory}.',
          stacklevel=2,
        )
      return step, restored
    if failures:
      raise CorruptCheckpointError(
        f'No checkpoint in {self.directory} can be read:\n  '
        + '\n  '.join(f'step {s}: {why}' for s, why in failures)
        + '\nMove them away to start afresh, or use another --workdir.'
      )
    return None

  @property
  def _corrupt_directory(self) -> str:
    return os.path.join(os.path.dirname(self.directory), CORRUPT_DIRECTORY)

  def _set_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      os.makedirs(self._corrupt_directory, exist_ok=True)
      for step in steps:
        target = os.path.join(self._corrupt_directory, str(step))
        shutil.rmtree(target, ignore_errors=True)  # from an earlier fallback
        os.replace(os.path.join(self.directory, str(step)), target)
    self._manager.reload()

  def read_meta(self, step: int | None = None) -> dict:
    """The meta item (JSON) of the checkpoint at `step` (default: latest).

    Raises:
      CorruptCheckpointError: if it cannot be read.
    """
    step = self.latest_step if step is None else step
    return self._read(step, 'meta', ocp.args.JsonRestore())

  @contextlib.contextmanager
  def _reading(self, step: int, what: str):
    """Makes any failure to read `what` of the checkpoint at `step` a CorruptCheckpointError."""
    try:
      yield
    except Exception as error:  # orbax, I/O, decoding and JSON errors alike
      raise CorruptCheckpointError(
        f'{what} of step {step} unreadable ({type(error).__name__}: {str(error)[:200]})'
      ) from error

  def _read(self, step: int, item: str, args) -> Any:
    """One item of the checkpoint at `step`."""
    with self._reading(step, item):
      return self._manager.restore(step, args=ocp.args.Composite(**{item: args}))[item]

  def restore(self, target: Any, meta: dict, step: int | None = None) -> Any:
    """Restores the state at `step` (default: latest) into `target`'s structure.

    Args:
      target: a state pytree of the current run (arrays or shape structs).
      meta: the current run's meta; its `system` and `model` entries and the
        parameter shapes of `target` must equal the checkpoint's.

    Raises:
      CheckpointMismatchError: naming every key or parameter that differs.
      CorruptCheckpointError: if its files cannot be read.
    """
    step = self.latest_step if step is None else step
    saved = self.read_meta(step)
    problems = []
    if saved.get('system') != meta.get('system'):
      problems.append(
        f'system: checkpoint has {saved.get("system")!r}, config has {meta.get("system")!r}'
      )
    saved_model = model_shape_keys(saved.get('model'))
    model = model_shape_keys(meta.get('model'))
    if saved_model != model:
      problems.append(f'model: checkpoint has {saved_model!r}, config has {model!r}')
    with self._reading(step, 'state layout'):
      entries = set(self._manager.item_metadata(step)['state'].keys())
    for name in sorted(entries ^ set(target)):
      problems.append(
        f'state entry {name!r}: '
        + ("not in this run's state" if name in entries else 'missing from the checkpoint')
      )
    current = _shapes(target['params'])
    stored = saved.get('shapes', {})
    for name in sorted(set(current) | set(stored)):
      if current.get(name) != stored.get(name):
        problems.append(
          f'parameter {name}: checkpoint shape {stored.get(name)}, model shape {current.get(name)}'
        )
    if problems:
      raise CheckpointMismatchError(
        f'The checkpoint at step {step} in {self.directory} does not match '
        'this config, so it was not restored (use another --workdir, or the '
        'config that wrote it):\n  ' + '\n  '.join(problems[:20])
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return self._read(step, 'state', ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    self._manager.close()


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a checkpoint (readable or not)."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return False
  ckpt = Checkpointer(workdir)
  try:
    return ckpt.latest_step is not None
  finally:
    ckpt.close()
