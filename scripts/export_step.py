r"""Lower a config's real training step for a TPU or a GPU on this machine (no device needed).

  python scripts/export_step.py --config=experiments/lm.py:mixer=local --platform=tpu
  python scripts/export_step.py --config=experiments/listops.py:mixer=bigbird --platform=cuda \
      --config.train.batch_size=8 --dtype=float32
  python scripts/export_step.py --config=experiments/lm.py:mixer=global --platform=cuda --nocudnn

The step is the trainer's own (``lrm.run.Run.make_steps``): forward, backward and optimizer
update, parameters replicated and the batch split over the run's mesh, in ``--dtype``
(default bfloat16, the accelerator setting; it replaces ``train.dtype``). It is traced for
``--platform`` (tpu, cuda, rocm, cpu), so each layer gets the kernel that platform would
run (splash attention as a Mosaic kernel for TPU), and exported with ``jax.export``. Printed:
the kernel of each layer, the platform the module was lowered for, the devices of its
sharding, the StableHLO size (bytecode and text), the Mosaic and cuDNN calls per step and the
time taken; ``--json`` prints the same as one JSON object, ``--out=<file>`` also writes the
StableHLO module as text (``.mlir``) for inspection.

What this proves and what it does not: the program is well-formed for the platform and holds
the kernels listed; its speed, XLA's compilation for the device and cuDNN only show on the
device (``scripts/accelerator_check.sh``).

cuDNN: JAX traces cuDNN attention only where cuDNN is loaded, so on a machine without it a
step with a layer that runs cuDNN on a GPU cannot be lowered; that is refused in one line,
naming what a GPU without cuDNN runs instead, which ``--nocudnn`` lowers.

Exit codes: 0 lowered; 2 bad input, or lowering impossible on this machine (cuDNN).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

USAGE = (
  "usage: export_step.py --config=experiments/<file>.py[:<variant>] --platform=tpu|cuda "
  "[--config.<key>=<value> ...] [--dtype=bfloat16|float32] [--nocudnn] [--json] [--out=<file>]"
)


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum(
    "platform", None, ["tpu", "cuda", "rocm", "cpu"], "the platform to lower for", flag_values=fv
  )
  flags.DEFINE_enum(
    "dtype", "bfloat16", ["bfloat16", "float32"], "train.dtype of the step", flag_values=fv
  )
  flags.DEFINE_bool(
    "cudnn", True, "cuda/rocm: the GPU has cuDNN (--nocudnn: lower its fallback)", flag_values=fv
  )
  flags.DEFINE_bool("json", False, "print one JSON object instead of lines", flag_values=fv)
  flags.DEFINE_string("out", None, "also write the StableHLO module (text) here", flag_values=fv)


def error(message: object, code: int = 2) -> int:
  from lrm.config_cli import error as one_line

  return one_line(message, code)


def parse(argv: list[str]) -> tuple[flags.FlagValues, object | None]:
  """Flags and the config (None without ``--config``), by ``lrm.config_cli.parse_flags``."""
  from lrm import config_cli

  return config_cli.parse_flags(argv, USAGE, _define)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if {"-h", "--help", "--helpfull"} & set(argv[1:]):
    print(__doc__)
    return 0
  from lrm.config_cli import ConfigError, split_argv

  try:
    fv, config = parse(argv)
  except ConfigError as e:
    return error(e)
  except (flags.Error, OSError) as e:
    return error(f"{str(e).strip().splitlines()[-1]}  ({USAGE})")
  except Exception as e:  # the config file itself fails: syntax error, get_config raises
    return error(f"cannot load the config file: {type(e).__name__}: {e}")
  if config is None or fv.platform is None:
    return error(f"--config and --platform are required ({USAGE})")
  from lrm.train import console

  console.quiet_libraries(verbose=False)
  from lrm.run import Run
  from lrm.tasks import DataError
  from lrm.train import export

  config.train.dtype = fv.dtype
  try:
    run = Run.from_config(config, None)
    lowered = export.lower_train_step(run, fv.platform, cudnn=fv.cudnn)
  except export.CannotLower as e:
    return error(e)
  except (DataError, ValueError, KeyError, FileNotFoundError) as e:
    return error(e.args[0] if isinstance(e, KeyError) and e.args else e)
  summary = export.summary(lowered, split_argv(argv)[0] or "")
  if fv.out:
    Path(fv.out).write_text(lowered.text)
    summary["out"] = fv.out
  print(json.dumps(summary) if fv.json else export.format_summary(summary), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
