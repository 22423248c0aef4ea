"""Rebuild the benchmark's markdown tables (and optionally ratios, growth, plot) from JSONL.

  python benchmarks/table.py results/bench/fwdbwd_cpu.jsonl [more.jsonl ...] \
      [--full] [--ratios [--reference=local]] [--growth] [--plot=out.png]

Without flags it prints the README table: median time and XLA memory per mixer and length;
with ``--full --ratios --growth`` the ``<out>.md`` that ``benchmarks/run.py`` writes.
What the numbers should be, and whether they are, is written in results/bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402

_FULL = flags.DEFINE_bool("full", False, "also peak RSS and % of matmul peak")
_RATIOS = flags.DEFINE_bool("ratios", False, "print speed/memory ratios (local vs dpa_local, ...)")
_REFERENCE = flags.DEFINE_list(
  "reference", [], "labels every windowed label is compared with (default: with each other)"
)
_GROWTH = flags.DEFINE_bool("growth", False, "print the time ratio of each doubling of L")
_PLOT = flags.DEFINE_string("plot", None, "also write the log-log plot to this PNG")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    print("error: give one or more JSONL files, e.g. results/bench/main.jsonl", file=sys.stderr)
    return 2
  try:
    records = report.load(paths)
  except (OSError, ValueError) as e:
    print(f"error: cannot read benchmark records: {e}", file=sys.stderr)
    return 2
  out = report.text(
    records,
    brief=not _FULL.value,
    with_ratios=_RATIOS.value,
    with_growth=_GROWTH.value,
    reference=_REFERENCE.value,
  )
  print(out, end="")
  if _PLOT.value:
    report.plot(records, _PLOT.value)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
