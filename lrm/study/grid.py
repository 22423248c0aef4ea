"""What a study runs: its file, its cells, and each cell's budget-matched config.

``Cell`` is the one place a cell's run directory is named:
``<out>/runs/<task>/<mixer>[-w<w>]/<rule>/seed<s>`` (``-w<w>`` only for presets whose field
follows the window; a hybrid is named by its presets joined with ``+``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ml_collections

from lrm.analysis import budget
from lrm.mixers import presets
from lrm.run import build_task
from lrm.tasks import Task

REQUIRED = ("name", "seeds", "rules", "tasks")


@dataclass(frozen=True)
class Cell:
  """One run of the grid: a task, a mixer preset (with its window radius), a rule and a seed."""

  task: str
  mixer: str  # a preset of lrm.mixers.presets, or a hybrid "a+b+c"
  window: int | None  # None for presets whose pattern ignores the window
  rule: str  # a budget rule of lrm.analysis.budget
  seed: int

  @property
  def name(self) -> str:
    """The mixer with its window: ``conv-w4``, ``global``."""
    return self.mixer if self.window is None else f"{self.mixer}-w{self.window}"

  @property
  def key(self) -> str:
    return f"{self.task}/{self.name}/{self.rule}/seed{self.seed}"

  def workdir(self, out: Path | str) -> Path:
    """The cell's ordinary run directory under the study's output folder."""
    return Path(out) / "runs" / self.key

  def to_dict(self) -> dict[str, Any]:
    return asdict(self)


def load_module(path: str | Path) -> Any:
  """A Python file (a study or an experiment config) as a fresh module."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such file: {path}")
  spec = importlib.util.spec_from_file_location(f"_lrm_cfg_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_study(path: str | Path, scale: str) -> dict[str, Any]:
  """``get_study(scale)`` of a study file, with its rules and mixer presets checked."""
  module = load_module(path)
  if not hasattr(module, "get_study"):
    raise ValueError(f"{path} defines no get_study(scale) function")
  study = module.get_study(scale)
  missing = [k for k in REQUIRED if k not in study]
  if missing:
    raise ValueError(f"study {path} lacks {missing}")
  rules = [*study["rules"], *(r for t in study["tasks"].values() for r in t.get("rules", []))]
  for rule in rules:
    if rule not in budget.RULES:
      raise ValueError(f"unknown budget rule '{rule}'; choose from {', '.join(budget.RULES)}")
  for name, t in study["tasks"].items():
    for mixer in [*t["mixers"], t["reference"]["mixer"]]:
      try:
        presets.parts(mixer)
      except ValueError as e:
        raise ValueError(f"study task '{name}': {e}") from None
  return study


def expand(study: Mapping[str, Any]) -> list[Cell]:
  """Every cell, seed-major: a study stopped early has whole seeds done, not whole mixers."""
  cells = []
  for seed in study["seeds"]:
    for rule in study["rules"]:
      for tname, t in study["tasks"].items():
        if rule not in t.get("rules", study["rules"]) or seed not in t.get("seeds", study["seeds"]):
          continue
        for mixer in t["mixers"]:
          for w in t["windows"] if presets.windowed(mixer) else [None]:
            cells.append(Cell(tname, mixer, w, rule, seed))
  return cells


def base_config(
  study: Mapping[str, Any], task_key: str, window: int | None = None
) -> ml_collections.ConfigDict:
  """The task's experiment config with the study's overrides; ``{window}`` in its ``arg`` is
  filled with the cell's window (the reference's for window-free presets)."""
  t = study["tasks"][task_key]
  arg = t.get("arg") or ""
  if "{window}" in arg:
    arg = arg.format(window=window or t["reference"].get("window") or t["windows"][0])
  cfg = load_module(t["config"]).get_config(arg)
  cfg.lock()  # an override may change a field, never add one
  try:
    for key, value in t.get("overrides", {}).items():
      try:
        cfg.update_from_flattened_dict({key: value})
      except KeyError as e:
        hint = [ln for ln in str(e.args[0]).splitlines() if ln.startswith("Did you mean")]
        raise ValueError(
          " ".join([f"study task '{task_key}': override '{key}' names no config field", *hint])
        ) from None
      except TypeError as e:
        raise ValueError(f"study task '{task_key}': override '{key}': {e}") from None
  finally:
    cfg.unlock()
  return cfg


def model_section(
  cfg: ml_collections.ConfigDict, mixer: str, window: int | None, *, heads: int, block: int,
  causal: bool,
) -> dict[str, Any]:  # fmt: skip
  """The config's model section with the tested preset (or hybrid) in place of its own.

  A task config may stack fixed layers before the tested one (a list of specs, e.g. recall's
  short conv): the tested specs replace the last spec and the depth grows with them. With a
  single spec, a hybrid's list is cycled over the depth (at least one layer per part).
  """
  model = cfg.model.to_dict()
  tested = presets.spec_list(mixer, window=window or 1, heads=heads, block=block, causal=causal)
  own = model["mixer"]
  if isinstance(own, list) and len(own) > 1:
    model["mixer"] = [*own[:-1], *tested]
    model["depth"] = model["depth"] + len(tested) - 1
  else:
    model["mixer"] = tested if presets.is_hybrid(mixer) else tested[0]
    model["depth"] = max(model["depth"], len(tested))
  return model


def tested_layers(model: Mapping[str, Any], mixer: str) -> list[int]:
  """0-based blocks built from the tested preset: the last layer of each of its parts."""
  depth, n = int(model["depth"]), len(presets.parts(mixer))
  return list(range(max(0, depth - n), depth))


def kernel_radius(study: Mapping[str, Any], cell: Cell) -> int:
  """Offsets ±radius of the effective kernels measured in a cell: the study's ``content``
  radius on its task, else twice the window (the reference's for window-free presets)."""
  t, content = study["tasks"][cell.task], study.get("content") or {}
  ours = content.get("task") == cell.task
  if ours and "radius" in content:
    return int(content["radius"])
  window = cell.window or (content.get("window") if ours else None) or t["reference"].get("window")
  return 2 * int(window or min(t.get("windows") or [1]))


class Planner:
  """Cell configs of one study, with the tasks and budget targets computed once."""

  def __init__(self, study: Mapping[str, Any]) -> None:
    self.study = study
    self._tasks: dict[str, Task] = {}
    self._targets: dict[tuple[str, str], float] = {}

  def task(self, task_key: str, cfg: ml_collections.ConfigDict) -> Task:
    """The set-up task (its vocabulary and length, which are all a budget needs)."""
    if task_key not in self._tasks:
      self._tasks[task_key] = build_task({"task": cfg.task, "data": cfg.data.to_dict()})
    return self._tasks[task_key]

  def model(
    self, cfg: ml_collections.ConfigDict, task_key: str, mixer: str, window: int | None
  ) -> dict[str, Any]:
    """``model_section`` with the study's heads and block size and the task's causality."""
    t = self.study["tasks"][task_key]
    return model_section(
      cfg,
      mixer,
      window,
      heads=int(self.study.get("heads", 4)),
      block=int(t.get("block", self.study.get("block", 64))),
      causal=self.task(task_key, cfg).causal,
    )

  def target(self, task_key: str, rule: str) -> float:
    """The budget: the cost under ``rule`` of the task's reference model."""
    if (task_key, rule) not in self._targets:
      ref = self.study["tasks"][task_key]["reference"]
      cfg = base_config(self.study, task_key, ref.get("window"))
      model = self.model(cfg, task_key, ref["mixer"], ref.get("window"))
      self._targets[task_key, rule] = budget.measure(self.task(task_key, cfg), model, rule)
    return self._targets[task_key, rule]

  def config(self, cell: Cell) -> tuple[ml_collections.ConfigDict, budget.Match]:
    """The cell's full config, with its model sized to the budget under ``cell.rule``."""
    cfg = base_config(self.study, cell.task, cell.window)
    model = self.model(cfg, cell.task, cell.mixer, cell.window)
    task = self.task(cell.task, cfg)
    match = budget.match(task, model, rule=cell.rule, target=self.target(cell.task, cell.rule))
    cfg.model = ml_collections.ConfigDict(match.model)
    cfg.seed = cell.seed
    return cfg, match
