"""A study's figures, drawn with matplotlib from summary records (no JAX): the test metric
against each cost with 95% interval bands and the chance line, and the effective kernels."""

from __future__ import annotations

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


def plot_kernels(
  panels: Mapping[str, Mapping[str, Any]], path: Path, cols: int = 4, title: str = ""
) -> bool:
  """Heatmaps (sampled position x offset) of effective kernels, one panel per tested layer;
  each is a cell.json ``kernels`` entry (``offsets``, ``positions``, ``kernels``,
  ``variation``). False if there is nothing to draw."""
  if not panels:
    return False
  plt = _pyplot()
  n = len(panels)
  cols = min(cols, n)
  rows = (n + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis("off")
  for ax, (name, ek) in zip(axes.flat, panels.items(), strict=False):
    offsets = ek["offsets"]
    im = ax.imshow(
      np.asarray(ek["kernels"]),
      aspect="auto",
      cmap="viridis",
      extent=(offsets[0] - 0.5, offsets[-1] + 0.5, len(ek["positions"]), 0),
    )
    ax.set_title(f"{name}\nkernel variation {ek['variation']:.3f}", fontsize=9)
    ax.set_xlabel("offset o (input i + o), tokens")
    ax.set_ylabel("sampled output position")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of |dy/dx|")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True
