"""Extending a learning-rate sweep while its best rate is at the edge of the rates tried.

MAD's protocol sweeps 1e-4, 5e-4 and 1e-3 and goes higher when the top rate wins, since the
best rate may then lie above the grid. A study asks for that with
``lr_extend=dict(factor=2.0, rounds=2)``: once an arm's sweep has finished, an arm whose chosen
rate (on the mean validation over the sweep seeds, ``lrm.study.sweep``) is the highest it has
tried gets one more rate, ``highest * factor`` (3 significant digits). With ``down=True`` an
arm whose chosen rate is the lowest tried also gets ``lowest / factor``. At most ``rounds``
rates are added per arm in all (both directions together); each runs at every sweep seed;
then the other seeds run at the rate finally chosen. ``position`` says where the chosen rate
ended up (interior, or an edge with the rounds exhausted). No JAX.

The added rates live in ``<out>/lr_extend.json`` (a list of ``{task, mixer, window, size,
rates}``), so a rerun or another ``--shard`` lists the same cells: ``grid.sweep_cells(study,
extra)`` appends them to the arm's ``lrs``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "lr_extend.json"
Key = tuple[str, str, "int | None", "str | None"]  # sweep.rate_key: task, mixer, window, size
KEYS = ("factor", "rounds", "down")
EXAMPLE = "e.g. lr_extend=dict(factor=2.0, rounds=2, down=True)"


@dataclass(frozen=True)
class Spec:
  """A study's ``lr_extend``: each added rate is the edge rate times (or, with ``down``,
  divided by) ``factor``; at most ``rounds`` added rates per arm."""

  factor: float = 2.0
  rounds: int = 1
  down: bool = False


def settings(spec: Any) -> Spec | None:
  """The checked ``lr_extend`` of a study (None: no extension); a bad one is a one-line
  ``ValueError`` naming the key and the fix."""
  if not spec:
    return None
  if not isinstance(spec, Mapping):
    raise ValueError(f"lr_extend must be a dict, {EXAMPLE}; got {spec!r}")
  unknown = sorted(set(spec) - set(KEYS))
  if unknown:
    raise ValueError(f"lr_extend has unknown keys {unknown}; use {', '.join(KEYS)} ({EXAMPLE})")
  factor, rounds, down = spec.get("factor", 2.0), spec.get("rounds", 1), spec.get("down", False)
  if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 1.0:
    raise ValueError(
      f"lr_extend factor={factor!r} must be a number above 1 (an added rate is the edge rate "
      f"times or divided by it), {EXAMPLE}"
    )
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
    raise ValueError(
      f"lr_extend rounds={rounds!r} must be an integer >= 0 (the most rates added per arm), "
      f"{EXAMPLE}"
    )
  if not isinstance(down, bool):
    raise ValueError(
      f"lr_extend down={down!r} must be True or False (True: also extend below the lowest rate)"
    )
  return Spec(float(factor), rounds, down)


def load(out: Path | str) -> dict[Key, list[float]]:
  """``{rate_key: added rates}`` of ``<out>/lr_extend.json`` ({} before any extension)."""
  try:
    records = json.loads((Path(out) / FILE).read_text())
  except (OSError, ValueError):
    return {}
  return {(r["task"], r["mixer"], r["window"], r["size"]): list(r["rates"]) for r in records}


def write(out: Path | str, extra: Mapping[Key, Sequence[float]]) -> Path:
  path = Path(out) / FILE
  records = [
    dict(task=k[0], mixer=k[1], window=k[2], size=k[3], rates=list(v)) for k, v in extra.items()
  ]
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(records, indent=1) + "\n")
  tmp.replace(path)  # atomic: two shards may write the same content
  return path


def edge(arm: Mapping[str, Any]) -> str | None:
  """Which end of its tried rates an arm's (an ``lr_sweep.json`` record's) chosen rate is
  at: "low", "high", "both" (a single rate), or None (interior, or not chosen yet)."""
  if arm.get("chosen") is None or not arm.get("validation"):
    return None
  rates, lr = sorted(float(r) for r in arm["validation"]), float(arm["chosen"])
  low, high = lr <= rates[0], lr >= rates[-1]
  return "both" if low and high else "low" if low else "high" if high else None


def _next(spec: Spec | None, arm: Mapping[str, Any], added: Sequence[float]) -> list[float]:
  """The rates one round adds to a finished arm at an edge (upward first), within
  ``rounds``; none that it has tried already."""
  end = edge(arm)
  if spec is None or end is None:
    return []
  rates = sorted(float(r) for r in arm["validation"])
  new = []
  if end in ("high", "both"):
    new.append(float(f"{rates[-1] * spec.factor:.3g}"))
  if spec.down and end in ("low", "both"):
    new.append(float(f"{rates[0] / spec.factor:.3g}"))
  new = [r for r in new if r not in rates and r not in added]
  return new[: max(spec.rounds - len(added), 0)]


def propose(
  study: Mapping[str, Any], arms: Sequence[Mapping[str, Any]], extra: Mapping[Key, list[float]]
) -> dict[Key, list[float]]:
  """``extra`` with one more rate for every finished arm (an ``lr_sweep.json`` record) whose
  chosen rate is the highest it tried (or the lowest, with ``down``), unless it had
  ``rounds`` already."""
  spec = settings(study.get("lr_extend"))
  out = {k: list(v) for k, v in extra.items()}
  for a in arms if spec is not None else []:
    key = (a["task"], a["mixer"], a["window"], a.get("size"))
    new = _next(spec, a, out.get(key, []))
    if new:
      out.setdefault(key, []).extend(new)
  return out


def position(
  study: Mapping[str, Any], arm: Mapping[str, Any], added: Sequence[float]
) -> str | None:
  """Where an arm's chosen rate lies, given the rates ``added`` to it so far: "interior";
  "edge (extending)" while a rate beyond it is still to be tried; "edge (rounds exhausted)" at
  an end the study extends, once its ``rounds`` are spent; "edge" at an end the study does not
  extend (no ``lr_extend``, or the lowest rate without ``down``). None before it is chosen."""
  if arm.get("chosen") is None:
    return None
  end = edge(arm)
  if end is None:
    return "interior"
  spec = settings(study.get("lr_extend"))
  if _next(spec, arm, added):
    return "edge (extending)"
  extended = spec is not None and (end != "low" or spec.down)
  return "edge (rounds exhausted)" if extended and len(added) >= spec.rounds else "edge"
