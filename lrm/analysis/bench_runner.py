"""Parent side of the benchmark: build cells, run each in a fresh process, write JSONL.

The parent imports no accelerator runtime state; each cell is ``python -m
lrm.analysis.benchmark`` in its own process (see ``lrm/analysis/benchmark.py``), with the
malloc environment chosen here, because glibc reads ``GLIBC_TUNABLES`` only at start-up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

from lrm import mixers
from lrm.analysis.bench_baselines import BASELINES
from lrm.analysis.benchmark import MODES, OOM_MARKERS, parse_mixer

# XLA on CPU allocates fresh temporaries on every step; with glibc's defaults, big blocks go
# through mmap/munmap each time (page faults + zeroing). These keep them in the heap.
TUNED_MALLOC = (
  "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4294967296"
  ":glibc.malloc.trim_threshold=68719476736"
)
MALLOC = ("default", "tuned")
USEFUL = (
  "useful: analytic FLOPs (x batch, x3 with backward) of the pattern's efficient mixer "
  "(mixer.flops(L); for dense oracles and dpa_* baselines, the flops of the blocked/sparse "
  "mixer with the same pattern). flops_impl counts what the running implementation does."
)
# ListOps in LRA (LRA_NOTES.md section 5): 4 layers, width 512, 8 heads, MLP 1024, CLS pool.
LISTOPS = dict(
  length=2000, dim=512, depth=4, heads=8, mlp_ratio=2, num_classes=10, vocab_size=20, pool="cls"
)


def default_mixers() -> list[str]:
  """Every registered mixer, the dense oracles of local/BigBird, and the baselines."""
  known = mixers.names()
  order = ["conv", "local", "bigbird", "random", "global", "dynamic_conv", "involution"]
  labels = [m for m in order if m in known] + [m for m in known if m not in order]
  labels += [f"{m}:impl=dense" for m in ("local", "bigbird") if m in known]
  return labels + list(BASELINES)


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


def mixer_cells(
  labels: Sequence[str],
  lengths: Sequence[int],
  *,
  dim: int,
  heads: int,
  window: int,
  batch: int = 1,
  mode: str = "fwdbwd",
  dtype: str = "float32",
  block: int = 64,
  causal: bool = False,
  repeats: int = 5,
  warmup: int = 1,
) -> list[dict]:
  """One cell per (mixer, length), lengths ascending within each mixer."""
  if mode not in MODES:
    raise ValueError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
  if not lengths or min(lengths) < 1:
    raise ValueError(f"lengths must be positive integers, got {list(lengths)}")
  common = dict(kind="mixer", dim=dim, heads=heads, window=window, batch=batch, mode=mode)
  common |= dict(dtype=dtype, causal=causal, repeats=repeats, warmup=warmup)
  cells = []
  for label in labels:
    spec = parse_mixer(label, dim=dim, heads=heads, window=window, block=block)
    cells += [common | {"mixer": label, "spec": spec, "length": L} for L in sorted(lengths)]
  return cells


def train_cells(
  labels: Sequence[str],
  *,
  window: int,
  batch: int,
  dtype: str = "float32",
  block: int = 64,
  repeats: int = 5,
  warmup: int = 1,
  dropout: float = 0.1,
  **sizes: int,
) -> list[dict]:
  """One whole-training-step cell per mixer, at the ListOps size unless ``sizes`` override."""
  cfg = LISTOPS | sizes
  common = cfg | dict(kind="train", mode="train", window=window, batch=batch, dtype=dtype)
  common |= dict(repeats=repeats, warmup=warmup, dropout=dropout)
  return [
    common
    | {
      "mixer": label,
      "spec": parse_mixer(label, dim=cfg["dim"], heads=cfg["heads"], window=window, block=block),
    }
    for label in labels
  ]


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
    cmd = [sys.executable, "-m", "lrm.analysis.benchmark", cell_path, out_path]
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

  After a cell runs out of memory or time, the same mixer's longer lengths are recorded as
  ``skipped``. Returns the records (also written, one JSON line each, as they complete).
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
