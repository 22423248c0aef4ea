"""Studies: budget matching, the grid, a tiny study through the real trainer, and its report.

The tiny study (two cells, 4 training steps each) runs once per module; the tests read its
folder, or a copy of it when they change files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, finish, script
from flax import nnx

from lrm import mixers, tasks
from lrm.analysis import budget, counting
from lrm.mixers import presets
from lrm.run import Run
from lrm.study import grid, run, stats, sweep, verdicts
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
  def rec(mixer: str, size: str, width: int, value: float, **kw) -> dict:
    base = dict(task="recall_inside", mixer=mixer, name=mixer, window=4, rule="params", seed=0)
    return {**base, "size": size, "size_width": width, "value": value, "in_study": True, **kw}

  rows = [
    rec("conv", "s", 32, 0.2), rec("conv", "l", 64, 0.3),
    rec("gated_conv", "s", 32, 0.5), rec("gated_conv", "l", 64, 0.8),
    rec("local", "s", 32, 0.95), rec("local", "l", 64, 0.99),
    rec("global", "l", 64, 0.995, rf_measured=7, rf_analytic=7, xla_ratio=0.97),
  ]  # fmt: skip
  study = grid.load_study(REPO / "experiments" / "studies" / "local_vs_conv.py", "small")
  checks = {name: ok for name, ok, _ in verdicts.sanity(study, rows)}
  assert checks["full attention >= 0.99 on recall"] is True
  assert checks["conv < 0.5 at every width; gated_conv rises with width; local >= 0.9"] is True
  assert checks["analytic FLOPs within 15% of XLA"] is True
  rows[1]["value"] = 0.7  # the ungated conv learns recall at the largest width
  rows[-1]["xla_ratio"] = 0.5
  checks = {name: ok for name, ok, _ in verdicts.sanity(study, rows)}
  assert checks["conv < 0.5 at every width; gated_conv rises with width; local >= 0.9"] is False
  assert checks["analytic FLOPs within 15% of XLA"] is False
  rows.append(rec("global", "s", 32, 0.9, seed=1))  # a seed that falls short is named
  evidence = {name: ev for name, _, ev in verdicts.sanity(study, rows)}
  assert "recall_inside s: 0.900 (seed 1: 0.900)" in evidence["full attention >= 0.99 on recall"]
  assert "recall_inside l: 0.995," in evidence["full attention >= 0.99 on recall"] + ","
  rows.pop()
  assert checks["lm: full attention is not the worst (else: undertrained)"] is None
  generic = [name for name, _, _ in verdicts.sanity({}, rows)]  # a study without checks
  assert generic == ["measured receptive field = analytic in every cell", list(checks)[-1]]


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


def test_flagship_study_grid_is_well_formed():
  study = grid.load_study(Path("experiments/studies/local_vs_conv.py"), "small")
  text = Path("experiments/studies/local_vs_conv.py").read_text()
  for q in ("Q1 Inside its window", "Q2 Is local attention useful", "Q3 What does each cost"):
    assert q in text
  assert "Holm" in text and "VALIDATION" in text
  assert len(study["seeds"]) >= 3 and len(study["lrs"]) >= 3
  sweep_cells = grid.sweep_cells(study)
  assert {c.seed for c in sweep_cells} == {0}
  assert {c.size for c in sweep_cells} == set(study["sizes"])  # a rate per size
  chosen = {sweep.rate_key(study, *c.arm, c.size): 3e-3 for c in sweep_cells}
  cells = grid.expand(study, chosen)
  assert len(cells) == len({c.key for c in cells})
  for task in study["tasks"]:
    if study["tasks"][task].get("follow_up"):
      continue  # a longer run of another task at one width (checked below)
    by_mixer = {c.mixer for c in cells if c.task == task}
    for mixer in by_mixer:  # >= 3 sizes per (task, mixer) at equal non-embedding params
      sizes = {
        c.size for c in cells if (c.task, c.mixer, c.rule) == (task, mixer, study["rules"][0])
      }
      assert len(sizes) >= 3, (task, mixer)
  mixers = {c.mixer for c in cells}
  required = {"conv", "gated_conv", "dynamic_conv", "involution", "local", "global", "bigbird"}
  required |= {"hyena", "local+local+global", "conv+conv+global", "gated_conv+gated_conv+global"}
  assert required <= mixers
  arms = set(grid.arms(study))
  for c in study["comparisons"]:
    assert c["rule"] in study["rules"] and c["size"] in study["sizes"]
    assert {c["a"], c["b"]} <= {m for t, m, _ in arms if t == c["task"]}, c
  # design v3's follow-ups: the same arms, k x the steps at one width, their own sweep of 3
  # rates, asked the question's comparisons first
  for task, q, k, size, n in (("recall_any", "Q2", 4, "l", 5), ("lm", "Q3", 3, "m", 2)):
    long, short = study["tasks"][f"{task}_long"], study["tasks"][task]
    assert long["follow_up"] == task and set(long["mixers"]) == set(short["mixers"])
    assert long["overrides"]["train.steps"] == k * short["overrides"]["train.steps"]
    assert len(long["lrs"]) >= 3 and {c.size for c in cells if c.task == f"{task}_long"} == {size}
    asked = [c["task"] for c in study["comparisons"] if c["question"] == q]
    assert asked == [f"{task}_long"] * n + [task] * n
  full = grid.load_study(Path("experiments/studies/local_vs_conv.py"), "full")
  assert "recall_any_long" not in full["tasks"] and len(full["comparisons"]) == 15
  # the recall test sets have >= 2,000 queries; the LM's test split >= 200 KB (5% of 4 MB)
  inside = study["tasks"]["recall_inside"]["overrides"]
  assert inside["data.num_test"] * inside["data.num_pairs"] >= 2000
  assert study["tasks"]["lm"]["overrides"]["data.corpus_bytes"] * 0.05 >= 200_000


def test_flagship_answers_a_question_per_task_and_flags_an_undertrained_lm():
  from lrm.study import report

  study = grid.load_study(REPO / "experiments" / "studies" / "local_vs_conv.py", "small")

  def rec(task: str, mixer: str, seed: int, value: float, size: str = "l") -> dict:
    metric = "bits_per_byte" if task == "lm" else "accuracy"
    rule = "flops" if task == "lm" else "params_non_embedding"
    return dict(task=task, mixer=mixer, rule=rule, size=size, seed=seed, value=value,
                metric=metric, in_study=True)  # fmt: skip

  rows = []
  for seed in range(3):
    for task, stack, alone in (("recall_any_long", 0.95, 0.1), ("recall_any", 0.3, 0.1)):
      rows += [rec(task, "local+local+global", seed, stack + 0.01 * seed)]
      rows += [rec(task, b, seed, alone + 0.02 * seed) for b in ("local", "hyena", "bigbird")]
      rows += [rec(task, b, seed, stack + 0.013 * seed) for b in ("conv+conv+global",)]
      rows += [rec(task, "gated_conv+gated_conv+global", seed, stack - 0.2 + 0.011 * seed)]
  text = "\n".join(report.answers(study, rows))
  long_at, short_at = text.index("**Q2** (recall_any_long):"), text.index("**Q2** (recall_any):")
  assert long_at < short_at
  long_part, short_part = text[long_at:short_at], text[short_at:]
  assert "local+local+global is better (local+local+global - local =" in long_part
  assert "Decision: local attention is useful only in combination" in long_part
  assert "n = 3 seeds" in short_part and "Decision:" in short_part
  lm = [rec("lm", m, s, v, size) for s in range(3) for size in ("s", "l")
        for m, v in (("global", 2.3), ("local", 2.2))]  # fmt: skip
  for r in lm:
    r["rule"] = "params_non_embedding"
  notes = study["notes"](lm)
  assert "Undertrained" in notes["lm"] and "2 of 2 widths" in notes["lm"]
  assert "Undertrained" not in notes.get("lm_long", "")
  follow = report.follow_up_note(study, "recall_any_long")
  assert follow.startswith("A follow-up of recall_any: its arms trained for 1,600 steps")
  assert "(against 400) at width 64 only" in follow
  assert report.follow_up_note(study, "recall_any") is None
  checks = {name: ok for name, ok, _ in verdicts.sanity(study, lm)}
  assert checks["lm: full attention is not the worst (else: undertrained)"] is False
  assert "lm_long: full attention is not the worst (else: undertrained)" not in checks
  for r in lm:
    r["value"] = 4.4 - r["value"]  # full attention now the best at every width
  assert "lm" not in study["notes"](lm)


def test_partners_study_keeps_the_quickstart_size_and_sums_the_decoding_state():
  """Each mixer is its own size reference (no matching: width 64, MLP 256, as the quickstart
  builds it), and the state size is every layer's cache: the conv's K - 1 = 2 inputs, then
  local attention's w = 8 keys and values, or global attention's 128 (fp32, D = 64)."""
  path = REPO / "experiments" / "studies" / "partners.py"
  partners = grid.load_module(path)
  study = grid.load_study(path, "small")
  sweep_cells = grid.sweep_cells(study)
  assert len(sweep_cells) == 2 * len(partners.MIXERS) and {c.seed for c in sweep_cells} == {0}
  assert {"griffin", "based", "samba"} <= set(presets.stacks()) & set(partners.MIXERS)
  plan = grid.Planner(study)
  conv = 2 * 64 * 4
  for mixer, window, layers, state in (
    ("local", 8, ["conv", "local"], conv + 2 * 8 * 64 * 4),
    ("global", None, ["conv", "global"], conv + 2 * 128 * 64 * 4),
  ):
    cfg, match = plan.config(grid.Cell(partners.task_key(mixer), mixer, window, "params", 0))
    assert (match.model["dim"], match.model["mlp_dim"], match.error) == (64, 256, 0.0)
    assert [s["name"] for s in match.model["mixer"]] == layers
    assert partners.state_bytes(rundir.config_to_dict(cfg)) == state
  samba = grid.base_config(study, partners.task_key("samba"), 8)  # a stack: every layer counts
  samba.model = plan.model(samba, partners.task_key("samba"), "samba", 8)
  assert [s["name"] for s in samba.model["mixer"]] == ["conv", "ssm", "local"]
  assert partners.state_bytes(rundir.config_to_dict(samba)) > conv + 2 * 8 * 64 * 4
