"""What a researcher sees: the console (streams, validation lines, metric order, time left,
a tqdm bar on a terminal), train.log, library bars only with --verbose, the curves plot,
TensorBoard's config and hyperparameters, profile traces, wandb, and --extend."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import REFERENCE, REPO, finish, metric_records, script

from lrm import tasks
from lrm.train import report
from lrm.train.report import Schedule, Throughput, time_left

pytestmark = [
  pytest.mark.usefixtures("fast_compile"),
  pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning"),
]
train = script("train")


def run_train(capsys, *args: str) -> tuple[int, str, str]:
  rc = train.main(["train.py", *args])
  out, err = capsys.readouterr()
  return rc, out, err


def one_error(err: str) -> str:
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


# ---- the console of a run ---------------------------------------------------------------------
def test_console_streams_validation_lines_order_and_train_log(cli, tiny_config, tmp_path):
  wd = tmp_path / "w"
  args = ("--config.train.log_every=1", "--config.train.max_eval_batches=1")
  rc, out, err = finish(cli("train.py", f"--config={tiny_config}", f"--workdir={wd}", *args))
  assert rc == 0, err[-3000:]
  lines = out.splitlines()
  assert any(line.startswith("starting step 0/10: task recall, mixer conv,") for line in lines)
  step = {line.split()[1]: line for line in lines if line.startswith("step ") and "| loss" in line}
  assert "tok/s" not in step["1/10"] and "left" in step["1/10"]  # step 1 is compilation
  assert "k tok/s" in step["2/10"] and "left" in step["2/10"]
  val = [line for line in lines if "| validation |" in line]
  assert [line.split()[1] for line in val] == ["5/10", "10/10"]  # every eval_every=5
  names = [part.split()[0] for part in val[0].split(" | ")[2:]]
  assert names == ["loss", "accuracy", "exact", "acc_d<=4", "acc_d5-16", "acc_d>16"]
  assert "(best)" in val[0]
  assert err.count("evaluating validation on 1 of 2 batches") == 1  # said once, not each time
  assert "final test accuracy" in out and "starting" not in err
  log = (wd / "train.log").read_text().splitlines()
  assert set(lines) <= set(log) <= set(lines) | set(err.splitlines())


def test_a_terminal_gets_a_bar_and_train_log_plain_lines(tiny_config, tmp_path, session_env):
  master, slave = pty.openpty()
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
  wd = tmp_path / "w"
  cmd = [sys.executable, str(REPO / "scripts" / "train.py"), f"--config={tiny_config}"]
  proc = subprocess.Popen(
    [*cmd, f"--workdir={wd}"], cwd=REPO, env=session_env, stdout=slave, stderr=subprocess.PIPE
  )
  os.close(slave)
  screen = b""
  while True:
    try:
      chunk = os.read(master, 4096)
    except OSError:  # the child closed the terminal
      break
    if not chunk:
      break
    screen += chunk
  os.close(master)
  assert proc.wait(timeout=300) == 0, proc.stderr.read()
  text = screen.decode(errors="replace")
  assert "| 10/10 " in text and "\r" in text and "left |" in text  # a redrawn tqdm bar
  assert "step 5/10 | validation |" in text  # printed above the bar
  log = (wd / "train.log").read_text()
  assert "\r" not in log and "%|" not in log  # the log has the plain lines instead
  assert "step 10/10 | loss" in log and "step 10/10 | validation |" in log


def test_library_progress_bars_only_with_verbose(tmp_path, session_env):
  """The text task reads its generated jsonl through HF datasets: "Generating train split"
  bars (one per split) show with --verbose only. Each run gets an empty data cache."""
  args = ["--config=experiments/text.py", "--dry_run", "--config.data.max_len=64"]
  args += [f"--config.data.num_{s}={n}" for s, n in (("train", 8), ("val", 4), ("test", 4))]
  for verbose in (True, False):
    env = {**session_env, "LRM_DATA_CACHE": str(tmp_path / f"cache{verbose}")}
    proc = subprocess.run(
      [sys.executable, "scripts/train.py", *args, *["--verbose"] * verbose],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("Generating train split" in proc.stderr) == verbose


def test_time_left_counts_evaluations_and_tokens_skip_compilation():
  sch = Schedule(eval_every=5, eval_cost=2.0, test_ratio=1.5)
  # at step 5 of 10, 1 s/step: 5 s of training, 1 validation + 2 tests of 1.5 validations
  assert time_left(sch, 5, 10, 1.0, []) == pytest.approx(5 + 4 * 2.0)  # estimated evaluation
  assert time_left(sch, 5, 10, 1.0, [4.0, 1.5]) == pytest.approx(5 + 4 * 1.5)  # measured
  assert time_left(Schedule(eval_every=4), 5, 10, 1.0, [1.0]) == pytest.approx(5 + 2 + 2)
  clock = Throughput()
  clock.add(100)
  clock.restart()  # what the trainer does after the first (compiling) step
  rate, per_step = clock.flush()
  assert rate != rate and per_step != per_step  # NaN: nothing timed yet, not "0.0k tok/s"


# ---- plots and trackers -----------------------------------------------------------------------
def test_curves_plot_and_reference_levels(reference_run, tmp_path):
  res = json.loads((reference_run / "results.json").read_text())
  png = reference_run / "plots" / "curves.png"
  assert png.read_bytes()[:4] == b"\x89PNG" and res["main_metric"] == "accuracy"
  recall = tasks.build({"name": "recall", "vocab_size": 32, "seq_len": 32, "num_pairs": 4})
  assert recall.reference_levels()["accuracy"]["chance"] == pytest.approx(1 / 15)  # 15 values
  folder = tmp_path / "reviews"
  folder.mkdir()
  for split, labels in (("train", [0, 1]), ("test", [1, 1, 1, 0])):
    rows = [json.dumps({"text": f"r{i}", "label": y}) for i, y in enumerate(labels)]
    (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
  text = tasks.build({"name": "text", "path": str(folder), "max_len": 8})
  levels = text.reference_levels()["accuracy"]
  assert levels == {"chance": 0.5, "majority": 0.75}  # validation is the test split here
  out = report.curves(
    metric_records(reference_run), tmp_path / "c.png", title="t", main_metric="accuracy"
  )
  assert out.stat().st_size > 10_000


def events(folder: Path) -> list:
  """Every event of a TensorBoard folder (TFRecord: length, crc, payload, crc)."""
  from tensorboardX.proto import event_pb2

  out = []
  for f in sorted(folder.glob("events.out.tfevents.*")):
    data, i = f.read_bytes(), 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      out.append(event_pb2.Event.FromString(data[i + 12 : i + 12 + n]))
      i += 12 + n + 4
  return out


def test_tensorboard_has_the_config_text_and_hyperparameters(reference_run):
  from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

  values = {v.tag: v for e in events(reference_run / "tensorboard") for v in e.summary.value}
  assert "train.steps = 12" in values["config/text_summary"].tensor.string_val[0].decode()
  start = values["_hparams_/session_start_info"].metadata.plugin_data.content
  hp = HParamsPluginData.FromString(start).session_start_info.hparams
  assert hp["optim.lr"].number_value == pytest.approx(3e-3)
  assert hp["model.mixer.name"].string_value == "conv"
  experiment = values["_hparams_/experiment"].metadata.plugin_data.content
  metrics = [m.name.tag for m in HParamsPluginData.FromString(experiment).experiment.metric_infos]
  assert "validation/accuracy" in metrics and "validation/accuracy" in values


def test_profile_steps_write_a_trace(tiny_config, tmp_path, capsys):
  wd = tmp_path / "w"
  args = (f"--config={tiny_config}", f"--workdir={wd}", "--config.train.steps=4")
  rc, out, err = run_train(capsys, *args, "--config.train.profile_steps=2,3")
  assert rc == 0, err[-2000:]
  assert f"profiled steps 2-3 into {wd / 'profile'}" in out
  assert list((wd / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
  rc, _, err = run_train(capsys, *args, "--config.train.profile_steps=3,9", "--restart")
  assert rc == 2 and "1 <= a <= b <= train.steps (4)" in one_error(err)


def test_wandb_logs_offline_or_says_how_to_install(tiny_config, tmp_path, capsys, monkeypatch):
  args = (f"--config={tiny_config}", f"--workdir={tmp_path / 'w'}", "--config.train.steps=2")
  try:
    import wandb  # noqa: F401
  except ImportError:
    rc, _, err = run_train(capsys, *args, "--config.train.wandb_project=lrm-test")
    assert rc == 2 and "pip install 'lrm[wandb]'" in one_error(err)
    assert not (tmp_path / "w").exists()
    pytest.skip("wandb is not installed: only the error was checked")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  rc, _, err = run_train(capsys, *args, "--config.train.wandb_project=lrm-test")
  assert rc == 0, err[-2000:]
  runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
  assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_a_short_run_warns_about_its_warm_up(tiny_config, capsys):
  rc, _, err = run_train(
    capsys, f"--config={tiny_config}", "--dry_run", "--config.optim.warmup_steps=40"
  )
  assert rc == 0
  assert "train.steps=10 is shorter than optim.warmup_steps=40" in err


# ---- extending a run --------------------------------------------------------------------------
def test_extend_continues_a_finished_run(reference_run, tiny_config, tmp_path, capsys):
  wd = tmp_path / "w"
  shutil.copytree(reference_run, wd)
  args = (f"--config={tiny_config}:{REFERENCE}", f"--workdir={wd}", "--config.train.steps=16")
  rc, _, err = run_train(capsys, *args)
  assert rc == 2 and "to continue this run to train.steps=16, add --extend" in one_error(err)
  rc, out, err = run_train(capsys, *args, "--extend")
  assert rc == 0, err[-3000:]
  assert "resuming at step 12/16" in out and "extending the run from 12 to 16 steps" in out
  assert "extended from 12 to 16 steps (learning-rate schedule rebuilt for 16 steps)" in out
  res = json.loads((wd / "results.json").read_text())
  assert res["final"]["step"] == 16 and res["extended"] == [[12, 16]]
  assert json.loads((wd / "config.json").read_text())["train"]["steps"] == 16
  ref = [r for r in metric_records(reference_run) if r["split"] != "test"]
  assert [r for r in metric_records(wd) if r["step"] <= 12 and r["split"] != "test"] == ref
  assert max(r["step"] for r in metric_records(wd)) == 16
  rc, out, _ = run_train(capsys, *args, "--extend")  # the same command again: nothing to do
  assert rc == 0 and "holds a finished run" in out
  rc, _, err = run_train(capsys, *args[:2], "--config.train.steps=14", "--extend")
  assert rc == 2 and "is not larger than the run's 16" in one_error(err)
  rc, _, err = run_train(
    capsys, *args[:2], "--config.train.steps=20", "--config.seed=1", "--extend"
  )
  assert rc == 2 and "also differs in: seed: 0 -> 1" in one_error(err)
  rc, _, err = run_train(capsys, *args[:1], f"--workdir={tmp_path / 'new'}", "--extend")
  assert rc == 2 and "holds no run to extend" in one_error(err)
