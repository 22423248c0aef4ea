"""Run a study: a grid of ordinary training runs compared at matched budgets.

  python scripts/study.py --study=experiments/studies/local_vs_conv.py --out=runs/local_vs_conv \
      [--scale=small|full] [--only=recall/] [--report_only]

Finished cells are skipped, so rerunning the same command resumes an interrupted study.
Writes <out>/REPORT.md with tables and PNG plots; every cell is a run directory under
<out>/runs/ that scripts/evaluate.py can re-evaluate. --report_only rewrites the report from
the cells' JSON files (lrm/study/report.py: nothing is restored or recomputed).
"""

from __future__ import annotations

import argparse
import sys

from lrm.study import grid, report, run


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  p.add_argument("--study", required=True, help="experiments/studies/<name>.py")
  p.add_argument("--out", required=True, help="output folder for run directories and REPORT.md")
  p.add_argument("--scale", default="small", choices=("small", "full"))
  p.add_argument("--only", default="", help="run only cells whose key contains this text")
  p.add_argument("--report_only", action="store_true", help="rewrite REPORT.md from finished cells")
  p.add_argument("--list", action="store_true", help="print the cells and exit")
  args = p.parse_args(argv)
  try:
    spec = grid.load_study(args.study, args.scale)
    if args.list:
      for cell in grid.expand(spec):
        print(cell.key)
      return 0
    if args.report_only:
      print(report.write_report(spec, args.out))
      return 0
    run.run_study(args.study, args.out, args.scale, only=args.only)
  except (FileNotFoundError, KeyError, ValueError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
