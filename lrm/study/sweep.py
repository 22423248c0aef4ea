"""The learning-rate sweep of a study: read its cells, choose each arm's rate on VALIDATION.

No JAX. A sweep cell is an ordinary run directory; its ``results.json`` holds the validation
metrics of the best checkpoint (``best.validation``) and the test metrics of that checkpoint
(``best.test``). Every rate runs at each of the study's sweep seeds (``sweep_seeds``, default
the first seed: ``grid.sweep_seeds``); the rate is chosen by the MEAN validation value over
those seeds alone (max or min by the task's ``main_mode``); test values are copied next to it
for the report and never looked at here. A diverged cell (``cell.json`` with ``diverged``)
counts as the worst: its rate's mean is NaN. An arm is chosen only once every cell of its
sweep (every rate at every sweep seed) has finished, so a rerun chooses the same rate.

``lr_sweep.json`` (written by ``lrm.study.run``) is a list of ``Arm.to_dict()`` records:
``validation`` and ``test`` hold the mean per rate, ``validation_per_seed`` and
``test_per_seed`` each seed's value, and ``position`` / ``edge`` where the chosen rate lies
(``lrm.study.extend.position``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "lr_sweep.json"
PerSeed = dict[float, dict[int, float]]  # {rate: {seed: value}}


@dataclass
class Arm:
  """One (task, mixer, window[, size]) sweep: per rate, the validation and test value (the
  mean over the sweep seeds, and each seed's)."""

  task: str
  mixer: str
  window: int | None
  metric: str
  mode: str  # "max" or "min"
  size: str | None = None  # None: the rate serves every size (swept at the middle one)
  validation: dict[float, float] = field(default_factory=dict)  # mean; nan = diverged
  test: dict[float, float] = field(default_factory=dict)  # reported only
  missing: list[float] = field(default_factory=list)  # rates with a cell not finished yet
  chosen: float | None = None
  seeds: list[int] = field(default_factory=list)  # the sweep seeds
  validation_per_seed: PerSeed = field(default_factory=dict)
  test_per_seed: PerSeed = field(default_factory=dict)
  position: str | None = None  # "interior", "edge", ...: lrm.study.extend.position
  edge: str | None = None  # "low", "high" or "both" (one rate): lrm.study.extend.edge

  def to_dict(self) -> dict[str, Any]:
    d = asdict(self)
    for name in ("validation", "test"):
      d[name] = {f"{k:g}": v for k, v in getattr(self, name).items()}
    for name in ("validation_per_seed", "test_per_seed"):
      per = getattr(self, name)
      d[name] = {f"{k:g}": {str(s): v for s, v in by.items()} for k, by in per.items()}
    return d


def sweep_seeds(study: Mapping[str, Any]) -> list[int]:
  """The seeds every swept rate runs at: ``sweep_seeds``, else the first seed."""
  return list(study.get("sweep_seeds") or study["seeds"][:1])


def mean(values: Mapping[int, float]) -> float:
  """The mean over seeds; NaN if any seed diverged (NaN) or there is none."""
  vals = [math.nan if v is None else float(v) for v in values.values()]
  return sum(vals) / len(vals) if vals else math.nan


def means(per_seed: Mapping[float, Mapping[int, float]], seeds: list[int]) -> dict[float, float]:
  """``{rate: mean over seeds}`` of the rates that have a value at every one of ``seeds``."""
  return {
    lr: mean({s: by[s] for s in seeds})
    for lr, by in per_seed.items()
    if all(s in by for s in seeds)
  }


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
  workdirs: Mapping[float, Path | Mapping[int, Path]],
  task: str,
  mixer: str,
  window: int | None,
  mode: str,
  size: str | None = None,
) -> Arm:
  """The sweep of one arm from its cells' run directories: ``{lr: {seed: workdir}}`` (a bare
  ``{lr: workdir}`` is one cell per rate, recorded as seed 0). The rate is chosen on the mean
  validation value over the seeds, once no cell is missing."""
  arm = Arm(task, mixer, window, metric="", mode=mode, size=size)
  seeds: set[int] = set()
  for lr, cells in sorted(workdirs.items()):
    by_seed = cells if isinstance(cells, Mapping) else {0: cells}
    seeds |= set(by_seed)
    for seed, wd in sorted(by_seed.items()):
      res = _read(Path(wd) / "results.json")
      info = _read(Path(wd) / "cell.json") or {}
      if res is not None:
        arm.metric = res["main_metric"]
        val = float(res["best"]["validation"].get(arm.metric, math.nan))
        test = float(res["best"]["test"].get(arm.metric, math.nan))
      elif info.get("diverged"):
        val = test = math.nan
      else:
        continue
      arm.validation_per_seed.setdefault(lr, {})[seed] = val
      arm.test_per_seed.setdefault(lr, {})[seed] = test
  arm.seeds = sorted(seeds)
  arm.validation = means(arm.validation_per_seed, arm.seeds)
  arm.test = {lr: mean(arm.test_per_seed[lr]) for lr in arm.validation}
  arm.missing = [lr for lr in sorted(workdirs) if lr not in arm.validation]
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
