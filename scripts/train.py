r"""Train a model: any task, any mixer, from one CPU to a TPU pod.

  python scripts/train.py --config=experiments/quickstart.py --workdir=runs/quickstart
  python scripts/train.py --config=experiments/recall.py:mixer=global,size=small \
      --workdir=runs/recall_global --config.train.steps=3000 --config.optim.lr=1e-3

Rerunning the same command resumes from the newest checkpoint; a different config in the
same workdir is refused unless --restart is given (which deletes that run first). Flags:
--multihost joins a multi-process run (the layout that lrm/train/launch.py reads from the
environment, given to jax.distributed.initialize(); see scripts/launch_tpu_pod.sh and
scripts/slurm_multigpu.sh). One process at a time may write a
workdir (a lock; a second one is refused). Exit codes: 0 done, or preempted after a save
(SIGTERM in the loop: checkpoint saved, rerun to resume); 2 bad input or a refused workdir;
3 training diverged (NaN/inf loss); 4 I/O failure (disk full, read-only, permission denied,
damaged checkpoints with nothing intact to fall back on); 143 stopped by SIGTERM where
nothing needed saving (set-up, final evaluation: rerun to continue).

CPU hook: with LRM_MALLOC_TUNING=1 the script restarts itself with glibc malloc tunables
(GLIBC_TUNABLES must be set before a process starts), which may speed up CPU runs.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys

# A SIGTERM during start-up (imports, data generation, compilation) is remembered here until
# the trainer's own handler takes over, so it stops the run with a message instead of killing
# the process mid-way.
_EARLY_SIGTERM: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: _EARLY_SIGTERM.append(signum))

from lrm.train.malloc import TUNED_MALLOC  # noqa: E402

if os.environ.get("LRM_MALLOC_TUNING") == "1" and "GLIBC_TUNABLES" not in os.environ:
  os.execve(
    sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNED_MALLOC}
  )

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

USAGE = "usage: train.py --config=experiments/<file>.py[:<variant>] --workdir=<dir> [--restart]"


def error(message: str, code: int = 2) -> int:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  return code


def parse(argv: list[str], *, workdir_flag: bool = True) -> flags.FlagValues:
  """Flags into a fresh ``FlagValues`` (so ``main`` can be called repeatedly, e.g. by tests)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config",
    None,
    "experiment config: a file with get_config(arg)",
    flag_values=fv,
    lock_config=True,
    sys_argv=argv,
  )
  flags.DEFINE_string("workdir", None, "run directory (created; reused to resume)", flag_values=fv)
  flags.DEFINE_bool("restart", False, "delete the run in --workdir and start over", flag_values=fv)
  flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first", flag_values=fv)
  fv(argv)
  if fv["config"].present:
    fv.config.to_dict()  # a config file that failed to load raises only when first used
  return fv


def unknown_key(argv: list[str], key: str) -> str:
  """The typo'd override among ``argv``, with the closest real keys."""
  cfg_arg = [a for a in argv if a.startswith("--config=")]
  known: list[str] = []
  if cfg_arg:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=["x", *cfg_arg])
    fv(["x", *cfg_arg])

    def walk(d: dict, prefix: str = "") -> None:
      for k, v in d.items():
        known.append(prefix + k)
        if isinstance(v, dict):
          walk(v, f"{prefix}{k}.")

    walk(fv.config.to_dict())
  bad = [a.split("=")[0][len("--config.") :] for a in argv if a.startswith("--config.")]
  bad = [b for b in bad if b not in known] or [key]
  hint = difflib.get_close_matches(bad[0], known, n=3)
  did_you_mean = f" (did you mean {', '.join(hint)}?)" if hint else ""
  return (
    f"unknown config key '{bad[0]}'{did_you_mean}; an override must name a key of the config file"
  )


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if {"-h", "--help", "--helpfull"} & set(argv[1:]):
    print(__doc__)
    return 0
  try:
    fv = parse(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
    return error(unknown_key(argv, str(e).strip("'\"")))
  except (flags.Error, OSError) as e:
    return error(f"{str(e).strip().splitlines()[-1]}  ({USAGE})")
  except Exception as e:  # the config file itself fails: syntax error, get_config raises
    return error(f"cannot load the config file: {config_error(e)}")
  if fv.config is None or fv.workdir is None:
    return error(f"--config and --workdir are required ({USAGE})")
  if fv.multihost:
    from lrm.train import launch, sharding

    try:
      sharding.initialize_distributed()
    except launch.LayoutError as e:
      return error(e)

  from lrm.train import guard

  guard.quiet_storage_noise()
  with guard.Preemption() as preempt:  # before set-up: a SIGTERM at any moment is handled
    preempt.flag = bool(_EARLY_SIGTERM)
    code = run(fv, preempt)
  if code == guard.EXIT_IO:  # a failed background write would print tracebacks at shutdown
    guard.hard_exit(code)
  return code


def run(fv: flags.FlagValues, preempt: object) -> int:
  from lrm.tasks import DataError
  from lrm.train import guard, loop

  try:
    prepared = loop.prepare(fv.config, fv.workdir, restart=fv.restart)
    results = loop.train(prepared, preempt)
  except guard.Interrupted as e:
    preempt.acted = True
    return error(e, code=143)
  except loop.Diverged as e:
    return error(e, code=guard.EXIT_DIVERGED)
  except guard.IOFailure as e:
    return error(e, code=guard.EXIT_IO)
  except Exception as e:
    cause = guard.io_failure(e)
    if cause is not None:
      guard.remove_unfinished_saves(fv.workdir)
      return error(
        f"I/O failure in {fv.workdir}: {cause}; nothing was committed half-way (the last "
        f"good checkpoint is kept); fix the cause and rerun the same command",
        code=guard.EXIT_IO,
      )
    if isinstance(e, KeyError):
      return error(e.args[0] if e.args else e)
    if isinstance(e, DataError | ValueError | FileNotFoundError | guard.WorkdirBusy):
      return error(e)
    raise
  if results is not None and loop.is_lead():
    print(loop.summary(results, fv.workdir), flush=True)
  return guard.EXIT_OK


def config_error(e: BaseException) -> str:
  """One line for a config file that does not import or whose get_config raises."""
  if isinstance(e, SyntaxError):
    return f"{e.filename}, line {e.lineno}: SyntaxError: {e.msg}"
  tb = e.__traceback__
  where = ""
  while tb is not None:  # the innermost frame inside the config file
    if not tb.tb_frame.f_code.co_filename.startswith(sys.prefix):
      where = f"{tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno}: "
    tb = tb.tb_next
  return f"{where}{type(e).__name__}: {' '.join(str(e).split())}"


if __name__ == "__main__":
  sys.exit(main())
