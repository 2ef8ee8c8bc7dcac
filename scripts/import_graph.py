"""The project's import graph, drawn by floors: systems <- flows <- experiments <- scripts.

  python -m scripts.import_graph --out=docs/figures/imports.png

Every module of the four packages is a node on the floor of its package; an arrow runs from
an importing module to the module it imports (imports inside functions count). The layout
rule is that arrows only run down a floor or stay on it, and the graph has no cycle;
tests/test_import_floors.py checks both. Prints the module count per floor and any
violation.
"""

import ast
import pathlib

# Bottom to top: a module may import its own floor and the floors below.
FLOORS = ('systems', 'flows', 'experiments', 'scripts')
ROOT = pathlib.Path(__file__).resolve().parent.parent


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  """`flows/local/model.py` -> 'flows.local.model' (a package's __init__ -> the package)."""
  parts = list(path.relative_to(root).with_suffix('').parts)
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  """Module name -> source path, for every .py file under the four packages."""
  return {
    module_name(path, root): path
    for floor in FLOORS
    for path in sorted((root / floor).rglob('*.py'))
  }


def _resolve(name: str, known: dict) -> str | None:
  """The longest known module that `name` (a dotted import target) lies in."""
  while name and name not in known:
    name = name.rpartition('.')[0]
  return name or None


def imports(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """Module -> the project modules it imports (`from a import b` counts a.b if it is a module)."""
  known = modules(root)
  graph = {}
  for name, path in known.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        candidates = [f'{node.module}.{alias.name}' for alias in node.names]
      else:
        continue
      targets.update(t for t in map(lambda c: _resolve(c, known), candidates) if t)
    graph[name] = targets - {name}
  return graph


def floor(module: str) -> int:
  """Index in FLOORS of a module's top-level package."""
  return FLOORS.index(module.split('.')[0])


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
  """(importer, imported) pairs where the imported module sits on a higher floor."""
  return sorted((a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan), each sorted.

  A package's __init__ that re-exports its own modules is not a cycle: the
  package node imports its children, and children import their siblings, never
  the package itself, unless the code does so.
  """
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def draw(graph: dict[str, set[str]], out: str) -> None:
  """Writes a PNG: one row of module labels per floor (bottom: systems), one arrow per import."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = {f: sorted(m for m in graph if floor(m) == i) for i, f in enumerate(FLOORS)}
  width = max(len(r) for r in rows.values())
  position = {}
  for i, members in enumerate(rows.values()):
    for j, m in enumerate(members):
      position[m] = ((j + 0.5) * width / len(members), 2.0 * i)
  fig, ax = plt.subplots(figsize=(max(12, 0.9 * width), 9))
  for a, targets in graph.items():
    for b in targets:
      (x0, y0), (x1, y1) = position[a], position[b]
      colour = 'tab:red' if floor(b) > floor(a) else ('0.75' if y0 == y1 else '0.55')
      ax.annotate(
        '', (x1, y1 + 0.15), (x0, y0 - 0.15), arrowprops=dict(arrowstyle='->', lw=0.4, color=colour)
      )
  for m, (x, y) in position.items():
    ax.text(
      x, y, m.split('.', 1)[-1], ha='center', va='center', rotation=60, fontsize=6,
      bbox=dict(boxstyle='round,pad=0.2', fc='white', ec='0.6', lw=0.5),
    )  # fmt: skip
  for i, f in enumerate(FLOORS):
    ax.text(-0.6, 2.0 * i, f, ha='right', va='center', fontsize=11, weight='bold')
  ax.set_xlim(-2.5, width + 0.5)
  ax.set_ylim(-1, 2 * len(FLOORS) - 1)
  ax.axis('off')
  ax.set_title('Imports by floor (arrows point to the imported module; red would run upward)')
  fig.tight_layout()
  fig.savefig(out, dpi=150)
  plt.close(fig)


def main():
  from absl import app, flags

  out_flag = flags.DEFINE_string('out', None, 'PNG path of the drawing (none: print only).')

  def _main(argv):
    del argv
    graph = imports()
    for i, f in enumerate(FLOORS):
      print(f'floor {i} {f}: {sum(floor(m) == i for m in graph)} modules')
    problems = [f'upward: {a} -> {b}' for a, b in upward_imports(graph)]
    problems += ['cycle: ' + ' -> '.join(c) for c in cycles(graph)]
    print('\n'.join(problems) or 'no upward import, no cycle')
    if out_flag.value:
      draw(graph, out_flag.value)
    return 1 if problems else 0

  app.run(_main)


if __name__ == '__main__':
  main()
