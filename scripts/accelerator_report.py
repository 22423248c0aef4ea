"""Collect what scripts/accelerator_check.sh measured into one JSON file (and print it).

  python scripts/accelerator_report.py --work=<scratch dir> --out=results/bench/accelerator_X.json \
      --bench=<fwdbwd .jsonl> [--bench=...] --run=<training workdir> --mode=accelerator|cpu

Reads the stage table (``<work>/stages``: name, exit code, seconds), the pytest summary line
of ``<work>/tests.log``, the benchmark records, and the training run's results.json; adds the
fraction of the chip's bfloat16 peak (vendor datasheet, dense) that training reached:
``tokens/s x train FLOPs/token / (peak x devices)``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# Dense bfloat16 peak per chip, TFLOP/s (vendor datasheets), matched in order against the
# device kind JAX reports ("NVIDIA H100 80GB HBM3", "TPU v5 lite", ...).
BF16_PEAK_TFLOPS = [
  ("H100 PCIe", 756.0),
  ("H100", 989.0),
  ("H200", 989.0),
  ("GH200", 989.0),
  ("B200", 2250.0),
  ("A100", 312.0),
  ("L40S", 362.0),
  ("L4", 121.0),
  ("A10", 125.0),
  ("TPU v6 lite", 918.0),
  ("TPU v5 lite", 197.0),
  ("TPU v5", 459.0),
  ("TPU v4", 275.0),
  ("TPU v3", 123.0),
]


def bf16_peak_tflops(device_kind: str) -> float | None:
  for name, peak in BF16_PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peak
  return None


def stages(work: Path) -> dict[str, dict]:
  out = {}
  path = work / "stages"
  for line in path.read_text().splitlines() if path.exists() else []:
    name, rc, seconds = line.split()
    rc = int(rc)
    status = "ok" if rc == 0 else "timeout" if rc in (124, 137) else "failed"
    out[name] = {"status": status, "exit_code": rc, "seconds": int(seconds)}
  return out


def test_summary(log: Path) -> dict:
  """Counts from pytest's last line, and the remat memory line if the remat test printed it."""
  text = log.read_text(errors="replace") if log.exists() else ""
  counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", text)}
  m = re.search(r"temp memory at L=(\d+): ([\d.]+) MiB, with remat ([\d.]+) MiB", text)
  if m:
    counts["remat_mib"] = {"length": int(m[1]), "plain": float(m[2]), "remat": float(m[3])}
  return counts


def bench_summary(paths: list[Path]) -> list[dict]:
  """One row per benchmark cell: label, length, impl, median ms, XLA MiB, status."""
  rows = []
  for path in paths:
    for line in path.read_text().splitlines() if path.exists() else []:
      r = json.loads(line)
      if r.get("kind") != "mixer":
        continue
      times = sorted(r.get("times_ms") or [])
      rows.append(
        {
          "mixer": r.get("mixer"),
          "causal": r.get("causal"),
          "length": r.get("length"),
          "impl": r.get("impl"),
          "status": r.get("status"),
          "median_ms": times[len(times) // 2] if times else None,
          "xla_temp_mib": round(r["xla_temp_bytes"] / 2**20, 1) if "xla_temp_bytes" in r else None,
          "file": str(path),
        }
      )
  return rows


def train_summary(run: Path, device_kind: str) -> dict:
  path = run / "results.json"
  if not path.exists():
    return {"status": "no results.json"}
  r = json.loads(path.read_text())
  tps, fpt, devices = r["tokens_per_s"], r["train_flops_per_token"], r["devices"]
  peak = bf16_peak_tflops(device_kind)
  achieved = tps * fpt / 1e12
  return {
    "tokens_per_s": tps,
    "train_flops_per_token": fpt,
    "achieved_tflops": achieved,
    "bf16_peak_tflops_per_chip": peak,
    "fraction_of_bf16_peak": achieved / (peak * devices) if peak else None,
    "devices": devices,
    "impl": r.get("impl"),
    "steps": r["final"]["step"],
    "test_accuracy": r["final"]["test"].get("accuracy"),
    "wall_time_s": r.get("wall_time_s"),
  }


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--work", type=Path, required=True)
  p.add_argument("--out", type=Path, required=True)
  p.add_argument("--bench", type=Path, action="append", default=[])
  p.add_argument("--run", type=Path, required=True)
  p.add_argument("--mode", choices=("accelerator", "cpu"), required=True)
  p.add_argument("--budget", type=int, default=None, help="the check's wall-clock budget (s)")
  a = p.parse_args(argv)
  info = (a.work / "device.txt").read_text().split("\t") if (a.work / "device.txt").exists() else []
  backend, kind, count = (info + ["?", "?", "0"])[:3]
  report = {
    "mode": a.mode,
    "backend": backend,
    "device_kind": kind.strip(),
    "device_count": int(count),
    "budget_s": a.budget,
    "stages": stages(a.work),
    "tests": test_summary(a.work / "tests.log"),
    "bench": bench_summary(a.bench),
    "train": train_summary(a.run, kind),
  }
  report["stages_s"] = sum(s["seconds"] for s in report["stages"].values())
  a.out.parent.mkdir(parents=True, exist_ok=True)
  a.out.write_text(json.dumps(report, indent=1) + "\n")
  print(json.dumps(report, indent=1))
  return 0 if all(s["status"] == "ok" for s in report["stages"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
