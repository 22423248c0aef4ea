"""Cells in one process, timed in alternating rounds (``run.py --process=shared``).

  python benchmarks/shared.py <cells.json> <results.json>

A training run keeps one process: its heap, its caches and XLA's thread pool carry over from
step to step, and a process that ran shorter sequences first is in the state a long run
reaches. ``benchmarks/worker.py`` measures each cell in a fresh process, which hides that;
here (``benchmarks/runner.py`` gives one process all lengths of one label) every cell is
compiled first, then each round calls every cell once (after ``warmup`` untimed rounds), so
slow drifts in machine load hit all lengths alike and the growth per doubling is measured
side by side. The first rounds at a new length grow the heap (page faults); a few warm-up
rounds reach the steady state a training run is in. The process's peak RSS is shared by
all cells and recorded as such.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from benchmarks import worker  # noqa: E402


def measure_shared(cells: list[dict]) -> list[dict]:
  """One record per cell (mixer cells only), all measured in this process."""
  limit = max((int(c.get("mem_limit_bytes") or 0) for c in cells), default=0)
  if jax.default_backend() == "cpu" and limit:
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
  out: list[dict] = [{} for _ in cells]
  calls = {}
  for i, cell in enumerate(cells):
    if cell["kind"] != "mixer":
      out[i] = {"status": "error", "reason": "only mixer cells run in a shared process"}
      continue
    try:
      info, lowered, args = worker.mixer_call(cell)
      t0 = time.perf_counter()
      compiled = lowered.compile()
      out[i] = info | {"compile_s": time.perf_counter() - t0} | worker._compiled_stats(compiled)
    except Exception as e:  # noqa: BLE001  (a cell's failure is recorded, the rest run)
      out[i] = {"status": "error", "reason": f"{type(e).__name__}: {e}"[:300]}
      continue
    need = out[i].get("xla_total_bytes", 0)
    if limit and need > limit:
      out[i] |= {"status": "oom", "reason": f"XLA needs {need / 2**30:.1f} GiB > limit"}
      continue
    calls[i] = (lambda c, a: lambda: c(*a))(compiled, args)
  times: dict[int, list[float]] = {i: [] for i in calls}
  rounds = max(c["warmup"] for c in cells) + max(c["repeats"] for c in cells)
  for r in range(rounds):
    for i in list(calls):
      if r >= cells[i]["warmup"] + cells[i]["repeats"]:
        continue
      t0 = time.perf_counter()
      try:
        jax.block_until_ready(calls[i]())
      except Exception as e:  # noqa: BLE001  (e.g. out of memory under the cap)
        out[i] |= {"status": "error", "reason": f"{type(e).__name__}: {e}"[:300]}
        del calls[i]
        continue
      if r >= cells[i]["warmup"]:
        times[i].append(1e3 * (time.perf_counter() - t0))
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  info = worker.machine_info() | {"process": "shared", "peak_rss_bytes": rss}
  info["load_after"] = [round(v, 2) for v in os.getloadavg()]
  for i in calls:
    out[i] |= {"status": "ok", "times_ms": times[i], "median_ms": statistics.median(times[i])}
  return [o | info for o in out]


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print("usage: python benchmarks/shared.py <cells.json> <results.json>", file=sys.stderr)
    return 2
  with open(argv[1]) as f:
    cells = json.load(f)
  load = [round(v, 2) for v in os.getloadavg()]
  results = [r | {"load_before": load} for r in measure_shared(cells)]
  with open(argv[2], "w") as f:
    json.dump(results, f)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
