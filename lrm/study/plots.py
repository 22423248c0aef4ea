"""A study's figures, drawn with matplotlib from the report's aggregates and cell.json data
(no JAX): the metric against each cost, and the effective-kernel panels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

COSTS = [("params", "parameters"), ("flops", "training FLOPs / token"), ("wall", "wall-clock (s)")]
MARKERS = {"params": "o", "flops": "s"}  # one marker per budget rule


def _pyplot() -> Any:
  import matplotlib

  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  return plt


def plot_task(agg: Mapping[tuple, Mapping[str, Any]], task: str, path: Path) -> None:
  """The task's main metric (mean ± sd over seeds) against parameters, FLOPs and wall-clock."""
  keys = sorted(k for k in agg if k[0] == task)  # a mixer's windows are all int or all None
  if not keys:
    return
  plt = _pyplot()
  main = agg[keys[0]]["main_metric"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  labels = sorted({agg[k]["label"] for k in keys})
  cmap = plt.cm.tab10 if len(labels) <= 10 else plt.cm.tab20
  colours = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
  for ax, (xkey, xlabel) in zip(axes, COSTS, strict=True):
    xs = [agg[k][xkey] for k in keys if (agg[k][xkey] or 0) > 0]  # None: not measured
    for k in keys:
      a = agg[k]
      if not (a[xkey] or 0) > 0:
        continue
      mean, sd = a["metrics"].get(main, (np.nan, 0.0))
      ax.errorbar(
        a[xkey], mean, yerr=sd, fmt=MARKERS.get(k[1], "o"), color=colours[a["label"]], capsize=2
      )
    if xs and max(xs) / min(xs) > 10:  # log only where the budgets span a decade
      ax.set_xscale("log")
    else:  # (a log axis has no scalar tick format to set)
      ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {main} (mean ± sd)")
    ax.grid(alpha=0.3)
  rules = sorted({k[1] for k in keys})
  axes[0].set_title(
    f"{task}: " + ", ".join(f"{MARKERS.get(r, 'o')} = equal {r}" for r in rules), loc="left"
  )
  handles = [plt.Line2D([], [], ls="", marker="o", color=colours[lab]) for lab in labels]
  fig.legend(handles, labels, loc="center right", fontsize=8)
  fig.tight_layout(rect=(0, 0, 0.86, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_kernels(panels: Mapping[str, Mapping[str, Any]], path: Path) -> None:
  """Heatmaps (sampled position x offset) of effective kernels, one panel per mixer; each
  panel is a cell.json ``kernels`` entry (``offsets``, ``positions``, ``kernels``,
  ``variation``)."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
  for ax, (name, ek) in zip(axes[0], panels.items(), strict=True):
    offsets = ek["offsets"]
    im = ax.imshow(
      np.asarray(ek["kernels"]),
      aspect="auto",
      cmap="viridis",
      extent=(offsets[0] - 0.5, offsets[-1] + 0.5, len(ek["positions"]), 0),
    )
    ax.set_title(f"{name}\nkernel variation {ek['variation']:.3f}", fontsize=9)
    ax.set_xlabel("offset o (input i + o)")
    ax.set_ylabel("sampled output position")
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
