"""The import graph of lrm/: every module imports, and no two modules import each other.

Imports inside functions count too: a deferred import hides a cycle from Python, not from a
reader (the study and its report once imported each other that way).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str) -> dict[str, Path]:
  """``{dotted name: file}`` for every module of ``package`` under ``root``."""
  out = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
  """Module -> the modules of ``package`` it imports (anywhere in the file)."""
  files = module_names(root, package)
  graph = {}
  for name, path in files.items():
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
          pkg = here[: len(here) - node.level + 1]
          base = ".".join([*pkg, base] if base else pkg)
        found = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
      else:
        continue
      for target in found:
        while target and target not in files:  # lrm.x.func -> lrm.x; jax.numpy -> ''
          target = target.rpartition(".")[0]
        if target and target != name:
          targets.add(target)
    graph[name] = targets
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as ``[a, b, ..., a]``, or None."""
  state: dict[str, int] = {}  # 1 = on the current path, 2 = done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return [*path[path.index(nxt) :], nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_lrm_has_no_import_cycle():
  graph = import_graph(ROOT, "lrm")
  assert "lrm.study.report" in graph and "lrm.run" in graph
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_deferred_import(tmp_path):
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from pkg.sub import b\n")
  (pkg / "sub" / "b.py").write_text("def f():\n  from ..a import g\n")
  assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.sub.b", "pkg.a"]


@pytest.mark.parametrize("name", sorted(module_names(ROOT, "lrm")))
def test_every_module_imports(name):
  importlib.import_module(name)
