"""The package's shape: no import cycle, no benchmark code in it, and mixers named only inside
``lrm/mixers/``.

Files are as long as their concept needs (one mixer with its kernel and cache, one trainer);
what a length cap was meant to protect is checked instead. Outside ``lrm/mixers/`` a mixer is
named only by the base config's default (``lrm/config.py``); the library and the scripts
reach every mixer through the registry and the presets. Study files and benchmarks that
compare particular mixers (``experiments/``, ``benchmarks/``) name them as data.
"""

from __future__ import annotations

import ast

from conftest import REPO

from lrm import mixers
from lrm.mixers import presets

ALLOWED = {"lrm/config.py"}  # the base config's default mixer


def python_files(*roots: str):
  for root in roots:
    yield from sorted((REPO / root).rglob("*.py"))


def module_name(path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path, known: set[str]) -> set[str]:
  """The lrm modules ``path`` imports when it is imported (module level, not inside functions:
  an import inside a function runs later and cannot close a cycle at import time)."""
  out = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name in known}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        if sub in known:
          out.add(sub)
        elif node.module in known:
          out.add(node.module)
  return out


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt) :] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_cycle_in_lrm():
  files = list(python_files("lrm"))
  known = {module_name(p) for p in files}
  graph = {module_name(p): module_imports(p, known) - {module_name(p)} for p in files}
  assert import_cycle(graph) is None, f"import cycle: {' -> '.join(import_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle_and_ignores_a_diamond():
  assert import_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None
  assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_benchmark_code_in_the_package():
  """Timing harnesses live in ``benchmarks/`` (not installed); the package never imports it."""
  found = {}
  for p in python_files("lrm"):
    rel = str(p.relative_to(REPO))
    tree = ast.parse(p.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    if "bench" in p.stem or any(n.split(".")[0] == "benchmarks" for n in names):
      found[rel] = sorted(n for n in names if n.split(".")[0] == "benchmarks")
  assert not found, f"benchmark code in lrm/: {found}"


def mixer_literals(source: str, names: set[str]) -> list[tuple[int, str]]:
  """String constants that are a mixer name or a ``+`` stack of them, with their lines."""
  return [
    (node.lineno, node.value)
    for node in ast.walk(ast.parse(source))
    if isinstance(node, ast.Constant)
    and isinstance(node.value, str)
    and all(part in names for part in node.value.split("+"))
  ]


def test_mixers_are_named_only_inside_lrm_mixers():
  names = set(presets.names()) | set(mixers.names())
  found = {}
  for p in python_files("lrm", "scripts"):
    rel = str(p.relative_to(REPO))
    if rel.startswith("lrm/mixers/") or rel in ALLOWED:
      continue
    if hits := mixer_literals(p.read_text(), names):
      found[rel] = hits
  assert not found, f"mixer names outside lrm/mixers/: {found}"


def test_the_scan_finds_a_named_mixer_and_a_stack():
  src = 'a = "local"\nb = "conv+conv+global"\nc = "locally"\nd = f"{a}"\n'
  assert mixer_literals(src, {"local", "conv", "global"}) == [
    (1, "local"),
    (2, "conv+conv+global"),
  ]
