"""MAD scores (Poli et al. 2024): per task, the mean over its difficulty settings of the best
run's accuracy; per mixer, the mean of its task scores. No JAX.

A MAD study (``experiments/studies/mad.py``) has one study task per (MAD task, difficulty
setting, weight decay), each tagged ``mad=dict(task=..., setting=..., weight_decay=...)``: the
study's learning-rate sweep covers the learning-rate axis of MAD's grid, the study tasks its
weight-decay axis. The best run of a (mixer, setting) is chosen on validation: every
weight-decay arm already runs at its chosen rate (``lrm.study.sweep``, extended upward by
``lrm.study.extend``); of those, the weight decay with the higher mean validation accuracy
over seeds is kept and its test accuracies (one per seed) are the setting's values. MAD picks
the grid point with the best *test* accuracy of a single run; lrm chooses on validation and
keeps every seed. A task score is computed per seed (mean over the task's settings, for the
seeds present in all of them) and summarised over seeds (mean, 95% t-interval); the MAD score
is the mean over tasks, per seed, summarised the same way.

``section(study, rows, out)`` is the REPORT.md section (``study["sections"]``) with the score
table, the per-setting table and ``mad_scores.png``; ``scores`` and ``best_runs`` are what it
prints, for tests and other reports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrm.study import plots, stats

Record = Mapping[str, Any]
SCORE = "MAD score"


def tags(study: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """``{study task key: {task, setting, weight_decay}}`` of the tagged study tasks."""
  return {k: dict(t["mad"]) for k, t in study["tasks"].items() if t.get("mad")}


def task_settings(study: Mapping[str, Any]) -> dict[str, list[str]]:
  """``{MAD task: [settings]}`` in the study's order."""
  out: dict[str, list[str]] = {}
  for tag in tags(study).values():
    names = out.setdefault(tag["task"], [])
    if tag["setting"] not in names:
      names.append(tag["setting"])
  return out


def best_runs(study: Mapping[str, Any], rows: Sequence[Record]) -> list[dict[str, Any]]:
  """One record per (mixer name, MAD task, setting): the weight decay (and its rate) with the
  best mean validation accuracy, and its test accuracy per seed."""
  tagged = tags(study)
  rule = study["rules"][0]
  arms: dict[tuple, dict[float, list[Record]]] = defaultdict(lambda: defaultdict(list))
  for r in rows:
    tag = tagged.get(r["task"])
    if tag is None or not r["in_study"] or r["value"] is None or r["rule"] != rule:
      continue
    arms[(r["name"], tag["task"], tag["setting"])][float(tag["weight_decay"])].append(r)
  out = []
  for (name, task, setting), by_wd in arms.items():

    def validation(wd: float, by_wd: Mapping = by_wd) -> tuple[float, float]:
      vals = [r["validation_value"] for r in by_wd[wd] if r.get("validation_value") is not None]
      v = sum(vals) / len(vals) if vals else -math.inf
      return (-math.inf if math.isnan(v) else v, -wd)  # ties: the smaller weight decay

    wd = max(by_wd, key=validation)
    cells = by_wd[wd]
    out.append(
      dict(
        name=name,
        task=task,
        setting=setting,
        weight_decay=wd,
        lr=cells[0].get("lr"),
        validation=validation(wd)[0],
        test={int(r["seed"]): float(r["value"]) for r in cells},
        chance=cells[0].get("chance"),
        guess=cells[0].get("chance_context"),
      )
    )
  return out


def scores(study: Mapping[str, Any], rows: Sequence[Record]) -> dict[str, dict[str, Any]]:
  """``{mixer name: {MAD task: Summary, ..., "MAD score": Summary}}`` over seeds; a task
  whose settings are not all done for some seed is left out (``pending``)."""
  settings = task_settings(study)
  best = best_runs(study, rows)
  by: dict[str, dict[str, dict[str, dict[int, float]]]] = defaultdict(lambda: defaultdict(dict))
  for b in best:
    by[b["name"]][b["task"]][b["setting"]] = b["test"]
  out: dict[str, dict[str, Any]] = {}
  for name in sorted(by):
    per_seed: dict[str, dict[int, float]] = {}
    for task, names in settings.items():
      got = by[name].get(task, {})
      if any(s not in got for s in names):
        continue
      seeds = set.intersection(*(set(got[s]) for s in names))
      per_seed[task] = {seed: sum(got[s][seed] for s in names) / len(names) for seed in seeds}
    row: dict[str, Any] = {t: stats.summarize(list(v.values())) for t, v in per_seed.items()}
    if len(per_seed) == len(settings):  # every task scored: the MAD score, per seed
      seeds = set.intersection(*(set(v) for v in per_seed.values()))
      row[SCORE] = stats.summarize(
        [sum(v[s] for v in per_seed.values()) / len(per_seed) for s in sorted(seeds)]
      )
    out[name] = row
  return out


def plot(table: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], path: Path) -> bool:
  """Bars: each mixer's MAD score with its 95% interval; dots: its task scores."""
  named = {n: r for n, r in table.items() if SCORE in r and r[SCORE].n > 0}
  if not named:
    return False
  plt = plots._pyplot()
  order = sorted(named, key=lambda n: -named[n][SCORE].mean)
  fig, ax = plt.subplots(figsize=(1.2 * len(order) + 4.5, 4))
  for i, n in enumerate(order):
    s = named[n][SCORE]
    err = [[s.mean - s.lo], [s.hi - s.mean]] if s.n > 1 else None
    ax.bar(i, s.mean, color="0.8", yerr=err, capsize=4)
    for j, t in enumerate(tasks):
      if t in named[n]:
        ax.plot(i - 0.3 + 0.6 * j / max(len(tasks) - 1, 1), named[n][t].mean, "o", color=f"C{j}",
                label=t if i == 0 else None)  # fmt: skip
  ax.set_xticks(range(len(order)), order, rotation=20)
  ax.set_ylim(0, 1.04)  # dots at 1.0 drawn whole
  ax.set_ylabel("test accuracy (mean over settings, then tasks)")
  ax.set_title("MAD score (bars, 95% CI over seeds) and task scores (dots)")
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def section(study: Mapping[str, Any], rows: Sequence[Record], out: Path | str) -> list[str]:
  """REPORT.md's "MAD scores" section: the score table, the plot, the best run per setting."""
  settings = task_settings(study)
  table = scores(study, rows)
  tasks = list(settings)
  lines = [
    "## MAD scores",
    "",
    "Per task: the mean over its difficulty settings of the best run's test accuracy (the",
    "weight decay and learning rate with the best validation accuracy); MAD score: the mean",
    "over tasks. Mean over seeds with 95% t-intervals; `pending`: not every setting done.",
    "",
    _row(["mixer", *tasks, SCORE]),
    _row(["---"] * (len(tasks) + 2)),
  ]
  for name, row in sorted(table.items(), key=lambda kv: -_mean(kv[1].get(SCORE))):
    lines.append(
      _row([name, *(row[t].text(3) if t in row else "pending" for t in [*tasks, SCORE])])
    )
  if plot(table, tasks, Path(out) / "mad_scores.png"):
    lines += ["", "![MAD scores](mad_scores.png)"]
  names = sorted(table)
  lines += [
    "",
    "Best run per setting (test accuracy, mean over seeds; chance and the guess among the",
    "values in context are the task's reference levels):",
    "",
    _row(["task", "setting", "chance", "context guess", *names]),
    _row(["---"] * (4 + len(names))),
  ]
  best = {(b["name"], b["task"], b["setting"]): b for b in best_runs(study, rows)}
  for task, settings_of in settings.items():
    for s in settings_of:
      some = next((b for (_, t, z), b in best.items() if (t, z) == (task, s)), {})
      cells = []
      for name in names:
        b = best.get((name, task, s))
        if b is None:
          cells.append("n/a")
          continue
        mean = sum(b["test"].values()) / len(b["test"])
        how = f" (wd {b['weight_decay']:g}, lr {b['lr']:g})" if b["lr"] is not None else ""
        cells.append(f"{mean:.3f}{how}")
      lines.append(_row([task, s, _fmt(some.get("chance")), _fmt(some.get("guess")), *cells]))
  return [*lines, ""]


def _row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"


def _mean(s: stats.Summary | None) -> float:
  return -1.0 if s is None or s.n == 0 else s.mean


def _fmt(x: float | None) -> str:
  return "-" if x is None else f"{x:.3f}"
