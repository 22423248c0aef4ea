"""Checkpoints for real: SIGKILL and resume, SIGTERM, half-written saves, the keep policy,
and restoring onto 8 (emulated) devices in a fresh process."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, finish, metric_records, read_params, script

pytestmark = [
  pytest.mark.usefixtures("fast_compile"),
  pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning"),  # ml_collections
]


def wait_for_checkpoint(proc, workdir: Path, timeout: float = 240, at_least: int = 1) -> int:
  """Poll until a finished checkpoint of step >= ``at_least`` appears; return its step."""
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    if steps and max(steps) >= at_least:
      return max(steps)
    if proc.poll() is not None:
      raise AssertionError(f"training ended before a checkpoint: {proc.communicate()[1][-2000:]}")
    time.sleep(0.02)
  proc.kill()
  raise AssertionError("no checkpoint appeared")


def assert_same_run(a: Path, b: Path) -> None:
  """Same metrics record and bitwise-equal final parameters."""
  ra, rb = (json.loads((w / "results.json").read_text()) for w in (a, b))
  assert ra["final"] == rb["final"] and ra["best"] == rb["best"]
  assert metric_records(a) == metric_records(b)
  pa, pb = read_params(a, 12), read_params(b, 12)
  assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 6, 10])
def test_sigkill_then_rerun_continues_exactly(
  kill_after, reference_run, cli, tiny_config, tmp_path
):
  """Killed as soon as the checkpoint of step ``kill_after`` is committed (whatever it is doing
  then: training, evaluating, saving or deleting an old checkpoint), the rerun ends exactly
  like the run that never stopped."""
  args = (f"--config={tiny_config}:{REFERENCE}", f"--workdir={tmp_path}")
  proc = cli("train.py", *args)
  first = wait_for_checkpoint(proc, tmp_path, at_least=kill_after)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  # Whatever the kill interrupted, also leave a half-written save behind, as a kill during
  # orbax's write does: a tmp dir with partial files and no commit marker.
  ckpt = tmp_path / "checkpoints"
  latest = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  assert latest >= first
  partial = ckpt / f"{latest + 1}.orbax-checkpoint-tmp"
  if not partial.exists():
    shutil.copytree(ckpt / str(latest), partial)
    (partial / "commit_success.txt").unlink(missing_ok=True)
    for f in partial.rglob("*"):
      if f.is_file() and f.stat().st_size > 64:
        f.write_bytes(f.read_bytes()[:64])  # truncated, like an interrupted write
  rc, out, err = finish(cli("train.py", *args))
  assert rc == 0, err[-3000:]
  assert f"resuming at step {latest}/12" in out  # progress is on stdout, warnings on stderr
  assert not list(ckpt.glob("*.orbax-checkpoint-tmp"))  # replaced by the real save
  assert_same_run(reference_run, tmp_path)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(cli, tiny_config, tmp_path):
  """Preemption: the step in progress finishes, a checkpoint is saved, exit code 0. (Resuming
  from any checkpoint, mid logging window included, is checked exactly by the SIGKILL test.)"""
  proc = cli("train.py", f"--config={tiny_config}:{REFERENCE}", f"--workdir={tmp_path}")
  first = wait_for_checkpoint(proc, tmp_path)
  proc.send_signal(signal.SIGTERM)
  rc, out, err = finish(proc)
  assert rc == 0 and "Traceback" not in err, err[-3000:]
  assert "preempted: saved step " in out, "the run ended before SIGTERM arrived"
  saved = int(out.split("preempted: saved step ")[1].split()[0])
  assert first <= saved < 12
  assert (tmp_path / "checkpoints" / str(saved) / "commit_success.txt").exists()
  assert not list((tmp_path / "checkpoints").glob("*.orbax-checkpoint-tmp"))
  assert not (tmp_path / "results.json").exists()


def test_preemption_acts_on_sigterm_once():
  from lrm.train.rundir import Preemption

  seen = []
  previous = signal.signal(signal.SIGTERM, lambda *a: seen.append("outer"))
  try:
    with Preemption() as p:  # acted on: the loop saved and stopped, nothing is re-delivered
      assert not p.requested(1)
      signal.raise_signal(signal.SIGTERM)
      assert p.requested(2)
    assert seen == []
    with Preemption() as p:  # arrived after the loop's last check: handed on, not swallowed
      assert not p.requested(1)
      signal.raise_signal(signal.SIGTERM)
    assert seen == ["outer"]
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_rerunning_a_finished_run_changes_nothing(reference_run, tiny_config, capsys):
  def files() -> dict:  # .lock only records which process last opened the run to write
    return {p: p.stat().st_mtime_ns for p in reference_run.rglob("*") if p.name != ".lock"}

  before = files()
  argv = ["train.py", f"--config={tiny_config}:{REFERENCE}", f"--workdir={reference_run}"]
  assert script("train").main(argv) == 0
  out = capsys.readouterr().out
  assert "holds a finished run" in out and "final test accuracy" in out
  assert files() == before


EIGHT_DEVICES = """
import json, sys
import jax
from lrm.run import Run
sys.path.insert(0, "scripts")
import train
ref, cfg, out_dir = sys.argv[1:4]
assert jax.device_count() == 8
ev = Run.from_workdir(ref).evaluate(split="test", checkpoint="latest")
rc_bad = train.main(["train.py", f"--config={cfg}:steps=2,batch=12", f"--workdir={out_dir}/bad"])
rc = train.main(["train.py", f"--config={cfg}:steps=12,ckpt=1", f"--workdir={out_dir}/dp"])
print("RESULT", json.dumps({"eval": ev, "rc_bad": rc_bad, "rc": rc}))
"""


@pytest.mark.slow
def test_eight_devices_restore_and_train_like_one(reference_run, cli, tiny_config, tmp_path):
  """In a fresh 8-device process: evaluate the 1-device checkpoint, refuse a batch that does
  not split over 8 devices, and train data-parallel to the 1-device result."""
  proc = cli("", str(reference_run), str(tiny_config), str(tmp_path), devices=8, code=EIGHT_DEVICES)
  rc, out, err = finish(proc)
  assert rc == 0, err[-3000:]
  res = json.loads(out.split("RESULT ")[1])
  ref = json.loads((reference_run / "results.json").read_text())
  assert res["eval"]["step"] == 12
  assert res["eval"]["metrics"] == pytest.approx(ref["final"]["test"], rel=1e-5, abs=1e-6)
  assert res["rc_bad"] == 2
  assert "error: train.batch_size=12 is not divisible by the 8 devices" in err
  assert not (tmp_path / "bad").exists()
  assert res["rc"] == 0
  dp = tmp_path / "dp"
  a, b = metric_records(reference_run), metric_records(dp)
  assert [r["split"] for r in a] == [r["split"] for r in b]
  for ra, rb in zip(a, b, strict=True):
    assert ra.keys() == rb.keys() and ra["step"] == rb["step"]
    for k, v in ra.items():
      if isinstance(v, float):
        assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-5), (ra["step"], ra["split"], k)
  pa, pb = read_params(reference_run, 12), read_params(dp, 12)
  for k in pa:
    np.testing.assert_allclose(pb[k], pa[k], rtol=1e-4, atol=1e-5)
  assert json.loads((dp / "results.json").read_text())["devices"] == 8
