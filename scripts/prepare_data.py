"""Write a task's generated (offline) data in its official on-disk format.

  python scripts/prepare_data.py --task=listops --out=data/listops \
      [--num_train=N --num_val=N --num_test=N --seed=S]

The same arguments give byte-identical files. Tasks with a generator implement
``Task.generate(out, num_train=, num_val=, num_test=, seed=)``. Exit codes: 2 bad input (an
unknown task, a size below 1, a --seed outside 0..2**31-1, an --out that is a file or lies
under one), 4 I/O failure (--out cannot be written; a folder this run created is removed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from lrm import registry, tasks
from lrm.config import INT32, int_span
from lrm.train import rundir


def check_out(out: Path) -> str | None:
  """Why ``out`` cannot be the output folder (a file, or under one), or None."""
  for p in (out, *out.parents):
    if p.exists() and not p.is_dir():
      where = "is a file" if p == out else f"lies under the file {p}"
      return f"--out={out} {where}; give a folder (it is created)"
  return None


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", required=True, help=f"one of: {', '.join(tasks.names())}")
  p.add_argument("--out", required=True, help="output folder (created)")
  p.add_argument("--num_train", type=int, default=None)
  p.add_argument("--num_val", type=int, default=None)
  p.add_argument("--num_test", type=int, default=None)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  try:
    cls = registry.lookup("task", args.task)
  except KeyError as e:
    print(f"error: {e.args[0]}", file=sys.stderr)
    return 2
  if not hasattr(cls, "generate"):
    print(f"error: task '{args.task}' has no offline generator", file=sys.stderr)
    return 2
  sizes = {k: getattr(args, k) for k in ("num_train", "num_val", "num_test")}
  sizes = {k: v for k, v in sizes.items() if v is not None}
  bad = [k for k, v in sizes.items() if v < 1]
  if bad:
    print(f"error: {', '.join('--' + k for k in bad)} must be at least 1", file=sys.stderr)
    return 2
  if not 0 <= args.seed <= INT32:
    print(f"error: --seed={args.seed} must be {int_span(0, INT32)}", file=sys.stderr)
    return 2
  out, made = Path(args.out), None
  try:
    problem = check_out(out)
    if problem:
      print(f"error: {problem}", file=sys.stderr)
      return 2
    made = next((p for p in (*reversed(out.parents), out) if not p.exists()), None)
    out.mkdir(parents=True, exist_ok=True)
    files = cls.generate(out, seed=args.seed, **sizes)
  except OSError as e:
    if made is not None:  # only what this run created: nothing of the user's is removed
      shutil.rmtree(made, ignore_errors=True)
    cause = rundir.io_failure(e) or f"{e.filename or out}: {e.strerror or e}"
    print(f"error: --out={out} cannot be written ({cause}); choose another --out", file=sys.stderr)
    return rundir.EXIT_IO
  for f in files or []:
    print(f)
  return 0


if __name__ == "__main__":
  sys.exit(main())
