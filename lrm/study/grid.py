"""What a study runs: its file, its cells, and each cell's budget-matched config.

``Cell`` is the one place a cell's run directory is named:
``<out>/runs/<task>/<mixer>[-w<w>]/<rule>[/<size>][/lr<lr>]/seed<s>`` (``-w<w>`` only for
presets whose field follows the window; a hybrid is named by its presets joined with ``+``;
``<size>`` and ``lr<lr>`` only in studies with ``sizes`` and ``lrs``).

Sizes: ``sizes={"s": 32, "m": 48, "l": 64}`` names the reference model's width at each size;
every mixer is sized to the reference's cost at that width under each rule (``rule_sizes``
may restrict a rule to some sizes). Learning rates: ``lrs=[...]`` are swept at the middle
size, the first rule and the first seed (``sweep_cells``); the rate with the best
*validation* metric (``lrm.study.sweep``) is then used for every size and seed (``expand``).
With ``sweep_seeds=[0, 1]`` every rate runs at each of those seeds (a subset of ``seeds``) and
the rate is chosen on their mean validation metric; the chosen rate's cells at those seeds are
the final cells of those seeds. With ``sweep_every_size=True`` the sweep runs at every size and
each size uses its own rate (wider models often need smaller rates);
``lrm.study.sweep.rate_key`` names what one choice applies to. ``lr_extend`` adds rates beyond
an edge winner (``lrm.study.extend``).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ml_collections

from lrm.analysis import budget
from lrm.config_cli import file_error
from lrm.mixers import presets
from lrm.run import build_task
from lrm.study import extend, sweep
from lrm.tasks import Task

REQUIRED = ("name", "seeds", "rules", "tasks")
SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")  # a folder name: no '/', no '..'


@dataclass(frozen=True)
class Cell:
  """One run of the grid: a task, a mixer preset (with its window radius), a rule and a seed."""

  task: str
  mixer: str  # a preset of lrm.mixers.presets, or a hybrid "a+b+c"
  window: int | None  # None for presets whose pattern ignores the window
  rule: str  # a budget rule of lrm.analysis.budget
  seed: int
  size: str | None = None  # a name of the study's ``sizes``
  lr: float | None = None  # the learning rate (None: the task config's)

  @property
  def name(self) -> str:
    """The mixer with its window: ``conv-w4``, ``global``."""
    return self.mixer if self.window is None else f"{self.mixer}-w{self.window}"

  @property
  def key(self) -> str:
    size = "" if self.size is None else f"/{self.size}"
    lr = "" if self.lr is None else f"/lr{self.lr:g}"
    return f"{self.task}/{self.name}/{self.rule}{size}{lr}/seed{self.seed}"

  @property
  def arm(self) -> tuple[str, str, int | None]:
    """(task, mixer, window): what one learning-rate sweep tunes."""
    return (self.task, self.mixer, self.window)

  def workdir(self, out: Path | str) -> Path:
    """The cell's ordinary run directory under the study's output folder."""
    return Path(out) / "runs" / self.key

  def to_dict(self) -> dict[str, Any]:
    return asdict(self)


def load_module(path: str | Path) -> Any:
  """A Python file (a study or an experiment config) as a fresh module; a file that does not
  import (a syntax error, an exception at import) is a one-line ``ValueError`` naming it."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such file: {path}")
  spec = importlib.util.spec_from_file_location(f"_lrm_cfg_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - whatever the file raises is reported in one line
    raise ValueError(f"cannot load {path}: {file_error(e)}") from None
  return module


def load_study(path: str | Path, scale: str) -> dict[str, Any]:
  """``get_study(scale)`` of a study file, with its rules and mixer presets checked."""
  module = load_module(path)
  if not callable(getattr(module, "get_study", None)):
    raise ValueError(
      f"{path} defines no get_study(scale) function; add one (see experiments/studies/)"
    )
  try:
    study = module.get_study(scale)
  except Exception as e:  # noqa: BLE001
    raise ValueError(f"{path}: get_study({scale!r}) failed: {file_error(e)}") from None
  if not isinstance(study, Mapping):
    raise ValueError(f"{path}: get_study({scale!r}) returned {type(study).__name__}, not a dict")
  missing = [k for k in REQUIRED if k not in study]
  if missing:
    raise ValueError(f"study {path} lacks {missing}")
  rules = [*study["rules"], *(r for t in study["tasks"].values() for r in t.get("rules", []))]
  for rule in rules:
    if rule not in budget.RULES:
      raise ValueError(f"unknown budget rule '{rule}'; choose from {', '.join(budget.RULES)}")
  seeds = study["seeds"]
  if not seeds or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
    raise ValueError(f"study {path}: seeds must be a non-empty list of integers >= 0, got {seeds}")
  for name in study["tasks"]:
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
      raise ValueError(
        f"study {path}: task name {name!r} must be letters, digits, '.', '_', '-' or '+' (it "
        f"names a folder under --out)"
      )
    bad = {k: v for k, v in sizes(study, name).items() if not (isinstance(v, int) and v > 0)}
    if bad:
      raise ValueError(f"study task '{name}': sizes must be positive widths, got {bad}")
  for name, t in study["tasks"].items():
    for mixer in [*t["mixers"], t["reference"]["mixer"]]:
      try:
        presets.parts(mixer)
      except ValueError as e:
        raise ValueError(f"study task '{name}': {e}") from None
  try:
    check_sweep(study)
    check_more_seeds(study)
  except ValueError as e:
    raise ValueError(f"study {path}: {e}") from None
  return study


def _rates_ok(lrs: Any) -> bool:
  return isinstance(lrs, list | tuple) and all(
    isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in lrs
  )


def check_sweep(study: Mapping[str, Any]) -> None:
  """The learning-rate keys (``lrs``, ``sweep_seeds``, ``lr_extend``): a bad one is a
  one-line ``ValueError`` naming the key and the fix."""
  lrs = study.get("lrs")
  if lrs is not None and not _rates_ok(lrs):
    raise ValueError(
      f"lrs must be a list of positive learning rates, e.g. [1e-3, 3e-3]; got {lrs!r}"
    )
  for name, t in study["tasks"].items():
    if t.get("lrs") is not None and not _rates_ok(t["lrs"]):
      raise ValueError(
        f"task '{name}': lrs must be a list of positive learning rates, got {t['lrs']!r}"
      )
  seeds, chosen = list(study["seeds"]), study.get("sweep_seeds")
  if chosen is not None:
    if not lrs:
      raise ValueError("sweep_seeds needs lrs (the rates to sweep); add lrs=[...] or remove it")
    if not (
      isinstance(chosen, list | tuple)
      and chosen
      and all(isinstance(s, int) and not isinstance(s, bool) for s in chosen)
    ):
      raise ValueError(
        f"sweep_seeds must be a non-empty list of seeds, e.g. [0, 1]; got {chosen!r}"
      )
    if len(set(chosen)) < len(chosen):
      raise ValueError(f"sweep_seeds={list(chosen)} repeats a seed; list each seed once")
    extra = [s for s in chosen if s not in seeds]
    if extra:
      raise ValueError(
        f"sweep_seeds={list(chosen)} must be among seeds={seeds}; remove {extra} from "
        f"sweep_seeds or add them to seeds"
      )
  if study.get("lr_extend"):
    if not lrs:
      raise ValueError("lr_extend needs lrs (the rates it extends); add lrs=[...] or remove it")
    extend.settings(study["lr_extend"])


sweep_seeds = sweep.sweep_seeds  # the seeds every swept rate runs at


def all_seeds(study: Mapping[str, Any]) -> list[int]:
  """Every seed some cell runs at: the study's, then those its tasks' ``more_seeds`` add."""
  extra = [s for t in study["tasks"].values() for m in t.get("more_seeds", []) for s in m["seeds"]]
  return list(dict.fromkeys([*study["seeds"], *extra]))


def runs_seed(
  study: Mapping[str, Any], task: str, mixer: str, size: str | None, rule: str, seed: int
) -> bool:
  """Whether a cell of ``mixer`` at ``size`` under ``rule`` runs at ``seed``: the task's
  ``seeds`` (default the study's) for every arm, and each ``more_seeds`` entry's ``seeds``
  for its ``mixers`` at its ``sizes`` (default every size) under the first rule."""
  t = study["tasks"][task]
  if seed in t.get("seeds", study["seeds"]):
    return True
  return rule == study["rules"][0] and any(
    seed in m["seeds"] and mixer in m["mixers"] and (size in m.get("sizes", [size]))
    for m in t.get("more_seeds", [])
  )


def check_more_seeds(study: Mapping[str, Any]) -> None:
  """A task's ``more_seeds`` (a list of ``dict(mixers=[...], seeds=[...], sizes=[...])``: more
  seeds for some arms, e.g. the headline comparisons): a bad entry is a one-line error."""
  example = 'e.g. more_seeds=[dict(mixers=["local"], seeds=[3, 4], sizes=["64"])]'
  for name, t in study["tasks"].items():
    entries = t.get("more_seeds", [])
    if not isinstance(entries, list | tuple):
      raise ValueError(f"task '{name}': more_seeds must be a list of dicts, {example}")
    for m in entries:
      if not isinstance(m, Mapping) or set(m) - {"mixers", "seeds", "sizes"} or not m.get("seeds"):
        raise ValueError(f"task '{name}': bad more_seeds entry {m!r}; {example}")
      if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in m["seeds"]):
        raise ValueError(f"task '{name}': more_seeds seeds must be integers >= 0, got {m['seeds']}")
      unknown = [x for x in m.get("mixers", []) if x not in t["mixers"]]
      if unknown or not m.get("mixers"):
        raise ValueError(
          f"task '{name}': more_seeds mixers {unknown or m.get('mixers')} are not among the "
          f"task's mixers {t['mixers']}"
        )
      bad = [z for z in m.get("sizes", []) if z not in sizes(study, name)]
      if bad:
        raise ValueError(f"task '{name}': more_seeds sizes {bad} are not among its sizes")


def sizes(study: Mapping[str, Any], task: str) -> dict[str, int]:
  """``{size name: reference width}`` of a task (``{}``: the config's own width)."""
  return dict(study["tasks"][task].get("sizes", study.get("sizes") or {}))


def middle_size(study: Mapping[str, Any], task: str) -> str | None:
  """The size where learning rates are swept: the middle one (None without sizes)."""
  names = list(sizes(study, task))
  return names[len(names) // 2] if names else None


def sweep_sizes(study: Mapping[str, Any], task: str) -> list[str | None]:
  """The sizes where a task's rates are swept: every one with ``sweep_every_size``, else the
  middle one."""
  if study.get("sweep_every_size"):
    return list(sizes(study, task)) or [None]
  return [middle_size(study, task)]


def arms(study: Mapping[str, Any]) -> list[tuple[str, str, int | None]]:
  """Every (task, mixer, window) of the study."""
  return [
    (tname, mixer, w)
    for tname, t in study["tasks"].items()
    for mixer in t["mixers"]
    for w in (t["windows"] if presets.windowed(mixer) else [None])
  ]


def sweep_cells(
  study: Mapping[str, Any], extra: Mapping[tuple, list[float]] | None = None
) -> list[Cell]:
  """The learning-rate sweep: every rate of ``lrs`` per arm, at the middle size (or every
  size: ``sweep_sizes``), the first rule and each sweep seed (``sweep_seeds``; [] for a study
  without ``lrs``); ``extra`` (``{rate_key: rates}``, ``lrm.study.extend``) adds rates to some
  arms, at every sweep seed too."""
  if not study.get("lrs"):
    return []
  seeds, rule = sweep_seeds(study), study["rules"][0]
  extra = extra or {}
  return [
    Cell(task, mixer, w, rule, seed, size, float(lr))
    for task, mixer, w in arms(study)
    for size in sweep_sizes(study, task)
    for lr in [
      *study["tasks"][task].get("lrs", study["lrs"]),
      *extra.get(sweep.rate_key(study, task, mixer, w, size), []),
    ]
    for seed in seeds
  ]


def expand(
  study: Mapping[str, Any],
  chosen: Mapping[tuple, float] | None = None,
  extra: Mapping[tuple, list[float]] | None = None,
) -> list[Cell]:
  """The sweep's cells (with the ``extra`` rates of ``sweep_cells``), then every other cell,
  seed-major (a study stopped early has whole seeds done, not whole mixers). With ``lrs``, a
  cell appears once ``chosen`` (``{rate_key: rate}``, from ``lrm.study.sweep.chosen``) holds
  its rate; a cell that is also a sweep cell is listed once (so the chosen rate's sweep cells
  are the final cells of the sweep seeds)."""
  cells, seen = [], set()
  for c in sweep_cells(study, extra):
    cells.append(c)
    seen.add(c.key)
  swept = bool(study.get("lrs"))
  for seed in all_seeds(study):
    for rule in study["rules"]:
      for tname, t in study["tasks"].items():
        if rule not in t.get("rules", study["rules"]):
          continue
        allowed = (study.get("rule_sizes") or {}).get(rule)
        names = [n for n in sizes(study, tname) if allowed is None or n in allowed] or [None]
        for task, mixer, w in [a for a in arms(study) if a[0] == tname]:
          for size in names:
            if not runs_seed(study, tname, mixer, size, rule, seed):
              continue
            lr = (chosen or {}).get(sweep.rate_key(study, task, mixer, w, size)) if swept else None
            if swept and lr is None:
              continue  # waits for its sweep
            cell = Cell(task, mixer, w, rule, seed, size, lr)
            if cell.key not in seen:
              cells.append(cell)
              seen.add(cell.key)
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


class Planner:
  """Cell configs of one study, with the tasks and budget targets computed once."""

  def __init__(self, study: Mapping[str, Any]) -> None:
    self.study = study
    self._tasks: dict[str, Task] = {}
    self._targets: dict[tuple[str, str, str | None], float] = {}
    self._matches: dict[tuple, budget.Match] = {}  # seeds and rates share one sized model

  def task(self, task_key: str, cfg: ml_collections.ConfigDict) -> Task:
    """The set-up task (its vocabulary and length, which are all a budget needs)."""
    if task_key not in self._tasks:
      self._tasks[task_key] = build_task({"task": cfg.task, "data": cfg.data.to_dict()})
    return self._tasks[task_key]

  def model(
    self,
    cfg: ml_collections.ConfigDict,
    task_key: str,
    mixer: str,
    window: int | None,
    size: str | None = None,
  ) -> dict[str, Any]:
    """``model_section`` with the study's heads and block size and the task's causality, at
    the width of ``size`` (the config's own without one)."""
    t = self.study["tasks"][task_key]
    if size is not None:
      cfg.model.dim, cfg.model.mlp_dim = int(sizes(self.study, task_key)[size]), 0
    return model_section(
      cfg,
      mixer,
      window,
      heads=int(self.study.get("heads", 4)),
      block=int(t.get("block", self.study.get("block", 64))),
      causal=self.task(task_key, cfg).causal,
    )

  def target(self, task_key: str, rule: str, size: str | None = None) -> float:
    """The budget: the cost under ``rule`` of the task's reference model (at ``size``)."""
    if (task_key, rule, size) not in self._targets:
      ref = self.study["tasks"][task_key]["reference"]
      cfg = base_config(self.study, task_key, ref.get("window"))
      model = self.model(cfg, task_key, ref["mixer"], ref.get("window"), size)
      cost = budget.measure(self.task(task_key, cfg), model, rule)
      self._targets[task_key, rule, size] = cost
    return self._targets[task_key, rule, size]

  def config(self, cell: Cell) -> tuple[ml_collections.ConfigDict, budget.Match]:
    """The cell's full config, with its model sized to the budget under ``cell.rule``."""
    cfg = base_config(self.study, cell.task, cell.window)
    model = self.model(cfg, cell.task, cell.mixer, cell.window, cell.size)
    task = self.task(cell.task, cfg)
    key = (cell.task, cell.mixer, cell.window, cell.rule, cell.size)
    if key not in self._matches:
      target = self.target(cell.task, cell.rule, cell.size)
      self._matches[key] = budget.match(task, model, rule=cell.rule, target=target)
    match = self._matches[key]
    cfg.model = ml_collections.ConfigDict(match.model)
    cfg.seed = cell.seed
    if cell.lr is not None:
      cfg.optim.lr = float(cell.lr)
    return cfg, match
