"""scripts/train.py, evaluate.py and check_devices.py: bad input gives one line naming the
problem and the fix, exit code 2, and leaves existing runs untouched; NaN stops a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, finish, metric_records, read_params, script

pytestmark = [
  pytest.mark.usefixtures("fast_compile"),
  pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning"),  # ml_collections
]
train = script("train")
evaluate = script("evaluate")
check_devices = script("check_devices")


def snapshot(workdir: Path) -> dict:
  return {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}


def run_train(capsys, *args: str) -> tuple[int, str, str]:
  rc = train.main(["train.py", *args])
  out, err = capsys.readouterr()
  return rc, out, err


def one_error_line(err: str) -> str:
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, err
  assert "Traceback" not in err
  return lines[0]


@pytest.mark.parametrize(
  "override,expected",
  [
    ("--config.optim.lrr=0.1", "unknown config key 'optim.lrr' (did you mean optim.lr"),
    ("--config.model.mixer.name=nope", "unknown mixer 'nope'; known mixers: "),
    ("--config.task=nope", "unknown task 'nope'; known tasks: "),
    ("--config.train.steps=1.5", "--config.train.steps=1.5: invalid literal for int()"),
    ("--config.train.grad_accum=3", "train.batch_size=16 is not divisible by train.grad_accum=3"),
    ("--config.optim.schedule=linear", "unknown optim.schedule 'linear'"),
  ],
)
def test_bad_config_is_one_line_error(override, expected, tiny_config, tmp_path, capsys):
  rc, _, err = run_train(capsys, f"--config={tiny_config}", f"--workdir={tmp_path}/w", override)
  assert rc == 2
  assert expected in one_error_line(err)
  assert not (tmp_path / "w").exists()  # nothing written


def test_bad_variant_and_missing_flags(tiny_config, tmp_path, capsys):
  rc, _, err = run_train(capsys, f"--config={tiny_config}:nope=1", f"--workdir={tmp_path}")
  assert rc == 2 and "unknown config variant key 'nope'" in one_error_line(err)
  rc, _, err = run_train(capsys, f"--config={tiny_config}")
  assert rc == 2 and "--workdir" in one_error_line(err)
  rc, _, err = run_train(capsys, f"--config={tmp_path}/missing.py", f"--workdir={tmp_path}")
  assert rc == 2 and "missing.py" in one_error_line(err)


def test_missing_data_path(tiny_config, tmp_path, data_cache, capsys):
  missing = tmp_path / "no_such_folder"
  rc, _, err = run_train(
    capsys,
    f"--config={tiny_config}:task=listops",
    f"--workdir={tmp_path}/w",
    f"--config.data.path={missing}",
  )
  assert rc == 2 and str(missing) in one_error_line(err)
  assert not (tmp_path / "w").exists()


def test_conflicting_workdir_is_refused_and_untouched(reference_run, tiny_config, capsys):
  before = snapshot(reference_run)
  rc, _, err = run_train(
    capsys,
    f"--config={tiny_config}:{REFERENCE}",
    f"--workdir={reference_run}",
    "--config.optim.lr=0.01",
  )
  assert rc == 2
  line = one_error_line(err)
  assert "different config (optim.lr: 0.003 -> 0.01)" in line and "--restart" in line
  assert snapshot(reference_run) == before


def test_nan_stops_the_run_then_restart_reproduces_the_reference(
  reference_run, cli, tiny_config, tmp_path, capsys
):
  """A huge learning rate blows the loss up: exit 3 with a message and no checkpoint after
  the divergence. The workdir then refuses another config; with --restart it is wiped and
  the reference config trains from scratch to exactly the reference run (determinism)."""
  wd = tmp_path / "w"
  args = (f"--config={tiny_config}:{REFERENCE}", f"--workdir={wd}")
  rc, _, err = run_train(capsys, *args, "--config.optim.lr=1e30", "--config.optim.warmup_steps=0")
  assert rc == 3
  line = one_error_line(err)
  assert "loss became NaN/inf" in line and "lower --config.optim.lr" in line
  assert "step None" not in line
  bad_step = int(line.split("between steps ")[1].split(" and ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert all(s < bad_step for s in saved)
  assert not (wd / "results.json").exists()

  rc, _, err = run_train(capsys, *args)
  assert rc == 2 and "different config (optim.lr: 1e+30 -> 0.003" in one_error_line(err)
  rc, out, err = finish(cli("train.py", *args, "--restart"))  # a fresh process
  assert rc == 0, err[-3000:]
  assert "starting step 0/12" in out and "final test accuracy" in out
  assert metric_records(wd) == metric_records(reference_run)
  a, b = read_params(wd, 12), read_params(reference_run, 12)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_evaluate_cli_reads_only_the_run_directory(reference_run, capsys):
  rc = evaluate.main(["evaluate.py", f"--workdir={reference_run}", "--checkpoint=best"])
  out, err = capsys.readouterr()
  assert rc == 0, err
  printed = json.loads(out)  # stdout is the JSON alone
  results = json.loads((reference_run / "results.json").read_text())
  assert printed["step"] == results["best"]["step"] and printed["split"] == "test"
  assert printed["metrics"] == pytest.approx(results["best"]["test"], abs=1e-6)
  saved = json.loads((reference_run / "eval_test_best.json").read_text())
  assert saved == printed


@pytest.mark.parametrize(
  "args,expected",
  [
    (["--checkpoint=999"], "no checkpoint at step 999; saved steps: "),
    (["--checkpoint=newest"], "--checkpoint='newest' is not best, latest or a step number"),
    (["--split=dev"], "unknown --split 'dev'"),
  ],
)
def test_evaluate_cli_bad_input(args, expected, reference_run, capsys):
  rc = evaluate.main(["evaluate.py", f"--workdir={reference_run}", *args])
  assert rc == 2 and expected in one_error_line(capsys.readouterr().err)


def test_evaluate_cli_not_a_run_directory(tmp_path, capsys):
  rc = evaluate.main(["evaluate.py", f"--workdir={tmp_path}"])
  assert rc == 2 and "config.json not found" in one_error_line(capsys.readouterr().err)


def test_check_devices_lists_processes_and_devices(capsys):
  assert check_devices.main(["check_devices.py"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("process 0 of 1: 1 local / 1 global devices") and "cpu" in out.lower()
