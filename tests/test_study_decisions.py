"""The pre-registered three-valued decisions of a study (``lrm.study.verdicts.decisions``),
the v4 flagship's rules on top of them, the provenance paragraph and the decision-grid plot.
Summary records only: no training, no JAX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrm.study import grid, plots, provenance, stats, verdicts

FLAGSHIP = Path("experiments/studies/local_vs_conv.py")


def rec(task: str, mixer: str, seed: int, value: float, size: str = "s", **kw) -> dict:
  metric, rule = kw.pop("metric", "accuracy"), kw.pop("rule", "params")
  if task.startswith(("q1", "q2", "control")):  # the flagship's cells
    rule = "params_non_embedding"
  return dict(task=task, mixer=mixer, name=mixer, rule=rule, size=size, seed=seed,
              value=value, validation_value=kw.pop("validation", value), metric=metric,
              in_study=True, **kw)  # fmt: skip


def spec(q: str, a: str, b: str, delta: float = 0.02, task: str = "t", **kw) -> dict:
  return dict(question=q, task=task, a=a, b=b, rule="params", size="s", delta=delta, **kw)


def test_decisions_are_three_valued_within_each_family():
  rng = np.random.default_rng(0)
  rows = []
  for s in range(10):
    rows += [rec("t", "ref", s, 0.5)]
    rows += [rec("t", "far", s, 0.2 + 0.001 * s)]  # ref better by 0.3: beyond the margin
    rows += [rec("t", "same", s, 0.5 + 0.001 * (s % 2))]  # within +-0.001 of ref: equivalent
    rows += [rec("t", "noisy", s, 0.5 + rng.normal(0, 0.2))]  # too noisy to say
  rows += [rec("t", "lonely", 0, 0.4)]  # one seed: pending
  specs = [spec("A", "ref", b) for b in ("far", "same", "noisy", "lonely")]
  specs += [spec("B", "ref", "far")]  # its own family: m = 1, not 4
  got = verdicts.decisions(rows, specs)
  assert [r["outcome"] for r in got] == [
    stats.A_BETTER, stats.EQUIVALENT, stats.INCONCLUSIVE, None, stats.A_BETTER,
  ]  # fmt: skip
  assert [r["interval"].m for r in got] == [3, 3, 3, 3, 1]  # pending does not count
  assert got[0]["interval"].lo < got[4]["interval"].lo  # m = 3 is wider than m = 1
  assert got[3]["line"].endswith("pending (1 paired seeds)")
  assert "ref is better than far by more than 0.02" in got[0]["line"]
  assert "equivalent within ±0.02" in got[1]["line"] and "n = 10 seeds" in got[1]["line"]
  assert got[0]["diffs"] == pytest.approx([0.3 - 0.001 * s for s in range(10)])


def test_decisions_read_lower_is_better_metrics_the_right_way_round():
  rows = [rec("lm", m, s, v + 0.001 * s, metric="bits_per_byte")
          for s in range(5) for m, v in (("a", 1.80), ("b", 1.90))]  # fmt: skip
  (got,) = verdicts.decisions(rows, [spec("Q", "a", "b", 0.01, task="lm")])
  assert got["higher"] is False and got["outcome"] == stats.A_BETTER  # fewer bits: a better


def test_the_strongest_rival_is_chosen_on_validation_not_test():
  rows = []
  for s in range(4):
    rows += [rec("t", "a", s, 0.90)]
    rows += [rec("t", "b1", s, 0.95, validation=0.70)]  # best on test, worse on validation
    rows += [rec("t", "b2", s, 0.60, validation=0.80)]
  got = verdicts.decisions(rows, [spec("Q", "a", b) for b in ("b1", "b2")])
  assert verdicts.best_on_validation(got, higher=True)["b"] == "b2"
  assert verdicts.best_on_validation(got, higher=False)["b"] == "b1"
  got[0]["validation"]["b1"] = None
  assert verdicts.best_on_validation(got, higher=True) is None  # a rival not finished


def test_flagship_rules_read_the_decisions():
  study = grid.load_study(FLAGSHIP, "small")
  mod = grid.load_module(FLAGSHIP)
  l3g, (gc3g, c3g), g4 = mod.LOCAL_HYBRID, mod.CONV_HYBRIDS, mod.stack(*["global"] * 4)
  rows = []
  for s in range(10):
    rows += [rec("q2-noisy", l3g, s, 0.90 + 0.001 * s, "width64")]
    rows += [rec("q2-noisy", gc3g, s, 0.80 + 0.002 * s, "width64", validation=0.85)]
    rows += [rec("q2-noisy", c3g, s, 0.95, "width64", validation=0.50)]  # best test, bad val
    rows += [rec("q2-noisy", g4, s, 0.40, "width64")]
  q2 = [c for c in study["comparisons"] if c["task"] == "q2-noisy"]
  got = verdicts.decisions(rows, q2)
  text = study["decide"]("Q2", got, True)
  assert text.startswith("Decision (q2-noisy): local attention helps in combination")
  assert "here gated_conv x3 + global" in text  # chosen on validation, not conv x3's test
  for r in rows:
    if r["mixer"] == g4:
      r["value"] = 0.995  # one global stack solves it: the task cannot separate the stacks
  text = study["decide"]("Q2", verdicts.decisions(rows, q2), True)
  assert text.startswith("Decision: not answerable on this task")
  q1 = [c for c in study["comparisons"] if c["task"] == "q1-sparse"]
  rows = [rec("q1-sparse", m, s, v, size) for s in range(3) for size in ("width32", "width64")
          for m, v in (("local", 1.0), ("conv", 1.0), ("gated_conv", 0.3))]  # fmt: skip
  text = study["decide"]("Q1", verdicts.decisions(rows, q1), True)
  assert "width32: conv conv reaches local (equivalent), gated_conv local better" in text
  assert "dynamic_conv pending" in text


def test_flagship_checks_test_the_measurement():
  study = grid.load_study(FLAGSHIP, "small")
  rows = [rec("q1-sparse", "global", s, 1.0, "width64") for s in range(3)]
  rows += [rec("control-beyond", m, s, 0.06, "width64", chance=0.03, chance_context=0.2)
           for m in ("local", "conv") for s in range(3)]  # fmt: skip
  checks = {name: ok for name, ok, _ in study["checks"](rows)}
  assert all(checks.values()) and len(checks) == 2
  rows[-1]["value"] = 0.9  # a windowed conv above what it can see: the measurement is wrong
  checks = {name: ok for name, ok, _ in study["checks"](rows)}
  assert checks["control-beyond: local and conv <= context guess + 0.05 beyond reach"] is False
  assert study["checks"]([])[0][1] is None


def test_provenance_says_which_cells_ran_under_this_design():
  study = {"name": "s", "version": "v9", "seeds": [0], "tasks": {"t": {"mixers": ["a"]}}}
  now = provenance.design_hash(study)
  rows = [{"design": now, "commit": "abcdef0123", "dirty": False}] * 2
  text = provenance.lines(study, rows)[0]
  assert f"Design v9, hash `{now}`" in text and "2 of 2 finished cells ran under it" in text
  assert "commit abcdef0, with no uncommitted changes" in text
  rows = [*rows, {"design": "0ld", "commit": "1234567", "dirty": True}]
  text = provenance.lines(study, rows)[0]
  assert "2 of 3" in text and "`0ld` (another version)" in text and "(1 with uncommitted" in text
  assert provenance.lines(study, []) == []


def test_decision_grid_shares_one_scale_and_marks_cells_not_in_the_grid(tmp_path):
  cells = {
    "local - conv": {("dense", "w32"): {"mean": 0.6, "outcome": stats.A_BETTER}},
    "local - gated": {("dense", "w32"): {"mean": 0.01, "outcome": stats.EQUIVALENT},
                      ("sparse", "w64"): {"mean": None, "outcome": None}},
  }  # fmt: skip
  fig = plots.decision_grid_figure(cells, ["dense", "sparse"], ["w32", "w64"], 0.02)
  images = [ax.images[0] for ax in fig.axes if ax.images]
  assert len(images) == 2 and {(im.norm.vmin, im.norm.vmax) for im in images} == {(-0.6, 0.6)}
  texts = [t.get_text() for ax in fig.axes for t in ax.texts]
  assert "a better\n+0.600" in texts and "equivalent\n+0.010" in texts and "pending" in texts
  assert texts.count("not run\n(cut)") == 3 + 2
  plots._pyplot().close(fig)
  assert plots.plot_decision_grid(cells, tmp_path / "g.png", ["dense"], ["w32"], 0.02)
  assert (tmp_path / "g.png").stat().st_size > 0
  assert plots.plot_decision_grid({}, tmp_path / "none.png", [], [], 0.02) is False


def test_pareto_front_keeps_the_arms_nothing_beats_on_both():
  pts = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.2), (2.0, 0.7), (float("nan"), 1.0)]
  assert plots.pareto_front(pts, lower_is_better=False) == [3, 0, 1]  # cheapest first
  bits = [(1.0, 2.0), (2.0, 1.5), (3.0, 1.7)]
  assert plots.pareto_front(bits, lower_is_better=True) == [0, 1]


def test_flagship_cost_section_reads_the_costs_benchmark(tmp_path):
  study = grid.load_study(FLAGSHIP, "small")
  mod = grid.load_module(FLAGSHIP)
  arms = (("local+local+local+local", 2.0), ("conv+conv+conv+conv", 2.1))
  rows = [rec("q2-lm", m, s, v + 0.01 * s, "width64", metric="bits_per_byte", train_steps=1500,
              workdir=f"runs/{m}/seed{s}") for s in range(3) for m, v in arms]  # fmt: skip
  costs = [
    {"task": "q2-lm", "mixer": m, "size": "width64", "train_step_ms": {"median": ms},
     "decode_ms": {"1": {"status": "ok", "median": 0.5}, "16": {"status": "unsupported"}},
     "cache_bytes": cb, "train_flops_per_token": 1e6, "xla_forward_flops": 2e8,
     "analytic_forward_flops": 1.9e8}
    for m, ms, cb in (("local+local+local+local", 60.0, 4096), ("conv+conv+conv+conv", 50.0, 2048))
  ]  # fmt: skip
  assert "not run yet" in "\n".join(mod.q3_section(rows, tmp_path))
  (tmp_path / "costs.jsonl").write_text("".join(json.dumps(c) + "\n" for c in costs) + "{bad\n")
  text = "\n".join(mod.q3_section(rows, tmp_path))
  assert "| local x4 | width64 | 2.01 | 60.00 | 90 | 0.500 | unsupported | 4,096 |" in text
  assert (tmp_path / "q3_q2-lm.png").exists() and study["tasks"]["q2-lm"]
