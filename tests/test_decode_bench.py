"""The decode benchmark (``benchmarks/decode.py``) end to end at a tiny size, and the dollar
arithmetic of ``lrm.analysis.cost``. Nothing here asserts a speed: cache sizes are exact
(from ``cache_bytes``), times only have to be positive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flax import nnx

from lrm import mixers
from lrm.analysis import cost
from lrm.mixers import DecodeError, presets
from lrm.mixers.base import UNBOUNDED

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(window=4, heads=2, block=8, causal=True)
FIELDS = (
  "mixer spec batch context status ms_per_step ms_per_token tokens_per_s times_ms "
  "cache_bytes_per_sequence usd_per_million_tokens price_per_hour price_machine load machine "
  "dim depth window"
).split()


def decoding_presets() -> dict[str, mixers.Mixer]:
  """Presets whose causal mixer implements cached decoding (as many as have landed)."""
  out = {}
  for name in presets.names():
    m = mixers.build(presets.spec(name, **TINY), dim=16, causal=True, rngs=nnx.Rngs(0))
    try:
      m.cache_bytes(1, 8)
    except DecodeError:
      continue
    out[name] = m
  return out


def pick() -> tuple[str, str | None]:
  """A windowed decoding preset and, if one decodes yet, one that reaches the whole past."""
  dec = decoding_presets()
  windowed = next(n for n in dec if presets.windowed(n))
  unbounded = next(
    (n for n, m in dec.items() if not presets.windowed(n) and m.receptive_field()[0] == UNBOUNDED),
    None,
  )
  return windowed, unbounded


def test_decode_benchmark_cli_and_rebuild(tmp_path, session_env):
  windowed, unbounded = pick()
  names = [windowed] + ([unbounded] if unbounded else [])
  out = tmp_path / "decode.jsonl"
  args = f"--mixers={','.join(names)} --contexts=64,128,256 --batches=1,2 --dim=16 --heads=2 "
  args += "--window=4 --block=8 --depth=2 --repeats=1 --warmup=0 --sample_ms=0 "
  args += f"--prefill_max=128 --price_per_hour=2.5 --out={out}"
  cmd = [sys.executable, str(ROOT / "benchmarks" / "decode.py"), *args.split()]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=session_env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  printed = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
  assert len(printed) == len(records) == 6 * len(names)
  for r in records:
    assert r["status"] == "ok", r
    assert not set(FIELDS) - set(r), set(FIELDS) - set(r)
    assert r["ms_per_step"] > 0 and r["tokens_per_s"] > 0 and r["usd_per_million_tokens"] > 0
    assert r["ms_per_token"] == pytest.approx(r["ms_per_step"] / r["batch"])
    assert r["usd_per_million_tokens"] == pytest.approx(
      2.5 / 3600 * r["ms_per_step"] / 1e3 / r["batch"] * 1e6
    )
    if r["batch"] == 1:  # prefill timed at batch 1 up to --prefill_max
      assert r["prefill_status"] == ("ok" if r["context"] <= 128 else "skipped"), r
      assert r["prefill_status"] != "ok" or r["prefill_ms"] > 0
  cache = {(r["mixer"], r["context"]): r["cache_bytes_per_sequence"] for r in records}
  # a windowed mixer keeps the same cache whatever the context
  assert cache[windowed, 64] == cache[windowed, 128] == cache[windowed, 256] > 0
  if unbounded:  # one that reaches the whole past keeps a cache growing linearly with it
    b64, b128, b256 = (cache[unbounded, c] for c in (64, 128, 256))
    assert b256 - b128 == 2 * (b128 - b64) > 0
  md, png = out.with_suffix(".md"), out.with_suffix(".png")
  assert md.exists() and png.exists()
  md.unlink(), png.unlink()
  cmd = [sys.executable, str(ROOT / "benchmarks" / "decode.py"), f"--out={out}", "--rebuild"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=session_env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = md.read_text()
  assert png.stat().st_size > 0
  assert "$2.5 per hour" in text and all(f"| {n} |" in text for n in names)


def test_cost_arithmetic():
  price = cost.Price(3.6, "a test machine")  # $0.001 per second
  assert price.per_second == pytest.approx(0.001)
  assert cost.dollars(90.0, price) == pytest.approx(0.09)
  # training: a step of 8 x 1024 tokens in 0.5 s -> 0.0005 $ / 8192 tokens
  per_tok = cost.train_cost_per_token(0.5, 8 * 1024, price)
  assert per_tok == pytest.approx(0.0005 / 8192)
  assert cost.per_million(per_tok) == pytest.approx(0.0005 / 8192 * 1e6)  # $0.0610
  assert cost.cost_per_token_at_throughput(16384.0, price) == pytest.approx(per_tok)
  # decoding: a 20 ms step at batch 16 gives 16 tokens -> 2e-5 $ / 16 per token, $1.25 / 1M
  assert cost.per_million(cost.decode_cost_per_token(0.02, 16, price)) == pytest.approx(1.25)
  default = cost.Price()
  assert default.per_hour == cost.DEFAULT_PRICE_PER_HOUR
  assert "per hour" in default.statement() and default.machine in default.statement()
  assert cost.fmt_dollars(1.25) == "$1.25" and cost.fmt_dollars(None) == "n/a"
  assert cost.fmt_dollars(2.5e-7) == "$2.50e-07" and cost.fmt_dollars(12345.0) == "$12,345"
  for bad in (lambda: cost.Price(0), lambda: cost.decode_cost_per_token(1.0, 0, price)):
    with pytest.raises(ValueError):
      bad()


def test_study_cost_table_by_hand():
  """Training from tokens/s; inference measured from a decode record, else forward FLOPs."""
  price = cost.Price(3.6, "a test machine")  # $0.001 per second
  base = dict(task="lm", rule="flops", wall_time_s=100.0, tokens_per_s=1000.0)
  base |= dict(forward_flops_per_token=1e6, train_flops_per_token=3e6)
  dec = {"ms_per_step": 20.0, "batch": 16, "context": 1024}
  runs = [
    base | {"label": "a", "seed": 0},
    base | {"label": "a", "seed": 1, "tokens_per_s": 4000.0},
    base | {"label": "b", "seed": 0, "decode": dec},
  ]
  one = cost.run_costs(runs[0], price)
  assert one["train_per_million"] == pytest.approx(1.0)  # 1e6 tokens take 1000 s = $1
  assert one["run_dollars"] == pytest.approx(0.1)
  assert one["infer_per_million"] == pytest.approx(1 / 3) and one["infer_how"] == "≈ forward"
  measured = cost.run_costs(runs[2], price)
  assert measured["infer_per_million"] == pytest.approx(1.25)
  assert measured["infer_how"] == "decode, 1024 ctx"
  lines = cost.study_table(runs, price)
  assert "$3.6 per hour for a test machine" in "\n".join(lines)
  row_a = next(ln for ln in lines if ln.startswith("| lm | flops | a |"))
  assert "| 2 | $0.625 | $0.1 | $0.208 | ≈ forward |" in row_a  # means of (1, 0.25), (1/3, 1/12)
  assert cost.study_table([], price) == [] and cost.run_costs({}, price)["infer_how"] == "n/a"
