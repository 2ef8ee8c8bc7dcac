"""scripts.is_coverage: chunks of stored flow samples against a reference, by hand."""

import json

import numpy as np
import pytest

from scripts import einstein_coverage, is_coverage
from systems import get_system

SYSTEM = 'mw_cubic_8'


def _write_samples(path, log_w: np.ndarray, system: str = SYSTEM, seed: int = 0, **extra) -> None:
  """Samples whose ln w = −βU − ln q is log_w (ln q = 0), drawn from run W with `seed`."""
  beta = get_system(system).beta
  fields = dict(system=system, beta=beta, workdir='W', seed=seed) | extra
  np.savez(path, log_q=np.zeros_like(log_w), energy=-log_w / beta, **fields)


def _write_reference(path, log_z: float, stderr: float, system: str = SYSTEM, reliable=True):
  lbar = dict(log_z=log_z, log_z_stderr=stderr, reliable=reliable, unreliable_reasons=[])
  path.write_text(json.dumps(dict(system=system, lbar=lbar)))


def test_equal_weights_give_exact_estimates_and_coverage(tmp_path):
  """Equal weights c: every chunk's ln Z is c with no error and n effective samples, so
  z = (c − ln Z_ref)/σ_ref exactly: here −1.5, inside 2σ and outside 1σ, RMS 1.5. Two
  files are joined in order; chunks of 128 (8, reliable) and 64 (16, refused: 64 < 100
  effective samples) are cut."""
  c = 3.25
  for seed, name in enumerate('ab'):
    _write_samples(tmp_path / f'{name}.npz', np.full(512, c), seed=seed)
  _write_reference(tmp_path / 'ref.json', c + 0.075, 0.05)
  out = tmp_path / 'c.json'
  samples = f'--samples={tmp_path / "a.npz"},{tmp_path / "b.npz"}'
  args = [samples, f'--reference={tmp_path / "ref.json"}', f'--out={out}', '--chunk_sizes=128,64']
  assert is_coverage.main(args) == 0
  record = json.loads(out.read_text())
  assert record['num_samples'] == 1024
  sizes = [r['size'] for r in record['chunks']]
  assert sizes == [64] * 16 + [128] * 8
  for row in record['chunks']:
    assert row['log_z'] == pytest.approx(c, abs=1e-12)
    assert row['effective_samples'] == pytest.approx(row['size'])
    assert row['lognormal_effective_samples'] == pytest.approx(row['size'])  # Var ln w = 0
    assert row['z'] == pytest.approx(-1.5, abs=1e-9)
    assert row['reliable'] == (row['size'] >= 100)
    assert row['reverse_kl'] == pytest.approx(0.075, abs=1e-12)  # ln Z_ref − E_q[ln w]
  table = {r['selection']: r for r in record['table']}
  assert table['all']['chunks'] == 24 and table['judged reliable']['chunks'] == 8
  assert table['all']['coverage_1sigma'] == 0 and table['all']['coverage_2sigma'] == 1
  assert table['all']['rms_z'] == pytest.approx(1.5) and table['all']['mean_z'] == pytest.approx(
    -1.5
  )
  assert record['whole']['z'] == pytest.approx(-1.5, abs=1e-9)
  # --combine: the chunks of two outputs in one table (written into a new directory).
  other = tmp_path / 'c2.json'
  assert is_coverage.main([*args[:3], f'--out={other}', '--chunk_sizes=128,64']) == 0
  joined = tmp_path / 'new' / 'joined.json'
  assert is_coverage.main([f'--combine={out},{other}', f'--out={joined}']) == 0
  both = json.loads(joined.read_text())
  assert len(both['pools']) == 2 and len(both['chunks']) == 48
  assert {r['pool'] for r in both['chunks']} == {0, 1}
  assert both['table'][0]['chunks'] == 48 and both['table'][0]['rms_z'] == pytest.approx(1.5)


def test_heavy_tailed_weights_are_judged_and_covered_as_the_rule_says(tmp_path):
  """Lognormal weights, ln w ~ N(0, s²), have ln Z = s²/2 exactly. With s = 0.5 the
  chunks of 512 are all reliable and their 2σ intervals cover the truth about 95 %
  of the time; with s = 3 the n·ESS rule refuses most of them, the spread rule all,
  and the mean z of the chunks is negative: the unsampled tail makes ln Z too low."""
  rng = np.random.default_rng(0)
  results = {}
  for s in (0.5, 3.0):
    _write_samples(tmp_path / 's.npz', rng.normal(0.0, s, 48 * 512))
    _write_reference(tmp_path / 'ref.json', s * s / 2, 1e-6)
    out = tmp_path / 'c.json'
    args = [f'--samples={tmp_path / "s.npz"}', f'--reference={tmp_path / "ref.json"}']
    assert is_coverage.main([*args, f'--out={out}', '--chunk_sizes=512']) == 0
    results[s] = {r['selection']: r for r in json.loads(out.read_text())['table']}
  light, heavy = results[0.5], results[3.0]
  assert light['judged reliable']['chunks'] == light['all']['chunks'] == 48
  assert 0.85 <= light['all']['coverage_2sigma'] <= 1.0 and 0.7 < light['all']['rms_z'] < 1.4
  assert heavy['n·ESS ≥ 100']['chunks'] < 12 and heavy['all']['mean_z'] < -1
  assert heavy['judged reliable']['chunks'] == 0  # 512·exp(−9) < 1 by the spread


@pytest.mark.parametrize(
  'case, message',
  [
    ('mixed systems', r"mix systems \['lj_32', 'mw_cubic_8'\]"),
    ('reference of another system', r"a record of 'lj_32': expected one of 'mw_cubic_8'"),
    ('reference without lbar', 'has no lbar section'),
    ('not a samples file', r"lacks \['beta', 'energy', 'log_q', 'seed', 'system'\]"),
    ('combine a samples file', 'is not an output of scripts.is_coverage'),
    ('combine one output twice', r"names \['.*c.json'\] more than once"),
    ('one file twice', r"--samples names \['.*a.npz'\] more than once"),
    ('one run and seed twice', 'were both drawn from run W with seed 0'),
    ('another beta', r'has beta=1.0: expected 2.516'),
    ('unreliable reference', 'its LBAR is judged unreliable'),
  ],
)
def test_bad_inputs_are_named(tmp_path, case, message):
  _write_samples(tmp_path / 'a.npz', np.zeros(256))
  _write_samples(tmp_path / 'lj.npz', np.zeros(256), system='lj_32', seed=1)
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  _write_reference(tmp_path / 'ref.json', 0.0, 0.1)
  samples, reference = tmp_path / 'a.npz', tmp_path / 'ref.json'
  if case == 'mixed systems':
    samples = f'{samples},{tmp_path / "lj.npz"}'
  elif case == 'reference of another system':
    _write_reference(reference, 0.0, 0.1, system='lj_32')
  elif case == 'reference without lbar':
    reference.write_text(json.dumps(dict(system=SYSTEM, lbar=None)))
  elif case == 'not a samples file':
    samples = tmp_path / 'other.npz'
  elif case == 'one file twice':
    samples = f'{samples},{samples}'
  elif case == 'one run and seed twice':
    _write_samples(tmp_path / 'b.npz', np.zeros(256))
    samples = f'{samples},{tmp_path / "b.npz"}'
  elif case == 'another beta':
    _write_samples(samples, np.zeros(256), beta=1.0)
  elif case == 'unreliable reference':
    _write_reference(reference, 0.0, 0.1, reliable=False)
  out = tmp_path / 'c.json'
  args = [f'--samples={samples}', f'--reference={reference}', f'--out={out}']
  if case == 'combine a samples file':
    args = [f'--combine={reference}', f'--out={out}']
  elif case == 'combine one output twice':
    out.write_text('{}')
    args = [f'--combine={out},{out}', f'--out={tmp_path / "d.json"}']
  with pytest.raises(ValueError, match=message):
    is_coverage.main(args)


def test_bad_flags_exit_with_the_flag_named(tmp_path, capsys):
  _write_samples(tmp_path / 'a.npz', np.zeros(256))
  _write_reference(tmp_path / 'ref.json', 0.0, 0.1)
  samples, reference = f'--samples={tmp_path / "a.npz"}', f'--reference={tmp_path / "ref.json"}'
  for flags, expected in (
    ([samples, reference, '--chunk_sizes=1,8'], '--chunk_sizes=1,8: expected integers >= 2'),
    ([samples, reference, '--chunk_sizes=x'], 'expected integers'),
    ([samples, reference, '--chunk_sizes=64,512'], '[512] more than the 256 samples'),
    ([samples], 'expected --samples and --reference'),
    ([samples, '--combine=c.json'], '--combine with --samples or --reference'),
  ):
    with pytest.raises(SystemExit):
      is_coverage.main([*flags, '--out=c.json'])
    assert expected in capsys.readouterr().err


def test_interval_coverage_by_hand():
  z = np.array([0.5, -1.5, 2.5, -0.2])
  assert einstein_coverage.interval_coverage(z) == dict(
    coverage_1sigma=0.5, coverage_2sigma=0.75, rms_z=pytest.approx(np.sqrt(8.79 / 4))
  )
  assert all(np.isnan(v) for v in einstein_coverage.interval_coverage(np.array([])).values())
