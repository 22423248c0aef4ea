"""The launch scripts, run for real against fake ``srun``/``scontrol``/``gcloud`` commands:
SLURM requeues exactly when the run stopped before its end, and TPU set-up ships the
committed tracked files into a fresh copy that replaces the old one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

FAKE_SRUN = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG/srun"
if [[ -n "${FAKE_EXEC:-}" ]]; then exec "$@"; fi
[[ -n "${FAKE_FINISH:-}" ]] && echo '{}' > "$FAKE_WORKDIR/results.json"
exit "${FAKE_RC:-0}"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG/scontrol"
"""
# gcloud compute tpus tpu-vm {scp SRC NAME:DEST | ssh NAME --command=CMD} [flags]: one fake
# worker whose home is $FAKE_HOME.
FAKE_GCLOUD = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG/gcloud"
case "$4" in
  scp) cp "$5" "$FAKE_HOME/${6#*:}" ;;
  ssh) for a in "$@"; do [[ "$a" == --command=* ]] && cmd=${a#--command=}; done
       cd "$FAKE_HOME" && HOME="$FAKE_HOME" bash -c "$cmd" ;;
esac
"""


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
  bin_dir, log = tmp_path / "bin", tmp_path / "log"
  bin_dir.mkdir()
  log.mkdir()
  for name, text in [("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("gcloud", FAKE_GCLOUD)]:
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LRM_", "TPU_"))}
  return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "FAKE_LOG": str(log)}


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    ["bash", str(REPO / "scripts" / script), *args],
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )


def logged(env: dict[str, str], name: str) -> list[str]:
  path = Path(env["FAKE_LOG"]) / name
  return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
  "rc, finished, restarts, requeued, exit_code",
  [
    (0, False, 0, True, 0),  # preempted after a save: requeue
    (143, False, 3, True, 143),  # SIGTERM during set-up / final evaluation: requeue
    (0, True, 0, False, 0),  # finished: results.json exists
    (2, False, 0, False, 2),  # bad input: a person must look
    (3, False, 0, False, 3),  # diverged
    (4, False, 0, False, 4),  # I/O failure
    (0, False, 20, False, 1),  # MAX_REQUEUES reached
  ],
)
def test_slurm_requeues_only_an_unfinished_run(
  fakes, tmp_path, rc, finished, restarts, requeued, exit_code
):
  wd = tmp_path / "wd"
  wd.mkdir()
  env = {**fakes, "SLURM_JOB_ID": "77", "FAKE_RC": str(rc), "FAKE_WORKDIR": str(wd)}
  env["SLURM_RESTART_COUNT"] = str(restarts)
  if finished:
    env["FAKE_FINISH"] = "1"
  p = run("slurm_multigpu.sh", env, "--config=experiments/listops.py", "--workdir", str(wd))
  assert p.returncode == exit_code, p.stderr
  (srun,) = logged(env, "srun")
  cfg = "--config=experiments/listops.py"
  assert srun == f"python scripts/train.py --multihost {cfg} --workdir {wd}"
  assert logged(env, "scontrol") == (["requeue 77"] if requeued else [])


def test_slurm_dry_run_prints_the_layout_that_training_would_use(fakes):
  env = {
    **fakes,
    "FAKE_EXEC": "1",
    "DRY_RUN": "1",
    "PYTHON": str(REPO / ".venv" / "bin" / "python"),
    "SLURM_JOB_ID": "1",
    "SLURM_STEP_NODELIST": "node[01-04]",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "1(x4)",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
  }
  if not Path(env["PYTHON"]).exists():
    env["PYTHON"] = "python3"
  p = run("slurm_multigpu.sh", env)
  assert p.returncode == 0, p.stderr
  lay = json.loads(p.stdout)
  assert lay["coordinator"] == "node01:61441" and lay["num_processes"] == 4
  assert lay["process_id"] == 1 and lay["local_device_ids"] == list(range(8))


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="ships from a git checkout")
def test_tpu_setup_replaces_the_old_copy_with_tracked_files_only(fakes, tmp_path):
  home = tmp_path / "home"
  (home / "lrm" / "lrm").mkdir(parents=True)  # an old copy, with the nesting the old scp made
  (home / "lrm" / "stale.py").write_text("old code")
  env = {**fakes, "TPU_NAME": "pod", "ZONE": "z", "FAKE_HOME": str(home), "PYTHON": "echo"}
  p = run("launch_tpu_pod.sh", {**env, "SETUP": "1"}, "--config=c.py", "--workdir=/mnt/r")
  assert p.returncode == 0, p.stderr
  code = home / "lrm"
  shipped = sorted(str(f.relative_to(code)) for f in code.rglob("*") if f.is_file())
  committed = set(
    subprocess.run(
      ["git", "ls-tree", "-r", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.splitlines()
  )
  assert set(shipped) == committed | {"COMMIT"}  # nothing untracked, nothing stale
  assert not (code / ".venv").exists() and not (code / "lrm" / "lrm").exists()
  assert not list(home.glob("lrm.new")) and not (home / "lrm-code.tar.gz").exists()
  calls = logged(env, "gcloud")
  assert calls[0].startswith("compute tpus tpu-vm scp ") and "--worker=all" in calls[0]
  assert "pip install -q -e .[tpu]" in p.stdout  # PYTHON=echo prints what would run
  assert "scripts/train.py --multihost --config=c.py --workdir=/mnt/r" in p.stdout
  bad = run("launch_tpu_pod.sh", env, "--config=c.py", "--workdir=runs/x")
  assert bad.returncode == 2 and "absolute path" in bad.stderr
