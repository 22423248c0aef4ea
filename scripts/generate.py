"""Generate text from a trained causal language model; needs only the run directory.

  python scripts/generate.py --workdir=runs/lm_bytes --prompt="def main(" --max_new_tokens=200 \\
      [--temperature=0.8 --top_k=40 --seed=0] [--checkpoint=best|latest|<step>] \\
      [--cache=true|false] [--json]

The model is rebuilt from <workdir>/config.json and vocab.json (no data is loaded) and its
checkpoint restored. The prompt is read as the start of a document (the separator the
training stream puts before every document comes first). Prints the prompt and its
continuation; --json prints one JSON line instead: ``tokens`` (the generated ids), ``text``
(their text), ``prompt``, ``prompt_tokens``, ``step``, ``cache``, ``seconds``.

--temperature=0 is greedy (it must be a finite number >= 0); --top_k=0 samples from the whole
vocabulary. The same --seed (0 .. 2**31-1) gives the same sample. --cache=false recomputes
the whole prefix with the parallel forward at every step (the reference the cached path must
match). Exit codes: 2 bad input (no run directory,
a run that is not a causal language model, a prompt outside the vocabulary or too long for
the model's max_len), 4 no intact checkpoint or an I/O failure.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from absl import flags

USAGE = (
  "usage: generate.py --workdir=<dir> --prompt=<text> [--max_new_tokens=200] "
  "[--temperature=0.8 --top_k=40 --seed=0] [--checkpoint=best|latest|<step>] "
  "[--cache=true|false] [--json]"
)


def define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "run directory written by train.py", flag_values=fv)
  flags.DEFINE_string("prompt", "", "text to continue", flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 200, "tokens to generate", flag_values=fv)
  flags.DEFINE_float("temperature", 0.0, "sampling temperature; 0 = greedy", flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "sample among the k most likely; 0 = all", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
  flags.DEFINE_string("checkpoint", "best", "best, latest or a step number", flag_values=fv)
  flags.DEFINE_bool("cache", True, "decode with per-mixer caches", flag_values=fv)
  flags.DEFINE_bool("json", False, "print one JSON line", flag_values=fv)


def check_flags(fv: flags.FlagValues) -> str | None:
  """What is wrong with the sampling flags, naming the first bad one (None: nothing)."""
  import math

  from lrm.config import INT32, int_span

  if not math.isfinite(fv.temperature) or fv.temperature < 0:
    return f"--temperature={fv.temperature} must be a finite number >= 0 (0 = greedy)"
  if fv.top_k < 0:
    return f"--top_k={fv.top_k} must be an integer >= 0 (0 = the whole vocabulary)"
  if fv.max_new_tokens < 0:
    return f"--max_new_tokens={fv.max_new_tokens} must be an integer >= 0"
  if not 0 <= fv.seed <= INT32:
    return f"--seed={fv.seed} must be {int_span(0, INT32)}"
  return None


def check_causal_run(workdir: Path) -> None:
  """Refuse a run whose task is not a causal language model, before building anything."""
  from lrm import registry, tasks  # noqa: F401  (importing tasks registers them)
  from lrm.mixers import DecodeError
  from lrm.train import rundir

  name = rundir.load_config(workdir)["task"]
  if not getattr(registry.lookup("task", name), "causal", False):
    raise DecodeError(
      f"{workdir} is a run of task '{name}', a bidirectional model that cannot generate "
      "text; give the run directory of a causal language model (train with --config "
      "experiments/lm.py)"
    )


def run_generation(fv: flags.FlagValues) -> dict:
  import numpy as np

  from lrm import decode
  from lrm.mixers import DecodeError
  from lrm.run import Run

  workdir = Path(fv.workdir)
  check_causal_run(workdir)
  run = Run.from_workdir(workdir, data=False)
  task = run.task
  if not hasattr(task, "prompt_ids"):
    raise DecodeError(f"task '{run.plain['task']}' has no text vocabulary to read a prompt")
  prompt = task.prompt_ids(fv.prompt)
  if prompt.max() >= task.vocab_size or (fv.prompt and len(prompt) < 2):
    raise DecodeError(
      f"the prompt does not encode into the run's {task.vocab_size}-token vocabulary; "
      "use characters the run's tokenizer knows"
    )
  decode.check_lengths(run.model, len(prompt), fv.max_new_tokens)  # before restoring
  step, model = run.load_model_at(fv.checkpoint)
  start = time.perf_counter()
  ids = decode.generate(
    model,
    prompt,
    fv.max_new_tokens,
    temperature=fv.temperature,
    top_k=fv.top_k,
    seed=fv.seed,
    cache=fv.cache,
  )
  seconds = time.perf_counter() - start
  return {
    "prompt": fv.prompt,
    "prompt_tokens": np.asarray(prompt).tolist(),
    "tokens": np.asarray(ids).tolist(),
    "text": task.text(ids),
    "step": step,
    "checkpoint": fv.checkpoint,
    "cache": bool(fv.cache),
    "seconds": round(seconds, 3),
  }


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if {"-h", "--help", "--helpfull"} & set(argv[1:]):
    print(__doc__)
    return 0
  fv = flags.FlagValues()
  define(fv)
  try:
    fv(argv)
    if not fv.workdir:
      raise flags.Error("--workdir is required")
    problem = check_flags(fv)
    if problem:
      raise flags.Error(problem)
  except flags.Error as e:
    print(f"error: {e} ({USAGE})", file=sys.stderr)
    return 2
  from lrm.tasks import DataError
  from lrm.train import rundir

  rundir.quiet_storage_noise()
  try:
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the text (or JSON) alone
      out = run_generation(fv)
  except rundir.IOFailure as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    rundir.hard_exit(rundir.EXIT_IO)
  except KeyError as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  except (DataError, ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  if fv.json:
    print(json.dumps(out, ensure_ascii=False), flush=True)
  else:
    print(out["prompt"] + out["text"], flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
