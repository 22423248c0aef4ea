"""REPORT.md and plots for a study (``lrm/study.py``): tables, cost plots, content dependence."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def collect(out: Path) -> list[dict[str, Any]]:
  """One row per finished cell: its config key, budget, metrics and measured field."""
  rows = []
  for cell_json in sorted((out / "runs").glob("*/*/*/*/cell.json")):
    wd = cell_json.parent
    if not (wd / "results.json").exists():
      continue
    info = json.loads(cell_json.read_text())
    res = json.loads((wd / "results.json").read_text())
    field = info["receptive_field"][-1] if info.get("receptive_field") else {}
    rows.append(
      {
        **info["cell"],
        "target": info["budget"]["target"],
        "achieved": info["budget"]["achieved"],
        "params": res["params"],
        "train_flops_per_token": info.get("train_flops_per_token"),
        "wall_time_s": res["wall_time_s"],
        "main_metric": res["main_metric"],
        "test": res["best"]["test"],
        "rf_measured": field.get("size"),
        "rf_analytic": field.get("analytic_size"),
        "rf_contiguous": field.get("contiguous"),
        "workdir": str(wd.relative_to(out)),
      }
    )
  return rows


def label(row: Mapping[str, Any]) -> str:
  return row["mixer"] + ("" if row["window"] is None else f" w={row['window']}")


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
    out[key] = {
      "label": label(first),
      "n": len(rs),
      "metrics": agg,
      "main_metric": first["main_metric"],
      "target": first["target"],
      "achieved": float(np.mean([r["achieved"] for r in rs])),
      "params": int(np.mean([r["params"] for r in rs])),
      "flops": float(np.mean([r["train_flops_per_token"] or 0 for r in rs])),
      "wall": float(np.mean([r["wall_time_s"] for r in rs])),
      "rf": sorted({(r["rf_measured"], r["rf_analytic"]) for r in rs}, key=str),
    }
  return out


def _fmt(x: float) -> str:
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
    lines.append(
      f"| {a['label']} | {a['n']} | {mean:.4f} ± {sd:.4f} | {cols}"
      f"{a['achieved'] / a['target']:.3f} | {a['params']:,} | {_fmt(a['flops'])} | "
      f"{a['wall']:.0f} | {rf} |"
    )
  return lines


def plot_task(agg: dict[tuple, dict], task: str, path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = sorted(k for k in agg if k[0] == task)
  if not keys:
    return
  main = agg[keys[0]]["main_metric"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  labels = sorted({agg[k]["label"] for k in keys})
  cmap = plt.cm.tab10 if len(labels) <= 10 else plt.cm.tab20
  colours = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
  markers = {"params": "o", "flops": "s"}
  for ax, (xkey, xlabel) in zip(
    axes,
    [("params", "parameters"), ("flops", "training FLOPs / token"), ("wall", "wall-clock (s)")],
    strict=True,
  ):
    xs = [agg[k][xkey] for k in keys if agg[k][xkey] > 0]
    for k in keys:
      a = agg[k]
      mean, sd = a["metrics"].get(main, (np.nan, 0.0))
      ax.errorbar(
        a[xkey], mean, yerr=sd, fmt=markers.get(k[1], "o"), color=colours[a["label"]], capsize=2
      )
    if xs and max(xs) / min(xs) > 10:  # log only where the budgets span a decade
      ax.set_xscale("log")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {main} (mean ± sd)")
    ax.grid(alpha=0.3)
  rules = sorted({k[1] for k in keys})
  axes[0].set_title(
    f"{task}: " + ", ".join(f"{markers.get(r, 'o')} = equal {r}" for r in rules), loc="left"
  )
  handles = [plt.Line2D([], [], ls="", marker="o", color=colours[lab]) for lab in labels]
  fig.legend(handles, labels, loc="center right", fontsize=8)
  fig.tight_layout(rect=(0, 0, 0.86, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)


def content_section(study: Mapping[str, Any], out: Path) -> list[str]:
  """Effective-kernel variation of the tested layer, conv vs attention, on real inputs."""
  spec = study.get("content")
  if not spec:
    return []
  from lrm.analysis import content
  from lrm.study import WINDOWLESS
  from lrm.train.evaluate import load_run

  panels, lines = {}, []
  rule = study["rules"][0]
  for mixer in spec["mixers"]:
    w = "" if mixer in WINDOWLESS else f"-w{spec['window']}"
    wd = out / "runs" / spec["task"] / f"{mixer}{w}" / rule / f"seed{study['seeds'][0]}"
    if not (wd / "results.json").exists():
      continue
    model, task = load_run(wd, with_task=True)
    enc = model.encoder
    batch = next(task.dataset("validation").eval_batches(1))
    key = "inputs" if "inputs" in batch else "inputs1"
    tokens = np.asarray(batch[key][:, : min(task.seq_len, 128)], np.int32)
    layer = len(enc.blocks) - 1  # the tested mixer (a fixed first layer may precede it)
    x = content.mixer_input(enc, tokens, layer=layer)
    L = tokens.shape[1]
    radius = int(spec.get("radius", 2 * spec["window"]))
    positions = np.arange(radius, L - radius, max(1, (L - 2 * radius) // 24))
    panels[f"{mixer}{w}"] = content.effective_kernels(enc.blocks[layer].mixer, x, positions, radius)
  if not panels:
    return []
  content.plot_side_by_side(panels, str(out / "content_dependence.png"))
  lines += [
    "## Content dependence",
    "",
    "Effective kernel of the last layer's mixer (the tested one): the Jacobian size",
    "|dy_i/dx_{i+o}| over offsets o, normalised, at sampled positions of a validation input",
    f"({spec['task']}). A convolution's",
    "kernel depends only on the offset (variation 0); attention builds one per position.",
    "",
    "| mixer | kernel variation (mean TV distance to the average kernel) |",
    "|---|---|",
  ]
  lines += [f"| {name} | {ek.variation:.4f} |" for name, ek in panels.items()]
  lines += ["", "![content dependence](content_dependence.png)", ""]
  return lines


def write_report(study: Mapping[str, Any], out: Path | str) -> Path:
  out = Path(out)
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
  ]
  for task in study["tasks"]:
    lines += [f"## {task}", ""]
    for rule in study["rules"]:
      table = task_table(agg, task, rule)
      if table:
        lines += [f"Equal **{rule}**:", "", *table, ""]
    plot = out / f"{task}.png"
    plot_task(agg, task, plot)
    if plot.exists():
      lines += [f"![{task}]({plot.name})", ""]
  lines += content_section(study, out)
  report = out / "REPORT.md"
  report.write_text("\n".join(lines) + "\n")
  (out / "summary.json").write_text(
    json.dumps([{"key": list(map(str, k)), **v} for k, v in agg.items()], indent=1, default=str)
  )
  return report
