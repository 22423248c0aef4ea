"""``plots/curves.png``: the learning curves of a run, drawn from metrics.jsonl at the end.

Two panels: the loss (training and validation on one axis) and the task's main metric
(validation, and training where the task reports it), each with the reference levels the
task knows (chance; majority class) as dashed lines. A training point is the mean over the
steps since the previous one (``train.log_every``), a validation point the whole split at
that step. The title names the task, the mixer,
the steps and the run directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {  # y-axis labels with units
  "loss": "cross-entropy (nats per prediction)",
  "accuracy": "accuracy (fraction correct)",
  "bits_per_byte": "bits per byte (lower is better)",
  "bits_per_token": "bits per token (lower is better)",
  "perplexity": "perplexity (per token)",
  "exact": "exact match (fraction of examples)",
}
SPLIT_STYLE = {"train": dict(color="#1f77b4", alpha=0.8), "validation": dict(color="#d62728")}
LEVEL_COLORS = {"chance": "#7f7f7f", "majority": "#2ca02c"}


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
  pts = [(s, v) for s, v in pts if isinstance(v, int | float) and np.isfinite(v)]
  if not pts:
    return np.zeros(0), np.zeros(0)
  x, y = np.asarray(pts, dtype=float).T
  return x, y


def curves(
  records: list[dict[str, Any]],
  out: Path,
  *,
  title: str,
  main_metric: str,
  levels: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
  """Draw the two panels described above into ``out`` (a PNG); returns ``out``."""
  import matplotlib

  matplotlib.use("Agg")  # no display needed
  import matplotlib.pyplot as plt

  levels = levels or {}
  keys = ["loss"] if main_metric == "loss" else ["loss", main_metric]
  fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
  for ax, key in zip(axes[0], keys, strict=True):
    for split, style in SPLIT_STYLE.items():
      x, y = _series(records, split, key)
      if len(x):
        marker = "o" if split == "validation" or len(x) < 30 else None
        label = "train (mean since the previous point)" if split == "train" else split
        ax.plot(x, y, marker=marker, markersize=3.5, label=label, **style)
    for name, value in levels.get(key, {}).items():
      ax.axhline(
        value, ls="--", lw=1, color=LEVEL_COLORS.get(name, "k"), label=f"{name} {value:.3g}"
      )
    ax.set_xlabel("training step")
    ax.set_ylabel(LABELS.get(key, key))
    ax.set_title(key.replace("_", " "))
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out
