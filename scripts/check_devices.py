"""Print this process's index, the process count and every device JAX sees.

  python scripts/check_devices.py               # one machine
  python scripts/check_devices.py --multihost   # on every host of a pod / SLURM job

Run it through the same launcher as train.py to check a cluster before a long job: every
process should print the same global device count.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  from lrm.train import runtime

  if "--multihost" in argv[1:]:
    try:
      runtime.initialize_distributed()  # prints the layout
    except ValueError as e:  # runtime.LayoutError: no multi-process environment
      print(f"error: {e}", file=sys.stderr)
      return 2
  elif len(argv) > 1:
    print(f"error: unknown arguments {argv[1:]}; the only flag is --multihost", file=sys.stderr)
    return 2
  print(runtime.describe(), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
