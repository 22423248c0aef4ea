"""Nothing lost, nothing foreign (issue 24, part 1): lrm writes and deletes only in folders it
marked as its runs. Real files and real processes: ``scripts/train.py`` is run on folders that
hold another project's files, on empty and dangerous ``--workdir`` values, and with links."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, finish

from lrm.train import rundir

pytestmark = pytest.mark.slow

FOREIGN = {  # another project's files, named as lrm's own
  "config.json": '{"project": "not lrm"}\n',
  "results.json": '{"paper": 1}\n',
  "plots/figure.png": "png",
  "checkpoints/model.pt": "weights",
  "notes.txt": "mine",
}


def plant(folder: Path, files: dict[str, str]) -> None:
  for name, text in files.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def contents(folder: Path) -> dict[str, bytes]:
  return {
    str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
  }


def train(cli, tiny_config: Path, *args: str):
  return finish(cli("train.py", f"--config={tiny_config}:steps=2,ckpt=2", *args))


def test_restart_in_a_folder_that_is_not_an_lrm_run_deletes_nothing(cli, tiny_config, tmp_path):
  plant(tmp_path, FOREIGN)
  before = contents(tmp_path)
  rc, out, err = train(cli, tiny_config, f"--workdir={tmp_path}", "--restart")
  assert rc == rundir.EXIT_BAD_INPUT
  assert "is not an lrm run" in err and "Traceback" not in err
  assert len(err.strip().splitlines()) == 1, err
  assert contents(tmp_path) == before  # every foreign file intact, nothing written


@pytest.mark.parametrize("value", ["", ".", "./"])
def test_an_empty_or_dot_workdir_is_refused(cli, tiny_config, value):
  before = sorted(p.name for p in REPO.iterdir())
  rc, out, err = train(cli, tiny_config, f"--workdir={value}", "--restart")
  assert rc == rundir.EXIT_BAD_INPUT and "Traceback" not in err
  assert "--workdir" in err and "folder of its own" in err, err
  assert sorted(p.name for p in REPO.iterdir()) == before  # the repository is untouched


def test_a_restart_keeps_damaged_checkpoints_and_the_users_files(cli, tiny_config, tmp_path):
  wd = tmp_path / "run"
  rc, _, err = train(cli, tiny_config, f"--workdir={wd}")
  assert rc == 0, err[-2000:]
  assert json.loads((wd / "lrm_run.json").read_text())["config_hash"]
  plant(wd, {"damaged/7/x": "kept", "notes.txt": "mine"})
  rc, _, err = finish(
    cli(
      "train.py", f"--config={tiny_config}:steps=2,ckpt=2,lr=1e-3", f"--workdir={wd}", "--restart"
    )
  )
  assert rc == 0, err[-2000:]
  assert (wd / "damaged/7/x").read_text() == "kept" and (wd / "notes.txt").read_text() == "mine"
  assert json.loads((wd / "config.json").read_text())["optim"]["lr"] == 1e-3


def test_a_restart_never_deletes_through_a_link(cli, tiny_config, tmp_path):
  wd, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
  rc, _, err = train(cli, tiny_config, f"--workdir={wd}")
  assert rc == 0, err[-2000:]
  plant(elsewhere, {"keep.txt": "precious"})
  shutil.rmtree(wd / "plots", ignore_errors=True)
  os.symlink(elsewhere, wd / "plots", target_is_directory=True)
  rc, _, err = train(cli, tiny_config, f"--workdir={wd}", "--restart")
  assert rc == rundir.EXIT_BAD_INPUT and "symbolic link" in err, err
  assert (elsewhere / "keep.txt").read_text() == "precious"


def test_the_workdir_check_names_each_refusal(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "file").write_text("x")
  os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
  os.symlink(tmp_path / "loop", tmp_path / "loop")
  cases = {
    "": "empty",
    str(tmp_path): "the current folder",
    str(Path.home()): "the home folder",
    "/": "the root folder",
    str(REPO): "the repository root",
    "file": "is a file",
    "file/run": "under the file",
    "dangling": "link to nothing",
    "loop": "loop",
  }
  for value, words in cases.items():
    with pytest.raises(rundir.ConfigConflict, match=words):
      rundir.check_workdir_path(value)
  assert rundir.check_workdir_path("runs/x") == Path("runs/x")


def test_a_run_written_before_the_mark_counts_as_an_lrm_run():
  legacy = REPO / "tests" / "data" / "legacy" / "run"
  assert not (legacy / rundir.MARKER).exists() and rundir.is_lrm_run(legacy)


def test_a_crash_while_metrics_are_rewritten_at_resume_loses_no_record(tmp_path, monkeypatch):
  """At resume metrics.jsonl is cut back to the resumed step by writing a new file and renaming
  it over the old one: a crash at any point before the rename (here: the rename fails, as if
  the process died first) leaves the old file whole, and no temporary file behind."""
  from lrm.train.report import Monitor

  path = tmp_path / "metrics.jsonl"
  records = [{"step": s, "split": "train", "loss": 1.0 / s} for s in range(1, 2001)]
  text = "".join(json.dumps(r) + "\n" for r in records)
  path.write_text(text)
  monitor = Monitor.__new__(Monitor)  # only the file handling is exercised
  monitor.path, monitor.warn = path, print

  def crash(src, dst):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError):
    monitor._truncate(1000)
  assert path.read_text() == text
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
  monkeypatch.undo()
  monitor._truncate(1000)
  assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == list(range(1, 1001))


def start_and_wait_for_steps(cli, *args: str):
  """Start train.py; return the process once it has printed a progress line (in the loop)."""
  proc = cli("train.py", *args)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.startswith("step ") and "validation" not in line:
      return proc, "".join(seen)
  raise AssertionError(f"no progress line: {''.join(seen)} {proc.stderr.read()[-2000:]}")


def test_ctrl_c_saves_then_stops_with_130_and_the_rerun_ends_as_an_uninterrupted_run(
  cli, tiny_config, tmp_path
):
  import signal

  from conftest import metric_records, read_params

  config = f"--config={tiny_config}:steps=300,ckpt=100"
  whole, cut = tmp_path / "whole", tmp_path / "cut"
  rc, _, err = finish(cli("train.py", config, f"--workdir={whole}"))
  assert rc == 0, err[-2000:]
  proc, _ = start_and_wait_for_steps(cli, config, f"--workdir={cut}")
  proc.send_signal(signal.SIGINT)
  rc, out, err = finish(proc)
  assert rc == rundir.EXIT_CTRL_C, err[-2000:]
  assert "preempted: saved step" in out and "Traceback" not in err
  rc, _, err = finish(cli("train.py", config, f"--workdir={cut}"))
  assert rc == 0, err[-2000:]
  a, b = read_params(whole, 300), read_params(cut, 300)
  assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
  assert metric_records(whole) == metric_records(cut)


def test_a_second_ctrl_c_stops_at_once_in_one_line(cli, tiny_config, tmp_path):
  import signal
  import time

  proc, _ = start_and_wait_for_steps(
    cli, f"--config={tiny_config}:steps=3000,ckpt=1000", f"--workdir={tmp_path / 'w'}"
  )
  proc.send_signal(signal.SIGINT)
  time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  rc, out, err = finish(proc)
  assert rc == rundir.EXIT_CTRL_C, err[-2000:]
  assert "Traceback" not in err and "stopped by Ctrl-C" in err, err


BAD_VALUES = {
  "model.dim=0": "model.dim=0 must be an integer >= 1",
  "model.depth=0": "model.depth=0 must be an integer >= 1",
  "model.dropout=1.0": "model.dropout=1.0 must be a finite number >= 0.0 and < 1.0",
  "model.dropout=-0.1": "model.dropout=-0.1 must be",
  "optim.lr=nan": "optim.lr=nan must be a finite number",
  "train.steps=100000000000": "train.steps=100000000000 must be an integer >= 1 and <= 2,147,",
  "seed=-1": "seed=-1 must be an integer >= 0",
}


@pytest.mark.parametrize("override", sorted(BAD_VALUES))
def test_a_value_lrm_cannot_run_is_one_line_naming_the_key(override, cli, tiny_config, tmp_path):
  wd = tmp_path / "w"
  rc, _, err = finish(
    cli("train.py", f"--config={tiny_config}", f"--config.{override}", f"--workdir={wd}")
  )
  assert rc == rundir.EXIT_BAD_INPUT and "Traceback" not in err
  assert len(err.strip().splitlines()) == 1 and BAD_VALUES[override] in err, err
  assert not wd.exists()  # nothing written


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '"a string"'])
def test_evaluate_on_a_config_json_that_is_not_a_config_is_one_line(text, cli, tmp_path):
  (tmp_path / "config.json").write_text(text)
  rc, _, err = finish(cli("evaluate.py", f"--workdir={tmp_path}"))
  assert rc == rundir.EXIT_BAD_INPUT and "Traceback" not in err, err
  assert "config.json" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs"])
def test_a_study_task_name_cannot_leave_out(name, tmp_path):
  from lrm.study import grid

  spec = tmp_path / "s.py"
  spec.write_text(
    "def get_study(scale):\n"
    f"  return dict(name='x', seeds=[0], rules=['params'], tasks={{{name!r}: {{}}}})\n"
  )
  with pytest.raises(ValueError, match="names a folder under --out"):
    grid.load_study(spec, "small")


def test_a_study_with_no_seeds_is_refused(tmp_path):
  from lrm.study import grid

  spec = tmp_path / "s.py"
  spec.write_text(
    "def get_study(scale):\n  return dict(name='x', seeds=[], rules=['params'], tasks={})\n"
  )
  with pytest.raises(ValueError, match="seeds must be a non-empty list"):
    grid.load_study(spec, "small")


@pytest.mark.parametrize("folder", ["../outside", "/etc"])
def test_pathfinder_metadata_cannot_point_outside_the_data_folder(folder, tmp_path):
  from lrm import tasks

  root = tmp_path / "pathfinder32" / "curv_contour_length_14"
  (root / "metadata").mkdir(parents=True)
  (root / "metadata" / "0.npy").write_text(f"{folder} sample_0.png 0 1 14\n")
  with pytest.raises(tasks.DataError, match="leaves the data folder"):
    tasks.build({"name": "pathfinder", "path": str(tmp_path)}).setup()


def copy_of(run: Path, dest: Path) -> Path:
  shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock"))
  return dest


def test_a_step_copied_from_another_run_is_not_resumed(cli, tiny_config, tmp_path):
  """Two runs of the same shapes (seeds 0 and 1): a step of seed 1 copied into seed 0's run
  names another run id, so it is set aside in one line and the run continues from its own
  newest step (it used to resume seed 1's parameters as its own)."""
  base = f"--config={tiny_config}:steps=6,ckpt=2"
  mine, other = tmp_path / "mine", tmp_path / "other"
  for wd, seed in ((mine, 0), (other, 1)):
    rc, _, err = finish(
      cli("train.py", f"{base.replace('steps=6', 'steps=4')},seed={seed}", f"--workdir={wd}")
    )
    assert rc == 0, err[-2000:]
  rc, _, err = finish(cli("train.py", f"{base},seed=1", f"--workdir={other}", "--extend"))
  assert rc == 0, err[-2000:]
  shutil.copytree(other / "checkpoints" / "6", mine / "checkpoints" / "6")
  rc, out, err = finish(cli("train.py", f"{base},seed=0", f"--workdir={mine}", "--extend"))
  assert rc == 0, err[-2000:]
  assert "checkpoint step 6" in err and "belongs to another run" in err, err
  assert (mine / "damaged" / "6").is_dir() and "resuming at step 4/6" in out
  assert "Traceback" not in err


def test_a_damaged_best_step_falls_back_and_results_are_written(cli, tiny_config, tmp_path):
  """The best step's array files are destroyed after training: finish sets it aside in one line
  and reports the best of the other steps (it used to fail on every rerun)."""
  wd, config = tmp_path / "r", f"--config={tiny_config}:steps=12,ckpt=1"
  rc, _, err = finish(cli("train.py", config, "--config.train.eval_every=1", f"--workdir={wd}"))
  assert rc == 0, err[-2000:]
  (wd / "results.json").unlink()
  fake = wd / "checkpoints" / "11" / "metrics" / "metrics"  # step 11 now claims to be the best
  fake.write_text(json.dumps({**json.loads(fake.read_text()), "accuracy": 2.0}))
  for f in (wd / "checkpoints" / "11" / "model").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(b"\0" * 7)  # its array data is gone
  rc, out, err = finish(cli("train.py", config, "--config.train.eval_every=1", f"--workdir={wd}"))
  assert rc == 0, err[-2000:]
  assert "checkpoint step 11" in err and "set aside" in err and "Traceback" not in err, err
  assert json.loads((wd / "results.json").read_text())["best"]["step"] != 11
  assert (wd / "damaged" / "11").is_dir()


@pytest.mark.parametrize("edit", ["drop best", "drop params", "wrong type", "another config"])
def test_a_results_json_that_does_not_validate_is_rebuilt(
  edit, cli, reference_run, tiny_config, tmp_path
):
  """A finished run whose results.json parses but lacks a key, has one of the wrong type, or
  was written for another config is evaluated again from its checkpoints (it used to be
  trusted, and a rerun failed with a KeyError every time); the rebuilt file is the original."""
  from conftest import REFERENCE

  wd = copy_of(reference_run, tmp_path / "w")
  good = json.loads((wd / "results.json").read_text())
  bad = json.loads(json.dumps(good))
  if edit == "drop best":
    del bad["best"]
  elif edit == "drop params":
    del bad["params"]
  elif edit == "wrong type":
    bad["final"] = "done"
  else:
    bad["config_hash"] = "0" * 12
  (wd / "results.json").write_text(json.dumps(bad))
  rc, out, err = finish(cli("train.py", f"--config={tiny_config}:{REFERENCE}", f"--workdir={wd}"))
  assert rc == 0 and "Traceback" not in err, err[-2000:]
  assert "up to date" not in out
  rebuilt = json.loads((wd / "results.json").read_text())
  for key in ("final", "best", "params", "config_hash", "main_metric"):
    assert rebuilt[key] == good[key], key


# ---- seals: a content checksum of every step (issue 24, group 2) -------------------------------
def flip_a_byte(step_dir: Path, item: str = "model") -> Path:
  """Flip one byte in the middle of ``item``'s largest array data file."""
  f = max(
    (p for p in (step_dir / item).rglob("*") if p.is_file() and p.parent.name == "d"),
    key=lambda p: p.stat().st_size,
  )
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0xFF
  f.write_bytes(bytes(data))
  return f


def test_every_step_is_sealed_and_orbax_rewrites_nothing_sealed(reference_run, tmp_path):
  """Each committed step carries a manifest of its files' SHA-256; after the whole run (later
  saves, deletions by the keep policy, the final evaluation and a finished-run rerun) every
  kept step still verifies, so orbax rewrote none of the sealed files after the commit."""
  from lrm.train.checkpoint import MANIFEST, verify

  steps = sorted((reference_run / "checkpoints").iterdir())
  assert steps and all((s / MANIFEST).is_file() for s in steps)
  for s in steps:
    listed = json.loads((s / MANIFEST).read_text())["sha256"]
    assert any(name.startswith("model/") for name in listed) and "meta/metadata" in listed
    assert verify(s) is True
  wd = copy_of(reference_run, tmp_path / "w")
  flipped = flip_a_byte(wd / "checkpoints" / steps[-1].name)
  with pytest.raises(ValueError, match=f"{flipped.name} changed since it was saved"):
    verify(wd / "checkpoints" / steps[-1].name)


def test_flipped_bytes_in_the_newest_step_fall_back_and_the_rerun_equals_the_reference(
  cli, reference_run, tiny_config, tmp_path
):
  """A byte flipped in the final step's parameters used to be restored silently (a wrong
  accuracy, exit 0). Now the step fails its seal: evaluation says so in one line and uses the
  newest intact step; training sets it aside, trains the last step again, and ends with the
  reference's parameters (bitwise) and metric records."""
  from conftest import REFERENCE, metric_records, read_params

  wd = copy_of(reference_run, tmp_path / "w")
  flip_a_byte(wd / "checkpoints" / "12")
  rc, out, err = finish(cli("evaluate.py", f"--workdir={wd}", "--checkpoint=12"))
  assert rc == 0 and "Traceback" not in err, err[-2000:]
  assert "checkpoint step 12" in err and "changed since it was saved" in err, err
  assert json.loads(out)["step"] == 11
  (wd / "results.json").unlink()
  rc, out, err = finish(cli("train.py", f"--config={tiny_config}:{REFERENCE}", f"--workdir={wd}"))
  assert rc == 0 and "Traceback" not in err, err[-2000:]
  assert (wd / "damaged" / "12").is_dir() and "resuming at step 11/12" in out, out
  a, b = read_params(reference_run, 12), read_params(wd, 12)
  assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
  assert metric_records(reference_run) == metric_records(wd)


def test_a_damaged_metrics_file_in_one_step_spoils_no_other(
  cli, reference_run, tiny_config, tmp_path
):
  """One step's ``metrics/metrics`` cut short used to make orbax fail at start, for training
  and for evaluating every other step, with a message naming no file. Now evaluation says so in
  one line and never takes that step as best; training sets it aside and ends as the
  reference did."""
  from conftest import REFERENCE, metric_records, read_params

  wd = copy_of(reference_run, tmp_path / "w")
  (wd / "checkpoints" / "12" / "metrics" / "metrics").write_text('{"accur')
  rc, out, err = finish(cli("evaluate.py", f"--workdir={wd}", "--checkpoint=11"))
  assert rc == 0 and json.loads(out)["step"] == 11, err[-2000:]
  assert "step 12" in err and "damaged metrics/metrics" in err and "Traceback" not in err, err
  rc, out, err = finish(cli("evaluate.py", f"--workdir={wd}", "--checkpoint=best"))
  # step 12 was the only evaluated step: no best is left, which is said, not guessed
  assert rc == rundir.EXIT_BAD_INPUT and "use --checkpoint=latest" in err, err[-2000:]
  rc, out, err = finish(cli("train.py", f"--config={tiny_config}:{REFERENCE}", f"--workdir={wd}"))
  assert rc == 0 and "Traceback" not in err, err[-2000:]
  assert "metrics/metrics" in err and (wd / "damaged" / "12").is_dir(), err
  a, b = read_params(reference_run, 12), read_params(wd, 12)
  assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
  assert metric_records(reference_run) == metric_records(wd)


def test_checkpoints_of_another_config_are_a_mismatch_not_damage(
  cli, reference_run, tiny_config, tmp_path
):
  """``config.json`` edited to a wider model (and the command to match) used to call every
  intact step "damaged" and advise --restart; now it is one line naming the other config and
  both fixes, exit 2, and no step is moved."""
  from conftest import REFERENCE

  wd = copy_of(reference_run, tmp_path / "w")
  saved = json.loads((wd / "config.json").read_text())
  saved["model"]["dim"] = 48
  (wd / "config.json").write_text(json.dumps(saved))
  before = contents(wd / "checkpoints")
  rc, out, err = finish(
    cli(
      "train.py", f"--config={tiny_config}:{REFERENCE}", "--config.model.dim=48", f"--workdir={wd}"
    )
  )
  assert rc == rundir.EXIT_BAD_INPUT, err[-2000:]
  last = err.strip().splitlines()[-1]
  assert "holds a model of another config" in last and "float32[32]" in last, err
  assert "--restart" in last and "--workdir" in last and "damaged" not in err
  assert not (wd / "damaged").exists() and contents(wd / "checkpoints") == before
