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
from conftest import REPO, script

from lrm import tasks
from lrm.analysis import budget
from lrm.mixers import presets
from lrm.run import Run
from lrm.study import grid, report, run

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
    seeds=[0],
    rules=["params"],
    heads=2,
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
    content=dict(task="recall", window=2, mixers=["conv", "local"], radius=3),
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


@pytest.mark.parametrize("rule", ["params", "flops"])
@pytest.mark.parametrize(
  "mixer", ["conv", "conv_full", "dynamic_conv", "global", "bigbird", "conv+conv+global"]
)
def test_budget_matching_lands_within_5_percent(recall_task, rule, mixer):
  base = dict(dim=64, depth=3, mlp_ratio=4, mixer=presets.spec("local", window=4, heads=2))
  target = budget.measure(recall_task, base, rule)
  model = {**base, "mixer": presets.spec(mixer, window=4, heads=2, block=8, causal=True)}
  m = budget.match(recall_task, model, rule=rule, target=target)
  assert abs(m.error) < 0.05, (m.achieved, target)
  assert m.achieved == pytest.approx(budget.measure(recall_task, m.model, rule))
  assert m.model["dim"] % 4 == 0  # divisible by 2 * heads


def test_budget_rejects_unknown_rule(recall_task):
  with pytest.raises(ValueError, match="unknown budget rule 'dollars'"):
    budget.measure(recall_task, dict(dim=8, depth=1, mixer={"name": "conv"}), "dollars")


def test_tiny_study_trains_its_cells_and_writes_the_report(tiny_study):
  _, out, cells = tiny_study
  assert [c.key for c in cells] == ["recall/conv-w2/params/seed0", "recall/local-w2/params/seed0"]
  assert [c.workdir(out) for c in cells] == [out / "runs" / c.key for c in cells]
  text = (out / "REPORT.md").read_text()
  assert "Does the report get written?" in text and "| conv w=2 |" in text
  assert "Missing measurements" not in text
  assert "Content dependence" in text and (out / "content_dependence.png").exists()
  assert (out / "recall.png").exists()
  summary = {tuple(r["key"]): r for r in json.loads((out / "summary.json").read_text())}
  conv = summary[("recall", "params", "conv", "2")]
  assert 0.0 <= conv["metrics"]["accuracy"][0] <= 1.0
  # The conv's effective kernel is the same at every position; attention's is not.
  var = {
    line.split("|")[1].strip(): float(line.split("|")[2])
    for line in text.splitlines()
    if line.startswith("| conv-w2") or line.startswith("| local-w2")
  }
  assert var["conv-w2"] < 1e-3 < var["local-w2"]


def test_cell_json_holds_budget_named_costs_field_and_kernels(tiny_study):
  _, out, cells = tiny_study
  for c in cells:
    info = cell_json(out, c.key)
    results = json.loads((c.workdir(out) / "results.json").read_text())
    assert info["cell"] == c.to_dict() and info["key"] == c.key and info["name"] == c.name
    assert abs(info["budget"]["achieved"] / info["budget"]["target"] - 1) < 0.05
    assert set(COSTS) <= set(info["costs"]) and "params" not in info  # no old top-level cost
    assert {k: info["costs"][k] for k in COSTS} == {k: results[k] for k in COSTS}
    assert info["costs"]["params"] == info["budget"]["achieved"]  # rule "params"
    field = info["receptive_field"]
    assert field[-1]["size"] == field[-1]["analytic_size"]  # measured on the trained model
    (kernels,) = info["kernels"]  # one tested layer: the tiny model's only block
    assert kernels["layer"] == 0 and kernels["offsets"] == list(range(-3, 4))
    assert len(kernels["kernels"]) == len(kernels["positions"]) > 0
    assert all(len(row) == 7 for row in kernels["kernels"])


def test_rerun_skips_finished_cells(tiny_study, capsys):
  spec, out, _ = tiny_study
  capsys.readouterr()
  run.run_study(spec, out, "small")  # everything finished: skipped, report rewritten
  assert capsys.readouterr().out.count("done, skipped") == 2


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


def make_old(wd: Path) -> dict:
  """Rewrite ``wd/cell.json`` as an older lrm wrote it; the current one is returned."""
  info = json.loads((wd / "cell.json").read_text())
  old = {k: info[k] for k in ("cell", "budget", "model", "receptive_field")}
  old |= {"params": info["costs"]["params"], "train_flops_per_token": 1.0}
  (wd / "cell.json").write_text(json.dumps(old))
  return info


def test_old_cell_json_is_reported_then_measured_without_training(tiny_study, tmp_path, capsys):
  spec, out, cells = tiny_study
  copy = tmp_path / "out"
  shutil.copytree(out, copy)
  wd = cells[1].workdir(copy)  # local-w2
  info = make_old(wd)
  study = grid.load_study(spec, "small")
  text = report.write_report(study, copy).read_text()
  assert "**Missing measurements:** 1 cells have a cell.json without costs, kernels" in text
  assert "| local w=2 | 1 |" in text and "No effective kernels in `runs/recall/local-w2" in text
  assert "| conv-w2 |" in text and "| local-w2 |" not in text  # the panel has what it can
  # a run this lrm cannot rebuild keeps its old cell.json, and the study goes on
  broken = cells[0].workdir(copy)
  make_old(broken)
  config = json.loads((broken / "config.json").read_text())
  config["model"]["mixer"]["name"] = "gone"
  (broken / "config.json").write_text(json.dumps(config))
  results = (wd / "results.json").read_text()
  capsys.readouterr()
  run.run_study(spec, copy, "small")
  assert "conv-w2/params/seed0: cell.json kept as it was" in capsys.readouterr().out
  assert (wd / "results.json").read_text() == results  # measured, not trained again
  new = json.loads((wd / "cell.json").read_text())
  assert new["budget"] == info["budget"] and "train_flops_per_token" not in new
  assert new["costs"] == info["costs"] and new["kernels"] == info["kernels"]
  assert "**Missing measurements:** 1 cells" in (copy / "REPORT.md").read_text()


def test_hybrid_cell_expands_and_its_config_builds(tmp_path, tiny_config):
  # recall stacks a fixed short conv before the tested layer: the hybrid's parts follow it
  spec = write_study(tmp_path / "hybrid.py", REPO / "experiments" / "recall.py", ["conv+global"])
  spec.write_text(
    spec.read_text().replace(
      '"steps=4,ckpt=4"', '"size=small,window={window}"'
    ).replace('{"train.eval_every": 4}', '{"data.num_train": 64, "data.num_val": 8}')
  )  # fmt: skip
  study = grid.load_study(spec, "small")
  (cell,) = grid.expand(study)
  assert cell.key == "recall/conv+global-w2/params/seed0"
  cfg, match = grid.Planner(study).config(cell)
  assert abs(match.error) < 0.05
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


def test_script_lists_cells_and_rewrites_the_report(tiny_study, capsys):
  spec, out, cells = tiny_study
  study_script = script("study")
  assert study_script.main([f"--study={spec}", f"--out={out}", "--list"]) == 0
  assert capsys.readouterr().out.split() == [c.key for c in cells]
  assert study_script.main([f"--study={spec}", f"--out={out}", "--report_only"]) == 0
  assert capsys.readouterr().out.strip() == str(out / "REPORT.md")
  assert study_script.main(["--study=nope.py", f"--out={out}"]) == 2


def test_flagship_study_grid_is_well_formed():
  spec = grid.load_study(Path("experiments/studies/local_vs_conv.py"), "small")
  cells = grid.expand(spec)
  assert len(cells) == 126
  assert {c.rule for c in cells} == {"params", "flops"}
  assert {c.seed for c in cells} == {0, 1, 2}
  windows = {c.window for c in cells if c.task == "recall" and c.window is not None}
  assert len(windows) >= 2
  mixers = {c.mixer for c in cells}
  assert {"conv", "conv_full", "dynamic_conv", "involution", "local", "local_global"} <= mixers
  assert {"bigbird", "global"} <= mixers
  # the committed results' run directories: windowless presets have no -w suffix
  assert "recall/bigbird/params/seed0" in {c.key for c in cells}
  assert "recall/conv-w4/flops/seed2" in {c.key for c in cells}


def test_report_gives_each_window_its_own_table_with_buckets_in_distance_order():
  def cell(label: str, window: int | None, buckets: dict[str, float]) -> dict:
    metrics = {"accuracy": (0.5, 0.1), **{k: (v, 0.0) for k, v in buckets.items()}}
    return dict(
      label=label, n=3, metrics=metrics, main_metric="accuracy", target=100.0, achieved=100.0,
      params=100, flops=1e5, wall=1.0, rf=[(7, 7)],
    )  # fmt: skip

  w4 = {"acc_d>6": 0.03, "acc_d5-6": 0.2, "acc_d<=4": 0.9}
  agg = {
    ("recall", "params", "local", 4): cell("local w=4", 4, w4),
    ("recall", "params", "global", None): cell("global", None, w4),
    ("recall", "params", "local", 8): cell("local w=8", 8, {"acc_d<=8": 0.8, "acc_d>10": 0.0}),
  }
  lines = report.task_table(agg, "recall", "params")
  heads = [line for line in lines if line.startswith("| mixer")]
  assert len(heads) == 2 and "nan" not in "\n".join(lines)
  assert heads[0].index("acc_d<=4") < heads[0].index("acc_d5-6") < heads[0].index("acc_d>6")
  first = lines[: lines.index("")]
  assert any(r.startswith("| global |") for r in first)
  assert any(r.startswith("| local w=4 |") for r in first)
  assert "| local w=8 | 3 | 0.5000 ± 0.1000 | 0.800 | 0.000 |" in lines[lines.index("") + 3]
