"""What a study's cells ran under: the design (a hash of the study's data) and the code (the
git commit of the checkout). No JAX, so a report can read and print both.

Each cell's ``cell.json`` records ``design`` (``design_hash``) and ``code`` (``code_version``)
when it is trained; REPORT.md prints how many finished cells ran under the design as it is
now, and at which commits (``lines``). A study's design is frozen before its cells run; a
change of its data after that is a new hash, so a report shows it at once.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROSE = ("question", "limits")  # study entries that are words, not design


def design_hash(study: Mapping[str, Any]) -> str:
  """The first 12 hex digits of the SHA-256 of the study's design: every entry of the study
  dict that is data (tasks, mixers, sizes, seeds, rates, comparisons, margins...), in
  canonical JSON; functions (decision rules, checks, report sections) and prose (``question``,
  ``limits``) are left out. Each cell records it (``cell.json``), so a report can show that
  every cell ran under one frozen design; a change of the grid is a new hash."""

  def data(x: Any) -> Any:
    if isinstance(x, Mapping):
      return {
        str(k): data(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0])) if not callable(v)
      }
    if isinstance(x, list | tuple):
      return [data(v) for v in x]
    return x

  design = {k: v for k, v in study.items() if k not in PROSE}
  text = json.dumps(data(design), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def code_version() -> dict[str, Any] | None:
  """The git commit of the lrm checkout that trains a cell, and whether it had uncommitted
  changes to tracked files (None outside a git checkout or without git)."""
  root = Path(__file__).resolve().parents[2]
  try:
    head = subprocess.run(
      ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
    )
    dirty = subprocess.run(
      ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
      capture_output=True, text=True, timeout=10,
    )  # fmt: skip
  except (OSError, subprocess.SubprocessError):
    return None
  if head.returncode != 0:
    return None
  return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def lines(study: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """REPORT.md's provenance paragraph: the design hash of the study as it is now against each
  finished cell's (``rows``: report records with ``design``, ``commit``, ``dirty``), and the
  git commits the cells ran at."""
  if not rows:
    return []
  now = design_hash(study)
  designs = {r.get("design") for r in rows}
  commits = sorted({(r.get("commit") or "unknown")[:7] for r in rows})
  dirty = sum(1 for r in rows if r.get("dirty"))
  version = f"Design {study['version']}" if study.get("version") else "The design"
  same = sum(1 for r in rows if r.get("design") == now)
  line = (
    f"{version}, hash `{now}` (`lrm.study.provenance.design_hash`: the study's data, without"
    f" its prose and functions): {same} of {len(rows)} finished cells ran under it"
  )
  if designs - {now}:
    others = sorted(str(d) for d in designs - {now})
    line += f"; the others under {', '.join(f'`{d}`' for d in others)} (another version)"
  line += f". They ran at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
  line += f" ({dirty} with uncommitted changes)." if dirty else ", with no uncommitted changes."
  return [line, ""]
