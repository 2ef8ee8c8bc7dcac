"""Shared test fixtures: `perturb` (parameters off their initial values), a finished tiny
TFEP run built once for all workers (`built_once`), and the check that skipped steps
changed nothing; one persistent JAX compilation cache and most of XLA's optimisations off
for the session (`optimized_compilation` turns them on for one test); and the order in
which files reach the xdist workers (slowest first).

Tests take them as fixtures (`def test_x(perturb): ...`); nothing is imported from here.
"""

import fcntl
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import tfep_stages
from experiments.configs import tfep_solid

# One JAX compilation cache for the whole session: its xdist workers and the subprocesses
# that tests start (CLI runs, the sharded step) inherit it through the environment. Many
# tests compile the same program (the tiny training step, in every run a test starts and
# resumes): the first compile is stored and the others are read back. Every program is
# stored, however quick to compile: the many small ones (an initialiser or an op of each
# shape) are then compiled once per session, not once per process (a minute of CPU in all).
# A cache the user already set (JAX_COMPILATION_CACHE_DIR) is used as it is and left in place.
_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_CACHE_OWNER_ENV = 'ASF_TEST_JAX_CACHE_OWNER'  # the process that made the directory


# Most of XLA's optimisations off for every program the session compiles, its
# subprocesses' included (jax_disable_most_optimizations: LLVM at level 0, no expensive
# passes): the same programs, compiled in about two thirds of the CPU time (the tests
# compile far more than they run), their machine code less optimised. A test that runs
# far more than it compiles takes the `optimized_compilation` fixture. A value the user
# set (JAX_DISABLE_MOST_OPTIMIZATIONS) is kept.
_FAST_COMPILE_ENV = 'JAX_DISABLE_MOST_OPTIMIZATIONS'


def pytest_configure(config):
  if _FAST_COMPILE_ENV not in os.environ:  # else JAX read the user's value at import
    os.environ[_FAST_COMPILE_ENV] = '1'  # read by subprocesses' JAX at import
    jax.config.update('jax_disable_most_optimizations', True)
  if not os.environ.get(_CACHE_ENV):
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix='pytest-jax-cache-')
    os.environ[_CACHE_OWNER_ENV] = str(os.getpid())
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  jax.config.update('jax_compilation_cache_dir', os.environ[_CACHE_ENV])
  jax.config.update(
    'jax_persistent_cache_min_compile_time_secs',
    float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']),
  )
  jax.config.update(
    'jax_persistent_cache_min_entry_size_bytes',
    int(os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES']),
  )


# The files that take longest (measured with --durations=0 on two cores), mostly slowest first.
# xdist hands whole files to its workers in collection order (pyproject.toml's
# --no-loadscope-reorder): starting these first lets the workers finish together.
SLOWEST_FILES = (
  'test_flows_bijectors.py',
  'test_training.py',
  'test_local_training.py',
  'test_mixed_precision.py',
  'test_tfep_report.py',  # builds the shared tiny TFEP run (tiny_tfep_run) early ...
  'test_local_flow.py',
  'test_pretrained.py',
  'test_systems_energies.py',
  'test_targeted.py',
  'test_cell_list.py',
  'test_benchmark.py',
  'test_cli_flags.py',
  'test_tfep_stages.py',  # ... so that this file, its other user, does not wait for it
)


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def pytest_unconfigure(config):
  if os.environ.get(_CACHE_OWNER_ENV) == str(os.getpid()):
    shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


def _perturb(target, scale: float = 0.3, seed: int = 0):
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
    nnx.update(target, _perturb(nnx.state(target, nnx.Param), scale, seed))
    return target
  # Host-side noise: no compiled program per leaf shape (jax.random.normal would compile
  # one for every distinct shape, a few tenths of a second each).
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  noisy = []
  for path, p in leaves:
    is_kernel = 'kernel' in jax.tree_util.keystr(path)
    std = scale / np.sqrt(p.shape[-2]) if is_kernel else scale
    moved = np.asarray(p, np.float64) + std * rng.standard_normal(p.shape)
    noisy.append(jnp.asarray(moved.astype(p.dtype)))
  return jax.tree.unflatten(treedef, noisy)


@pytest.fixture
def optimized_compilation():
  """XLA's full optimisation for the programs one test compiles: for a test that runs far
  more than it compiles (HMC at N = 256, millions of density evaluations)."""
  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


@pytest.fixture(scope='session')
def perturb():
  """`perturb(target, scale=0.3, seed=0)`: parameters moved off their initial values (_perturb)."""
  return _perturb


def _tiny_tfep_config():
  config = tfep_solid.get_config('tiny')
  config.train.checkpoint_every_steps = 5
  return config


@pytest.fixture
def tiny_tfep_config():
  """tfep_solid.py:tiny (lj_32, two states, 16 samples each), checkpoints every 5 of 20 steps."""
  return _tiny_tfep_config()


def built_once(tmp_path_factory, name: str, build) -> str:
  """A directory that `build(directory)` fills once per test session, shared by every
  xdist worker (the first to arrive builds it under a file lock, the others wait and
  reuse it); returns its path. Treat it as read-only: copy it to change it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # shared by the workers of one session
  directory = root / name
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (directory / 'BUILT').exists():
      shutil.rmtree(directory, ignore_errors=True)
      directory.mkdir()
      build(str(directory))
      (directory / 'BUILT').touch()
  return str(directory)


@pytest.fixture(scope='session')
def tiny_tfep_run(tmp_path_factory):
  """(config, workdir, works) of a finished tiny_tfep_config run, built once per session for
  every worker; copy the workdir to change it."""
  config = _tiny_tfep_config()
  workdir = built_once(tmp_path_factory, 'tiny_tfep', lambda d: tfep_stages.run(config, d))
  return config, workdir, tfep_stages.run(config, workdir)  # every stage cached: a read


@pytest.fixture
def assert_skips_changed_nothing():
  """check(initial, saved, num_skipped): a state saved after `num_skipped` skipped steps
  from `initial` has its parameters, their moving average and the optimiser state, and
  counts every step as taken, skipped and non-finite in a row."""

  def check(initial, saved, num_skipped):
    for name in ('params', 'ema_params', 'opt_state'):
      for x, y in zip(jax.tree.leaves(initial[name]), jax.tree.leaves(saved[name])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    for name in ('step', 'num_skipped', 'consecutive_nonfinite'):
      assert int(saved[name]) == num_skipped, name

  return check
