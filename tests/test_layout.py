"""The package's shape: small modules, and mixers named only inside ``lrm/mixers/``.

Outside ``lrm/mixers/`` a mixer is named only by the base config's default (``lrm/config.py``);
the library and the scripts reach every mixer through the registry and the presets. Study
files and benchmarks that compare particular mixers (``experiments/``, ``benchmarks/``) name
them as data.
"""

from __future__ import annotations

import ast

from conftest import REPO

from lrm import mixers
from lrm.mixers import presets

MAX_LINES = 350
ALLOWED = {"lrm/config.py"}  # the base config's default mixer


def python_files(*roots: str):
  for root in roots:
    yield from sorted((REPO / root).rglob("*.py"))


def test_no_module_in_lrm_is_longer_than_one_sitting():
  long = {
    str(p.relative_to(REPO)): n
    for p in python_files("lrm")
    if (n := len(p.read_text().splitlines())) > MAX_LINES
  }
  assert not long, f"modules over {MAX_LINES} lines: {long}"


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
