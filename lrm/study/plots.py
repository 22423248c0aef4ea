"""A study's figures, drawn with matplotlib from summary records (no JAX): the test metric
against each cost with 95% interval bands and the chance line, the effective kernels (one
colour scale), the validation metric against training step (from each cell's
metrics.jsonl) and a forest plot of paired differences."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrm.study import stats

COSTS = [
  ("params_non_embedding", "non-embedding parameters (count)"),
  ("train_flops_per_token", "training FLOPs per token (algorithmic, FLOPs)"),
  ("train_seconds", "training time (s; no compilation, no evaluation)"),
]


def _pyplot() -> Any:
  import matplotlib

  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  return plt


def curves(rows: Sequence[Mapping[str, Any]], task: str, rule: str) -> dict[str, list[tuple]]:
  """``{mixer name: [(size width, records), ...]}`` of in-study cells, by width."""
  by: dict[str, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
  for r in rows:
    if r["task"] == task and r["rule"] == rule and r["in_study"] and r["value"] is not None:
      by[r["name"]][r.get("size_width") or 0].append(r)
  return {name: sorted(d.items()) for name, d in sorted(by.items())}


def metric_range(metric: str) -> tuple[float, float]:
  """Values a metric can take: accuracies in [0, 1], losses and bits at least 0."""
  if metric in ("accuracy", "exact") or metric.startswith("acc_"):
    return 0.0, 1.0
  if metric in ("loss", "bits_per_byte", "perplexity"):
    return 0.0, np.inf
  return -np.inf, np.inf


def lower_is_better(metric: str) -> bool:
  """Losses, bits and perplexity (unbounded above) improve downwards; accuracies upwards."""
  return metric_range(metric)[1] == np.inf


def band(values: Sequence[float], metric: str) -> tuple[float, float, float]:
  """(mean, low, high) of a 95% t-interval, clipped to what the metric can take (a t-band of
  three seeds at 1.0, 0.2 and 0.2 would otherwise reach below 0); one value: no band."""
  s = stats.summarize(values)
  lo, hi = (s.lo, s.hi) if s.n > 1 else (s.mean, s.mean)
  floor, ceil = metric_range(metric)
  return s.mean, float(np.clip(lo, floor, ceil)), float(np.clip(hi, floor, ceil))


def plot_curves(rows: Sequence[Mapping[str, Any]], task: str, rule: str, path: Path) -> bool:
  """Test metric (mean over seeds, 95% t-interval band) against each cost; False if empty."""
  data = curves(rows, task, rule)
  if not data:
    return False
  if all(len(points) == 1 for points in data.values()):
    return plot_points(data, task, rule, path)  # one width: no curve to draw
  plt = _pyplot()
  first = next(iter(data.values()))[0][1][0]
  metric, chance = first["metric"], first.get("chance")
  fig, axes = plt.subplots(1, 3, figsize=(18, 4.6))
  cmap = plt.cm.tab10 if len(data) <= 10 else plt.cm.tab20
  for i, (name, points) in enumerate(data.items()):
    colour = cmap(i % cmap.N)
    mean, lo, hi = np.array([band([r["value"] for r in rs], metric) for _, rs in points]).T
    for ax, (field, _) in zip(axes, COSTS, strict=True):
      xs = [
        np.mean([r[field] for r in rs if r.get(field) is not None] or [np.nan]) for _, rs in points
      ]
      xs = np.array(xs, dtype=float)
      ok = np.isfinite(xs)
      if not ok.any():
        continue
      ax.plot(xs[ok], mean[ok], "o-", color=colour, label=name if ax is axes[0] else None)
      ax.fill_between(xs[ok], lo[ok], hi[ok], color=colour, alpha=0.15, linewidth=0)
  for ax, (_, xlabel) in zip(axes, COSTS, strict=True):
    if chance is not None:
      ax.axhline(chance, color="grey", ls="--", lw=1, label="chance" if ax is axes[0] else None)
      ax.annotate(
        f"chance {chance:.3g}", (0.01, chance), xycoords=("axes fraction", "data"),
        fontsize=8, color="grey", va="bottom",
      )  # fmt: skip
    lo_x, hi_x = ax.get_xlim()
    if lo_x > 0 and hi_x / lo_x > 4:  # log only where the costs span a wide range
      ax.set_xscale("log")
    else:
      ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {metric.replace('_', ' ')}")
    ax.grid(alpha=0.3, which="both")
  fig.suptitle(
    f"{task}: test {metric.replace('_', ' ')} against cost (equal {rule.replace('_', ' ')}; "
    "mean over seeds, band = 95% t-interval, clipped to the metric's range)"
  )
  fig.legend(loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=8, frameon=False)
  fig.tight_layout(rect=(0, 0, 0.8, 0.95))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def ranked(stats_of: Mapping[str, tuple[float, float, float]], lower_is_better: bool) -> list:
  """Mixer names by mean (``stats_of[name][0]``), best first."""
  return sorted(stats_of, key=lambda n: stats_of[n][0], reverse=not lower_is_better)


def plot_points(data: Mapping[str, list[tuple]], task: str, rule: str, path: Path) -> bool:
  """A task run at one width: each mixer's mean with its 95% t-interval and every seed, best
  first; the chance line only where it falls near the values (8 bits per byte would flatten
  every difference). Costs are in the report's table beside it."""
  plt = _pyplot()
  first = next(iter(data.values()))[0][1][0]
  metric, chance = first["metric"], first.get("chance")
  lo_is_best = lower_is_better(metric)
  stats_of = {name: band([r["value"] for r in pts[0][1]], metric) for name, pts in data.items()}
  order = ranked(stats_of, lo_is_best)
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(order) + 1.6))
  for y, name in enumerate(order):
    mean, lo, hi = stats_of[name]
    ax.errorbar(mean, y, xerr=[[mean - lo], [hi - mean]], fmt="o", color="C0", capsize=4)
    seeds = [r["value"] for r in data[name][0][1]]
    ax.plot(seeds, [y] * len(seeds), "x", color="grey", ms=5)
  values = [v for s in stats_of.values() for v in s]
  span = max(values) - min(values) or 1.0
  if chance is not None and min(values) - span <= chance <= max(values) + span:
    ax.axvline(chance, color="grey", ls="--", lw=1)
    ax.annotate(
      f" chance {chance:.3g}", (chance, 0.02), xycoords=("data", "axes fraction"),
      fontsize=8, color="grey",
    )  # fmt: skip
  guess = first.get("chance_context")  # recall: the uniform guess among the context's values
  if guess is not None:
    ax.axvline(guess, color="C3", ls=":", lw=1)
    ax.annotate(
      f" context guess {guess:.3g}", (guess, 0.08), xycoords=("data", "axes fraction"),
      fontsize=8, color="C3",
    )  # fmt: skip
  ax.set_yticks(range(len(order)), order)
  ax.invert_yaxis()  # best on top
  ax.set_xlabel(f"test {metric.replace('_', ' ')}" + (" (lower is better)" if lo_is_best else ""))
  ax.grid(alpha=0.3, axis="x")
  size = first.get("size")
  width = "one width" if size is None else f"one width ({size})"  # None: the config's own
  ax.set_title(
    f"{task}: {width}, equal {rule.replace('_', ' ')}\n"
    "mean with 95% t-interval (o, bar) and each seed (x)",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def kernel_figure(panels: Mapping[str, Mapping[str, Any]], cols: int = 4, title: str = "") -> Any:
  """The heatmaps of ``plot_kernels`` on ONE colour scale (0 to the largest share over all
  panels) with one colorbar: a faint panel is a spread-out kernel, not a rescaled one."""
  plt = _pyplot()
  from matplotlib.colors import Normalize
  from matplotlib.ticker import MaxNLocator

  n = len(panels)
  cols = min(cols, n)
  rows = (n + cols - 1) // cols
  fig, axes = plt.subplots(
    rows, cols, figsize=(4.0 * cols + 1.2, 3.3 * rows + 0.4), squeeze=False, layout="constrained"
  )
  for ax in axes.flat[n:]:
    ax.axis("off")
  vmax = max(float(np.nanmax(np.asarray(ek["kernels"], float))) for ek in panels.values())
  norm = Normalize(vmin=0.0, vmax=vmax if np.isfinite(vmax) and vmax > 0 else 1.0)
  im = None
  for ax, (name, ek) in zip(axes.flat, panels.items(), strict=False):
    offsets = ek["offsets"]
    im = ax.imshow(
      np.asarray(ek["kernels"], float),
      aspect="auto",
      cmap="viridis",
      norm=norm,
      extent=(offsets[0] - 0.5, offsets[-1] + 0.5, len(ek["positions"]), 0),
    )
    ax.set_title(f"{name}\nkernel variation {ek['variation']:.3f}", fontsize=9)
    ax.set_xlabel("offset o (input i + o), tokens")
    ax.set_ylabel("sampled output position")
    for axis in (ax.xaxis, ax.yaxis):  # offsets and positions are whole tokens
      axis.set_major_locator(MaxNLocator(integer=True))
  fig.colorbar(
    im, ax=list(axes.flat), shrink=0.8, pad=0.01, label="share of |dy/dx| (one scale, all panels)"
  )
  if title:
    fig.suptitle(title)
  return fig


def plot_kernels(
  panels: Mapping[str, Mapping[str, Any]], path: Path, cols: int = 4, title: str = ""
) -> bool:
  """Heatmaps (sampled position x offset) of effective kernels, one panel per tested layer,
  on one shared colour scale; each is a cell.json ``kernels`` entry (``offsets``,
  ``positions``, ``kernels``, ``variation``). False if there is nothing to draw."""
  if not panels:
    return False
  return _save(kernel_figure(panels, cols, title), path)


def _save(fig: Any, path: Path) -> bool:
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)
  return True


Curve = tuple[np.ndarray, np.ndarray]  # (steps, values) of one seed


def validation_series(path: Path, metric: str) -> Curve:
  """(steps, values) of ``metric`` in a metrics.jsonl's validation records, by step (the last
  record of a step wins); lines that are not records, and non-finite values, are skipped."""
  by_step: dict[int, float] = {}
  for line in path.read_text(errors="replace").splitlines():
    try:
      rec = json.loads(line)
      step, split, value = int(rec["step"]), rec.get("split"), rec.get(metric)
    except (ValueError, TypeError, KeyError, AttributeError):
      continue
    if split == "validation" and isinstance(value, int | float) and math.isfinite(value):
      by_step[step] = float(value)
  steps = sorted(by_step)
  return np.array(steps, float), np.array([by_step[s] for s in steps], float)


def learning_curves(
  rows: Sequence[Mapping[str, Any]], out: Path, task: str, metric: str | None = None
) -> dict[tuple, dict[str, list[Curve]]]:
  """``{(rule, size): {arm name: [one Curve per seed]}}`` of the task's in-study cells, read
  from ``<out>/<workdir>/metrics.jsonl`` (``metric``: default each cell's own); cells without
  the file or without validation records of the metric are left out. Panels by width."""
  by: dict[tuple, dict[str, list[Curve]]] = defaultdict(lambda: defaultdict(list))
  cells = [r for r in rows if r["task"] == task and r.get("in_study", True)]

  def order(r: Mapping[str, Any]) -> tuple:
    return str(r["rule"]), r.get("size_width") or 0, str(r.get("size")), r["seed"]

  for r in sorted(cells, key=order):
    path = Path(out) / r["workdir"] / "metrics.jsonl"
    if not path.is_file():
      continue
    steps, values = validation_series(path, metric or r["metric"])
    if len(steps):
      by[(r["rule"], r.get("size"))][r["name"]].append((steps, values))
  return {key: dict(sorted(arms.items())) for key, arms in by.items()}


def seed_mean(seeds: Sequence[Curve]) -> Curve:
  """The mean over seeds at the steps every seed logged."""
  common = set(seeds[0][0].tolist()).intersection(*(s.tolist() for s, _ in seeds[1:]))
  steps = np.array(sorted(common), float)
  vals = [dict(zip(s.tolist(), v.tolist(), strict=True)) for s, v in seeds]
  return steps, np.array([np.mean([d[x] for d in vals]) for x in steps.tolist()], float)


def y_limits(
  values: Sequence[float], levels: Mapping[str, float | None], margin: float = 0.05
) -> tuple[tuple[float, float], dict[str, float]]:
  """(y-limits showing every value, the reference levels near enough to draw): a level is
  drawn only within the values' range widened by its span on each side (as in plot_points:
  a chance line of 8 bits per byte would flatten every difference); ``margin`` of the span
  is added on each side."""
  v = np.asarray(values, float)
  v = v[np.isfinite(v)]
  lo, hi = float(v.min()), float(v.max())
  span = (hi - lo) or (0.1 * abs(hi) or 1.0)
  kept = {
    k: float(c)
    for k, c in levels.items()
    if c is not None and math.isfinite(c) and lo - span <= c <= hi + span
  }
  lo, hi = min([lo, *kept.values()]), max([hi, *kept.values()])
  pad = margin * ((hi - lo) or span)
  return (lo - pad, hi + pad), kept


LEVEL_STYLE = {"chance": dict(color="grey", ls="--"), "context guess": dict(color="black", ls=":")}


def learning_curve_figure(
  data: Mapping[tuple, Mapping[str, Sequence[Curve]]],
  task: str,
  metric: str,
  levels: Mapping[str, float | None],
  xlabel: str = "training step",
) -> Any:
  """One panel per (rule, size) of ``learning_curves``: each seed thin, the mean thick, one
  colour per arm, the reference ``levels`` that fall near the values (``y_limits``); the
  curves' x may be steps or anything else (``xlabel``: e.g. steps times a step's seconds)."""
  plt = _pyplot()
  from matplotlib.lines import Line2D

  names = sorted({n for arms in data.values() for n in arms})
  cmap = plt.cm.tab10 if len(names) <= 10 else plt.cm.tab20
  colour = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
  cols = min(3, len(data))
  nrows = (len(data) + cols - 1) // cols
  fig, axes = plt.subplots(
    nrows, cols, figsize=(max(5.2 * cols + 2.6, 9.0), 3.9 * nrows + 0.6), squeeze=False,
    layout="constrained",
  )  # fmt: skip
  for ax in axes.flat[len(data) :]:
    ax.axis("off")
  handles: dict[str, Any] = {}
  several_rules = len({rule for rule, _ in data}) > 1
  label = f"validation {metric.replace('_', ' ')}"
  for ax, ((rule, size), arms) in zip(axes.flat, data.items(), strict=False):
    values: list[float] = []
    for name, seeds in arms.items():
      few = max(len(s) for s, _ in seeds) <= 12  # a handful of evaluations: mark each
      for steps, vals in seeds:
        ax.plot(steps, vals, color=colour[name], lw=0.8, alpha=0.5, marker="." if few else None)
        values.extend(vals.tolist())
      steps, mean = seed_mean(seeds)
      if len(steps):
        (line,) = ax.plot(steps, mean, color=colour[name], lw=2.4, marker="o" if few else None)
        handles.setdefault(name, line)
    (lo, hi), kept = y_limits(values, levels)
    for what, y in kept.items():
      style = LEVEL_STYLE.get(what, dict(color="grey", ls="-."))
      ax.axhline(y, lw=1, **style)
      handles.setdefault(what, Line2D([], [], lw=1, **style))
      ax.annotate(
        f" {what} {y:.3g}", (0.0, y), xycoords=("axes fraction", "data"), fontsize=8,
        color=style["color"], va="bottom",
      )  # fmt: skip
    ax.set_ylim(lo, hi)
    where = [f"size {size}"] if size is not None else []
    where += [f"equal {rule.replace('_', ' ')}"] if several_rules else []
    if where:
      ax.set_title(", ".join(where), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label + (" (lower is better)" if lower_is_better(metric) else ""))
    ax.grid(alpha=0.3)
  handles["each seed (thin)"] = Line2D([], [], color="grey", lw=0.8, alpha=0.6)
  handles["mean over seeds (thick),\nat the steps all seeds logged"] = Line2D(
    [], [], color="grey", lw=2.4
  )
  fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=8)
  once = all(len(s) == 1 for arms in data.values() for seeds in arms.values() for s, _ in seeds)
  fig.suptitle(
    f"{task}: {label} during training" + ("\n(one evaluation per run: no curve)" if once else "")
  )
  return fig


def plot_learning_curves(
  rows: Sequence[Mapping[str, Any]],
  out: Path,
  task: str,
  path: Path,
  metric: str | None = None,
  data: Mapping[tuple, Mapping[str, list[Curve]]] | None = None,
) -> bool:
  """The validation metric (default: the task's main metric) against training step for every
  in-study arm of ``task``, from each cell's metrics.jsonl: each seed thin, the mean thick,
  chance and the context guess where they fall near the curves. False if nothing to draw.
  ``data``: the task's ``learning_curves`` when the caller has read them already."""
  data = learning_curves(rows, out, task, metric) if data is None else data
  if not data:
    return False
  first = next(r for r in rows if r["task"] == task and r.get("in_study", True))
  main = first["metric"]
  levels = {"chance": first.get("chance"), "context guess": first.get("chance_context")}
  if metric not in (None, main):  # the levels are the main metric's
    levels = {}
  return _save(learning_curve_figure(data, task, metric or main, levels), path)


def forest_figure(
  rows: Sequence[Mapping[str, Any]],
  delta: float | None = None,
  title: str = "",
  metric: str | None = None,
) -> Any:
  """``plot_forest``'s figure: one row per comparison, top to bottom in the given order."""
  plt = _pyplot()
  from matplotlib.lines import Line2D
  from matplotlib.patches import Patch

  n = len(rows)
  fig, ax = plt.subplots(figsize=(9, 0.5 * n + 2.0), layout="constrained")
  handles: dict[str, Any] = {}
  if delta:
    ax.axvspan(-delta, delta, color="C2", alpha=0.15, lw=0, label="equivalence margin")
    handles[f"equivalence margin ±{delta:.3g}"] = Patch(color="C2", alpha=0.15)
  ax.axvline(0.0, color="black", lw=1)
  for y, r in enumerate(rows):
    mean, lo, hi = (float(r[k]) if r.get(k) is not None else math.nan for k in ("mean", "lo", "hi"))
    diffs = [float(d) for d in r.get("diffs") or []]
    if diffs:
      ax.plot(diffs, [y + 0.2] * len(diffs), ".", color="grey", ms=6, alpha=0.8)
      handles["each seed's difference"] = Line2D([], [], ls="", marker=".", color="grey", ms=6)
    if not math.isfinite(mean):
      ax.annotate("pending", (0.5, y), xycoords=("axes fraction", "data"), ha="center",
                  va="center", color="grey", fontsize=9)  # fmt: skip
      continue
    err = [[mean - lo], [hi - mean]] if math.isfinite(lo) and math.isfinite(hi) else None
    ax.errorbar(mean, y, xerr=err, fmt="o", color="C0", capsize=4, lw=1.6)
    handles["mean, simultaneous interval"] = Line2D([], [], marker="o", color="C0", lw=1.6)
  ax.set_yticks(range(n), [str(r["name"]) for r in rows])
  ax.set_ylim(n - 0.5, -0.5)  # first comparison on top
  if any(r.get("verdict") for r in rows):
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(n), [str(r.get("verdict") or "") for r in rows], fontsize=8)
    right.tick_params(length=0)
  xlabel = "difference a - b"
  if metric:
    better = "negative" if lower_is_better(metric) else "positive"
    xlabel += f" of test {metric.replace('_', ' ')} ({better}: a is better)"
  ax.set_xlabel(xlabel)
  ax.grid(alpha=0.3, axis="x")
  if handles:
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3,
               fontsize=8, frameon=False)  # fmt: skip
  if title:
    ax.set_title(title, fontsize=10)
  return fig


def plot_forest(
  rows: Sequence[Mapping[str, Any]],
  path: Path,
  delta: float | None = None,
  title: str = "",
  metric: str | None = None,
) -> bool:
  """Paired differences a - b, one row per comparison (``name``, ``mean``, ``lo``, ``hi`` of a
  simultaneous interval; optional ``diffs``, each seed's difference, and ``verdict``, written
  at the right): a line at 0 and, given ``delta``, the equivalence band [-delta, +delta].
  A row without a mean is drawn as pending. False if there are no rows."""
  if not rows:
    return False
  return _save(forest_figure(rows, delta, title, metric), path)


OUTCOME_MARK = {  # stats.decide's outcomes, as written in a decision-grid cell
  stats.A_BETTER: "a better",
  stats.B_BETTER: "b better",
  stats.EQUIVALENT: "equivalent",
  stats.INCONCLUSIVE: "inconclusive",
  None: "pending",
}


def decision_grid_figure(
  cells: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]],
  rows: Sequence[str],
  cols: Sequence[str],
  delta: float,
  title: str = "",
  labels: Mapping[str | None, str] | None = None,
) -> Any:
  """``plot_decision_grid``'s figure: one panel per key of ``cells``, ``rows`` x ``cols``."""
  plt = _pyplot()
  from matplotlib.colors import TwoSlopeNorm

  labels = {**OUTCOME_MARK, **(labels or {})}
  n = len(cells)
  fig, axes = plt.subplots(
    1, n, figsize=(3.2 * n + 1.4, 0.9 * len(rows) + 1.8), squeeze=False, layout="constrained"
  )
  means = [
    float(c["mean"]) for p in cells.values() for c in p.values() if c.get("mean") is not None
  ]
  finite = [abs(m) for m in means if math.isfinite(m)]
  vmax = max([*finite, 2 * delta]) if finite else 2 * delta
  norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
  im = None
  for ax, (panel, grid) in zip(axes.flat, cells.items(), strict=True):
    z = np.full((len(rows), len(cols)), np.nan)
    for (r, c), cell in grid.items():
      if r in rows and c in cols and cell.get("mean") is not None:
        z[rows.index(r), cols.index(c)] = float(cell["mean"])
    im = ax.imshow(z, cmap="RdBu", norm=norm, aspect="auto")
    for i, r in enumerate(rows):
      for j, c in enumerate(cols):
        cell = grid.get((r, c))
        if cell is None:
          text, color = "not run\n(cut)", "grey"
        else:
          m = cell.get("mean")
          value = "" if m is None or not math.isfinite(float(m)) else f"\n{float(m):+.3f}"
          text, color = labels.get(cell.get("outcome"), str(cell.get("outcome"))) + value, "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(panel, fontsize=10)
  fig.colorbar(im, ax=list(axes.flat), shrink=0.85, pad=0.01, label="mean difference a - b")
  fig.suptitle(title or f"decision per cell at margin ±{delta:g}", fontsize=10)
  return fig


def plot_decision_grid(
  cells: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]],
  path: Path,
  rows: Sequence[str],
  cols: Sequence[str],
  delta: float,
  title: str = "",
  labels: Mapping[str | None, str] | None = None,
) -> bool:
  """A phase diagram of decided comparisons: one panel per key of ``cells`` (e.g. the
  convolution compared), each a ``rows`` x ``cols`` grid (e.g. task x width) coloured by the
  mean difference a - b on ONE diverging scale shared by every panel and labelled with the
  decision (``outcome``, ``stats.decide``; ``labels`` renames them, e.g. "local better") and
  the mean. A (row, col) missing from a panel is drawn as "not run (cut)". False if empty."""
  if not cells:
    return False
  return _save(decision_grid_figure(cells, rows, cols, delta, title, labels), path)


def pareto_front(points: Sequence[tuple[float, float]], lower_is_better: bool) -> list[int]:
  """Indices of the points (cost, quality) no other point beats on both (cost lower or
  equal and quality better or equal, one strictly), cheapest first."""
  sign = 1.0 if lower_is_better else -1.0  # quality to minimise
  idx = [i for i, (c, q) in enumerate(points) if math.isfinite(c) and math.isfinite(q)]
  front = [
    i for i in idx
    if not any(
      points[j][0] <= points[i][0] and sign * points[j][1] <= sign * points[i][1]
      and (points[j][0] < points[i][0] or sign * points[j][1] < sign * points[i][1])
      for j in idx
    )
  ]  # fmt: skip
  return sorted(front, key=lambda i: points[i][0])


def pareto_figure(
  arms: Sequence[Mapping[str, Any]], costs: Mapping[str, str], metric: str, title: str = ""
) -> Any:
  """``plot_pareto``'s figure: one panel per cost, quality against it on a log axis."""
  plt = _pyplot()
  lo_best = lower_is_better(metric)
  fig, axes = plt.subplots(
    1, len(costs), figsize=(4.6 * len(costs) + 0.6, 4.4), squeeze=False, layout="constrained"
  )
  for ax, (key, label) in zip(axes.flat, costs.items(), strict=True):
    pts = [(float(a.get(key) or math.nan), float(a["mean"])) for a in arms]
    for a, (x, y) in zip(arms, pts, strict=True):
      if not (math.isfinite(x) and math.isfinite(y)):
        continue
      err = [[y - a["lo"]], [a["hi"] - y]] if a.get("lo") is not None else None
      ax.errorbar(x, y, yerr=err, fmt="o", color="C0", capsize=3, ms=4)
      ax.annotate(str(a["name"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(pts, lo_best)
    if len(front) > 1:
      ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post",
              color="C3", lw=1, label="Pareto front")  # fmt: skip
      ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel(f"test {metric.replace('_', ' ')}" + (" (lower is better)" if lo_best else ""))
    ax.grid(alpha=0.3, which="both")
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def plot_pareto(
  arms: Sequence[Mapping[str, Any]],
  path: Path,
  costs: Mapping[str, str],
  metric: str,
  title: str = "",
) -> bool:
  """Quality (``mean`` with optional ``lo``/``hi``) of each arm (``name``) against each cost
  (``costs``: record key -> axis label), log-x, with the Pareto front (the arms no other arm
  beats on both quality and that cost). False if no arm has a value."""
  if not any(a.get("mean") is not None for a in arms):
    return False
  return _save(pareto_figure(arms, costs, metric, title), path)
