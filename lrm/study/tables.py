"""REPORT.md's tables and sections, from summary records (``lrm.study.report.records``).

No JAX. Every table states its units; intervals are 95% t-intervals over seeds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrm.study import extend, plots, stats, sweep

Record = Mapping[str, Any]


def fmt(x: float | None, digits: int = 3) -> str:
  if x is None or x != x:
    return "n/a"
  if x == 0:
    return "0"
  if abs(x) >= 1e5 or abs(x) < 1e-3:
    return f"{x:.{digits}g}"
  return f"{x:.{digits + 1}g}"


def groups(rows: Sequence[Record], keys: tuple[str, ...]) -> dict[tuple, list[Record]]:
  """In-study records grouped by ``keys`` (sorted by key)."""
  out: dict[tuple, list[Record]] = defaultdict(list)
  for r in rows:
    if r["in_study"] and r["value"] is not None:
      out[tuple(r[k] for k in keys)].append(r)
  return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


def mean(rs: Sequence[Record], field: str) -> float | None:
  vals = [float(r[field]) for r in rs if r.get(field) is not None]
  return sum(vals) / len(vals) if vals else None


def task_table(rows: Sequence[Record], task: str, rule: str) -> list[str]:
  """One row per (mixer, size): the metric with its interval and the costs."""
  gs = groups([r for r in rows if r["task"] == task and r["rule"] == rule], ("name", "size"))
  if not gs:
    return []
  metric = next(iter(gs.values()))[0]["metric"]
  lines = [
    f"| mixer | size | n | test {metric} mean [95% CI] | sd | lr | non-emb. params | "
    "train FLOPs/token (alg. / executed) | train s | RF at init / trained (analytic) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  order = sorted(gs, key=lambda k: (k[0], gs[k][0].get("size_width") or 0))
  for k in order:
    rs = gs[k]
    s = stats.summarize([r["value"] for r in rs])
    rf = {(r["rf_measured"], r.get("rf_trained"), r["rf_analytic"]) for r in rs}
    rf = sorted((x for x in rf if x[0] is not None or x[1] is not None), key=str)
    lines.append(
      f"| {k[0]} | {k[1] or '-'} | {s.n} | {s.text(4)} | {fmt(s.sd)} | {fmt(rs[0]['lr'])} | "
      f"{fmt(mean(rs, 'params_non_embedding'))} | {fmt(mean(rs, 'train_flops_per_token'))} / "
      f"{fmt(mean(rs, 'executed_train_flops_per_token'))} | {fmt(mean(rs, 'train_seconds'))} | "
      + ", ".join(f"{m} / {t} ({a})" for m, t, a in rf)
      + " |"
    )
  return lines


def sweep_section(arms: Sequence[Mapping[str, Any]], diverged: Sequence[Mapping]) -> list[str]:
  """The learning-rate sweep: validation (which chose) and test (reported only) per rate."""
  if not arms:
    return []
  per_size = any(a.get("size") is not None for a in arms)
  where = "Every size (a rate per size)" if per_size else "Middle size (one rate for all sizes)"
  seeds = sorted({int(s) for a in arms for s in a.get("seeds") or [0]})
  over = f"seed {seeds[0]}" if len(seeds) == 1 else "mean of seeds " + ", ".join(map(str, seeds))
  lines = [
    "## Learning-rate sweep",
    "",
    f"{where}, first rule, {over}. The rate is chosen on the VALIDATION metric; the test",
    "value is shown for transparency only. NaN = diverged. A chosen rate at either end of",
    "the rates tried is marked (edge): the best rate may lie outside them; (edge, rounds",
    "exhausted): the study's extensions ran out before the chosen rate became interior.",
    "",
    "| task | mixer | size | metric | validation per lr | test per lr | chosen |",
    "|---|---|---|---|---|---|---|",
  ]
  for a in arms:
    name = a["mixer"] + ("" if a["window"] is None else f"-w{a['window']}")
    val = ", ".join(f"{lr}: {fmt(v)}" for lr, v in a["validation"].items())
    test = ", ".join(f"{lr}: {fmt(v)}" for lr, v in a["test"].items())
    chosen = "pending" if a.get("chosen") is None else f"{a['chosen']:g}"
    if a.get("chosen") is not None:
      chosen += _position(a)
    size = a.get("size") or "-"
    lines.append(f"| {a['task']} | {name} | {size} | {a['metric']} | {val} | {test} | {chosen} |")
  if diverged:
    lines += ["", "Diverged: " + ", ".join(f"`{d['key']}`" for d in diverged)]
  return [*lines, ""]


def _position(arm: Mapping[str, Any]) -> str:
  """Where an arm's chosen rate lies among the rates it tried: '' (interior) or a mark."""
  if len(arm["validation"]) < 2:
    return " (single rate)"
  position = arm.get("position")  # written by the sweep since sweep_seeds/lr_extend
  if position is not None:
    return "" if position == "interior" else f" ({position})"
  return "" if extend.edge(arm) is None else " (edge)"


def content_section(study: Mapping[str, Any], rows: Sequence[Record], out: Path) -> list[str]:
  """Kernel variation of the tested layers for every mixer of the content tasks, averaged
  over seeds, next to its test metric; heatmaps of the first seed, one figure per task."""
  spec = study.get("content")
  if not spec:
    return []
  tasks = list(spec.get("tasks") or [spec["task"]])
  rs = [r for r in rows if r["task"] in tasks and r["rule"] == study["rules"][0]]
  gs = groups([r for r in rs if r.get("kernel_variation") is not None], ("task", "name", "size"))
  if not gs:
    return []
  lines = [
    "## Content dependence",
    "",
    "Effective kernel of the tested layers: the Jacobian size |dy_i/dx_{i+o}| over offsets o,",
    "normalised, at sampled positions of a validation input. Variation is the mean total-",
    "variation distance of each position's kernel to the average kernel (0: a static kernel",
    "such as a convolution's), averaged over the tested layers, then over seeds.",
    "",
    "| task | mixer | size | kernel variation mean [95% CI] | test metric mean [95% CI] |",
    "|---|---|---|---|---|",
  ]
  for (task, name, size), g in gs.items():
    v = stats.summarize([r["kernel_variation"] for r in g])
    m = stats.summarize([r["value"] for r in g])
    lines.append(f"| {task} | {name} | {size or '-'} | {v.text(3)} | {m.text(3)} |")
  lines.append("")
  for task in tasks:
    panels = {}
    for r in rs:
      if r["task"] == task and r["in_study"] and r["seed"] == study["seeds"][0]:
        for k in r.get("kernels") or []:
          panels.setdefault(f"{r['name']} layer {k['layer'] + 1}", k)
    png = f"content_{task}.png"
    if plots.plot_kernels(panels, out / png, title=f"{task}: effective kernels (seed 0)"):
      lines += [f"![content dependence, {task}]({png})", ""]
  return lines


def cost_section(study: Mapping[str, Any], rows: Sequence[Record], price: Any) -> list[str]:
  """The report's "Cost" section: costs per (task, mixer) at the middle size and equal
  parameters (test metric, FLOPs, training seconds and dollars, measured decode cost). The
  report appends ``cost.study_table``'s dollars per 1M tokens for every rule under it."""
  rule = study["rules"][0]
  gs = groups([r for r in rows if r["rule"] == rule], ("task", "name", "size"))
  if not gs:
    return []
  ctx = study.get("decode_context", 1024)
  stated = price.statement()
  lines = [
    "## Cost",
    "",
    f"Dollars at {stated}. Training seconds: the timed training steps only (no compilation,",
    "no evaluation), on the machine that ran the cell. Decode: ms per generated token and",
    f"cache bytes per sequence at batch 1 and a {ctx}-token context, from",
    "results/bench/decode_cpu.jsonl (benchmarks/decode.py; n/a where it has no record,",
    "e.g. hybrids).",
    "",
    "| task | mixer | size | test metric | train FLOPs/token (alg.) | train s | train $ | "
    "decode ms/token | cache bytes | decode $ / 1M tokens |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for (task, name, size), g in gs.items():
    s = stats.summarize([r["value"] for r in g])
    ms = g[0].get("decode_ms_per_token")
    per_m = ms / 1000 * 1e6 * price.per_second if ms is not None else None
    lines.append(
      f"| {task} | {name} | {size or '-'} | {s.text(3)} | {fmt(mean(g, 'train_flops_per_token'))}"
      f" | {fmt(mean(g, 'train_seconds'))} | {fmt(mean(g, 'train_dollars'))} | {fmt(ms)} | "
      f"{fmt(g[0].get('cache_bytes'))} | {fmt(per_m)} |"
    )
  return [*lines, ""]


def limits(study: Mapping[str, Any], rows: Sequence[Record]) -> list[str]:
  """What the study cannot say, stated with the report."""
  expected = len(study.get("seeds", []))
  thin = sorted({r["name"] for r in rows if r["in_study"]} - _complete(rows, expected))
  lines = [
    "## Limits",
    "",
    "- Small models, short training, 2 CPU cores: rankings may reflect learning speed;",
    "  the curves over sizes show whether they persist as models grow.",
    "- Equal training seconds is read off the curves, not matched; seconds depend on the",
    "  kernels and on the machine's load.",
    "- One window per task; the learning rate is tuned at "
    + ("each size" if study.get("sweep_every_size") else "one size")
    + _sweep_seeds(study),
    *(f"- {line}" for line in study.get("limits", [])),  # the study's own
  ]
  if thin:
    lines.append(f"- Fewer than {expected} seeds in some cells of: {', '.join(thin)}.")
  return [*lines, ""]


def _sweep_seeds(study: Mapping[str, Any]) -> str:
  seeds = sweep.sweep_seeds({"seeds": [0], **study})
  if len(seeds) == 1:
    return f" with one seed (seed {seeds[0]}'s cells double as sweep cells)."
  listed = ", ".join(map(str, seeds))
  return f" on the mean of seeds {listed} (their cells double as those seeds' final cells)."


def _complete(rows: Sequence[Record], expected: int) -> set[str]:
  counts: dict[tuple, int] = defaultdict(int)
  for r in rows:
    if r["in_study"]:
      counts[(r["task"], r["name"], r["rule"], r["size"])] += 1
  names = {k[1] for k in counts}
  return {n for n in names if all(c >= expected for k, c in counts.items() if k[1] == n)}
