"""Decoding cost of every causal mixer: time per generated token, cache size, prefill time.

  python benchmarks/decode.py --out=results/bench/decode_cpu.jsonl \
      [--mixers=conv,local,global] [--contexts=1024,2048,4096,8192,16384,32768] \
      [--batches=1,16] [--dim=256 --heads=4 --window=128 --depth=2] [--repeats=7] \
      [--prefill_max=8192] [--price_per_hour=0.10 --machine="..."]
  python benchmarks/decode.py --out=results/bench/decode_cpu.jsonl --rebuild   # .md/.png again

Model: a byte LM (vocabulary 256, tied output layer, learned positions, MLP ratio 4) of
``--depth`` blocks of one causal preset, as ``experiments/lm.py`` builds it, at width
``--dim``. The default mixers are every preset of ``lrm.mixers.presets`` (of lrm's own
mixers, not the benchmark baselines) that decodes causally; one that cannot
(``DecodeError``) is recorded as skipped with the reason.

Time per token: one jitted ``decode_step`` of the whole LM (embedding, blocks, logits,
greedy next token; the cache donated, as a generation loop runs it) at positions cycling over
``ctx .. ctx + span - 1`` (``span = min(--span, ctx / 8)``) with a cache sized for ``ctx +
span`` tokens. A step's cost does not depend on what the cache holds, so the caches are
filled with random values instead of a real ``ctx``-token prefill (a 32K prefill per cell
would cost minutes); it may depend on the position (hyena adds a finished block by an FFT
every C tokens), hence the cycle. One sample is ``n`` consecutive steps after an untimed one
(``n`` so that a sample takes about ``--sample_ms``, and the samples cover the whole span
where that takes less than ``--cover_budget_s``); after warm-up every context of one mixer
at one batch size is sampled once per round, in alternating rounds (as
``benchmarks/shared.py``). The time per step is the mean over all timed steps (what a bill
sums; the median of the samples is recorded too). Prefill (a real
prompt of ``ctx`` tokens through ``Encoder.prefill``, jitted, after a compiling call) is
timed at batch 1 up to ``--prefill_max`` tokens, unless the shorter prompt's time projects
more than ``--prefill_budget_s`` (time budget); skipped ones are recorded with the reason. The
load average is recorded with every cell. Writes JSON lines (also printed), ``<out>.md``
and ``<out>.png`` (``benchmarks/decode_report.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import decode_report, runner, worker  # noqa: E402
from benchmarks.decode_cell import Cell, loadavg  # noqa: E402
from lrm import registry  # noqa: E402
from lrm.analysis import cost  # noqa: E402
from lrm.heads import LanguageModel  # noqa: E402
from lrm.mixers import DecodeError, presets  # noqa: E402
from lrm.model import Encoder  # noqa: E402

VOCAB = 256  # bytes, as the LM experiment
_OUT = flags.DEFINE_string("out", "results/bench/decode_cpu.jsonl", "output JSONL")
_MIXERS = flags.DEFINE_list("mixers", None, "presets (default: every one that decodes)")
_CONTEXTS = flags.DEFINE_list("contexts", "1024,2048,4096,8192,16384,32768", "cache lengths")
_BATCHES = flags.DEFINE_list("batches", "1,16", "sequences decoded together")
_DIM = flags.DEFINE_integer("dim", 256, "model width D")
_HEADS = flags.DEFINE_integer("heads", 4, "attention heads")
_WINDOW = flags.DEFINE_integer("window", 128, "window radius w (causal conv kernel w+1)")
_BLOCK = flags.DEFINE_integer("block", 64, "block size of random/BigBird attention")
_DEPTH = flags.DEFINE_integer("depth", 2, "blocks in the LM")
_REPEATS = flags.DEFINE_integer("repeats", 7, "timed rounds (the median is reported)")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed rounds after compiling")
_SAMPLE_MS = flags.DEFINE_float("sample_ms", 20.0, "least time of one sample of n steps")
_PREFILL_MAX = flags.DEFINE_integer("prefill_max", 8192, "longest prompt whose prefill is timed")
_PREFILL_BUDGET = flags.DEFINE_float(
  "prefill_budget_s", 8.0, "skip a prefill projected (quadratically) to take longer"
)
_MALLOC = flags.DEFINE_enum(
  "malloc", "default", ["default", "tuned"], "glibc malloc (default: as scripts/generate.py)"
)
_SPAN = flags.DEFINE_integer("span", 1024, "positions a cell's steps cycle over (<= ctx/8)")
_COVER_BUDGET = flags.DEFINE_float("cover_budget_s", 8.0, "cover the span if it takes less")
_PRICE = flags.DEFINE_float("price_per_hour", cost.DEFAULT_PRICE_PER_HOUR, "dollars per hour")
_MACHINE = flags.DEFINE_string("machine", cost.DEFAULT_MACHINE, "what the price is for")
_REBUILD = flags.DEFINE_bool("rebuild", False, "only rewrite <out>.md and .png from <out>")


def lrm_presets() -> list[str]:
  """Presets of lrm's own mixers (``benchmarks/baselines.py`` registers presets too)."""
  return [
    n
    for n in presets.names()
    if all(
      registry.lookup("mixer", s["name"]).__module__.startswith("lrm.")
      for s in presets.spec_list(n, **reach())
    )
  ]


def reach() -> dict:
  return dict(window=_WINDOW.value, heads=_HEADS.value, block=_BLOCK.value, causal=True)


def build(name: str, max_len: int) -> LanguageModel:
  """The byte LM of ``--depth`` blocks of preset ``name``, causal, in eval mode."""
  rngs = nnx.Rngs(0)
  enc = Encoder(
    vocab_size=VOCAB, dim=_DIM.value, depth=_DEPTH.value, mixer=presets.spec(name, **reach()),
    causal=True, max_len=max_len, positions="learned", rngs=rngs,
  )  # fmt: skip
  model = LanguageModel(enc, VOCAB, tie=True, rngs=rngs)
  model.eval()
  return model


@partial(jax.jit, static_argnums=0)
def _prefill(graphdef, state, tokens, cache):
  model = nnx.merge(graphdef, state)
  h, cache = model.encoder.prefill(tokens, cache)  # [B, P, D]
  return jnp.argmax(model.logits(h[:, -1]), axis=-1), cache


def prefill_ms(graphdef, state, ctx: int, last: tuple[int, float] | None) -> dict:
  """Median ms of a real ``ctx``-token prefill at batch 1 (after one compiling call).

  Skipped beyond ``--prefill_max`` tokens, or when the last length's time ``last = (length,
  ms)`` grown quadratically projects more than ``--prefill_budget_s`` (each run is timed twice,
  compiling and timed)."""
  why = ""
  if ctx > _PREFILL_MAX.value:
    why = f"prompt > --prefill_max={_PREFILL_MAX.value}"
  elif last and last[1] / 1e3 * (ctx / last[0]) ** 2 > _PREFILL_BUDGET.value:
    why = f"projected > {_PREFILL_BUDGET.value:g} s from the shorter prompt's time"
  if why:
    return {"prefill_status": "skipped", "prefill_reason": why}
  model = nnx.merge(graphdef, state)
  tokens = jax.random.randint(jax.random.key(1), (1, ctx), 0, VOCAB, jnp.int32)
  cache = model.encoder.init_cache(1, ctx + 1)
  try:
    t0 = time.perf_counter()
    jax.block_until_ready(_prefill(graphdef, state, tokens, cache))
    first = time.perf_counter() - t0
    times = []
    for _ in range(3 if ctx <= 2048 else 1):
      t0 = time.perf_counter()
      jax.block_until_ready(_prefill(graphdef, state, tokens, cache))
      times.append(1e3 * (time.perf_counter() - t0))
  except Exception as e:  # noqa: BLE001  (recorded; the decode cells still run)
    return {"prefill_status": "error", "prefill_reason": f"{type(e).__name__}: {e}"[:300]}
  return {
    "prefill_status": "ok",
    "prefill_ms": statistics.median(times),
    "prefill_times_ms": times,
    "prefill_first_call_s": first,  # compile + one run
  }


def measure_mixer(name: str, contexts: list[int], batches: list[int]) -> list[dict]:
  """Every (batch, context) record of preset ``name`` (one skipped record if it can't)."""
  base: dict = {"mixer": name}
  try:
    model = build(name, max(contexts) + _SPAN.value)
    base["spec"] = presets.spec_list(name, **reach())
    model.encoder.cache_bytes(1, 8)  # raises DecodeError for a mixer without decoding
  except (DecodeError, ValueError, NotImplementedError) as e:
    return [base | {"status": "skipped", "reason": f"{type(e).__name__}: {e}"[:300]}]
  graphdef, state = nnx.split(model)
  prefill, last = {}, None
  for ctx in contexts if 1 in batches else []:
    prefill[ctx] = prefill_ms(graphdef, state, ctx, last)
    last = (ctx, prefill[ctx]["prefill_ms"]) if "prefill_ms" in prefill[ctx] else last
  records = []
  for b in batches:  # one batch at a time: its caches at every context are held together
    cells = []
    for ctx in contexts:
      rec = base | {"batch": b, "context": ctx}
      rec |= {"cache_bytes_per_sequence": model.encoder.cache_bytes(1, ctx)}
      rec |= prefill[ctx] if b == 1 else {}
      try:
        cell = Cell(graphdef, state, b, ctx, sample_ms=_SAMPLE_MS.value, span=_SPAN.value,
                    cover_budget_s=_COVER_BUDGET.value, repeats=_REPEATS.value)  # fmt: skip
        cells.append((cell, rec))
      except Exception as e:  # noqa: BLE001  (e.g. out of memory: recorded, the rest run)
        records.append(rec | {"status": "error", "reason": f"{type(e).__name__}: {e}"[:300]})
    for r in range(_WARMUP.value + _REPEATS.value):  # alternating rounds over the contexts
      for cell, _ in cells:
        cell.sample(timed=r >= _WARMUP.value)
    records += [finish(cell, rec) for cell, rec in cells]
    del cells
  return records


def finish(cell: Cell, rec: dict) -> dict:
  """The cell's record: the mean time per step over every timed step (what a bill sums)."""
  cell.load.append(loadavg())
  step_ms = statistics.fmean(cell.samples_ms)  # every sample has n steps
  price = cost.Price(_PRICE.value, _MACHINE.value)
  usd = cost.per_million(cost.decode_cost_per_token(step_ms / 1e3, cell.batch, price))
  rec |= {"status": "ok", "ms_per_step": step_ms, "ms_per_token": step_ms / cell.batch}
  rec |= {"median_ms_per_step": statistics.median(cell.samples_ms)}
  rec |= {"tokens_per_s": 1e3 * cell.batch / step_ms, "times_ms": cell.samples_ms}
  rec |= {"steps_per_sample": cell.n, "positions": [cell.ctx, cell.ctx + cell.span - 1]}
  rec |= {"compile_s": cell.compile_s, "load": cell.load}
  return rec | {"usd_per_million_tokens": usd}


def setting() -> dict:
  price = cost.Price(_PRICE.value, _MACHINE.value)
  return dict(
    dim=_DIM.value, heads=_HEADS.value, window=_WINDOW.value, block=_BLOCK.value,
    depth=_DEPTH.value, vocab=VOCAB, dtype="float32", repeats=_REPEATS.value,
    warmup=_WARMUP.value, malloc=_MALLOC.value, price_per_hour=price.per_hour,
    price_machine=price.machine,
  )  # fmt: skip


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  if _REBUILD.value:
    with open(_OUT.value) as f:
      decode_report.write([json.loads(line) for line in f if line.strip()], _OUT.value)
    return 0
  env = runner.malloc_env(_MALLOC.value)
  if os.environ.get("GLIBC_TUNABLES") != env.get("GLIBC_TUNABLES"):  # read at start-up only
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
  names = _MIXERS.value or lrm_presets()
  contexts = sorted(int(c) for c in _CONTEXTS.value)
  batches = sorted(int(b) for b in _BATCHES.value)
  common = setting() | {"machine": worker.machine_info()}
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  records = []
  with open(_OUT.value, "w") as f:
    for name in names:
      t0 = time.perf_counter()
      for rec in measure_mixer(name, contexts, batches):
        rec = common | rec
        print(json.dumps({k: v for k, v in rec.items() if k not in ("machine", "spec")}))
        f.write(json.dumps(rec) + "\n")
        f.flush()
        records.append(rec)
      print(f"# {name}: {time.perf_counter() - t0:.0f} s, load {loadavg()}", file=sys.stderr)
  decode_report.write(records, _OUT.value)
  print(f"wrote {_OUT.value} and its .md, .png", file=sys.stderr)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
