"""The learning-rate sweep: the mean over sweep seeds, extension in both directions, the checks
of its study keys, and a study loop (with a fake cell runner) that sweeps at two seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import script

from lrm.study import extend, grid, report, run, sweep

NAN = math.nan
KEY = ("t", "conv", 4, None)


def fake_cell(wd: Path, val: float, metric: str = "accuracy") -> None:
  """A finished cell (``val`` on validation and test), or a diverged one for NaN."""
  wd.mkdir(parents=True, exist_ok=True)
  if math.isnan(val):
    (wd / "cell.json").write_text(json.dumps({"diverged": "loss is NaN"}))
    return
  res = {"main_metric": metric, "best": {"validation": {metric: val}, "test": {metric: val}}}
  (wd / "results.json").write_text(json.dumps(res))


def record(validation: dict[float, float], chosen: float | None, **kw) -> dict:
  """An ``lr_sweep.json`` record of arm ``KEY``."""
  val = {f"{lr:g}": v for lr, v in validation.items()}
  return dict(task="t", mixer="conv", window=4, size=None, validation=val, chosen=chosen, **kw)


# ---- choosing on the mean over seeds ----------------------------------------------------------


def test_the_mean_over_two_seeds_can_choose_a_rate_seed_0_alone_would_not(tmp_path):
  per_seed = {1e-3: {0: 0.6, 1: 0.9}, 3e-3: {0: 0.7, 1: 0.4}}
  alone = sweep.choose({lr: by[0] for lr, by in per_seed.items()}, "max")
  mean = sweep.means(per_seed, [0, 1])
  assert mean[1e-3] == pytest.approx(0.75) and mean[3e-3] == pytest.approx(0.55)
  assert sweep.choose(mean, "max") != alone
  dirs = {lr: {s: tmp_path / f"{lr:g}" / f"seed{s}" for s in by} for lr, by in per_seed.items()}
  for lr, by in per_seed.items():
    for s, v in by.items():
      fake_cell(dirs[lr][s], v)
  arm = sweep.read_arm(dirs, "t", "conv", 4, "max")
  assert arm.seeds == [0, 1] and arm.chosen == sweep.choose(mean, "max")
  assert arm.validation == pytest.approx(mean) and arm.test == pytest.approx(mean)
  saved = json.loads(json.dumps(arm.to_dict()))  # as lr_sweep.json holds it
  assert saved["validation_per_seed"]["0.001"] == {"0": 0.6, "1": 0.9}
  assert set(saved["validation"]) == {"0.001", "0.003"}
  assert sweep.chosen([saved]) == {KEY: arm.chosen}


def test_a_diverged_seed_makes_its_rate_the_worst():
  assert math.isnan(sweep.mean({0: 0.9, 1: NAN}))
  mean = sweep.means({1e-3: {0: 0.1, 1: 0.2}, 3e-3: {0: 0.9, 1: NAN}}, [0, 1])
  assert sweep.choose(mean, "max") == 1e-3
  assert sweep.choose(mean | {1e-3: NAN}, "min") == 1e-3  # all diverged: the smaller rate
  assert sweep.choose({1e-3: 1.4, 3e-3: 1.2, 1e-2: NAN}, "min") == 3e-3  # bits per byte


def test_a_rate_with_a_cell_not_finished_is_not_chosen_yet(tmp_path):
  dirs = {lr: {s: tmp_path / f"{lr:g}-{s}" for s in (0, 1)} for lr in (1e-3, 3e-3)}
  fake_cell(dirs[1e-3][0], 0.2)
  fake_cell(dirs[1e-3][1], 0.3)
  fake_cell(dirs[3e-3][0], 0.9)  # seed 1 of 3e-3 still running
  arm = sweep.read_arm(dirs, "t", "conv", 4, "max")
  assert arm.chosen is None and arm.missing == [3e-3] and list(arm.validation) == [1e-3]
  assert arm.validation_per_seed[3e-3] == {0: 0.9}  # reported, not averaged
  fake_cell(dirs[3e-3][1], 0.8)
  assert sweep.read_arm(dirs, "t", "conv", 4, "max").chosen == 3e-3


# ---- extension in both directions -------------------------------------------------------------


def test_a_lowest_rate_winner_gets_a_lower_rate_only_with_down():
  low = record({1e-3: 0.9, 3e-3: 0.5, 1e-2: 0.1}, chosen=1e-3)
  up_only = {"lr_extend": dict(factor=2.0, rounds=2)}
  both = {"lr_extend": dict(factor=2.0, rounds=2, down=True)}
  assert extend.propose(up_only, [low], {}) == {}
  assert extend.propose(both, [low], {}) == {KEY: [float(f"{1e-3 / 2.0:.3g}")]}
  high = record({1e-3: 0.1, 3e-3: 0.5}, chosen=3e-3)  # the top wins: upward either way
  assert extend.propose(up_only, [high], {}) == extend.propose(both, [high], {})
  assert extend.propose(both, [high], {})[KEY] == [float(f"{3e-3 * 2.0:.3g}")]
  inside = record({1e-3: 0.1, 3e-3: 0.5, 1e-2: 0.2}, chosen=3e-3)
  assert extend.propose(both, [inside], {}) == {}
  assert extend.propose(both, [record({1e-3: 0.1}, chosen=None)], {}) == {}  # pending
  assert extend.propose({}, [low, high], {}) == {}  # a study without lr_extend


def test_rounds_count_the_added_rates_of_both_directions():
  study = {"lr_extend": dict(factor=2.0, rounds=2, down=True)}
  one = record({1e-3: 0.5}, chosen=1e-3)  # a single rate is both ends: one each way
  assert sorted(extend.propose(study, [one], {})[KEY]) == [5e-4, 2e-3]
  tight = {"lr_extend": dict(factor=2.0, rounds=1, down=True)}
  assert extend.propose(tight, [one], {}) == {KEY: [2e-3]}  # upward first
  extra = {KEY: [5e-4]}  # a round downward already ran, and 5e-4 won again
  again = record({5e-4: 0.9, 1e-3: 0.5, 3e-3: 0.1}, chosen=5e-4)
  assert extend.propose(study, [again], extra) == {KEY: [5e-4, 2.5e-4]}
  spent = record({2.5e-4: 0.95, 5e-4: 0.9, 1e-3: 0.5, 3e-3: 0.1}, chosen=2.5e-4)
  assert extend.propose(study, [spent], {KEY: [5e-4, 2.5e-4]}) == {KEY: [5e-4, 2.5e-4]}
  assert extend.propose({"lr_extend": dict(rounds=0, down=True)}, [again], {}) == {}


def test_position_says_interior_or_an_edge_after_the_rounds_ran_out():
  study = {"lr_extend": dict(factor=2.0, rounds=1, down=True)}
  inside = record({1e-3: 0.1, 3e-3: 0.5, 1e-2: 0.2}, chosen=3e-3)
  low = record({1e-3: 0.9, 3e-3: 0.5}, chosen=1e-3)
  assert extend.edge(inside) is None and extend.edge(low) == "low"
  assert extend.position(study, inside, []) == "interior"
  assert extend.position(study, low, []) == "edge (extending)"
  assert extend.position(study, low, [2e-3]) == "edge (rounds exhausted)"
  assert extend.position({"lr_extend": dict(rounds=1)}, low, []) == "edge"  # not extended down
  assert extend.position({}, low, []) == "edge"
  assert extend.position(study, record({1e-3: 0.1}, chosen=None), []) is None


# ---- the study keys ---------------------------------------------------------------------------

STUDY = """
def get_study(scale="small"):
  return dict(
    name="tiny", seeds=[0, 1, 2], rules=["params_non_embedding"], lrs=[1e-3, 3e-3, 1e-2],
    heads=2, EXTRA
    tasks={"recall": dict(
      config="CONFIG", arg="steps=4,ckpt=4", mixers=["conv"], windows=[2],
      reference=dict(mixer="local", window=2), block=4,
    )},
  )
"""


def write_study(path: Path, config: Path | str, extra: str) -> Path:
  path.write_text(STUDY.replace("CONFIG", str(config)).replace("EXTRA", extra))
  return path


@pytest.mark.parametrize(
  "extra, message",
  [
    ("sweep_seeds=[0, 3],", "sweep_seeds=[0, 3] must be among seeds=[0, 1, 2]; remove [3]"),
    ("sweep_seeds=[],", "sweep_seeds must be a non-empty list of seeds"),
    ("sweep_seeds=[1, 1],", "sweep_seeds=[1, 1] repeats a seed"),
    ("lr_extend=dict(factor=1.0),", "lr_extend factor=1.0 must be a number above 1"),
    ("lr_extend=dict(rounds=-1),", "lr_extend rounds=-1 must be an integer >= 0"),
    ("lr_extend=dict(down='yes'),", "lr_extend down='yes' must be True or False"),
    ("lr_extend=dict(factr=2.0),", "lr_extend has unknown keys ['factr']; use factor"),
    ("lrs=[1e-3, -1.0],", "lrs must be a list of positive learning rates"),
  ],
)
def test_bad_sweep_keys_are_one_clear_error(tmp_path, extra, message):
  text = STUDY.replace("EXTRA", extra)
  if extra.startswith("lrs="):
    text = text.replace("lrs=[1e-3, 3e-3, 1e-2],", "")
  path = tmp_path / "bad.py"
  path.write_text(text.replace("CONFIG", "experiments/recall.py"))
  with pytest.raises(ValueError) as err:
    grid.load_study(path, "small")
  msg = str(err.value)
  assert message in msg and msg.startswith(f"study {path}: ") and "\n" not in msg


def test_sweep_keys_need_lrs(tmp_path):
  for extra in ("sweep_seeds=[0, 1],", "lr_extend=dict(factor=2.0),"):
    path = write_study(tmp_path / "s.py", "experiments/recall.py", extra)
    path.write_text(path.read_text().replace("lrs=[1e-3, 3e-3, 1e-2],", ""))
    with pytest.raises(ValueError, match=f"{extra.split('=')[0]} needs lrs"):
      grid.load_study(path, "small")


def test_sweep_cells_run_every_rate_at_each_sweep_seed_and_are_reused(tmp_path):
  plain = grid.load_study(write_study(tmp_path / "a.py", "experiments/recall.py", ""), "small")
  cells = grid.sweep_cells(plain)
  assert [(c.lr, c.seed) for c in cells] == [(lr, 0) for lr in plain["lrs"]]  # as before
  study = {**plain, "sweep_seeds": [0, 1]}
  extra = {("recall", "conv", 2, None): [3e-4]}
  cells = grid.sweep_cells(study, extra)
  rates = [*study["lrs"], 3e-4]
  assert sorted((c.lr, c.seed) for c in cells) == sorted((lr, s) for lr in rates for s in (0, 1))
  listed = grid.expand(study, {("recall", "conv", 2, None): 3e-3}, extra)
  keys = [c.key for c in listed]
  assert len(keys) == len(set(keys)) == len(cells) + 1  # only seed 2 is not a sweep cell
  (last,) = [c for c in listed if c.key not in {s.key for s in cells}]
  assert (last.seed, last.lr) == (2, 3e-3)


# ---- a study loop that sweeps at two seeds ----------------------------------------------------

# per seed, the validation value of each rate: seed 0 alone prefers 3e-3, the mean 1e-3 (the
# lowest rate, so down=True adds 3e-4, which loses); 1e-2 diverges at seed 1
VALUES = {
  0: {3e-4: 0.5, 1e-3: 0.6, 3e-3: 0.7, 1e-2: 0.2},
  1: {3e-4: 0.5, 1e-3: 0.9, 3e-3: 0.4, 1e-2: NAN},
  2: {3e-4: 0.5, 1e-3: 0.8, 3e-3: 0.5, 1e-2: 0.1},
}


def test_study_chooses_on_two_seeds_extends_down_and_reuses_the_sweep_cells(
  tmp_path, tiny_config, monkeypatch, capsys
):
  ran: list[tuple[int, float]] = []

  def fake(plan, cell, out):
    v = VALUES[cell.seed][cell.lr]
    wd = cell.workdir(out)
    fake_cell(wd, v)
    ran.append((cell.seed, cell.lr))
    if math.isnan(v):
      return {}
    info = {k: [] for k in ("receptive_field", "kernels", "receptive_field_init")}
    (wd / "cell.json").write_text(json.dumps({**info, "costs": {}}))
    return json.loads((wd / "results.json").read_text())

  monkeypatch.setattr(run, "run_cell", fake)
  monkeypatch.setattr(report, "write_report", lambda *a, **k: None)
  extra = "sweep_seeds=[0, 1], lr_extend=dict(factor=10 / 3, rounds=2, down=True),"
  path = write_study(tmp_path / "two.py", tiny_config, extra)
  out = tmp_path / "out"
  cells = run.run_study(path, out, "small")

  (arm,) = sweep.load(out)
  low = float(f"{1e-3 / (10 / 3):.3g}")
  assert extend.load(out) == {("recall", "conv", 2, None): [low]}
  per = {lr: {s: VALUES[s][lr] for s in (0, 1)} for lr in (low, 1e-3, 3e-3, 1e-2)}
  assert arm["chosen"] == sweep.choose(sweep.means(per, [0, 1]), "max")
  assert arm["chosen"] != sweep.choose({lr: by[0] for lr, by in per.items()}, "max")
  assert arm["position"] == "interior" and arm["edge"] is None
  assert math.isnan(arm["validation"]["0.01"]) and arm["validation_per_seed"]["0.01"]["0"] == 0.2

  sweep_runs = [(s, lr) for lr in (1e-3, 3e-3, 1e-2, low) for s in (0, 1)]
  assert sorted(ran) == sorted([*sweep_runs, (2, arm["chosen"])])  # every cell once
  assert ran[-1] == (2, arm["chosen"])  # after the sweep, only seed 2 trains
  final = {c.seed: c for c in cells if c.lr == arm["chosen"]}
  assert sorted(final) == [0, 1, 2]
  assert all((final[s].seed, final[s].lr) in sweep_runs for s in (0, 1))  # reused sweep cells

  capsys.readouterr()
  assert script("study").main([f"--study={path}", f"--out={out}", "--list"]) == 0
  assert capsys.readouterr().out.split() == [c.key for c in cells]
  ran.clear()
  run.run_study(path, out, "small")  # a rerun: everything is done
  assert ran == []
