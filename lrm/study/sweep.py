"""The learning-rate sweep of a study: read its cells, choose each arm's rate on VALIDATION.

No JAX. A sweep cell is an ordinary run directory; its ``results.json`` holds the validation
metrics of the best checkpoint (``best.validation``) and the test metrics of that checkpoint
(``best.test``). The rate is chosen by the validation value alone (max or min by the task's
``main_mode``); test values are copied next to it for the report and never looked at here. A
diverged cell (``cell.json`` with ``diverged``) counts as the worst. An arm is chosen only
once every rate of its sweep has finished, so a rerun chooses the same rate.

``lr_sweep.json`` (written by ``lrm.study.run``) is a list of ``Arm.to_dict()`` records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "lr_sweep.json"


@dataclass
class Arm:
  """One (task, mixer, window[, size]) sweep: per rate, the validation and test value."""

  task: str
  mixer: str
  window: int | None
  metric: str
  mode: str  # "max" or "min"
  size: str | None = None  # None: the rate serves every size (swept at the middle one)
  validation: dict[float, float] = field(default_factory=dict)  # nan = diverged
  test: dict[float, float] = field(default_factory=dict)  # reported only
  missing: list[float] = field(default_factory=list)  # rates not finished yet
  chosen: float | None = None

  def to_dict(self) -> dict[str, Any]:
    d = asdict(self)
    d["validation"] = {f"{k:g}": v for k, v in self.validation.items()}
    d["test"] = {f"{k:g}": v for k, v in self.test.items()}
    return d


def choose(validation: Mapping[float, float], mode: str) -> float | None:
  """The rate with the best validation value (NaN: diverged, never chosen unless all are);
  ties go to the smaller rate. None for an empty sweep."""
  if mode not in ("max", "min"):
    raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
  if not validation:
    return None
  sign = 1.0 if mode == "max" else -1.0

  def score(lr: float) -> tuple[float, float]:
    v = validation[lr]
    return (-math.inf if v is None or math.isnan(v) else sign * v, -lr)

  return max(validation, key=score)


def _read(path: Path) -> dict[str, Any] | None:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def read_arm(
  workdirs: Mapping[float, Path],
  task: str,
  mixer: str,
  window: int | None,
  mode: str,
  size: str | None = None,
) -> Arm:
  """The sweep of one arm from its cells' run directories (``{lr: workdir}``)."""
  arm = Arm(task, mixer, window, metric="", mode=mode, size=size)
  for lr, wd in sorted(workdirs.items()):
    res = _read(wd / "results.json")
    info = _read(wd / "cell.json") or {}
    if res is not None:
      arm.metric = res["main_metric"]
      arm.validation[lr] = float(res["best"]["validation"].get(arm.metric, math.nan))
      arm.test[lr] = float(res["best"]["test"].get(arm.metric, math.nan))
    elif info.get("diverged"):
      arm.validation[lr] = arm.test[lr] = math.nan
    else:
      arm.missing.append(lr)
  if not arm.missing:
    arm.chosen = choose(arm.validation, mode)
  return arm


def write(arms: list[Arm], out: Path) -> Path:
  path = Path(out) / FILE
  path.write_text(json.dumps([a.to_dict() for a in arms], indent=1) + "\n")
  return path


def rate_key(
  study: Mapping[str, Any], task: str, mixer: str, window: int | None, size: str | None
) -> tuple[str, str, int | None, str | None]:
  """What one chosen rate applies to: ``(task, mixer, window, size)``, with ``size`` None
  unless the study sweeps every size (then one rate serves all sizes)."""
  return (task, mixer, window, size if study.get("sweep_every_size") else None)


def chosen(records: list[dict[str, Any]]) -> dict[tuple, float]:
  """``{(task, mixer, window, size): rate}`` of the finished arms of ``lr_sweep.json``
  (``size`` None where one rate serves every size: ``rate_key``)."""
  return {
    (a["task"], a["mixer"], a["window"], a.get("size")): a["chosen"]
    for a in records
    if a.get("chosen") is not None
  }


def load(out: Path) -> list[dict[str, Any]]:
  """The records of ``<out>/lr_sweep.json`` ([] before a sweep has been read)."""
  return _read(Path(out) / FILE) or []
