"""Orbax checkpoints of a training run, refusing any that do not match the config.

A checkpoint holds two items: `state` (parameters, optimiser state, RNG key,
step, counters; a pytree of arrays) and `meta` (JSON: the model config, the
system name and every parameter's shape). Restoring compares `meta` with the
current run first, so a mismatch is a clear error, never a silent re-init.
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _shapes(tree: Any) -> dict[str, list[int]]:
  """Maps each leaf's path to its shape."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): list(np.shape(leaf)) for path, leaf in flat}


# Model keys that change how a step is computed, not the parameters: a run may
# resume with them switched.
COMPUTE_ONLY_MODEL_KEYS = ('remat', 'compute_dtype')


def _model_shape_keys(model: dict | None) -> dict | None:
  if model is None:
    return None
  return {k: v for k, v in model.items() if k not in COMPUTE_ONLY_MODEL_KEYS}


class CheckpointMismatchError(ValueError):
  """The checkpoint in the workdir was written by a different model or system."""


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

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored.meta

  def restore(self, target: Any, meta: dict, step: int | None = None) -> Any:
    """Restores the state at `step` (default: latest) into `target`'s structure.

    Args:
      target: a state pytree of the current run (arrays or shape structs).
      meta: the current run's meta; its `system` and `model` entries and the
        parameter shapes of `target` must equal the checkpoint's.

    Raises:
      CheckpointMismatchError: naming every key or parameter that differs.
    """
    step = self.latest_step if step is None else step
    saved = self.read_meta(step)
    problems = []
    if saved.get('system') != meta.get('system'):
      problems.append(
        f'system: checkpoint has {saved.get("system")!r}, config has {meta.get("system")!r}'
      )
    saved_model = _model_shape_keys(saved.get('model'))
    model = _model_shape_keys(meta.get('model'))
    if saved_model != model:
      problems.append(f'model: checkpoint has {saved_model!r}, config has {model!r}')
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
    restored = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    return restored.state

  def close(self) -> None:
    self._manager.close()
