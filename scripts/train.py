r"""Train a model: any task, any mixer, from one CPU to a TPU pod.

  python scripts/train.py --config=experiments/quickstart.py --workdir=runs/quickstart
  python scripts/train.py --config=experiments/recall.py:mixer=global,size=small \
      --workdir=runs/recall_global --config.train.steps=3000 --config.optim.lr=1e-3

Rerunning the same command resumes from the newest checkpoint; a different config in the
same workdir is refused unless --restart is given (which deletes that run first), and
--extend continues a finished or stopped run to a larger --config.train.steps (the
learning-rate schedule is rebuilt for the new length; see the README). Every option of the
task is a config key (--config.data.<option>); list elements are written
--config.model.mixer[1].window=4. --print_config prints the resolved config (one
`key = value` line per key, the names overrides take) and exits; --dry_run also builds the
task and model, prints a per-layer table (mixer, impl, parameters, FLOPs/token, receptive
field), the totals and what the workdir holds, and exits without writing anything.
Progress and results go to stdout (a tqdm bar on a terminal, plain lines otherwise),
warnings and errors to stderr, and both to <workdir>/train.log; --verbose also shows the
progress bars and logs of libraries (HF datasets). Flags:
--multihost joins a multi-process run (the layout that lrm/train/runtime.py reads from the
environment, given to jax.distributed.initialize(); see scripts/launch_tpu_pod.sh and
scripts/slurm_multigpu.sh). One process at a time may write a
workdir (a lock; a second one is refused). Exit codes: 0 done, or preempted after a save
(SIGTERM in the loop: checkpoint saved, rerun to resume); 2 bad input or a refused workdir;
3 training diverged (NaN/inf loss); 4 I/O failure (disk full, read-only, permission denied,
damaged checkpoints with nothing intact to fall back on); 130 stopped by Ctrl-C (the first
saves at the next step, a second stops at once; rerun to resume); 143 stopped by SIGTERM where
nothing needed saving (set-up, final evaluation: rerun to continue).

CPU hook: with LRM_MALLOC_TUNING=1 the script restarts itself with glibc malloc tunables
(GLIBC_TUNABLES must be set before a process starts), which may speed up CPU runs.
"""

from __future__ import annotations

import os
import signal
import sys

# A SIGTERM during start-up (imports, data generation, compilation) is remembered here until
# the trainer's own handler takes over, so it stops the run with a message instead of killing
# the process mid-way.
_EARLY_SIGTERM: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: _EARLY_SIGTERM.append(signum))

if os.environ.get("LRM_MALLOC_TUNING") == "1" and "GLIBC_TUNABLES" not in os.environ:
  from lrm.train.runtime import TUNED_MALLOC  # imports JAX, so only when it is used

  os.execve(
    sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNED_MALLOC}
  )

from absl import flags  # noqa: E402

USAGE = (
  "usage: train.py --config=experiments/<file>.py[:<variant>] --workdir=<dir> "
  "[--config.<key>=<value> ...] [--restart | --extend] [--print_config] [--dry_run] [--verbose]"
)


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "run directory (created; reused to resume)", flag_values=fv)
  flags.DEFINE_bool("restart", False, "delete the run in --workdir and start over", flag_values=fv)
  flags.DEFINE_bool("extend", False, "continue a run to a larger train.steps", flag_values=fv)
  flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first", flag_values=fv)
  flags.DEFINE_bool("print_config", False, "print the resolved config and exit", flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "print the layers and exit", flag_values=fv)
  flags.DEFINE_bool("verbose", False, "show library progress bars and logs", flag_values=fv)


def error(message: object, code: int = 2) -> int:
  from lrm.config_cli import error as one_line

  return one_line(message, code)


def parse(argv: list[str]) -> tuple[flags.FlagValues, object | None]:
  """Flags and the config (None without ``--config``), by ``lrm.config_cli.parse_flags``."""
  from lrm import config_cli

  return config_cli.parse_flags(argv, USAGE, _define)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  help_asked = bool({"-h", "--help", "--helpfull"} & set(argv[1:]))
  argv = [a for a in argv if a not in ("-h", "--help", "--helpfull")]
  from lrm.config_cli import ConfigError, file_error, format_config

  try:
    fv, config = parse(argv)
  except ConfigError as e:
    return error(e)
  except (flags.Error, OSError) as e:
    return error(f"{str(e).strip().splitlines()[-1]}  ({USAGE})")
  except Exception as e:  # the config file itself fails: syntax error, get_config raises
    return error(f"cannot load the config file: {file_error(e)}")
  if help_asked or fv.print_config:
    if help_asked:
      print(__doc__)
    if config is not None:
      if help_asked:
        print("keys of this config (override any with --config.<key>=<value>):")
      print(format_config(config), flush=True)
    return 0
  if config is None or (fv.workdir is None and not fv.dry_run):
    return error(f"--config and --workdir are required ({USAGE})")
  if fv.restart and fv.extend:
    return error("--restart deletes the run and --extend continues it; give one of them")
  from lrm.train import console

  console.quiet_libraries(verbose=fv.verbose)
  if fv.dry_run:
    return dry_run(config, fv.workdir)
  if fv.multihost:
    from lrm.train import runtime

    try:
      runtime.initialize_distributed()
    except runtime.LayoutError as e:
      return error(e)

  from lrm.train import rundir

  rundir.quiet_storage_noise()
  with rundir.Preemption() as preempt:  # before set-up: a SIGTERM at any moment is handled
    preempt.flag = bool(_EARLY_SIGTERM)
    with console.capture():  # train.log gets these lines once the workdir is locked
      code = run(fv, config, preempt)
  if code == rundir.EXIT_IO:  # a failed background write would print tracebacks at shutdown
    rundir.hard_exit(code)
  return code


def dry_run(config: object, workdir: str | None) -> int:
  """Build the task and model, print what they are and what the workdir holds; write nothing."""
  from lrm.describe import describe
  from lrm.run import Run
  from lrm.tasks import DataError
  from lrm.train.loop import warmup_warning, workdir_state

  try:
    run = Run.from_config(config, workdir)
    if warmup_warning(run.plain):
      print(warmup_warning(run.plain), file=sys.stderr)
    print(describe(run))
    if workdir is not None:
      print(workdir_state(run.workdir, run.plain))
  except (DataError, ValueError, KeyError, FileNotFoundError) as e:
    return error(e.args[0] if isinstance(e, KeyError) and e.args else e)
  print("dry run: nothing was trained or written", flush=True)
  return 0


def run(fv: flags.FlagValues, config: object, preempt: object) -> int:
  from lrm.tasks import DataError
  from lrm.train import loop, rundir
  from lrm.train.report import summary

  try:
    prepared = loop.prepare(config, fv.workdir, restart=fv.restart, extend=fv.extend)
    results = loop.train(prepared, preempt)
  except rundir.Interrupted as e:
    preempt.acted = True
    if preempt.by_ctrl_c:
      return error(str(e).replace("SIGTERM", "Ctrl-C"), code=rundir.EXIT_CTRL_C)
    return error(e, code=143)
  except loop.Diverged as e:
    return error(e, code=rundir.EXIT_DIVERGED)
  except rundir.IOFailure as e:
    return error(e, code=rundir.EXIT_IO)
  except Exception as e:
    cause = rundir.io_failure(e)
    if cause is not None:
      rundir.remove_unfinished_saves(fv.workdir)
      return error(
        f"I/O failure in {fv.workdir}: {cause}; nothing was committed half-way (the last "
        f"good checkpoint is kept); fix the cause and rerun the same command",
        code=rundir.EXIT_IO,
      )
    if isinstance(e, KeyError):
      return error(e.args[0] if e.args else e)
    if isinstance(e, DataError | ValueError | FileNotFoundError | rundir.WorkdirBusy):
      return error(e)
    raise
  if results is not None and loop.is_lead():
    print(summary(results, fv.workdir), flush=True)
  if results is None and preempt.by_ctrl_c:
    return rundir.EXIT_CTRL_C
  return rundir.EXIT_OK


if __name__ == "__main__":
  try:
    sys.exit(main())
  except KeyboardInterrupt:  # Ctrl-C before the trainer's handler, or a second one
    print("stopped by Ctrl-C; rerun the same command to resume", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)  # no shutdown: background checkpoint threads would print tracebacks
