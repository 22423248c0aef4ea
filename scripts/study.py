"""Run a study: a grid of ordinary training runs compared at matched budgets.

  python scripts/study.py --study=experiments/studies/local_vs_conv.py --out=runs/local_vs_conv \
      [--scale=small|full] [--only=recall/] [--report_only] [--price_per_hour=2.5 --machine=...]

Finished cells are skipped, so rerunning the same command resumes an interrupted study; a
SIGTERM or Ctrl-C stops it after saving the running cell, with exit code 143 (as
scripts/train.py).
Writes <out>/REPORT.md with tables and PNG plots; every cell is a run directory under
<out>/runs/ that scripts/evaluate.py can re-evaluate. --report_only rewrites the report from
the cells' JSON files (lrm/study/report.py: nothing is restored or recomputed).
--shard=i/n runs every n-th cell from the i-th: start n processes with the same --out and
shards 0/n .. n-1/n to share the cores (tiny cells use them poorly alone); each waits for the
whole learning-rate sweep before the rest, and the last to finish writes the full report.
--price_per_hour and --machine price the report's dollars (default: the study file's
price_per_hour and price_machine, else lrm/analysis/cost.py's assumed $0.10/h 2-vCPU VM).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from lrm.analysis import cost
from lrm.study import extend, grid, report, run, sweep
from lrm.train import rundir

EXIT_INTERRUPTED = 143  # scripts/train.py's code for a run stopped by SIGTERM


def parse_shard(text: str) -> tuple[int, int]:
  """``"i/n"`` -> ``(i, n)``; ValueError (one line) unless 0 <= i < n, also for --list."""
  try:
    i, n = (int(v) for v in text.split("/"))
  except ValueError:
    raise ValueError(f"--shard={text}: expected i/n, e.g. --shard=0/2") from None
  if not 0 <= i < n:
    raise ValueError(f"--shard={text}: need 0 <= i < n, e.g. --shard=1/2")
  return i, n


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  p.add_argument("--study", required=True, help="experiments/studies/<name>.py")
  p.add_argument("--out", required=True, help="output folder for run directories and REPORT.md")
  p.add_argument("--scale", default="small", choices=("small", "full"))
  p.add_argument("--only", default="", help="run only cells whose key contains this text")
  p.add_argument("--shard", default="0/1", help="i/n: run every n-th cell from the i-th")
  p.add_argument("--report_only", action="store_true", help="rewrite REPORT.md from finished cells")
  p.add_argument("--list", action="store_true", help="print the cells and exit")
  p.add_argument("--price_per_hour", type=float, default=None, help="dollars per machine-hour")
  p.add_argument("--machine", default="the machine given by --price_per_hour")
  args = p.parse_args(argv)
  try:
    shard = parse_shard(args.shard)
    price = None if args.price_per_hour is None else cost.Price(args.price_per_hour, args.machine)
    spec = grid.load_study(args.study, args.scale)
    if args.list:
      chosen, extra = sweep.chosen(sweep.load(args.out)), extend.load(args.out)
      cells = grid.expand(spec, chosen, extra)
      for cell in cells:
        print(cell.key)
      keys = {sweep.rate_key(spec, *c.arm, c.size) for c in grid.sweep_cells(spec, extra)}
      waiting = len(keys - set(chosen))
      if waiting > 0:
        print(f"({waiting} arms wait for their learning-rate sweep)", file=sys.stderr)
      return 0
    if args.report_only:
      print(report.write_report(spec, args.out, price))
      return 0
    # Ctrl-C as a SIGTERM: the running cell saves and stops (lrm.train.rundir.Preemption)
    signal.signal(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    run.run_study(args.study, args.out, args.scale, only=args.only, price=price, shard=shard)
  except (rundir.Interrupted, KeyboardInterrupt) as e:
    print(f"stopped: {e or 'interrupted'}; rerun the same command to resume", file=sys.stderr)
    return EXIT_INTERRUPTED
  except (FileNotFoundError, KeyError, ValueError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  except rundir.IOFailure as e:  # e.g. a data cache that cannot be written
    print(f"error: {e}", file=sys.stderr)
    return rundir.EXIT_IO
  return 0


if __name__ == "__main__":
  sys.exit(main())
