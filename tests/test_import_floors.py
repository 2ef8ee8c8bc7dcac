"""The layout rule: imports run down the floors systems <- flows <- experiments <- scripts,
never up, and the import graph has no cycle (scripts.import_graph draws it)."""

import pathlib
import textwrap

from scripts import import_graph


def test_no_import_runs_upward_and_none_goes_round():
  graph = import_graph.imports()
  assert {m.split('.')[0] for m in graph} == set(import_graph.FLOORS)
  assert import_graph.upward_imports(graph) == []
  assert import_graph.cycles(graph) == []


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_an_upward_import_and_a_cycle_are_found(tmp_path):
  _write(
    tmp_path,
    {
      'systems/__init__.py': '',
      'systems/a.py': 'def f():\n  from flows import b  # inside a function: still counts\n',
      'flows/__init__.py': '',
      'flows/b.py': 'from flows.c import g\n',
      'flows/c.py': 'import flows.b\ng = 1\n',
      'experiments/__init__.py': '',
      'scripts/__init__.py': 'from systems.a import f\n',
    },
  )
  graph = import_graph.imports(tmp_path)
  assert graph['systems.a'] == {'flows.b'}
  assert import_graph.upward_imports(graph) == [('systems.a', 'flows.b')]
  assert import_graph.cycles(graph) == [['flows.b', 'flows.c']]
  assert import_graph.floor('scripts') == 3 and graph['scripts'] == {'systems.a'}
