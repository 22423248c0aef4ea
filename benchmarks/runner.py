"""Parent side of the benchmark: run each cell in a fresh process, write JSONL as they finish.

The parent never runs anything on an accelerator: every cell is ``python
benchmarks/worker.py`` in its own process, with the malloc environment chosen here (glibc
reads ``GLIBC_TUNABLES`` only at start-up). A cell that runs out of memory or time is
recorded as ``oom``/``timeout`` and the same label's longer lengths as ``skipped``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lrm.train.runtime import TUNED_MALLOC

WORKER = Path(__file__).resolve().with_name("worker.py")
MALLOC = ("default", "tuned")
OOM_MARKERS = ("out of memory", "resource_exhausted", "memoryerror", "bad_alloc", "allocate of")
USEFUL = (
  "useful: analytic FLOPs (x batch, x3 with backward) of the pattern's efficient mixer "
  "(mixer.flops(L); for dense oracles and baselines, the flops of the efficient mixer with "
  "the same pattern). flops_impl counts what the running implementation does."
)


def malloc_env(setting: str) -> dict[str, str]:
  """This process's environment with glibc malloc tunables ``default`` or ``tuned``."""
  if setting not in MALLOC:
    raise ValueError(f"unknown malloc setting '{setting}'; choose one of {', '.join(MALLOC)}")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if setting == "tuned":
    env["GLIBC_TUNABLES"] = TUNED_MALLOC
  return env


def resolve_malloc(setting: str) -> tuple[str, ...]:
  """``auto`` -> ``tuned`` on a CPU backend, else ``default``; ``both`` -> both settings."""
  if setting == "both":
    return MALLOC
  if setting != "auto":
    malloc_env(setting)  # validates the name
    return (setting,)
  # Asked in a child process: the parent must not hold an accelerator the cells need.
  probe = [sys.executable, "-c", "import jax; print(jax.default_backend())"]
  backend = subprocess.run(probe, capture_output=True, text=True).stdout.strip()
  return ("tuned",) if backend == "cpu" else ("default",)


def mem_available_bytes() -> int:
  """``MemAvailable`` from /proc/meminfo (0 where unknown)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def classify_failure(returncode: int, stderr: str) -> dict:
  """``oom`` when the process was SIGKILLed or says it ran out of memory, else ``error``."""
  lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
  # The exception line, not JAX's "For simplicity, JAX has removed..." footer.
  errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b.*:", ln)]
  oom = returncode == -9 or any(m in stderr.lower() for m in OOM_MARKERS)
  reason = (errors or lines or [f"exit status {returncode}"])[-1][:300]
  if returncode == -9:
    reason = "killed by SIGKILL (the kernel's OOM killer?)"
  return {"status": "oom" if oom else "error", "reason": reason, "returncode": returncode}


def run_cell(cell: dict, *, env: dict[str, str], timeout: float) -> dict:
  """Run one cell in a fresh Python process; never raises for the cell's own failures."""
  with tempfile.TemporaryDirectory(prefix="lrm_bench_") as tmp:
    cell_path, out_path = os.path.join(tmp, "cell.json"), os.path.join(tmp, "result.json")
    with open(cell_path, "w") as f:
      json.dump(cell, f)
    cmd = [sys.executable, str(WORKER), cell_path, out_path]
    try:
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
      return {"status": "timeout", "reason": f"cell took longer than {timeout:g} s"}
    if proc.returncode == 0 and os.path.exists(out_path):
      with open(out_path) as f:
        return json.load(f)
    return classify_failure(proc.returncode, proc.stderr)


def derive(rec: dict) -> dict:
  """Tokens/s, analytic FLOPs of the timed work and the fraction of the matmul peak."""
  if rec.get("status") != "ok" or "median_ms" not in rec:
    return rec
  seconds = rec["median_ms"] / 1e3
  rec["tokens_per_s"] = rec["batch"] * rec["length"] / seconds
  bwd = 3 if rec["mode"] in ("fwdbwd", "train") else 1  # backward ~= 2x forward
  rec["flops_analytic"] = rec["flops_fwd"] * rec["batch"] * bwd
  rec["flops_kind"] = USEFUL
  if "flops_impl_fwd" in rec:
    rec["flops_impl"] = rec["flops_impl_fwd"] * rec["batch"] * bwd
  if rec.get("peak_gflops"):
    rec["frac_peak"] = rec["flops_analytic"] / seconds / (rec["peak_gflops"] * 1e9)
    if "flops_impl" in rec:
      rec["frac_peak_impl"] = rec["flops_impl"] / seconds / (rec["peak_gflops"] * 1e9)
  return rec


def _key(cell: dict) -> str:
  return json.dumps({k: v for k, v in cell.items() if k != "length"}, sort_keys=True)


def run_cells(
  cells: Sequence[dict],
  out_path: str,
  *,
  malloc: Sequence[str] = ("tuned",),
  timeout: float = 900.0,
  mem_limit_bytes: int = 0,
  peak_size: int = 2048,
  peak_repeats: int = 10,
  log: Callable[[str], None] = print,
) -> list[dict]:
  """Measure the matmul peak, then every cell under every malloc setting; write JSONL.

  Returns the records (also written, one JSON line each, as they complete).
  """
  dtype = cells[0]["dtype"] if cells else "float32"
  peaks = {}
  for setting in malloc:
    peak_cell = dict(kind="peak", size=peak_size, dtype=dtype, repeats=peak_repeats, warmup=2)
    res = run_cell(
      peak_cell | {"mem_limit_bytes": mem_limit_bytes}, env=malloc_env(setting), timeout=timeout
    )
    peaks[setting] = res.get("peak_gflops") or 0.0
    log(
      f"matmul peak ({peak_size}^3 {dtype}, malloc={setting}): "
      f"{peaks[setting]:.1f} GFLOP/s  [{res.get('status')}]"
    )
  # One ceiling for every record (the best measured), so malloc settings compare alike.
  peak = max(peaks.values(), default=0.0) or None
  failed: dict[str, str] = {}
  records = []
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "w") as f:
    for cell in cells:
      for setting in malloc:  # interleaved, so slow drifts in machine load hit both alike
        key = _key(cell) + setting
        if key in failed:
          res = {"status": "skipped", "reason": f"{failed[key]} at a shorter length"}
        else:
          res = run_cell(
            cell | {"mem_limit_bytes": mem_limit_bytes}, env=malloc_env(setting), timeout=timeout
          )
        rec = derive(
          cell
          | {"malloc": setting, "peak_gflops": peak, "peak_matmul": f"{peak_size}^3 {dtype}"}
          | {"peak_gflops_by_malloc": peaks}
          | res
        )
        if rec["status"] in ("oom", "timeout"):
          failed[key] = rec["status"]
        records.append(rec)
        f.write(json.dumps(rec) + "\n")
        f.flush()
        log(_line(rec))
  return records


def run_shared(
  cells: Sequence[dict],
  out_path: str,
  *,
  malloc: Sequence[str] = ("tuned",),
  timeout: float = 900.0,
  mem_limit_bytes: int = 0,
  peak_size: int = 2048,
  append: bool = False,
  log: Callable[[str], None] = print,
) -> list[dict]:
  """All lengths of a label in one process (``benchmarks/shared.py``), one process per label
  and malloc setting, as one training run runs one model: compiled, then timed in
  alternating rounds. Records carry ``process="shared"``; JSONL as above."""
  dtype = cells[0]["dtype"] if cells else "float32"
  labels = list(dict.fromkeys(c["mixer"] for c in cells))
  records = []
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "a" if append else "w") as f:
    for setting in malloc:
      env = malloc_env(setting)
      peak_cell = dict(kind="peak", size=peak_size, dtype=dtype, repeats=10, warmup=2)
      peak = run_cell(peak_cell, env=env, timeout=timeout).get("peak_gflops") or None
      for label in labels:
        group = [c for c in cells if c["mixer"] == label]
        for cell, res in zip(group, _run_group(group, env, timeout, mem_limit_bytes), strict=True):
          rec = derive(
            cell
            | {"malloc": setting, "peak_gflops": peak, "peak_matmul": f"{peak_size}^3 {dtype}"}
            | {"process": "shared"}
            | res
          )
          records.append(rec)
          f.write(json.dumps(rec) + "\n")
          f.flush()
          log(_line(rec) + "  [shared process]")
  return records


def _run_group(cells: list[dict], env: dict, timeout: float, mem_limit_bytes: int) -> list[dict]:
  """Results of ``benchmarks/shared.py`` on ``cells`` (the failure, for each, if it fails)."""
  with tempfile.TemporaryDirectory(prefix="lrm_bench_") as tmp:
    cell_path, res_path = os.path.join(tmp, "cells.json"), os.path.join(tmp, "res.json")
    with open(cell_path, "w") as g:
      json.dump([c | {"mem_limit_bytes": mem_limit_bytes} for c in cells], g)
    cmd = [sys.executable, str(WORKER.with_name("shared.py")), cell_path, res_path]
    try:
      limit = timeout * len(cells)
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
      return [{"status": "timeout", "reason": "the shared process timed out"}] * len(cells)
    if proc.returncode != 0:
      return [classify_failure(proc.returncode, proc.stderr)] * len(cells)
    with open(res_path) as g:
      return json.load(g)


def _line(rec: dict) -> str:
  head = f"{rec['mixer']:24s} L={rec['length']:6d} {rec['mode']:6s} malloc={rec['malloc']:7s}"
  if rec["status"] != "ok":
    return f"{head} {rec['status'].upper()}: {rec.get('reason', '')}"
  mib = rec.get("xla_total_bytes", 0) / 2**20
  frac = rec.get("frac_peak")
  return (
    f"{head} {rec['median_ms']:9.1f} ms  {rec['tokens_per_s']:10.0f} tok/s  XLA {mib:8.1f} MiB"
    f"  RSS {rec['peak_rss_bytes'] / 2**20:7.0f} MiB"
    + (f"  {100 * frac:5.1f}% peak" if frac is not None else "")
  )
