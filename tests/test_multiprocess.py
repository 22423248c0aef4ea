"""Two processes x 4 emulated CPU devices on localhost, joined by ``jax.distributed`` through
the ``LRM_*`` variables and ``--multihost``, train the reference run and match its loss."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from conftest import REFERENCE, REPO, metric_records


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(reference_run, session_env, tiny_config, tmp_path):
  env = {
    **session_env,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    "LRM_COORDINATOR": f"127.0.0.1:{free_port()}",
    "LRM_NUM_PROCESSES": "2",
  }
  cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--multihost"]
  cmd += [f"--config={tiny_config}:{REFERENCE}", f"--workdir={tmp_path / 'run'}"]
  logs = [tmp_path / f"process{i}.log" for i in range(2)]
  files = [log.open("w") for log in logs]
  procs = [
    subprocess.Popen(
      cmd,
      cwd=REPO,
      env={**env, "LRM_PROCESS_ID": str(i)},
      stdout=f,
      stderr=subprocess.STDOUT,
    )
    for i, f in enumerate(files)
  ]
  deadline = time.monotonic() + 150
  try:  # one that fails leaves the other waiting at a barrier: stop it at once
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      if any(p.poll() not in (None, 0) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in files:
      f.close()
  outs = [log.read_text() for log in logs]
  for p, out in zip(procs, outs, strict=True):
    assert p.returncode == 0, out[-3000:]
  assert "process 1 of 2 (explicit), coordinator 127.0.0.1" in outs[1]
  res = json.loads((tmp_path / "run" / "results.json").read_text())
  assert (res["processes"], res["devices"], res["impl"]) == (2, 8, ["direct"])
  a, b = metric_records(reference_run), metric_records(tmp_path / "run")
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  for ra, rb in zip(a, b, strict=True):
    assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-5), (ra["step"], ra["split"])
    assert rb.get("accuracy") == pytest.approx(ra.get("accuracy"), abs=1e-6)
