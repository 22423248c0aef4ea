"""What each arm of a finished study costs to train and to serve, measured in one process.

  python benchmarks/study_costs.py --out=results/local_vs_conv            # every arm
  python benchmarks/study_costs.py --out=results/local_vs_conv --only=q2-lm --repeats=3

For every (task, arm, size) of the study folder's cells (one cell per arm: the lowest seed
at the arm's chosen learning rate, read from its ``config.json``), on the cell's own model
(width, window, context and batch as trained):

- ``train_step_ms``: lrm's jitted training step (forward, backward, AdamW update) on a real
  batch of the task, compile excluded: ``repeats`` timings of ``steps`` steps each after two
  warm-up steps; the median and the spread are kept;
- ``decode_ms`` at batch 1 and 16: ms per decode step (one new token for each sequence of the
  batch) at the last 16 positions
  of the task's length, the cache filled before them (``benchmarks/decode_cell.py``'s cell:
  the same jitted step as ``lrm.decode``), median over ``repeats`` samples; models without
  a decode step say so;
- ``cache_bytes``: the decoding state per sequence at the task's length, summed over layers
  (``encoder.cache_bytes``, fp32);
- FLOPs per token: the algorithmic count (``lrm.analysis.counting``) and XLA's cost-model
  count of the same forward, both from the cell's ``cell.json`` (the conventions differ where
  an FFT runs: lrm counts 2.5 n log2 n per real FFT, XLA about 8 n log2 n).

Run it alone on the machine (no study shard beside it): the numbers are seconds. Writes
``<out>/costs.jsonl`` (one record per arm, appended as each finishes; an arm already there is
skipped, so a stopped run resumes) with the machine's load average before and after.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

from absl import app, flags  # noqa: E402

FILE = "costs.jsonl"
SPAN = 16  # decode positions timed: the last 16 of the task's length
_OUT = flags.DEFINE_string("out", None, "the study's output folder (holds runs/ and summary.json)")
_ONLY = flags.DEFINE_string("only", "", "measure only arms whose task/mixer/size contains this")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed samples per measurement")
_STEPS = flags.DEFINE_integer("steps", 20, "training steps per timed sample")
_BATCHES = flags.DEFINE_list("decode_batch", ["1", "16"], "decode batch sizes")


def arms(out: Path) -> list[dict[str, Any]]:
  """One record per (task, mixer, size) of summary.json's in-study cells: the lowest seed."""
  rows = json.loads((out / "summary.json").read_text())
  best: dict[tuple, dict] = {}
  for r in rows:
    if not r.get("in_study"):
      continue
    key = (r["task"], r["mixer"], r.get("size"))
    if key not in best or r["seed"] < best[key]["seed"]:
      best[key] = r
  return [best[k] for k in sorted(best, key=str)]


def _median_spread(values: list[float]) -> dict[str, float]:
  return {
    "median": statistics.median(values),
    "min": min(values),
    "max": max(values),
    "n": len(values),
  }


def train_step_ms(run: Any, steps: int, repeats: int) -> dict[str, float]:
  """Median and spread of lrm's training step on a real batch, compile excluded."""
  import jax

  from lrm.train import runtime

  tc = run.config.train
  ds = run.task.dataset("train")
  batch = next(ds.train_batches(int(tc.batch_size), seed=int(run.plain["seed"])))
  steps_obj = run.steps
  dev = runtime.put_batch(batch, runtime.batch_sharding(run.mesh))
  state = steps_obj.init_state(run.build_model, batch)
  for _ in range(2):  # compile, then one warm step
    state = steps_obj.train_step(state, dev)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state = steps_obj.train_step(state, dev)
    jax.block_until_ready(state)
    times.append(1e3 * (time.perf_counter() - t0) / steps)
  return _median_spread(times)


def decode_ms(run: Any, batch: int, repeats: int) -> dict[str, Any]:
  """Median ms per generated token at ``batch`` after a cache of the task's length."""
  from flax import nnx

  from benchmarks.decode_cell import Cell

  model = run.build_model()
  graphdef, state = nnx.split(model)
  span = min(SPAN, int(run.task.seq_len) // 2)
  try:  # the last ``span`` positions of the task's length (learned positions end there)
    cell = Cell(
      graphdef, state, batch, int(run.task.seq_len) - span, sample_ms=200.0, span=span,
      cover_budget_s=2.0, repeats=repeats,
    )  # fmt: skip
  except (NotImplementedError, ValueError, TypeError) as e:
    return {"status": "unsupported", "reason": str(e).splitlines()[0][:200]}
  for i in range(repeats + 1):
    cell.sample(timed=i > 0)
  return {"status": "ok", **_median_spread(cell.samples_ms), "compile_s": cell.compile_s}


def measure(
  out: Path, rec: dict[str, Any], steps: int, repeats: int, batches: tuple[int, ...] = (1, 16)
) -> dict[str, Any]:
  """The costs of one arm (``rec``: a summary.json record) on its cell's own model."""
  from lrm.run import Run

  wd = out / rec["workdir"]
  config = json.loads((wd / "config.json").read_text())
  info = json.loads((wd / "cell.json").read_text())
  run = Run(config)
  load0 = [round(v, 2) for v in os.getloadavg()]
  result: dict[str, Any] = {
    "task": rec["task"],
    "mixer": rec["mixer"],
    "size": rec.get("size"),
    "name": rec.get("name"),
    "cell": rec["workdir"],
    "width": config["model"]["dim"],
    "seq_len": int(run.task.seq_len),
    "batch": int(config["train"]["batch_size"]),
    "params": rec.get("params"),
    "train_flops_per_token": (info.get("costs") or {}).get("train_flops_per_token"),
    "xla_forward_flops": (info.get("xla") or {}).get("xla"),
    "analytic_forward_flops": (info.get("xla") or {}).get("analytic"),
    "cache_bytes": int(run.model.encoder.cache_bytes(1, int(run.task.seq_len))),
    "train_step_ms": train_step_ms(run, steps, repeats),
  }
  result["decode_ms"] = {str(b): decode_ms(run, int(b), repeats) for b in batches}
  result["load"] = [load0, [round(v, 2) for v in os.getloadavg()]]
  return result


def main(argv: list[str]) -> int:
  del argv
  if not _OUT.value:
    print("error: --out is required (the study's output folder)", file=sys.stderr)
    return 2
  out = Path(_OUT.value)
  if not (out / "summary.json").is_file():
    print(f"error: {out}/summary.json not found; write the report first", file=sys.stderr)
    return 2
  path = out / FILE
  done = set()
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        r = json.loads(line)
      except ValueError:
        continue
      done.add((r["task"], r["mixer"], r.get("size")))
  todo = [
    r for r in arms(out)
    if _ONLY.value in f"{r['task']}/{r['mixer']}/{r.get('size')}"
    and (r["task"], r["mixer"], r.get("size")) not in done
  ]  # fmt: skip
  print(f"{len(todo)} arms to measure ({len(done)} already in {path})", flush=True)
  for i, rec in enumerate(todo, 1):
    t0 = time.perf_counter()
    got = measure(out, rec, _STEPS.value, _REPEATS.value, tuple(int(b) for b in _BATCHES.value))
    with path.open("a") as f:
      f.write(json.dumps(got) + "\n")
    step = got["train_step_ms"]["median"]
    dec = got["decode_ms"].get("1", {})
    dec_txt = f"{dec['median']:.2f} ms/token" if dec.get("status") == "ok" else dec.get("status")
    print(
      f"[{i}/{len(todo)}] {rec['task']} {rec['mixer']} {rec.get('size')}: train step "
      f"{step:.1f} ms, decode {dec_txt}, cache {got['cache_bytes']:,} B "
      f"({time.perf_counter() - t0:.0f}s)",
      flush=True,
    )
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
