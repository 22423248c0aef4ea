"""lrm.study.plots' figures for the v4 design: learning curves read from the cells'
metrics.jsonl, the forest plot of paired differences and the kernels on one colour scale.
Tiny fake study folders, no training (no JAX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrm.study import plots

STEPS = (100, 200, 300, 400)


def _cell(out: Path, task: str, name: str, size: str, seed: int, metric: str, values) -> dict:
  """One finished cell: a metrics.jsonl in the trainer's format (train, validation and the
  final test records) and its summary record."""
  wd = f"runs/{task}/{name}-{size}/params_non_embedding/lr0.001/seed{seed}"
  (out / wd).mkdir(parents=True)
  lines = []
  for step, v in zip(STEPS, values, strict=True):
    lines.append({"step": step, "split": "train", metric: v + 0.05, "grad_norm": 1.0, "lr": 1e-3})
    lines.append({"step": step, "split": "validation", metric: v, "exact": 0.0})
  lines.append({"step": STEPS[-1], "split": "test", metric: values[-1]})
  text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 5, "spl'  # a cut-off line
  (out / wd / "metrics.jsonl").write_text(text)
  (out / wd / "cell.json").write_text("{}")
  return dict(
    task=task, mixer=name, name=name, seed=seed, lr=1e-3, size=size, size_width=int(size[1:]),
    rule="params_non_embedding", in_study=True, metric=metric, value=values[-1], chance=None,
    chance_context=None, workdir=wd,
  )  # fmt: skip


def study(out: Path, metric: str, base: float, step: float, **levels) -> list[dict]:
  """Two arms x two seeds x two sizes of one task, improving by ``step`` per evaluation."""
  rows = []
  for size in ("w16", "w32"):
    for k, name in enumerate(("conv", "local")):
      for seed in (0, 1):
        vals = [base + step * (i + k) + 0.01 * seed for i in range(len(STEPS))]
        rows.append({**_cell(out, "t", name, size, seed, metric, vals), **levels})
  return rows


def kernel(v: float, n: int = 4) -> dict:
  offsets = list(range(-3, 1))
  k = np.full((n, len(offsets)), (1 - v) / (len(offsets) - 1))
  k[:, -1] = v
  return {"offsets": offsets, "positions": list(range(n)), "kernels": k.tolist(), "variation": v}


def plotted_y(fig) -> list[float]:
  return [float(y) for ax in fig.axes for ln in ax.lines for y in np.atleast_1d(ln.get_ydata())]


def test_validation_series_reads_only_validation_records(tmp_path):
  row = _cell(tmp_path, "t", "conv", "w16", 0, "loss", [2.0, 1.9, 1.8, 1.7])
  steps, values = plots.validation_series(tmp_path / row["workdir"] / "metrics.jsonl", "loss")
  assert steps.tolist() == list(STEPS) and values.tolist() == [2.0, 1.9, 1.8, 1.7]
  assert len(plots.validation_series(tmp_path / row["workdir"] / "metrics.jsonl", "nope")[0]) == 0
  two = [(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])), (np.array([1.0, 2.0]), np.ones(2))]
  assert plots.seed_mean(two)[0].tolist() == [1.0, 2.0]  # the steps every seed logged
  assert plots.seed_mean(two)[1].tolist() == [1.0, 1.5]


def test_y_limits_hold_the_data_and_ignore_a_far_chance_line():
  (lo, hi), kept = plots.y_limits([1.9, 2.0, 2.1], {"chance": 8.0, "context guess": None})
  assert kept == {} and lo < 1.9 and 2.1 < hi < 2.2  # 8 bits per byte: not drawn
  (lo, hi), kept = plots.y_limits([0.3, 0.5], {"chance": 0.1, "context guess": 0.25})
  assert kept == {"chance": 0.1, "context guess": 0.25} and lo < 0.1 and hi > 0.5
  (lo, hi), _ = plots.y_limits([0.5, 0.5], {})  # one value: still a finite, open range
  assert lo < 0.5 < hi


def test_learning_curves_one_panel_per_size(tmp_path):
  rows = study(tmp_path, "bits_per_byte", 2.3, -0.1, chance=8.0)
  rows.append({**rows[0], "workdir": "runs/missing", "seed": 7})  # no metrics.jsonl: skipped
  rows.append({**rows[0], "task": "other"})  # another task: not read
  rows.append({**rows[1], "in_study": False, "workdir": "runs/missing2"})  # lr sweep cell
  data = plots.learning_curves(rows, tmp_path, "t")
  assert list(data) == [("params_non_embedding", "w16"), ("params_non_embedding", "w32")]
  assert {n: len(s) for n, s in data[("params_non_embedding", "w16")].items()} == {
    "conv": 2,
    "local": 2,
  }
  fig = plots.learning_curve_figure(data, "t", "bits_per_byte", {"chance": 8.0})
  try:
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.lines and ax.axison]
    assert len(panels) == 2
    ys = plotted_y(fig)
    assert 8.0 not in ys  # the far chance line is not drawn
    for ax in panels:
      lo, hi = ax.get_ylim()
      data_y = [float(y) for ln in ax.lines for y in np.atleast_1d(ln.get_ydata())]
      assert lo <= min(data_y) and max(data_y) <= hi < 3.0  # not stretched to 8
      assert "lower is better" in ax.get_ylabel()
  finally:
    plots._pyplot().close(fig)
  assert plots.plot_learning_curves(rows, tmp_path, "t", tmp_path / "curves.png")
  assert (tmp_path / "curves.png").stat().st_size > 0


def test_learning_curves_draw_near_chance_levels(tmp_path):
  rows = study(tmp_path, "accuracy", 0.2, 0.1, chance=0.1, chance_context=0.25)
  data = plots.learning_curves(rows, tmp_path, "t")
  levels = {"chance": 0.1, "context guess": 0.25}
  fig = plots.learning_curve_figure(data, "t", "accuracy", levels)
  try:
    ax = fig.axes[0]
    assert {0.1, 0.25} <= set(plotted_y(fig))
    assert ax.get_ylim()[0] < 0.1 and "lower is better" not in ax.get_ylabel()
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert {"conv", "local", "chance", "context guess"} <= set(labels)
  finally:
    plots._pyplot().close(fig)
  assert plots.plot_learning_curves(rows, tmp_path, "t", tmp_path / "acc.png")
  assert plots.plot_learning_curves(rows, tmp_path, "t", tmp_path / "ex.png", metric="exact")


def test_learning_curves_nothing_to_draw(tmp_path):
  assert not plots.plot_learning_curves([], tmp_path, "t", tmp_path / "none.png")
  rows = study(tmp_path, "loss", 2.0, -0.1)
  assert not plots.plot_learning_curves(rows, tmp_path, "absent", tmp_path / "none.png")
  assert not plots.plot_learning_curves(rows, tmp_path / "elsewhere", "t", tmp_path / "none.png")
  assert not (tmp_path / "none.png").exists()


FOREST = [
  dict(name="Q1 lm: local vs conv", mean=0.02, lo=-0.01, hi=0.05, diffs=[0.01, 0.03, 0.02],
       verdict="no significant difference"),
  dict(name="Q2 lm: local vs global", mean=-0.08, lo=-0.12, hi=-0.04, diffs=[-0.07, -0.09],
       verdict="global is better"),
  dict(name="Q3 lm: hyena vs conv", mean=None, lo=None, hi=None, verdict="pending"),
]  # fmt: skip


def bands(fig) -> list:
  return [p for ax in fig.axes for p in ax.patches if p.get_label() == "equivalence margin"]


def test_forest_plot_band_only_with_a_margin(tmp_path):
  with_band = plots.forest_figure(FOREST, delta=0.03, metric="bits_per_byte")
  without = plots.forest_figure(FOREST)
  try:
    assert len(bands(with_band)) == 1 and not bands(without)
    ax = with_band.axes[0]
    assert ax.get_xlabel().startswith("difference a - b")
    assert "negative: a is better" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
    assert lo < -0.12 and hi > 0.05  # every interval is inside the axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["name"] for r in FOREST]
  finally:
    plots._pyplot().close(with_band)
    plots._pyplot().close(without)
  assert plots.plot_forest(FOREST, tmp_path / "forest.png", delta=0.03, title="v4")
  assert plots.plot_forest(FOREST[:1], tmp_path / "forest_nodelta.png")
  assert not plots.plot_forest([], tmp_path / "empty.png")


def test_kernels_share_one_colour_scale(tmp_path):
  panels = {f"arm{i} layer 1": kernel(v) for i, v in enumerate((0.3, 0.9, 0.5, 0.6, 0.2))}
  fig = plots.kernel_figure(panels, cols=4, title="t: effective kernels (seed 0)")
  try:
    ims = [im for ax in fig.axes for im in ax.get_images()]
    assert len(ims) == 5
    assert {im.get_clim() for im in ims} == {ims[0].get_clim()}
    assert ims[0].get_clim() == (0.0, pytest.approx(0.9))  # 0 to the largest over panels
    assert len({id(im.norm) for im in ims}) == 1
    assert sum(hasattr(ax, "_colorbar") for ax in fig.axes) == 1  # one colorbar
  finally:
    plots._pyplot().close(fig)
  assert plots.plot_kernels(panels, tmp_path / "kernels.png", title="t")
  assert not plots.plot_kernels({}, tmp_path / "none.png")
