"""Budget matching and study reports (a tiny grid through the real trainer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrm import study, tasks
from lrm.analysis import budget
from lrm.config import mixer_spec

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
        mixers=["conv", "local"],
        windows=[2],
        reference=dict(mixer="local", window=2),
        block=4,
      ),
    },
    content=dict(task="recall", window=2, mixers=["conv", "local"], radius=3),
  )
"""


@pytest.fixture(scope="module")
def recall_task():
  return tasks.build(
    {"name": "recall", "num_pairs": 4, "vocab_size": 32, "seq_len": 64, "num_train": 8}
  )


@pytest.mark.parametrize("rule", ["params", "flops"])
@pytest.mark.parametrize("mixer", ["conv", "conv_full", "dynamic_conv", "global", "bigbird"])
def test_budget_matching_lands_within_5_percent(recall_task, rule, mixer):
  base = dict(dim=64, depth=2, mlp_ratio=4, mixer=mixer_spec("local", window=4, heads=2))
  target = budget.measure(recall_task, base, rule)
  model = {**base, "mixer": mixer_spec(mixer, window=4, heads=2, block=8, causal=True)}
  m = budget.match(recall_task, model, rule=rule, target=target)
  assert abs(m.error) < 0.05, (m.achieved, target)
  assert m.achieved == pytest.approx(budget.measure(recall_task, m.model, rule))
  assert m.model["dim"] % 4 == 0  # divisible by 2 * heads


def test_budget_rejects_unknown_rule(recall_task):
  with pytest.raises(ValueError, match="unknown budget rule 'dollars'"):
    budget.measure(recall_task, dict(dim=8, depth=1, mixer={"name": "conv"}), "dollars")


def test_tiny_study_runs_skips_finished_cells_and_writes_report(
  tmp_path, tiny_config, capsys, fast_compile
):
  spec = tmp_path / "tiny_study.py"
  spec.write_text(STUDY.replace("CONFIG", str(tiny_config)))
  out = tmp_path / "out"
  cells = study.run(spec, out, "small")
  assert [c.key for c in cells] == ["recall/conv-w2/params/seed0", "recall/local-w2/params/seed0"]
  report = (out / "REPORT.md").read_text()
  assert "Does the report get written?" in report and "| conv w=2 |" in report
  assert "Content dependence" in report and (out / "content_dependence.png").exists()
  assert (out / "recall.png").exists()
  for c in cells:
    info = json.loads((out / "runs" / c.key / "cell.json").read_text())
    assert abs(info["budget"]["achieved"] / info["budget"]["target"] - 1) < 0.05
    rf = info["receptive_field"]
    assert rf[-1]["size"] == rf[-1]["analytic_size"]  # measured on the trained model
  summary = {tuple(r["key"]): r for r in json.loads((out / "summary.json").read_text())}
  conv = summary[("recall", "params", "conv", "2")]
  assert 0.0 <= conv["metrics"]["accuracy"][0] <= 1.0
  # The conv's effective kernel is the same at every position; attention's is not.
  var = {
    line.split("|")[1].strip(): float(line.split("|")[2])
    for line in report.splitlines()
    if line.startswith("| conv-w2") or line.startswith("| local-w2")
  }
  assert var["conv-w2"] < 1e-3 < var["local-w2"]
  capsys.readouterr()
  study.run(spec, out, "small")  # everything finished: skipped, report rewritten
  assert capsys.readouterr().out.count("done, skipped") == 2


def test_study_errors_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such file"):
    study.load_study(tmp_path / "nope.py", "small")
  bad = tmp_path / "bad.py"
  bad.write_text(
    "def get_study(scale):\n  return dict(name='x', seeds=[0], rules=['gold'], tasks={})\n"
  )
  with pytest.raises(ValueError, match="unknown budget rule 'gold'"):
    study.load_study(bad, "small")


def test_flagship_study_grid_is_well_formed():
  spec = study.load_study(Path("experiments/studies/local_vs_conv.py"), "small")
  cells = study.expand(spec)
  assert {c.rule for c in cells} == {"params", "flops"}
  assert {c.seed for c in cells} == {0, 1, 2}
  windows = {c.window for c in cells if c.task == "recall" and c.window is not None}
  assert len(windows) >= 2
  mixers = {c.mixer for c in cells}
  assert {"conv", "conv_full", "dynamic_conv", "involution", "local", "local_global"} <= mixers
  assert {"bigbird", "global"} <= mixers


def test_report_gives_each_window_its_own_table_with_buckets_in_distance_order():
  from lrm.study_report import task_table

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
  lines = task_table(agg, "recall", "params")
  heads = [line for line in lines if line.startswith("| mixer")]
  assert len(heads) == 2 and "nan" not in "\n".join(lines)
  assert heads[0].index("acc_d<=4") < heads[0].index("acc_d5-6") < heads[0].index("acc_d>6")
  first = lines[: lines.index("")]
  assert any(r.startswith("| global |") for r in first)
  assert any(r.startswith("| local w=4 |") for r in first)
  assert "| local w=8 | 3 | 0.5000 ± 0.1000 | 0.800 | 0.000 |" in lines[lines.index("") + 3]
