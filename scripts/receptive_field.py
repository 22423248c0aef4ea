"""Print the measured receptive field after each layer next to the analytic one.

  python scripts/receptive_field.py --config=experiments/listops.py:mixer=conv \
      [--position=i] [--length=L] [--config.model.depth=2 ...]

The measurement differentiates one output position of each block w.r.t. the input
embeddings (lrm/analysis/receptive_field.py), so it works for any mixer or hybrid stack.
"""

from __future__ import annotations

import contextlib
import json
import sys

from absl import app, flags
from ml_collections import config_flags

from lrm.analysis import receptive_field as rf
from lrm.run import Run

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config", lock_config=True)
_POSITION = flags.DEFINE_integer("position", None, "output position (default: the middle)")
_LENGTH = flags.DEFINE_integer("length", None, "sequence length (default: min(task length, 512))")
_JSON = flags.DEFINE_bool("json", False, "print JSON instead of a table")


def main(argv: list[str]) -> int:
  del argv
  cfg = _CONFIG.value
  if cfg is None:
    print(
      "error: --config is required, e.g. --config=experiments/listops.py:mixer=conv",
      file=sys.stderr,
    )
    return 2
  try:
    with contextlib.redirect_stdout(sys.stderr):  # set-up notes must not mix with --json
      run = Run(cfg)  # the task and model exactly as the trainer builds them
    encoder = rf.build_encoder_for_measurement(run.build_model())
    length = _LENGTH.value or min(run.task.seq_len, 512)
    position = length // 2 if _POSITION.value is None else _POSITION.value
    fields = rf.measure(encoder, length, position)
  except (KeyError, ValueError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  if _JSON.value:
    print(json.dumps([f.to_dict() for f in fields]))
  else:
    print(rf.format_table(fields, position, length))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
