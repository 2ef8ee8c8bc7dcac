"""Shared test helper: `perturb`, which moves parameters off their initial values.

Import it with `from conftest import perturb` (pytest puts tests/ on sys.path).
"""

import jax
import numpy as np
from flax import nnx


def perturb(target, scale: float = 0.3, seed: int = 0):
  """Adds Gaussian noise to parameters, e.g. to move a flow off the identity.

  Every kernel (a leaf whose path names 'kernel', fan-in = shape[-2]) gets noise of
  std scale/√fan-in, so activations stay O(1) at any width; every other leaf
  (biases, shifts, stacked or not) gets std `scale`.

  Args:
    target: an nnx.Module, whose nnx.Params are updated in place (the module is
      returned), or a pytree of parameter arrays such as an nnx.State (a
      perturbed copy is returned).
    scale: noise std of the non-kernel leaves (parameter units).
    seed: PRNG seed of the noise.
  """
  if isinstance(target, nnx.Module):
    nnx.update(target, perturb(nnx.state(target, nnx.Param), scale, seed))
    return target
  leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = []
  for (path, p), key in zip(leaves, keys):
    is_kernel = 'kernel' in jax.tree_util.keystr(path)
    std = scale / np.sqrt(p.shape[-2]) if is_kernel else scale
    noisy.append(p + std * jax.random.normal(key, p.shape, p.dtype))
  return jax.tree.unflatten(treedef, noisy)
