"""scripts.size_report: the side-by-side table of flow estimates and the Einstein baseline."""

import json
import math

import pytest

from scripts import size_report


def record(system, n, is_value, lbar_value, stderr=0.001, reasons=(), **extra):
  estimate = dict(
    beta_f_per_particle_stderr=stderr, reliable=not reasons, unreliable_reasons=list(reasons)
  )
  return dict(
    system=system,
    num_particles=n,
    trained_system='mw_cubic_64',
    conditioner='local',
    importance_sampling=dict(estimate, beta_f_per_particle=is_value, ess=0.05),
    lbar=dict(
      estimate,
      beta_f_per_particle=lbar_value,
      overlap=0.2,
      num_hmc_outside_support=0,
      num_hmc_samples=1000,
    ),
    **extra,
  )


def test_table_states_each_estimate_against_the_baseline(tmp_path, capsys):
  paths = []
  for i, rec in enumerate(
    [
      record('mw_cubic_216', 216, -25.08, -25.081, hmc=dict(settings=dict(burn_in=700))),
      record('mw_cubic_64', 64, -25.162, -25.163, reasons=('ESS 1e-4 (2 effective samples)',)),
    ]
  ):
    paths.append(tmp_path / f'fe{i}.json')
    paths[-1].write_text(json.dumps(rec))
  base = tmp_path / 'base.json'
  base.write_text(
    json.dumps(
      dict(system='mw_cubic_64', beta_f_per_particle=-25.1633, beta_f_per_particle_stderr=0.0012)
    )
  )
  out = tmp_path / 'table'
  assert (
    size_report.main(
      [f'--free_energy={paths[0]},{paths[1]}', f'--baselines={base}', f'--out={out}']
    )
    == 0
  )
  text = (tmp_path / 'table.md').read_text()
  first, second = [line for line in text.splitlines() if line.startswith('| mw_cubic')]
  assert first.startswith('| mw_cubic_64 | local (mw_cubic_64) |')  # ordered by size
  sigma = math.hypot(0.001, 0.0012)
  assert f'{-25.162 + 25.1633:+.5f} ({(-25.162 + 25.1633) / sigma:+.1f})' in first
  assert [c.strip() for c in second.split('|')[8:11]] == ['–', '–', '–']  # no baseline at 216
  assert second.split('|')[7].strip() == '0 of 1000 (700)'  # the HMC burn-in, where recorded
  assert first.split('|')[7].strip() == '0 of 1000'
  assert '-25.16200 ± 0.00100 †' in first and 'ESS 1e-4' in text
  assert (tmp_path / 'table.png').stat().st_size > 0
  assert 'mw_cubic_216' in capsys.readouterr().out


def test_rows_without_a_baseline_have_no_deltas():
  (row,) = size_report.rows([record('lj_256', 256, 3.1, 3.1)], {})
  assert row['baseline'] is None and 'lbar_delta' not in row
  with pytest.raises(KeyError):
    row['importance_sampling_delta_sigma']


def with_baseline(rec, value=-25.0, stderr=0.001):
  system = rec['system']
  (row,) = size_report.rows(
    [rec],
    {system: dict(system=system, beta_f_per_particle=value, beta_f_per_particle_stderr=stderr)},
  )
  return row


def test_points_at_one_size_are_spread_about_it_and_never_coincide():
  table = [
    with_baseline(record('mw_cubic_64', 64, -25.0, -25.0)),
    with_baseline(record('mw_hex_64', 64, -25.0, -25.0)),
    with_baseline(record('lj_256', 256, 3.1, 3.1)),
  ]
  x = size_report.positions(table)
  assert len(x) == 6 and len(set(x.values())) == 6
  at_64 = [x['importance_sampling', 0], x['importance_sampling', 1], x['lbar', 0], x['lbar', 1]]
  assert at_64 == sorted(at_64)  # flow IS left of LBAR, each in table order
  assert math.prod(at_64) ** 0.25 == pytest.approx(64.0)
  assert math.log(at_64[1] / at_64[0]) == pytest.approx(size_report.SPREAD)
  assert x['importance_sampling', 2] < 256.0 < x['lbar', 2]


def test_figure_marks_family_by_marker_and_has_a_legend_not_labels(tmp_path):
  table = [
    with_baseline(record('mw_cubic_64', 64, -25.0, -25.0, reasons=('ESS 1e-4',))),
    with_baseline(record('mw_hex_64', 64, -25.0, -25.0)),
  ]
  fig = size_report.plot(table, str(tmp_path / 'f.png'))
  (ax,) = fig.axes
  assert not ax.texts  # no per-point labels to collide
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == ['flow IS', 'LBAR', 'mw_cubic', 'mw_hex', 'unreliable']
  points = [line for line in ax.lines if line.get_marker() in ('o', 's')]
  assert sorted((line.get_marker(), line.get_markerfacecolor() == 'white') for line in points) == [
    ('o', True),  # both estimates of mw_cubic_64 are unreliable: open
    ('o', True),
    ('s', False),
    ('s', False),
  ]


def test_figure_refuses_a_family_without_a_marker(tmp_path):
  table = [with_baseline(record('fcc_argon_32', 32, 1.0, 1.0))]
  with pytest.raises(ValueError, match=r"\['fcc_argon'\]"):
    size_report.plot(table, str(tmp_path / 'f.png'))


def test_a_flow_only_record_has_its_importance_sampling_row_and_no_lbar(tmp_path):
  """scripts.free_energy --flow_only writes lbar and hmc as null: the row shows the flow's
  estimate against the baseline, dashes for LBAR, and the figure draws one point."""
  rec = dict(record('mw_cubic_512', 512, -25.06, -25.06), lbar=None, hmc=None)
  row = with_baseline(rec, value=-25.0615)
  assert row['importance_sampling_delta'] == pytest.approx(0.0015)
  assert row['lbar'] is None and 'lbar_delta' not in row
  line = size_report.markdown([row]).splitlines()[2]
  cells = [c.strip() for c in line.split('|')[1:-1]]
  assert cells[4:7] == ['– (flow only)', '–', '–'] and cells[9] == '–'
  assert cells[8].startswith('+0.00150')
  assert list(size_report.positions([row])) == [('importance_sampling', 0)]
  fig = size_report.plot([row], str(tmp_path / 'one.png'))
  assert len(fig.axes[0].containers) == 1  # one error bar
