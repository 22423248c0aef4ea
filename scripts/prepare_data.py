"""Write a task's generated (offline) data in its official on-disk format.

  python scripts/prepare_data.py --task=listops --out=data/listops \
      [--num_train=N --num_val=N --num_test=N --seed=S]

The same arguments give byte-identical files. Tasks with a generator implement
``Task.generate(out, num_train=, num_val=, num_test=, seed=)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lrm import registry, tasks


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
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  files = cls.generate(out, seed=args.seed, **sizes)
  for f in files or []:
    print(f)
  return 0


if __name__ == "__main__":
  sys.exit(main())
