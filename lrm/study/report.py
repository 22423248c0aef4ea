"""A study's REPORT.md, summary.json and plots, read from the cells' JSON files alone.

Every number comes from a cell's ``cell.json`` (written by ``lrm.study.run``: budget, costs,
measured receptive field, effective kernels) and the trainer's ``results.json``; nothing is
restored or recomputed here, and neither JAX nor flax is imported. Cells measured by an older
lrm (no ``costs`` or ``kernels`` in cell.json) are reported with what they have, and the
report says which measurements are missing and how to add them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lrm.analysis import cost
from lrm.study import plots

MEASURED = ("costs", "receptive_field", "kernels")  # what a cell.json of this lrm holds
OLD_COSTS = ("params", "train_flops_per_token")  # top-level in older cell.json files


def _row(info: dict[str, Any], res: dict[str, Any], workdir: str) -> dict[str, Any]:
  costs = info.get("costs") or {k: info[k] for k in OLD_COSTS if k in info}
  field = info["receptive_field"][-1] if info.get("receptive_field") else {}
  return {
    **info["cell"],
    "name": info.get("name"),
    "target": info["budget"]["target"],
    "achieved": info["budget"]["achieved"],
    "params": costs.get("params", res.get("params")),
    "train_flops_per_token": costs.get("train_flops_per_token"),
    "wall_time_s": res["wall_time_s"],
    "main_metric": res["main_metric"],
    "test": res["best"]["test"],
    "rf_measured": field.get("size"),
    "rf_analytic": field.get("analytic_size"),
    "rf_contiguous": field.get("contiguous"),
    "kernels": info.get("kernels"),
    "missing": [k for k in MEASURED if k not in info],
    "workdir": workdir,
  }


def collect(out: Path) -> list[dict[str, Any]]:
  """One row per finished cell (a cell.json next to a results.json under ``<out>/runs``)."""
  rows = []
  for cell_json in sorted((out / "runs").rglob("cell.json")):
    wd = cell_json.parent
    if not (wd / "results.json").exists():
      continue
    info = json.loads(cell_json.read_text())
    res = json.loads((wd / "results.json").read_text())
    rows.append(_row(info, res, str(wd.relative_to(out))))
  return rows


def label(row: Mapping[str, Any]) -> str:
  return row["mixer"] + ("" if row["window"] is None else f" w={row['window']}")


def _mean(values: list[Any]) -> float | None:
  """Mean over seeds; None if any seed lacks the value (an older cell.json)."""
  return None if any(v is None for v in values) else float(np.mean(values))


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
  """Group by (task, rule, mixer, window) and average over seeds."""
  groups: dict[tuple, list[dict]] = defaultdict(list)
  for r in rows:
    groups[(r["task"], r["rule"], r["mixer"], r["window"])].append(r)
  out = {}
  for key, rs in groups.items():
    metrics = sorted({k for r in rs for k, v in r["test"].items() if isinstance(v, (int, float))})
    agg = {
      m: (
        float(np.mean([r["test"][m] for r in rs if m in r["test"]])),
        float(np.std([r["test"][m] for r in rs if m in r["test"]])),
      )
      for m in metrics
    }
    first = rs[0]
    params = _mean([r["params"] for r in rs])
    out[key] = {
      "label": label(first),
      "n": len(rs),
      "metrics": agg,
      "main_metric": first["main_metric"],
      "target": first["target"],
      "achieved": float(np.mean([r["achieved"] for r in rs])),
      "params": None if params is None else int(params),
      "flops": _mean([r["train_flops_per_token"] for r in rs]),
      "wall": float(np.mean([r["wall_time_s"] for r in rs])),
      "rf": sorted({(r["rf_measured"], r["rf_analytic"]) for r in rs}, key=str),
    }
  return out


def _fmt(x: float | None) -> str:
  if x is None:
    return "n/a"
  if x == 0:
    return "0"
  if abs(x) >= 1e5 or abs(x) < 1e-3:
    return f"{x:.3g}"
  return f"{x:.4g}"


def _metric_order(name: str) -> tuple[int, int, str]:
  """Distance buckets (``acc_d<=4``, ``acc_d5-6``, ``acc_d>6``) by distance, then the rest."""
  m = re.fullmatch(r"acc_d(<=|>)?(\d+)(?:-\d+)?", name)
  if not m:
    return (1, 0, name)
  return (0, int(m.group(2)) + (1 if m.group(1) == ">" else 0), name)


def task_table(agg: dict[tuple, dict], task: str, rule: str) -> list[str]:
  """One table per set of metric names: recall's distance buckets are named after the window
  (``acc_d<=4``), so each window gets its own table instead of columns of blanks."""
  keys = sorted(k for k in agg if k[0] == task and k[1] == rule)
  groups: dict[tuple, list[tuple]] = defaultdict(list)
  for k in keys:
    groups[tuple(sorted(agg[k]["metrics"]))].append(k)
  lines: list[str] = []
  for names, group in sorted(groups.items(), key=lambda g: g[1][0][3] or 0):
    lines += ([""] if lines else []) + _table(agg, group, names)
  return lines


def _table(agg: dict[tuple, dict], keys: list[tuple], names: tuple[str, ...]) -> list[str]:
  main = agg[keys[0]]["main_metric"]
  extra = sorted((m for m in names if m not in (main, "loss")), key=_metric_order)
  head = (
    f"| mixer | n | {main} (mean ± sd) | "
    + "".join(f"{m} | " for m in extra)
    + "budget achieved / target | params | train FLOPs/token | wall s | RF measured (analytic) |"
  )
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for k in keys:
    a = agg[k]
    mean, sd = a["metrics"][main]
    cols = "".join(f"{a['metrics'][m][0]:.3f} | " for m in extra)
    rf = ", ".join(f"{m} ({an})" for m, an in a["rf"])
    params = "n/a" if a["params"] is None else f"{a['params']:,}"
    lines.append(
      f"| {a['label']} | {a['n']} | {mean:.4f} ± {sd:.4f} | {cols}"
      f"{a['achieved'] / a['target']:.3f} | {params} | {_fmt(a['flops'])} | "
      f"{a['wall']:.0f} | {rf} |"
    )
  return lines


def missing_section(rows: list[dict[str, Any]]) -> list[str]:
  """Which cells lack measurements (cell.json of an older lrm), and how to add them."""
  old = [r for r in rows if r["missing"]]
  if not old:
    return []
  what = sorted({m for r in old for m in r["missing"]})
  shown = ", ".join(f"`{r['workdir']}`" for r in old[:3]) + (", ..." if len(old) > 3 else "")
  return [
    f"**Missing measurements:** {len(old)} cells have a cell.json without {', '.join(what)}",
    f"({shown}); rerun the study's command with the same --out to measure them (no training).",
    "",
  ]


def content_section(study: Mapping[str, Any], rows: list[dict[str, Any]], out: Path) -> list[str]:
  """Effective-kernel variation of the tested layer, conv vs attention, from cell.json."""
  spec = study.get("content")
  if not spec:
    return []
  rule, seed = study["rules"][0], study["seeds"][0]
  panels, unmeasured = {}, []
  for mixer in spec["mixers"]:
    row = next(
      (
        r
        for r in rows
        if (r["task"], r["mixer"], r["rule"], r["seed"]) == (spec["task"], mixer, rule, seed)
        and r["window"] in (spec.get("window"), None)
      ),
      None,
    )
    if row is None:  # not run yet
      continue
    if not row["kernels"]:
      unmeasured.append(row["workdir"])
      continue
    for k in row["kernels"]:  # one per tested layer (a hybrid has several)
      name = row["name"] if len(row["kernels"]) == 1 else f"{row['name']} layer {k['layer'] + 1}"
      panels[name] = k
  lines = []
  if panels:
    plots.plot_kernels(panels, out / "content_dependence.png")
    hybrid = any(" layer " in name for name in panels)
    lines += [
      "## Content dependence",
      "",
      "Effective kernel of the last layer's mixer (the tested one): the Jacobian size",
      "|dy_i/dx_{i+o}| over offsets o, normalised, at sampled positions of a validation input",
      f"({spec['task']}). A convolution's",
      "kernel depends only on the offset (variation 0); attention builds one per position.",
      *(["A hybrid has one row per tested layer (one per part)."] if hybrid else []),
      "",
      "| mixer | kernel variation (mean TV distance to the average kernel) |",
      "|---|---|",
    ]
    lines += [f"| {name} | {k['variation']:.4f} |" for name, k in panels.items()]
    lines += ["", "![content dependence](content_dependence.png)", ""]
  if unmeasured:
    lines += [
      f"No effective kernels in {', '.join(f'`{w}/cell.json`' for w in unmeasured)} (an",
      "older lrm); rerun the study's command to measure them.",
      "",
    ]
  return lines


def cost_section(rows: list[dict[str, Any]], out: Path, price: cost.Price) -> list[str]:
  """Dollars per mixer at ``price`` (``lrm.analysis.cost``) from each cell's JSON files."""
  runs = []
  for r in rows:
    wd = out / r["workdir"]
    res = json.loads((wd / "results.json").read_text())
    info = json.loads((wd / "cell.json").read_text())
    costs = info.get("costs") or {}
    runs.append({**costs, **res, "decode": info.get("decode"), **r, "label": label(r)})
  return cost.study_table(runs, price)


def write_report(
  study: Mapping[str, Any], out: Path | str, price: cost.Price | None = None
) -> Path:
  """REPORT.md, summary.json and one plot per task (+ the content panel) in ``out``; dollars
  at ``price`` (default: the study's ``price_per_hour`` and ``price_machine``, else
  ``lrm.analysis.cost``'s assumption)."""
  out = Path(out)
  price = price or cost.Price(
    study.get("price_per_hour", cost.DEFAULT_PRICE_PER_HOUR),
    study.get("price_machine", cost.DEFAULT_MACHINE),
  )
  rows = collect(out)
  agg = aggregate(rows)
  lines = [f"# Study: {study['name']}", ""]
  if study.get("question"):
    lines += [study["question"], ""]
  lines += [
    f"{len(rows)} finished runs; seeds {study['seeds']}; budget rules {study['rules']}.",
    "Each cell is an ordinary run directory under `runs/` (re-evaluate with scripts/evaluate.py).",
    "Metrics are the test metrics of the best-validation checkpoint, mean ± sd over seeds.",
    "RF = receptive field of the middle (bidirectional) or last (causal) output position after",
    "the last layer, measured from gradients of the trained model, with the analytic value.",
    "",
    *missing_section(rows),
  ]
  for task in study["tasks"]:
    lines += [f"## {task}", ""]
    for rule in study["rules"]:
      table = task_table(agg, task, rule)
      if table:
        lines += [f"Equal **{rule}**:", "", *table, ""]
    plot = out / f"{task}.png"
    plots.plot_task(agg, task, plot)
    if plot.exists():
      lines += [f"![{task}]({plot.name})", ""]
  lines += content_section(study, rows, out)
  lines += cost_section(rows, out, price)
  report = out / "REPORT.md"
  report.write_text("\n".join(lines) + "\n")
  (out / "summary.json").write_text(
    json.dumps([{"key": list(map(str, k)), **v} for k, v in agg.items()], indent=1, default=str)
  )
  return report
