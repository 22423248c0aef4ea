"""``scripts/accelerator_check.sh --cpu``: the smoke version of the first minutes on a GPU or
TPU machine runs every stage and writes its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


def run_check(env: dict, tmp_path, *, timeout: int, code: int) -> tuple:
  """``accelerator_check.sh --cpu`` under ``env``: the process (exit ``code`` asserted) and
  its JSON report."""
  p = subprocess.run(
    ["bash", str(REPO / "scripts" / "accelerator_check.sh"), "--cpu"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert p.returncode == code, p.stdout[-3000:] + p.stderr[-2000:]
  return p, json.loads((tmp_path / "bench" / "accelerator_cpu_smoke.json").read_text())


@pytest.mark.slow
def test_accelerator_check_cpu_smoke(session_env, tmp_path):
  env = {**session_env, "OUT": str(tmp_path / "bench"), "TMPDIR": str(tmp_path)}
  env["PYTHON"] = sys.executable
  p, report = run_check(env, tmp_path, timeout=300, code=0)
  assert report["backend"] == "cpu" and report["device_count"] >= 1
  assert set(report["stages"]) == {"devices", "tests", "bench", "train"}  # --cpu: no install
  assert report["budget_s"] == 600 and report["stages_s"] <= 600
  assert all(s["status"] == "ok" for s in report["stages"].values())
  assert report["tests"]["passed"] > 0 and not report["tests"].get("failed")
  (cell,) = report["bench"]
  assert cell["status"] == "ok" and cell["impl"] == "blocked+xla" and cell["median_ms"] > 0
  train = report["train"]
  assert train["tokens_per_s"] > 0 and train["steps"] == 2 and train["impl"] == ["blocked"]
  assert train["fraction_of_bf16_peak"] is None  # no datasheet peak for a CPU
  assert (tmp_path / "bench" / "fwdbwd_bf16_cpu_smoke.md").exists()


def test_peak_table_matches_device_kinds():
  sys.path.insert(0, str(REPO / "scripts"))
  try:
    import accelerator_report as ar
  finally:
    sys.path.pop(0)
  assert ar.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert ar.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert ar.bf16_peak_tflops("NVIDIA H200") == 989.0
  assert ar.bf16_peak_tflops("TPU v5 lite") == 197.0
  assert ar.bf16_peak_tflops("TPU v5p") == 459.0
  assert ar.bf16_peak_tflops("cpu") is None


STUB = """#!/usr/bin/env bash
case "$*" in
  *"import jax"*) printf 'cpu\tcpu\t1\n' ;;
  *accelerator_report.py*) exec {python} "$@" ;;
  *pytest*) exec sleep 60 ;;
  *) exit 0 ;;
esac
"""


def test_the_budget_cuts_a_stage_and_skips_the_rest(tmp_path):
  """BUDGET=35 (15 s kept for the report): the tests stage gets the ~20 s left (slack for a
  loaded machine) and is stopped
  there, bench and train are not started, and the report says so (a stub stands in for
  Python, so nothing else runs)."""
  stub = tmp_path / "python"
  stub.write_text(STUB.format(python=sys.executable))
  stub.chmod(0o755)
  env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "BUDGET": "35"}
  env |= {"OUT": str(tmp_path / "bench"), "TMPDIR": str(tmp_path)}
  p, report = run_check(env, tmp_path, timeout=120, code=1)
  st = report["stages"]
  assert st["devices"]["status"] == "ok" and st["tests"]["status"] == "timeout"
  assert st["tests"]["seconds"] <= 21
  assert st["bench"] == st["train"] == {"status": "timeout", "exit_code": 124, "seconds": 0}
  assert "budget is spent" in p.stdout and report["budget_s"] == 35
  assert report["backend"] == "cpu" and report["device_count"] == 1
