"""Extending a learning-rate sweep upward while its best rate is the highest one tried.

MAD's protocol sweeps 1e-4, 5e-4 and 1e-3 and goes higher when the top rate wins, since the
best rate may then lie above the grid. A study asks for that with
``lr_extend=dict(factor=2.0, rounds=2)``: once an arm's sweep has finished, an arm whose chosen
rate (on validation, ``lrm.study.sweep``) is the highest it has tried gets one more rate,
``highest * factor`` (3 significant digits), at most ``rounds`` times; then the other seeds
run at the rate finally chosen. No JAX.

The added rates live in ``<out>/lr_extend.json`` (a list of ``{task, mixer, window, size,
rates}``), so a rerun or another ``--shard`` lists the same cells: ``grid.sweep_cells(study,
extra)`` appends them to the arm's ``lrs``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FILE = "lr_extend.json"
Key = tuple[str, str, "int | None", "str | None"]  # sweep.rate_key: task, mixer, window, size


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


def propose(
  study: Mapping[str, Any], arms: Sequence[Mapping[str, Any]], extra: Mapping[Key, list[float]]
) -> dict[Key, list[float]]:
  """``extra`` with one more rate for every finished arm (an ``lr_sweep.json`` record) whose
  chosen rate is the highest it tried, unless it had ``rounds`` already."""
  spec = study.get("lr_extend") or {}
  out = {k: list(v) for k, v in extra.items()}
  if not spec:
    return out
  factor, rounds = float(spec.get("factor", 2.0)), int(spec.get("rounds", 1))
  if factor <= 1.0:
    raise ValueError(f"lr_extend factor={factor} must be above 1 (the sweep goes upward)")
  for a in arms:
    if a.get("chosen") is None:
      continue
    key = (a["task"], a["mixer"], a["window"], a.get("size"))
    top = max(float(lr) for lr in a["validation"])
    if float(a["chosen"]) >= top and len(out.get(key, [])) < rounds:
      out.setdefault(key, []).append(float(f"{top * factor:.3g}"))
  return out
