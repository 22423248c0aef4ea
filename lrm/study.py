"""Studies: grids of ordinary training runs that compare mixers at matched budgets.

A study file (``experiments/studies/<name>.py``) defines ``get_study(scale) -> dict``::

  dict(
    name="local_vs_conv",
    question="...",                      # one paragraph, printed at the top of REPORT.md
    seeds=[0, 1, 2],
    rules=["params", "flops"],           # budget-matching rules (lrm/analysis/budget.py)
    heads=4,                             # attention heads / dynamic-conv heads
    tasks={
      "recall": dict(
        config="experiments/recall.py", arg="size=small",     # an ordinary experiment config
        overrides={"train.steps": 300},                        # flattened config overrides
        mixers=["conv", "local", "global"],                   # lrm.config.mixer_spec presets
        windows=[4, 16],                                       # radius w (conv: same field)
        reference=dict(mixer="local", window=4),               # budget = this model's cost
        # optional per task: rules=[...], seeds=[...], block=<BigBird block size>
      ),
    },
    content=dict(task="recall", window=4, mixers=["conv", "local"]),  # kernel-variation plot
  )

Every cell is an ordinary run directory ``<out>/runs/<task>/<mixer>-w<w>/<rule>/seed<s>``
(config.json, checkpoints, results.json), so any cell can be re-evaluated with
``scripts/evaluate.py`` or resumed; finished cells are skipped when the study is rerun.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections

from lrm import config as lrm_config
from lrm import tasks
from lrm.analysis import budget
from lrm.analysis import receptive_field as rf

WINDOWLESS = ("global", "random", "local_random", "bigbird")  # patterns set by blocks, not w


@dataclass(frozen=True)
class Cell:
  task: str
  mixer: str
  window: int | None
  rule: str
  seed: int

  @property
  def key(self) -> str:
    w = "" if self.window is None else f"-w{self.window}"
    return f"{self.task}/{self.mixer}{w}/{self.rule}/seed{self.seed}"


def load_module(path: str | Path) -> Any:
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such file: {path}")
  spec = importlib.util.spec_from_file_location(f"_lrm_cfg_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_study(path: str | Path, scale: str) -> dict[str, Any]:
  module = load_module(path)
  if not hasattr(module, "get_study"):
    raise ValueError(f"{path} defines no get_study(scale) function")
  study = module.get_study(scale)
  missing = {"name", "seeds", "rules", "tasks"} - set(study)
  if missing:
    raise ValueError(f"study {path} lacks {sorted(missing)}")
  for rule in study["rules"]:
    if rule not in budget.RULES:
      raise ValueError(f"unknown budget rule '{rule}'; choose from {', '.join(budget.RULES)}")
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
          for w in [None] if mixer in WINDOWLESS else t["windows"]:
            cells.append(Cell(tname, mixer, w, rule, seed))
  return cells


def base_config(
  study: Mapping[str, Any], task_key: str, window: int | None = None
) -> ml_collections.ConfigDict:
  """The task's experiment config; ``{window}`` in its ``arg`` is filled with the cell's."""
  t = study["tasks"][task_key]
  arg = t.get("arg") or ""
  if "{window}" in arg:
    arg = arg.format(window=window or t["reference"].get("window") or t["windows"][0])
  cfg = load_module(t["config"]).get_config(arg)
  flat = dict(t.get("overrides", {}))
  for key, value in flat.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ValueError(f"study override '{key}' names no config field")
    node[leaf] = value
  return cfg


def model_section(
  cfg: ml_collections.ConfigDict,
  mixer: str,
  window: int | None,
  heads: int,
  causal: bool,
  block: int,
) -> dict:
  """The config's model section with the tested mixer in place of its own.

  A task config may stack a fixed first layer before the tested one (a list of two specs,
  e.g. recall's short conv); the tested mixer replaces the last spec of such a list.
  """
  model = cfg.model.to_dict()
  spec = lrm_config.mixer_spec(mixer, window=window or 1, heads=heads, block=block, causal=causal)
  if isinstance(model["mixer"], list) and len(model["mixer"]) > 1:
    model["mixer"] = [*model["mixer"][:-1], spec]
  else:
    model["mixer"] = spec
  return model


def cell_config(
  study: Mapping[str, Any], cell: Cell, _cache: dict | None = None
) -> tuple[ml_collections.ConfigDict, budget.Match]:
  """The cell's full config, with its model sized to the study's budget under ``cell.rule``."""
  cache = {} if _cache is None else _cache
  t = study["tasks"][cell.task]
  heads = int(study.get("heads", 4))
  block = int(t.get("block", study.get("block", 64)))
  cfg = base_config(study, cell.task, cell.window)
  if (cell.task, "task") not in cache:
    cache[(cell.task, "task")] = tasks.build({"name": cfg.task, **cfg.data.to_dict()})
  task = cache[(cell.task, "task")]
  ref = t["reference"]
  tkey = (cell.task, cell.rule, "target")
  if tkey not in cache:
    ref_cfg = base_config(study, cell.task, ref.get("window"))
    ref_model = model_section(ref_cfg, ref["mixer"], ref.get("window"), heads, task.causal, block)
    cache[tkey] = budget.measure(task, ref_model, cell.rule)
  model = model_section(cfg, cell.mixer, cell.window, heads, task.causal, block)
  match = budget.match(task, model, rule=cell.rule, target=cache[tkey])
  cfg.model = ml_collections.ConfigDict(match.model)
  cfg.seed = cell.seed
  return cfg, match


def measure_receptive_field(workdir: Path, length: int) -> list[dict]:
  """Measured receptive field of the trained run's encoder (best checkpoint)."""
  from lrm.train.evaluate import load_run  # the trainer's restore path

  model = load_run(workdir)
  enc = rf.build_encoder_for_measurement(model)
  fields = rf.measure(enc, length, length // 2 if not enc.causal else length - 1)
  return [{**f.__dict__, "analytic_size": f.analytic_size} for f in fields]


def run(study_path: str | Path, out: str | Path, scale: str, only: str = "") -> list[Cell]:
  """Run every unfinished cell of the study, then write the report."""
  from lrm.train import loop

  study = load_study(study_path, scale)
  out = Path(out)
  cells = [c for c in expand(study) if only in c.key]
  print(f"study {study['name']} ({scale}): {len(cells)} cells -> {out}", flush=True)
  cache: dict = {}
  t0 = time.perf_counter()
  for n, cell in enumerate(cells, start=1):
    wd = out / "runs" / cell.key
    if (wd / "results.json").exists() and (wd / "cell.json").exists():
      print(f"[{n}/{len(cells)}] {cell.key}: done, skipped", flush=True)
      continue
    cfg, match = cell_config(study, cell, cache)
    t1 = time.perf_counter()
    results = loop.run(cfg, wd)
    if results is None:  # preempted: stop the study, rerun resumes
      print("stopped by SIGTERM; rerun the same command to resume", flush=True)
      sys.exit(1)
    task = cache[(cell.task, "task")]
    seq_len = task.seq_len
    info = {
      "cell": cell.__dict__,
      "budget": {"rule": match.rule, "target": match.target, "achieved": match.achieved},
      "params": budget.measure(task, match.model, "params"),
      "train_flops_per_token": budget.measure(task, match.model, "flops"),
      "model": match.model,
      "receptive_field": measure_receptive_field(wd, min(seq_len, 256)),
    }
    (wd / "cell.json").write_text(json.dumps(info, indent=1, default=str))
    print(
      f"[{n}/{len(cells)}] {cell.key}: {fmt_metrics(results)} "
      f"({time.perf_counter() - t1:.0f}s, total {time.perf_counter() - t0:.0f}s)",
      flush=True,
    )
  from lrm.study_report import write_report

  write_report(study, out)
  return cells


def fmt_metrics(results: Mapping[str, Any]) -> str:
  test = results["best"]["test"]
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(test.items()) if isinstance(v, float))
