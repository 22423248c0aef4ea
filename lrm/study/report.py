"""A study's REPORT.md, summary.json and plots, read from the cells' JSON files alone.

Every number comes from a cell's ``cell.json`` (written by ``lrm.study.run``: budget, costs,
measured receptive field, effective kernels, XLA's FLOP count), the trainer's
``results.json``, ``lr_sweep.json`` and, when present, the decode benchmark's JSONL; nothing
is restored or recomputed here, and neither JAX nor flax is imported. REPORT.md gives the
three answers first (``lrm.study.verdicts``: paired t-tests over seeds, Holm-corrected),
then the evidence (tables, curves with 95% bands, the learning-rate sweep, the sanity
checklist, the content panel, the cost table), then the limits.

summary.json: one record per finished cell (``records``): task, mixer (hybrids with ``+``),
window, size, size_width, rule, lr, seed, in_study (the arm's chosen rate), params,
params_non_embedding, train_flops_per_token (algorithmic), executed_train_flops_per_token,
train_seconds (training steps only: no compilation, no evaluation), train_steps, best_step,
wall_time_s, metric,
value (test, best-validation checkpoint), validation_value, test (every test metric),
chance, rf_measured, rf_analytic, kernel_variation, xla_ratio, decode_ms_per_token,
cache_bytes, train_dollars, key, workdir, levels (the main metric's reference levels),
design, commit and dirty (``lrm.study.provenance``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrm.analysis import cost
from lrm.study import plots, provenance, sweep, tables, verdicts

MEASURED = ("costs", "receptive_field", "kernels")  # what a cell.json of this lrm holds
OLD_COSTS = ("params", "train_flops_per_token")  # top-level in older cell.json files
DECODE_BENCH = "results/bench/decode_cpu.jsonl"


def _price(study: Mapping[str, Any]) -> cost.Price:
  """The study's price (``price_per_hour``, ``price_machine``), else lrm.analysis.cost's."""
  return cost.Price(
    float(study.get("price_per_hour", cost.DEFAULT_PRICE_PER_HOUR)),
    study.get("price_machine", cost.DEFAULT_MACHINE),
  )


def decode_costs(study: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """``{preset: {ms_per_token, cache_bytes}}`` at batch 1 and the study's context, from the
  decode benchmark's JSONL ({} when it has not been run)."""
  path = Path(study.get("decode_bench", DECODE_BENCH))
  context = int(study.get("decode_context", 1024))
  out: dict[str, dict[str, float]] = {}
  if not path.exists():
    return out
  for line in path.read_text().splitlines():
    try:
      r = json.loads(line)
    except ValueError:
      continue
    if r.get("status") == "ok" and r.get("batch") == 1 and r.get("context") == context:
      out[r["mixer"]] = {
        "ms_per_token": float(r["ms_per_token"]),
        "cache_bytes": float(r["cache_bytes_per_sequence"]),
      }
  return out


def _record(study: Mapping[str, Any], info: dict, res: dict, wd: str, ctx: dict) -> dict:
  cell, costs = info["cell"], info.get("costs") or {k: info[k] for k in OLD_COSTS if k in info}
  field = info["receptive_field"][-1] if info.get("receptive_field") else {}
  init = info["receptive_field_init"][-1] if info.get("receptive_field_init") else {}
  kernels = info.get("kernels") or []
  metric = res["main_metric"]
  levels = (info.get("reference_levels") or {}).get(metric) or {}
  seconds = res.get("train_time_s")
  decode = ctx["decode"].get(cell["mixer"], {})
  size = cell.get("size")
  chosen = ctx["chosen"].get(
    sweep.rate_key(study, cell["task"], cell["mixer"], cell["window"], size)
  )
  return {
    **{k: cell.get(k) for k in ("task", "mixer", "window", "size", "rule", "lr", "seed")},
    "size_width": (study["tasks"][cell["task"]].get("sizes") or study.get("sizes") or {}).get(size),
    "in_study": not study.get("lrs") or (chosen is not None and cell.get("lr") == chosen),
    "name": info.get("name"),
    "params": costs.get("params", res.get("params")),
    "params_non_embedding": costs.get("params_non_embedding"),
    "train_flops_per_token": costs.get("train_flops_per_token"),
    "executed_train_flops_per_token": costs.get("executed_train_flops_per_token"),
    "train_seconds": seconds,
    "train_steps": (res.get("final") or {}).get("step"),  # the last step trained
    "best_step": res["best"].get("step"),  # the checkpoint whose test metric is ``value``
    "wall_time_s": res.get("wall_time_s"),
    "metric": metric,
    "value": res["best"]["test"].get(metric),
    "validation_value": res["best"]["validation"].get(metric),
    "test": res["best"]["test"],
    "chance": levels.get("chance"),
    "chance_context": levels.get("context_guess"),  # recall: guessing among the context
    "levels": levels,  # every reference level of the main metric (guess_w<r>: in reach r)
    "target": info["budget"]["target"],
    "achieved": info["budget"]["achieved"],
    "rf_measured": init.get("size", field.get("size")),  # at init (else trained)
    "rf_trained": field.get("size"),
    "rf_analytic": field.get("analytic_size"),
    "kernel_variation": (sum(k["variation"] for k in kernels) / len(kernels) if kernels else None),
    "xla_ratio": (info.get("xla") or {}).get("ratio"),
    "decode_ms_per_token": decode.get("ms_per_token"),
    "cache_bytes": decode.get("cache_bytes"),
    "train_dollars": (seconds * ctx["price"].per_second if seconds is not None else None),
    "kernels": kernels,  # the content panel's heatmaps (left out of summary.json)
    "missing": [k for k in MEASURED if k not in info],
    "key": info.get("key"),
    "workdir": wd,
    "design": info.get("design"),  # lrm.study.grid.design_hash of the study it ran under
    "commit": (info.get("code") or {}).get("commit"),
    "dirty": (info.get("code") or {}).get("dirty"),
  }


def records(
  study: Mapping[str, Any], out: Path, price: cost.Price | None = None
) -> tuple[list[dict], list[dict]]:
  """(one record per finished cell, the cell.json of every diverged cell)."""
  chosen = sweep.chosen(sweep.load(out))
  ctx = {"decode": decode_costs(study), "price": price or _price(study), "chosen": chosen}
  rows, diverged = [], []
  for cell_json in sorted((out / "runs").rglob("cell.json")):
    wd = cell_json.parent
    info = json.loads(cell_json.read_text())
    if info.get("diverged"):
      diverged.append(info)
    elif (wd / "results.json").exists():
      res = json.loads((wd / "results.json").read_text())
      rows.append(_record(study, info, res, str(wd.relative_to(out)), ctx))
  return rows, diverged


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


def decision_answers(study: Mapping[str, Any], rows: list[dict]) -> list[str]:
  """The answers of a study whose comparisons carry a margin (``delta``): three-valued, family
  by family (``verdicts.decisions``), then the study's own rule (``decide``) per question."""
  decided = verdicts.decisions(rows, study["comparisons"], study.get("label"))
  families = list(dict.fromkeys(r["question"] for r in decided))
  sizes = ", ".join(f"{q} {sum(r['question'] == q for r in decided)}" for q in families)
  lines = [
    "## Answers",
    "",
    "Each comparison is a - b of the test metric, paired by seed. Within each family (the",
    f"question: {sizes} comparisons) the intervals are simultaneous 95% (Bonferroni) and",
    "the two one-sided tests (TOST) at the margin are Holm-corrected. Three values: better",
    "by more than the margin (the whole simultaneous interval beyond it), equivalent within",
    "it (TOST), else inconclusive. Headline comparisons are marked **H**.",
    "",
  ]
  for q in families:
    for task in dict.fromkeys(r["task"] for r in decided if r["question"] == q):
      mine = [r for r in decided if (r["question"], r["task"]) == (q, task)]
      lines += [f"**{q}** ({task}):"]
      for r in mine:
        mark = "**H** " if r.get("headline") else ""
        lines.append(f"- {mark}({r['size']}) {r['line']}")
      decision = verdicts.conclusion(study, q, mine, mine[0]["higher"])
      lines += ["", decision, ""] if decision else [""]
  return lines


def answers(study: Mapping[str, Any], rows: list[dict]) -> list[str]:
  """The three verdicts: the pre-registered comparisons, Holm-corrected, by question (with
  margins: ``decision_answers``)."""
  specs = study.get("comparisons") or []
  if not specs:
    return []
  if all("delta" in c for c in specs):
    return decision_answers(study, rows)
  compared = verdicts.compare(rows, specs)
  higher = {r["task"]: not plots.lower_is_better(r["metric"]) for r in rows}
  lines = [
    "## Answers",
    "",
    "Paired by seed; differences a - b of the test metric with 95% t-intervals; two-sided",
    f"paired t-tests, Holm-corrected over all {len(specs)} pre-registered comparisons.",
    "",
  ]
  for q in ("Q1", "Q2", "Q3"):
    tasks = dict.fromkeys(c["task"] for c in compared if c["question"] == q)  # spec order
    for task in tasks:  # a question asked on two tasks is answered on each, in order
      mine = [c for c in compared if (c["question"], c["task"]) == (q, task)]
      lines += [f"**{q}** ({task}):"]
      hib = higher.get(task, True)
      lines += [verdicts.verdict_line(c, hib) for c in mine]
      decision = verdicts.conclusion(study, q, mine, hib)
      lines += ["", decision, ""] if decision else [""]
  return [*lines, "Q3's costs are in the cost table below (training and inference).", ""]


def sanity_section(study: Mapping[str, Any], rows: list[dict]) -> list[str]:
  lines = ["## Sanity checklist", "", "| check | result | evidence |", "|---|---|---|"]
  for name, ok, ev in verdicts.sanity(study, rows):
    mark = "not run yet" if ok is None else ("PASS" if ok else "FAIL")
    lines.append(f"| {name} | {mark} | {ev} |")
  return [*lines, ""]


def cost_section(rows: list[dict[str, Any]], out: Path, price: cost.Price) -> list[str]:
  """Dollars per mixer at ``price`` (``lrm.analysis.cost``) from each cell's JSON files."""
  runs = []
  for r in rows:
    if not r["in_study"]:
      continue
    wd = out / r["workdir"]
    res = json.loads((wd / "results.json").read_text())
    info = json.loads((wd / "cell.json").read_text())
    costs = info.get("costs") or {}
    label = r["name"] + ("" if r["size"] is None else f" {r['size']}")
    runs.append({**costs, **res, "decode": info.get("decode"), **r, "label": label})
  return cost.study_table(runs, price)


def follow_up_note(study: Mapping[str, Any], task: str) -> str | None:
  """What a task with ``follow_up`` (another task's arms, trained longer at some widths) is."""
  t = study["tasks"][task]
  base = t.get("follow_up")
  if not base:
    return None
  steps = [(study["tasks"][k].get("overrides") or {}).get("train.steps") for k in (task, base)]
  longer = f" for {steps[0]:,} steps (against {steps[1]:,})" if all(steps) else " longer"
  widths = ", ".join(str(w) for w in (t.get("sizes") or study.get("sizes") or {}).values())
  return (
    f"A follow-up of {base}: its arms trained{longer} at width {widths} only, with their own "
    "learning-rate sweep; one width gives a point per mixer, not a curve."
  )


def write_report(
  study: Mapping[str, Any], out: Path | str, price: cost.Price | None = None
) -> Path:
  """REPORT.md, summary.json and the plots in ``out``; dollars at ``price`` (default: the
  study's ``price_per_hour`` and ``price_machine``, else ``lrm.analysis.cost``'s)."""
  out = Path(out)
  price = price or _price(study)
  rows, diverged = records(study, out, price)
  lines = [f"# Study: {study['name']}", ""]
  if study.get("question"):
    lines += [study["question"].strip(), ""]
  n_in = sum(r["in_study"] for r in rows)
  lines += [
    f"{len(rows)} finished runs ({n_in} at their chosen learning rate), {len(diverged)}",
    f"diverged; seeds {study['seeds']}; budget rules {study['rules']}. Each cell is an",
    "ordinary run directory under `runs/`. Metrics: test metric of the best-validation",
    "checkpoint; intervals are 95% t-intervals over seeds (sample sd, ddof = 1).",
    "",
    *missing_section(rows),
    *provenance.lines(study, rows),
    *answers(study, rows),
    *(study["sections"](rows, out) if study.get("sections") else []),  # the study's own
  ]
  notes = study["notes"](rows) if study.get("notes") else {}
  for task in study["tasks"]:
    lines += [f"## {task}", ""]
    note = " ".join(n for n in (notes.get(task), follow_up_note(study, task)) if n)
    lines += [note, ""] if note else []
    for rule in study["rules"]:
      table = tables.task_table(rows, task, rule)
      if table:
        lines += [f"Equal **{rule.replace('_', ' ')}**:", "", *table, ""]
    plot = out / f"{task}.png"
    if plots.plot_curves(rows, task, study["rules"][0], plot):
      lines += [f"![{task}]({plot.name})", ""]
    curves = plots.learning_curves(rows, out, task)
    if any(len(c[0]) > 1 for p in curves.values() for cs in p.values() for c in cs):
      lc = out / f"{task}_learning.png"  # only where runs were evaluated more than once
      if plots.plot_learning_curves(rows, out, task, lc, data=curves):
        lines += [f"![{task}: validation metric during training]({lc.name})", ""]
  lines += tables.sweep_section(sweep.load(out), diverged)
  lines += sanity_section(study, rows)
  lines += tables.content_section(study, rows, out)
  lines += tables.cost_section(study, rows, price)
  lines += cost_section(rows, out, price)
  lines += tables.limits(study, rows)
  report = out / "REPORT.md"
  report.write_text("\n".join(lines) + "\n")
  clean = [{k: v for k, v in r.items() if k not in ("missing", "kernels")} for r in rows]
  (out / "summary.json").write_text(json.dumps(clean, indent=1, default=str) + "\n")
  return report
