"""Studies: budget matching, the grid, a tiny study through the real trainer, and its report.

The tiny study (two cells, 4 training steps each) runs once per module; the tests read its
folder, or a copy of it when they change files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO, finish, script
from flax import nnx

from lrm import mixers, tasks
from lrm.analysis import budget, counting
from lrm.mixers import presets
from lrm.run import Run
from lrm.study import grid, provenance, run, stats, sweep, verdicts
from lrm.train import rundir

COSTS = (
  "params",
  "params_non_embedding",
  "encoder_forward_flops_per_token",
  "forward_flops_per_token",
  "train_flops_per_token",
)

STUDY = """
def get_study(scale="small"):
  return dict(
    name="tiny",
    question="Does the report get written?",
    seeds=[0, 1],
    rules=["params_non_embedding"],
    sizes={"s": 16},
    lrs=[3e-3, 3e-2],
    heads=2,
    comparisons=[dict(question="Q1", task="recall", a="local", b="conv",
                      rule="params_non_embedding", size="s")],
    tasks={
      "recall": dict(
        config="CONFIG",
        arg="steps=4,ckpt=4",
        overrides={"train.eval_every": 4},
        mixers=MIXERS,
        windows=[2],
        reference=dict(mixer="local", window=2),
        block=4,
      ),
    },
    content=dict(task="recall", window=2, radius=3),
  )
"""


def write_study(path: Path, config: Path | str, mixers: list[str]) -> Path:
  path.write_text(STUDY.replace("CONFIG", str(config)).replace("MIXERS", repr(mixers)))
  return path


@pytest.fixture(scope="module")
def recall_task():
  return tasks.build(
    {"name": "recall", "num_pairs": 4, "vocab_size": 32, "seq_len": 64, "num_train": 8}
  )


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_config, fast_compile) -> tuple[Path, Path, list]:
  """``(study file, out folder, cells)`` of the tiny study, run once."""
  folder = tmp_path_factory.mktemp("study")
  spec = write_study(folder / "tiny_study.py", tiny_config, ["conv", "local"])
  out = folder / "out"
  return spec, out, run.run_study(spec, out, "small")


def cell_json(out: Path, key: str) -> dict:
  return json.loads((out / "runs" / key / "cell.json").read_text())


@pytest.mark.parametrize(
  "mixer, rule", [("gated_conv", "flops"), ("conv+conv+global", "params_non_embedding")]
)
def test_budget_matching_lands_within_5_percent(recall_task, rule, mixer):
  base = dict(dim=64, depth=3, mlp_ratio=4, mixer=presets.spec("local", window=4, heads=2))
  target = budget.measure(recall_task, base, rule)
  model = {**base, "mixer": presets.spec(mixer, window=4, heads=2, block=8, causal=True)}
  m = budget.match(recall_task, model, rule=rule, target=target)
  assert abs(m.error) < 0.05, (m.achieved, target)
  assert m.achieved == pytest.approx(budget.measure(recall_task, m.model, rule))
  assert m.model["dim"] % (2 * budget._heads(m.model)) == 0  # even head dims


def test_budget_rejects_unknown_rule(recall_task):
  with pytest.raises(ValueError, match="unknown budget rule 'dollars'"):
    budget.measure(recall_task, dict(dim=8, depth=1, mixer={"name": "conv"}), "dollars")


def build_mixer(name: str, causal: bool, dim: int = 32):
  s = presets.spec(name, window=4, heads=2, block=8, causal=causal)
  return mixers.build(s, dim=dim, causal=causal, rngs=nnx.Rngs(0))


def test_algorithmic_flops_count_the_operator_not_the_kernel():
  L, D = 64, 32
  g = build_mixer("global", causal=True)
  proj = g.projection_flops(L)
  assert g.algorithmic_flops(L) == proj + g.score_flops(L * (L + 1) // 2)  # causal pairs
  assert g.flops(L) == proj + g.score_flops(L * L)  # the kernel scores the square
  loc = build_mixer("local", causal=True)  # window 4: keys i-4..i, fewer at the start
  pairs = sum(min(i, 4) + 1 for i in range(L))
  assert loc.algorithmic_flops(L) == loc.projection_flops(L, L) + loc.score_flops(pairs)
  assert loc.algorithmic_flops(L) < loc.flops(L)  # blocks of 16 score more than the window
  conv = build_mixer("conv", causal=True)  # kernel 5: 2KD per token, + bias and pointwise
  assert conv.algorithmic_flops(L) == 2 * 5 * L * D + L * D + 2 * L * D * D + L * D
  for name in ("gated_conv", "dynamic_conv"):
    m = build_mixer(name, causal=True)
    assert 0 < counting.mixer_algorithmic_flops(m, L) <= m.flops(L)


def test_model_costs_report_algorithmic_and_executed_flops(recall_task):
  spec = presets.spec("local", window=4, heads=2)
  model = recall_task.build_model(dict(dim=32, depth=1, mlp_ratio=4, mixer=spec), nnx.Rngs(0))
  c = counting.model_costs(model, recall_task.seq_len)
  assert c["train_flops_per_token"] < c["executed_train_flops_per_token"]
  assert c["train_flops_per_token"] == pytest.approx(3 * c["forward_flops_per_token"])


# ---- statistics against hand-checked values -------------------------------------------------


def test_t_quantiles_and_intervals_match_tables():
  assert stats.t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
  assert stats.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
  assert stats.t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-6)
  s = stats.summarize([1.0, 2.0, 3.0])  # mean 2, sample sd 1 (ddof=1, not 0.816)
  assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
  half = 4.302653 / 3**0.5
  assert (s.lo, s.hi) == pytest.approx((2 - half, 2 + half), abs=1e-5)
  assert s.text(2) == "2.00 [-0.48, 4.48]"
  one = stats.summarize([0.5])
  assert one.n == 1 and one.sd != one.sd and one.text() == "0.500 (n=1)"


def test_plot_bands_stay_inside_the_metric_range():
  from lrm.study import plots

  bimodal = [1.0, 0.2, 0.21]  # full attention on recall_any in design v1: t-band below 0
  s = stats.summarize(bimodal)
  assert s.lo < 0
  mean, lo, hi = plots.band(bimodal, "accuracy")
  assert (mean, lo) == (pytest.approx(s.mean), 0.0) and hi == pytest.approx(min(s.hi, 1.0))
  assert plots.band([0.99, 1.0, 0.98], "acc_d<=16")[2] == 1.0  # clipped at the top too
  assert plots.band([0.1, 2.0, 2.1], "bits_per_byte")[1] == 0.0
  assert plots.band([-3.0, 5.0], "delta")[1] < -3.0  # unknown metric: not clipped
  assert plots.band([0.4], "accuracy") == (0.4, 0.4, 0.4)


def test_a_task_at_one_width_is_drawn_as_ranked_intervals(tmp_path):
  from lrm.study import plots

  def rec(name: str, width: int, value: float, seed: int) -> dict:
    return dict(task="lm", rule="p", name=name, size="m", size_width=width, value=value,
                seed=seed, metric="bits_per_byte", chance=8.0, in_study=True,
                params_non_embedding=100, train_flops_per_token=10, train_seconds=1.0)  # fmt: skip

  one = [rec(n, 48, v + 0.01 * s, s) for s in range(3) for n, v in (("a", 2.0), ("b", 1.9))]
  assert plots.plot_curves(one, "lm", "p", tmp_path / "one.png")
  assert (tmp_path / "one.png").stat().st_size > 0
  data = plots.curves(one, "lm", "p")
  assert all(len(points) == 1 for points in data.values())
  means = {
    n: plots.band([r["value"] for r in pts[0][1]], "bits_per_byte") for n, pts in data.items()
  }
  assert plots.ranked(means, lower_is_better=True) == ["b", "a"]
  assert plots.ranked(means, lower_is_better=False) == ["a", "b"]
  two = one + [rec("a", 64, 1.8, s) for s in range(3)]  # a second width: curves again
  assert plots.plot_curves(two, "lm", "p", tmp_path / "two.png")


def test_paired_t_test_and_holm():
  p = stats.paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], "d")  # t = 2 / (1 / sqrt 3), df 2
  assert p.t == pytest.approx(3.464102, abs=1e-6)
  assert p.p == pytest.approx(0.074180, abs=1e-5)
  assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
  assert stats.holm([0.01, float("nan")])[0] == pytest.approx(0.01)  # nan: not in the family
  strong = stats.paired([0.9, 0.91, 0.95, 0.93], [0.5, 0.52, 0.49, 0.5], "s")
  weak = stats.paired([0.9, 0.7, 0.8], [0.85, 0.75, 0.78], "w")
  s2, w2 = stats.correct([strong, weak])
  assert s2.p_adj == pytest.approx(2 * strong.p) and s2.significant
  assert w2.verdict("local", "conv").startswith("no significant difference between local and conv")
  assert s2.verdict("local", "conv").startswith("local is better (local - conv = +")
  assert "Holm-adjusted p" in s2.verdict("a", "b")
  lower = stats.paired([1.2, 1.25, 1.21], [1.5, 1.55, 1.52])  # bits per byte: lower wins
  assert lower.verdict("local", "conv", higher_is_better=False).startswith("local is better")


# ---- the learning-rate sweep chooses on validation only -------------------------------------


def fake_cell(wd: Path, val: float, test: float, metric: str = "accuracy") -> None:
  wd.mkdir(parents=True)
  res = {"main_metric": metric, "best": {"validation": {metric: val}, "test": {metric: test}}}
  (wd / "results.json").write_text(json.dumps(res))


def test_sweep_chooses_on_validation_even_when_test_disagrees(tmp_path):
  fake_cell(tmp_path / "a", val=0.90, test=0.50)  # best on validation
  fake_cell(tmp_path / "b", val=0.80, test=0.99)  # best on test: must not be chosen
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "cell.json").write_text(json.dumps({"diverged": "NaN"}))
  arm = sweep.read_arm(
    {1e-3: tmp_path / "a", 3e-3: tmp_path / "b", 1e-2: tmp_path / "c"}, "t", "m", 4, "max"
  )
  assert arm.chosen == 1e-3 and arm.test[3e-3] == 0.99 and arm.validation[1e-2] != 0.0
  assert sweep.choose({1e-3: 1.4, 3e-3: 1.2}, "min") == 3e-3  # bits per byte
  assert sweep.choose({1e-3: float("nan"), 3e-3: 0.1}, "max") == 3e-3  # diverged is worst
  pending = sweep.read_arm({1e-3: tmp_path / "a", 3e-3: tmp_path / "nope"}, "t", "m", 4, "max")
  assert pending.chosen is None and pending.missing == [3e-3]


def test_sweep_table_has_a_row_per_size_and_marks_rates_at_the_edge():
  from lrm.study import tables

  def arm(size, val, chosen):
    rates = ["0.001", "0.003", "0.01"]
    return dict(task="t", mixer="conv", window=4, size=size, metric="accuracy",
                validation=dict(zip(rates, val, strict=True)), test={}, chosen=chosen)  # fmt: skip

  text = "\n".join(
    tables.sweep_section([arm("s", [0.1, 0.2, 0.3], 0.01), arm("l", [0.1, 0.3, 0.2], 0.003)], [])
  )
  assert "Every size (a rate per size)" in text
  rows = [ln for ln in text.splitlines() if ln.startswith("| t |")]
  assert rows[0].split("|")[3].strip() == "s" and rows[0].endswith("| 0.01 (edge) |")
  assert rows[1].split("|")[3].strip() == "l" and rows[1].endswith("| 0.003 |")


# ---- the tiny study, end to end ---------------------------------------------------------------


def test_tiny_study_sweeps_then_trains_every_cell_at_the_chosen_rate(tiny_study):
  _, out, cells = tiny_study
  arms = {a["mixer"]: a for a in sweep.load(out)}
  assert set(arms) == {"conv", "local"}
  for mixer, a in arms.items():
    val = {float(k): v for k, v in a["validation"].items()}
    assert a["chosen"] == sweep.choose(val, "max")
    keys = [c.key for c in cells if c.mixer == mixer]
    lr = f"lr{a['chosen']:g}"
    assert f"recall/{mixer}-w2/params_non_embedding/s/{lr}/seed1" in keys
  assert len(cells) == 6  # 2 arms x (2 sweep rates + seed 1 at the chosen rate)
  assert all((c.workdir(out) / "results.json").exists() for c in cells)


def test_summary_json_has_one_record_per_finished_cell(tiny_study):
  _, out, cells = tiny_study
  summary = json.loads((out / "summary.json").read_text())
  assert len(summary) == len(cells)
  fields = {
    "task", "mixer", "size", "lr", "seed", "params", "params_non_embedding",
    "train_flops_per_token", "executed_train_flops_per_token", "train_seconds", "metric",
    "value", "validation_value", "in_study", "rf_measured", "rf_analytic", "kernel_variation",
  }  # fmt: skip
  for r in summary:
    assert fields <= set(r), fields - set(r)
    assert r["metric"] == "accuracy" and 0 <= r["value"] <= 1 and r["train_seconds"] > 0
    assert r["rf_measured"] == r["rf_analytic"]
  assert sum(r["in_study"] for r in summary) == 4  # two seeds per arm at the chosen rate
  first = [r for r in summary if r["seed"] == 0]
  assert all(0.5 < r["xla_ratio"] < 1.5 for r in first)  # measured on the first seed


def test_report_answers_first_then_checklist_panel_and_costs(tiny_study):
  _, out, _ = tiny_study
  text = (out / "REPORT.md").read_text()
  assert "Does the report get written?" in text
  order = ["## Answers", "## recall", "## Learning-rate sweep", "## Sanity checklist"]
  order += ["## Content dependence", "## Cost", "## Limits"]
  assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)
  assert "**Q1** (recall):" in text
  answer = text.split("**Q1** (recall):")[1].split("\n")[1]
  assert "local" in answer and "conv" in answer and "n = 2 seeds" in answer
  assert "| measured receptive field = analytic in every cell | PASS |" in text
  assert "| analytic FLOPs within 15% of XLA |" in text  # the tiny study has no checks of its own
  assert "full attention >= 0.99" not in text and "Decision:" not in text
  assert (out / "recall.png").exists() and (out / "content_recall.png").exists()
  var = {
    line.split("|")[2].strip(): float(line.split("|")[4].split()[0])
    for line in text.split("## Content dependence")[1].split("## Cost")[0].splitlines()
    if line.startswith("| recall | conv-w2") or line.startswith("| recall | local-w2")
  }
  assert var["conv-w2"] < 1e-3 < var["local-w2"]  # a static kernel; attention's varies


def test_rerun_skips_finished_cells(tiny_study, capsys):
  spec, out, _ = tiny_study
  capsys.readouterr()
  run.run_study(spec, out, "small")  # everything finished: skipped, report rewritten
  assert capsys.readouterr().out.count("done, skipped") == 6


def test_first_seed_cell_without_init_field_is_measured_again_not_trained(tiny_study, tmp_path):
  spec, out, cells = tiny_study
  copy = tmp_path / "out"
  shutil.copytree(out, copy)
  wd = cells[0].workdir(copy)  # a sweep cell: seed 0
  info = json.loads((wd / "cell.json").read_text())
  del info["receptive_field_init"]  # as the first run of the flagship study wrote it
  (wd / "cell.json").write_text(json.dumps(info))
  results = (wd / "results.json").read_text()
  run.run_study(spec, copy, "small")
  again = json.loads((wd / "cell.json").read_text())
  assert again["receptive_field_init"][-1]["size"] == again["receptive_field"][-1]["size"]
  assert (wd / "results.json").read_text() == results  # measured, not trained again


def test_report_reads_json_only_and_never_imports_jax(tiny_study, tmp_path):
  spec, out, _ = tiny_study
  study = grid.load_study(spec, "small")
  copy = tmp_path / "out"
  shutil.copytree(out, copy)
  code = (
    "import json, sys\n"
    "from lrm.study import report\n"
    f"report.write_report(json.loads({json.dumps(json.dumps(study))}), {str(copy)!r})\n"
    "bad = sorted(m for m in ('jax', 'flax', 'orbax') if m in sys.modules)\n"
    "print('imported:', bad)\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "imported: []" in proc.stdout
  assert (copy / "REPORT.md").read_text() == (out / "REPORT.md").read_text()


def test_sanity_checklist_marks_pass_and_fail():
  def rec(mixer: str, value: float, **kw) -> dict:
    base = dict(task="recall", mixer=mixer, name=mixer, window=4, rule="params", seed=0)
    return {**base, "size": "s", "size_width": 32, "value": value, "in_study": True, **kw}

  rows = [
    rec("conv", 0.2, rf_measured=5, rf_analytic=5, xla_ratio=1.02, key="recall/conv"),
    rec("global", 0.995, rf_measured=7, rf_analytic=7, xla_ratio=0.97, key="recall/global"),
  ]

  def own(records):  # a study's own check comes first, then the generic ones
    best = max(r["value"] for r in records)
    return [("something >= 0.99", best >= 0.99, f"best {best:.3f}")]

  checks = {name: ok for name, ok, _ in verdicts.sanity({"checks": own}, rows)}
  assert list(checks) == [
    "something >= 0.99",
    "measured receptive field = analytic in every cell",
    "analytic FLOPs within 15% of XLA",
  ]
  assert all(checks.values())
  rows[0]["rf_measured"], rows[1]["xla_ratio"] = 3, 0.5
  found = {name: (ok, ev) for name, ok, ev in verdicts.sanity({}, rows)}
  assert found["measured receptive field = analytic in every cell"][0] is False
  assert "recall/conv" in found["measured receptive field = analytic in every cell"][1]
  assert found["analytic FLOPs within 15% of XLA"][0] is False
  assert verdicts.sanity({}, [rec("conv", 0.2)])[0][1] is None  # nothing measured: not run


def test_hybrid_cell_expands_and_its_config_builds(tmp_path, tiny_config):
  # recall stacks a fixed short conv before the tested layer: the hybrid's parts follow it
  spec = write_study(tmp_path / "hybrid.py", REPO / "experiments" / "recall.py", ["conv+global"])
  spec.write_text(
    spec.read_text().replace(
      '"steps=4,ckpt=4"', '"size=small,window={window}"'
    ).replace('{"train.eval_every": 4}', '{"data.num_train": 64, "data.num_val": 8}')
  )  # fmt: skip
  study = grid.load_study(spec, "small")
  cell, other = grid.expand(study)  # the sweep: two rates, then nothing until one is chosen
  assert cell.key == "recall/conv+global-w2/params_non_embedding/s/lr0.003/seed0"
  assert other.lr == 3e-2 and len(grid.expand(study, {(*cell.arm, None): 3e-2})) == 3
  cfg, match = grid.Planner(study).config(cell)
  assert abs(match.error) < 0.05 and cfg.optim.lr == 3e-3
  names = [s["name"] for s in cfg.model.mixer]
  assert names == ["conv", "conv", "global"] and cfg.model.depth == 3
  assert cfg.model.mixer[0]["kernel_size"] == 3 and cfg.model.mixer[1]["kernel_size"] == 3
  assert grid.tested_layers(cfg.model.to_dict(), cell.mixer) == [1, 2]
  model = Run(cfg).build_model()
  assert [b.mixer.registered_name for b in model.encoder.blocks] == names
  # without a fixed layer the hybrid is the whole stack, at least one layer per part
  tiny = grid.load_study(write_study(tmp_path / "t.py", tiny_config, ["local+global"]), "small")
  cfg, _ = grid.Planner(tiny).config(grid.expand(tiny)[0])
  assert [s["name"] for s in cfg.model.mixer] == ["local", "global"] and cfg.model.depth == 2


@pytest.mark.slow
def test_two_shards_share_a_per_size_sweep_and_every_cell_runs_once(tmp_path, tiny_config, cli):
  """``sweep_every_size``: each size gets its own rate; two real processes split the grid
  (``--shard``), the second waits for the first's sweep cells, and no cell runs twice."""
  spec = write_study(tmp_path / "s.py", tiny_config, ["conv"])
  text = spec.read_text().replace('sizes={"s": 16}', 'sizes={"s": 16, "m": 24}')
  spec.write_text(text.replace("heads=2,", "heads=2, sweep_every_size=True,"))
  study = grid.load_study(spec, "small")
  assert [c.size for c in grid.sweep_cells(study)] == ["s", "s", "m", "m"]
  out = tmp_path / "out"
  procs = [cli("study.py", f"--study={spec}", f"--out={out}", f"--shard={i}/2") for i in (0, 1)]
  logs = [finish(p) for p in procs]
  for rc, _, err in logs:
    assert rc == 0, err[-2000:]
  arms = sweep.load(out)
  assert sorted(a["size"] for a in arms) == ["m", "s"] and all(a["chosen"] for a in arms)
  chosen = sweep.chosen(arms)
  cells = grid.expand(study, chosen)
  assert len(cells) == 6  # 2 sizes x 2 rates (seed 0) + 2 sizes at their rate (seed 1)
  for c in cells:
    assert (c.workdir(out) / "results.json").exists()
    if c.seed == 1:
      assert c.lr == chosen["recall", "conv", 2, c.size]
  runs = [ln for _, o, _ in logs for ln in o.splitlines() if ln.startswith("[")]
  assert len(runs) == 6 and len({r.split("]")[1].split(":")[0] for r in runs}) == 6
  assert (out / "REPORT.md").exists()
  assert script("study").main([f"--study={spec}", f"--out={out}", "--shard=2/2"]) == 2
  assert script("study").main([f"--study={spec}", f"--out={out}", "--shard=two"]) == 2


def test_study_errors_are_clear(tmp_path, tiny_config):
  with pytest.raises(FileNotFoundError, match="no such file"):
    grid.load_study(tmp_path / "nope.py", "small")
  bad = tmp_path / "bad.py"
  bad.write_text(
    "def get_study(scale):\n  return dict(name='x', seeds=[0], rules=['gold'], tasks={})\n"
  )
  with pytest.raises(ValueError, match="unknown budget rule 'gold'"):
    grid.load_study(bad, "small")
  with pytest.raises(ValueError, match="study task 'recall': unknown mixer preset 'lokal'"):
    grid.load_study(write_study(tmp_path / "m.py", tiny_config, ["lokal"]), "small")
  typo = write_study(tmp_path / "o.py", tiny_config, ["conv"])
  typo.write_text(typo.read_text().replace("train.eval_every", "train.eval_evry"))
  study = grid.load_study(typo, "small")
  with pytest.raises(ValueError) as err:
    grid.base_config(study, "recall")
  msg = str(err.value)
  assert "override 'train.eval_evry' names no config field" in msg and "\n" not in msg
  assert 'Did you mean "eval_every"' in msg


def test_script_lists_cells_rewrites_the_report_and_stops_with_143(tiny_study, capsys, monkeypatch):
  spec, out, cells = tiny_study
  study_script = script("study")
  assert study_script.main([f"--study={spec}", f"--out={out}", "--list"]) == 0
  assert capsys.readouterr().out.split() == [c.key for c in cells]
  assert study_script.main([f"--study={spec}", f"--out={out}", "--report_only"]) == 0
  assert capsys.readouterr().out.strip() == str(out / "REPORT.md")
  priced = ["--price_per_hour=3.6", "--machine=a rented GPU", "--report_only"]
  assert study_script.main([f"--study={spec}", f"--out={out}", *priced]) == 0
  assert "$3.6 per hour for a rented GPU" in (out / "REPORT.md").read_text()
  assert study_script.main([f"--study={spec}", f"--out={out}", "--price_per_hour=0"]) == 2
  assert "price per hour must be > 0" in capsys.readouterr().err
  assert study_script.main([f"--study={spec}", f"--out={out}", "--report_only"]) == 0
  assert study_script.main(["--study=nope.py", f"--out={out}"]) == 2

  def stopped(*args, **kwargs):
    raise rundir.Interrupted("stopped by SIGTERM")

  monkeypatch.setattr(study_script.run, "run_study", stopped)
  monkeypatch.setattr(study_script.signal, "signal", lambda *a: None)
  assert study_script.main([f"--study={spec}", f"--out={out}"]) == 143


def test_flagship_v4_design_is_the_frozen_grid():
  from lrm.mixers import presets

  path = Path("experiments/studies/local_vs_conv.py")
  study, module = grid.load_study(path, "small"), grid.load_module(path)
  assert study["version"] == "v4" and "frozen in this file before any of its cells ran" in (
    module.__doc__
  )
  tasks = study["tasks"]
  # Q1: density x width x depth, the four arms, answers inside the window, 600 steps
  for name, pairs, widths, depth in (
    ("q1-dense", 15, [32, 64, 128], 1), ("q1-dense-2", 15, [32, 64], 2),
    ("q1-sparse", 4, [32, 64], 1),
  ):  # fmt: skip
    t = tasks[name]
    assert t["overrides"]["data.num_pairs"] == pairs and "distance=inside" in t["arg"]
    assert sorted(t["sizes"].values()) == widths and t["overrides"]["train.steps"] == 600
    assert t["overrides"]["train.eval_every"] * 10 == 600  # ten points per learning curve
    arms = [m for m in t["mixers"] if m != "global"]
    assert [len(presets.parts(m)) for m in arms] == [depth] * 4
    assert [presets.parts(m)[0] for m in arms] == ["local", "conv", "gated_conv", "dynamic_conv"]
  # Q2: every arm has four mixer layers, on both tasks; the LM adds every conv kind
  for name in ("q2-lm", "q2-noisy"):
    assert all(len(presets.parts(m)) == 4 for m in tasks[name]["mixers"]), name
    assert len(tasks[name]["mixers"]) >= 10
  assert {"involution", "dynamic_conv", "hyena", "conv", "gated_conv"} <= {
    presets.parts(m)[0] for m in tasks["q2-lm"]["mixers"]
  }
  assert tasks["q2-lm"]["overrides"]["data.seq_len"] >= 16 * tasks["q2-lm"]["windows"][0]
  # the sweep: every rate at seeds 0 and 1, at every size; extended both ways
  sweep_cells = grid.sweep_cells(study)
  assert {c.seed for c in sweep_cells} == {0, 1} and study["lr_extend"]["down"] is True
  chosen = {sweep.rate_key(study, *c.arm, c.size): 3e-3 for c in sweep_cells}
  cells = grid.expand(study, chosen)
  assert len(cells) == len({c.key for c in cells})
  seeds = defaultdict(set)
  for c in cells:
    if c.lr == 3e-3 or c.task in ("q2-noisy", "control-beyond"):
      seeds[c.task, c.mixer, c.size].add(c.seed)
  # comparisons: three families, their margins, arms of their task; 10 seeds for headlines
  families = defaultdict(list)
  for c in study["comparisons"]:
    families[c["question"]].append(c)
    assert c["size"] in tasks[c["task"]]["sizes"] and {c["a"], c["b"]} <= set(
      tasks[c["task"]]["mixers"]
    )
    assert c["delta"] == (0.01 if c["task"] == "q2-lm" else 0.02)
    n = {len(seeds[c["task"], m, c["size"]]) for m in (c["a"], c["b"])}
    assert n == ({10} if c["headline"] else {3}) or (not c["headline"] and 10 in n), c
  assert {q: len(v) for q, v in families.items()} == {"Q1": 21, "Q2": 14, "LM": 6}
  assert sum(c["headline"] for c in study["comparisons"]) == 3 + 2 + 2
  # the design hash: the data only, stable, and a grid change is a new hash
  again = grid.load_study(path, "small")
  assert provenance.design_hash(again) == provenance.design_hash(study)
  again["question"] = "reworded"
  assert provenance.design_hash(again) == provenance.design_hash(study)  # prose is not design
  again["tasks"]["q1-dense"]["overrides"]["train.steps"] = 601
  assert provenance.design_hash(again) != provenance.design_hash(study)
  full = grid.load_study(path, "full")
  assert len(full["comparisons"]) == len(study["comparisons"])


def test_more_seeds_add_seeds_to_some_arms_only_and_bad_entries_are_clear(tmp_path, tiny_config):
  spec = write_study(tmp_path / "more.py", tiny_config, ["conv", "local"])
  good = "[dict(mixers=['local'], seeds=[5, 6])]"
  text = spec.read_text().replace(
    "mixers=['conv', 'local'],", f"mixers=['conv', 'local'], more_seeds={good},"
  )
  assert good in text
  spec.write_text(text)
  study = grid.load_study(spec, "small")
  chosen = {sweep.rate_key(study, *c.arm, c.size): 3e-3 for c in grid.sweep_cells(study)}
  by = defaultdict(set)
  for c in grid.expand(study, chosen):
    by[c.mixer].add(c.seed)
  assert by["local"] == set(study["seeds"]) | {5, 6} and by["conv"] == set(study["seeds"])
  for bad, says in (
    ("[dict(mixers=['nope'], seeds=[5])]", "not among the task's mixers"),
    ("[dict(mixers=['local'], seeds=[-1])]", "integers >= 0"),
    ("[dict(mixers=['local'])]", "bad more_seeds entry"),
    ("[dict(mixers=['local'], seeds=[5], sizes=['xl'])]", "not among its sizes"),
  ):
    spec.write_text(text.replace(good, bad))
    with pytest.raises(ValueError, match=says):
      grid.load_study(spec, "small")


def test_study_costs_measures_an_arm_on_its_own_model(tiny_study):
  from benchmarks import study_costs

  spec, out, _ = tiny_study
  study = grid.load_study(spec, "small")
  from lrm.study import report

  report.write_report(study, out)
  arms = study_costs.arms(out)
  assert {(a["mixer"], a["seed"]) for a in arms} == {("conv", 0), ("local", 0)}  # lowest seed
  got = study_costs.measure(out, arms[1], steps=1, repeats=1, batches=(1,))
  cfg = json.loads((out / arms[1]["workdir"] / "config.json").read_text())
  assert got["width"] == cfg["model"]["dim"] and got["batch"] == cfg["train"]["batch_size"]
  assert got["train_step_ms"]["n"] == 1 and got["train_step_ms"]["median"] > 0
  assert got["decode_ms"]["1"]["status"] == "ok" and got["decode_ms"]["1"]["median"] > 0
  assert got["cache_bytes"] > 0  # local attention keeps its window of keys and values
