"""Rebuild the benchmark's markdown tables (and optionally ratios/targets/plot) from JSONL.

  python scripts/bench_table.py results/bench/main.jsonl [results/bench/train.jsonl ...] \
      [--full] [--ratios] [--targets] [--plot=out.png]

Without flags it prints the README table: median time and XLA memory per mixer and length.
"""

from __future__ import annotations

import sys

from absl import app, flags

from lrm.analysis import bench_report

_FULL = flags.DEFINE_bool("full", False, "also peak RSS and % of matmul peak")
_RATIOS = flags.DEFINE_bool("ratios", False, "print speed/memory ratios (local vs dpa_local, ...)")
_TARGETS = flags.DEFINE_bool("targets", False, "print the issue's targets, met or not")
_PLOT = flags.DEFINE_string("plot", None, "also write the log-log plot to this PNG")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    print("error: give one or more JSONL files, e.g. results/bench/main.jsonl", file=sys.stderr)
    return 2
  try:
    records = bench_report.load(paths)
  except (OSError, ValueError) as e:
    print(f"error: cannot read benchmark records: {e}", file=sys.stderr)
    return 2
  print(bench_report.markdown(records, brief=not _FULL.value))
  if _RATIOS.value:
    print("\n".join(f"- {line}" for line in bench_report.ratios(records)))
  if _TARGETS.value:
    print(bench_report.targets_text(records))
  if _PLOT.value:
    bench_report.plot(records, _PLOT.value)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
