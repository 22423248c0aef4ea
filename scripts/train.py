r"""Train a model: any task, any mixer, from one CPU to a TPU pod.

  python scripts/train.py --config=experiments/quickstart.py --workdir=runs/quickstart
  python scripts/train.py --config=experiments/recall.py:mixer=global,size=small \
      --workdir=runs/recall_global --config.train.steps=3000 --config.optim.lr=1e-3

Rerunning the same command resumes from the newest checkpoint; a different config in the
same workdir is refused unless --restart is given (which deletes that run first). Flags:
--multihost joins a multi-process run (jax.distributed.initialize(); see
scripts/launch_tpu_pod.sh and scripts/slurm_multigpu.sh). Exit codes: 0 done or preempted
(SIGTERM: checkpoint saved, rerun to resume), 1 training diverged (NaN/inf loss), 2 bad input.

CPU hook: with LRM_MALLOC_TUNING=1 the script restarts itself with glibc malloc tunables
(GLIBC_TUNABLES must be set before a process starts), which may speed up CPU runs.
"""

from __future__ import annotations

import difflib
import os
import sys

from lrm.train.malloc import TUNED_MALLOC

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
  if fv.config is None or fv.workdir is None:
    return error(f"--config and --workdir are required ({USAGE})")
  if fv.multihost:
    from lrm.train import sharding

    sharding.initialize_distributed()

  from lrm.tasks import DataError
  from lrm.train import loop

  try:
    prepared = loop.prepare(fv.config, fv.workdir, restart=fv.restart)
  except KeyError as e:
    return error(e.args[0] if e.args else e)
  except (DataError, ValueError, FileNotFoundError) as e:
    return error(e)
  try:
    results = loop.train(prepared)
  except loop.Diverged as e:
    return error(e, code=1)
  if results is not None and loop.is_lead():
    print(loop.summary(results, fv.workdir), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
