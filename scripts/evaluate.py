"""Evaluate a run's checkpoint on a split; needs only the run directory (and the data).

  python scripts/evaluate.py --workdir=runs/quickstart [--split=test] [--checkpoint=best]

--checkpoint is best (by the task's main validation metric), latest, or a step number. The
model is rebuilt from <workdir>/config.json and vocab.json and restored onto however many
devices this machine has. Prints the metrics as JSON and writes them to
<workdir>/eval_<split>_<checkpoint>.json (a read-only run directory is not an error: the
metrics are printed first, and a note says the file could not be written). A damaged
checkpoint is reported in one line and the newest intact one is used. Exit codes: 2 bad
input (also --multihost where no multi-process environment is configured), 4 no intact
checkpoint or an I/O failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if {"-h", "--help", "--helpfull"} & set(argv[1:]):
    print(__doc__)
    return 0
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "run directory written by train.py", flag_values=fv)
  flags.DEFINE_string("split", "test", "train, validation or test", flag_values=fv)
  flags.DEFINE_string("checkpoint", "best", "best, latest or a step number", flag_values=fv)
  flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first", flag_values=fv)
  try:
    fv(argv)
    if not fv.workdir:
      raise flags.Error("--workdir is required")
  except flags.Error as e:
    print(
      f"error: {e} (usage: evaluate.py --workdir=<dir> [--split=test] "
      f"[--checkpoint=best|latest|<step>])",
      file=sys.stderr,
    )
    return 2
  if fv.multihost:
    from lrm.train import runtime

    try:
      runtime.initialize_distributed()
    except runtime.LayoutError as e:  # no multi-process environment: names what to set
      print(f"error: {e}", file=sys.stderr)
      return 2
  import contextlib

  import jax

  from lrm.run import Run
  from lrm.tasks import DataError
  from lrm.train import rundir

  rundir.quiet_storage_noise()
  try:
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON alone
      out = Run.from_workdir(fv.workdir).evaluate(split=fv.split, checkpoint=fv.checkpoint)
  except rundir.IOFailure as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    rundir.hard_exit(rundir.EXIT_IO)
  except KeyError as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  except (DataError, ValueError, FileNotFoundError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(json.dumps(out, indent=1, sort_keys=True), flush=True)
  if jax.process_index() == 0:  # the metrics are printed first: a read-only run still shows them
    path = Path(fv.workdir) / f"eval_{fv.split}_{fv.checkpoint}.json"
    try:
      rundir.write_json(path, out)
    except OSError as e:
      print(
        f"note: could not write {path} ({rundir.io_failure(e) or e}); the metrics are above",
        file=sys.stderr,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
