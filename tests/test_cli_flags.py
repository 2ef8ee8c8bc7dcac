"""Numeric CLI flags are checked before any work: one 'Bad flag values: ...' line, exit status 2.

The entry points run in subprocesses with a workdir or system that does not
exist: had any work started (a model load, a sampler), that would fail first
with another error.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from experiments import flag_checks, hmc_samples, validation
from experiments.flag_checks import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SEED
from scripts import free_energy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = '/nonexistent/run'
CONFIG = 'experiments/configs/monatomic_water.py:mw_cubic_8,tutorial'


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
  )


@pytest.fixture
def run_with_hmc(tmp_path):
  """A workdir whose config.json has hmc.num_steps=100, hmc.thin=5 (and no checkpoint)."""
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump({'system': 'mw_cubic_8', 'hmc': {'num_steps': 100, 'thin': 5}}, f)
  return str(tmp_path)


@pytest.mark.parametrize(
  'module,args,line',
  [
    (
      'scripts.free_energy',
      [f'--workdir={MISSING}', '--out={tmp}/x.json', '--hmc_chains=-1'],
      '--hmc_chains=-1: expected a positive integer',
    ),
    (
      'scripts.free_energy',  # was ZeroDivisionError: integer modulo by zero
      [f'--workdir={MISSING}', '--out={tmp}/x.json', '--hmc_thin=0', '--num_flow_samples=1'],
      '--num_flow_samples=1: expected an integer >= 2; --hmc_thin=0: expected a positive integer',
    ),
    (
      'scripts.free_energy',
      [f'--workdir={MISSING}', '--out={tmp}/x.json', '--hmc_steps=100', '--hmc_thin=3'],
      '--hmc_steps=100: expected a multiple of 30 (10·--hmc_thin=3), at least 60',
    ),
    (
      'scripts.free_energy',
      [f'--workdir={MISSING}', '--out={tmp}/x.json', '--target_stderr=0', '--max_flow_samples=1'],
      '--target_stderr=0.0: expected a finite number > 0; --max_flow_samples=1: expected an '
      'integer >= 2',
    ),
    (
      'scripts.free_energy',
      [f'--workdir={MISSING}', '--out={tmp}/x.json', '--flow_only', '--hmc_chains=4'],
      '--hmc_chains=4 with --flow_only: expected no HMC flag (no HMC sampling)',
    ),
    (
      'experiments.evaluate',
      [f'--workdir={MISSING}', '--num_samples=0', '--seed=-1'],
      '--num_samples=0: expected a positive integer; --seed=-1: expected an integer in [0, 2**32)',
    ),
    (
      'scripts.reference_samples',
      [
        '--system=no_such_system',
        '--out={tmp}/x.npz',
        '--steps=30',
        '--thin=20',
        '--step_size=nan',
      ],
      '--step_size=nan: expected a finite number > 0',
    ),
    (
      'scripts.reference_samples',
      ['--system=no_such_system', '--out={tmp}/x.npz', '--steps=30', '--thin=20'],
      '--steps=30: expected a multiple of 20 (--thin=20), at least 40',
    ),
    (
      'scripts.benchmark',
      [f'--config={CONFIG}', '--steps=0', '--batch_size=-2'],
      '--steps=0: expected a positive integer; --batch_size=-2: expected an integer >= 0 (0: the '
      "config's train.batch_size)",
    ),
    (
      'scripts.benchmark_energy',
      ['--systems=no_such_system', '--methods=cells', '--repeats=0', '--dense_max_n=-1'],
      "--methods='cells': expected comma-separated of neighbour_list,dense,all_pairs,cell_list; "
      '--repeats=0: expected a positive integer; --dense_max_n=-1: expected an integer >= 0',
    ),
  ],
)
def test_bad_flag_ends_with_one_line_before_any_work(module, args, line, tmp_path):
  out = _run(module, *(a.format(tmp=tmp_path) for a in args))
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr == f'Bad flag values: {line}\n'
  assert out.stdout == ''


def test_free_energy_checks_a_flag_against_the_runs_hmc(run_with_hmc):
  """--hmc_thin alone must suit the run's hmc.num_steps (100 = 10·5·2)."""
  out = _run(
    'scripts.free_energy',
    f'--workdir={run_with_hmc}',
    f'--out={run_with_hmc}/x.json',
    '--hmc_thin=6',
  )
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr == (
    "Bad flag values: the run's hmc.num_steps=100: expected a multiple of 60 "
    '(10·--hmc_thin=6), at least 120\n'
  )


def _free_energy_args(workdir: str, **flags) -> argparse.Namespace:
  defaults = dict(
    workdir=workdir,
    num_neighbours=None,
    num_flow_samples=65536,
    hmc_chains=None,
    hmc_steps=None,
    hmc_thin=None,
    hmc_burn_in=None,
    seed=0,
    flow_only=False,
    target_stderr=None,
    max_flow_samples=None,
    flow_samples_out=None,
  )
  return argparse.Namespace(**{**defaults, **flags})


@pytest.mark.parametrize(
  'flags',
  [
    {},
    {'hmc_thin': 5},  # the run's 100 steps: 10·5·2
    {'hmc_steps': 50, 'hmc_thin': 1, 'hmc_chains': 2, 'hmc_burn_in': 0},
    {'hmc_steps': 200},  # the run's thin 5
    {'num_neighbours': 14, 'num_flow_samples': 2, 'seed': 2**32 - 1},
  ],
)
def test_free_energy_passes_good_flags(run_with_hmc, flags):
  free_energy.check_flags(_free_energy_args(run_with_hmc, **flags))


def test_free_energy_without_config_json_checks_single_flags_only(tmp_path):
  """Without the run's config.json --hmc_thin alone has nothing to suit (load_run says why)."""
  free_energy.check_flags(_free_energy_args(str(tmp_path), hmc_thin=7))
  with pytest.raises(SystemExit):
    free_energy.check_flags(_free_energy_args(str(tmp_path), hmc_steps=100, hmc_thin=7))


@pytest.mark.parametrize(
  'rule,good,bad',
  [
    (POSITIVE_INT, [1, 10**9], [0, -1, 1.0, True, '3']),
    (NON_NEGATIVE_INT, [0, 5], [-1, 0.5, False]),
    (POSITIVE, [1e-9, 3, 2.5], [0.0, -1.0, math.inf, math.nan, True]),
    (flag_checks.at_least(2), [2, 3], [1, 0, -2, 2.0]),
    (flag_checks.between(0, 1), [0.05, 0.999], [0, 1, 1.5, -0.1, math.nan, True]),
    (SEED, [0, 2**32 - 1], [-1, 2**32, 0.0]),
  ],
)
def test_rules(rule, good, bad):
  test, _ = rule
  assert all(test(v) for v in good)
  assert not any(test(v) for v in bad)


def test_at_least_refuses_a_negative_floor():
  with pytest.raises(ValueError, match=r'minimum=-1: expected an integer >= 0'):
    flag_checks.at_least(-1)


def test_seeds_outside_the_rule_collide_in_jax():
  """Why SEED stops at 2**32: jax keeps a seed's low 32 bits, so -1 and 2**32 alias."""
  data = lambda s: jax.random.key_data(jax.random.key(s)).tolist()
  assert data(2**32) == data(0)
  assert data(-1) == data(2**32 - 1)
  assert data(0) != data(2**32 - 1)


def test_problems_name_flag_value_and_expectation_and_skip_unset():
  found = flag_checks.problems(
    {
      '--a': (-1, POSITIVE_INT),
      '--b': (None, POSITIVE_INT),
      '--c': (3, POSITIVE_INT),
      '--d': (math.inf, POSITIVE),
    }
  )
  assert found == ['--a=-1: expected a positive integer', '--d=inf: expected a finite number > 0']


@pytest.mark.parametrize(
  'value,of,factor,minimum,problem',
  [
    (120, 3, 10, 2, None),
    (60, 3, 10, 2, None),
    (100, 3, 10, 2, '--s=100: expected a multiple of 30 (10·--t=3), at least 60'),
    (30, 3, 10, 2, '--s=30: expected a multiple of 30 (10·--t=3), at least 60'),
    (20, 20, 1, 1, None),
    (30, 20, 1, 1, '--s=30: expected a multiple of 20 (--t=20)'),
  ],
)
def test_multiple_of(value, of, factor, minimum, problem):
  assert flag_checks.multiple_of('--s', value, '--t', of, factor, minimum) == problem


def test_multiple_of_agrees_with_the_config_rule_of_hmc_samples():
  """Flags and configs accept the same hmc.num_steps for each hmc.thin."""
  for thin in range(1, 8):
    for steps in range(1, 300):
      config = ml_collections.ConfigDict({'hmc': {'num_steps': steps, 'thin': thin}})
      try:
        validation.validate_config(config)
        config_ok = True
      except validation.ConfigError:
        config_ok = False
      problem = flag_checks.multiple_of(
        '--hmc_steps', steps, '--hmc_thin', thin, hmc_samples.NUM_CHUNKS, 2
      )
      assert (problem is None) == config_ok, (steps, thin, problem)


def test_validate_reports_every_problem_on_one_line_and_asks_relations_only_after():
  def never():
    raise AssertionError('a relation was asked although a flag was bad')

  with pytest.raises(flag_checks.FlagError) as error:
    flag_checks.validate({'--a': (0, POSITIVE_INT), '--b': (-2, NON_NEGATIVE_INT)}, [never])
  assert str(error.value) == (
    'Bad flag values: --a=0: expected a positive integer; --b=-2: expected an integer >= 0'
  )
  with pytest.raises(flag_checks.FlagError, match=r'^Bad flag values: --s=5: expected a multiple'):
    flag_checks.validate(
      {'--s': (5, POSITIVE_INT)}, [lambda: None, lambda: flag_checks.multiple_of('--s', 5, 't', 2)]
    )
  flag_checks.validate(
    {'--s': (4, POSITIVE_INT)}, [lambda: flag_checks.multiple_of('--s', 4, 't', 2)]
  )


def test_check_exits_with_status_2_and_one_stderr_line(capsys):
  flag_checks.check({'--a': (1, POSITIVE_INT)})
  with pytest.raises(SystemExit) as exit_:
    flag_checks.check({'--a': (-1, POSITIVE_INT)})
  assert exit_.value.code == 2
  captured = capsys.readouterr()
  assert captured.err == 'Bad flag values: --a=-1: expected a positive integer\n'
  assert captured.out == ''


@pytest.mark.parametrize(
  'flags,line',
  [
    (
      {'max_flow_samples': 4096},
      '--max_flow_samples=4096 without --target_stderr: expected it only with --target_stderr '
      '(without one, --num_flow_samples are drawn)',
    ),
    (
      {'target_stderr': 1e-3, 'max_flow_samples': 4096, 'num_flow_samples': 8192},
      '--num_flow_samples=8192: expected at most the --max_flow_samples=4096 of --target_stderr',
    ),
    (  # np.savez would write S.npz, and --samples=S would then not be found
      {'flow_samples_out': 'S'},
      '--flow_samples_out=S: expected a path ending in .npz',
    ),
  ],
)
def test_free_energy_refuses_a_sample_cap_that_means_nothing(tmp_path, flags, line, capsys):
  with pytest.raises(SystemExit):
    free_energy.check_flags(_free_energy_args(str(tmp_path), **flags))
  assert capsys.readouterr().err == f'Bad flag values: {line}\n'
