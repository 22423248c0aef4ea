"""The benchmark harness: CLI end to end on tiny sizes, spec parsing, failure handling, report.

Benchmarks are not timed tests: nothing here asserts a speed. In-process compiles use the
``fast_compile`` fixture of conftest.py, subprocesses the matching environment variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lrm.analysis import bench_report, bench_runner
from lrm.analysis.benchmark import measure_mixer, measure_train, parse_mixer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = (
  "mixer spec impl length dim heads window batch mode dtype median_ms times_ms tokens_per_s "
  "flops_analytic flops_xla frac_peak peak_gflops xla_temp_bytes peak_rss_bytes jax jaxlib "
  "backend device_kind cpu_count cpu_model glibc_tunables malloc"
).split()
POSITIVE = "median_ms tokens_per_s flops_analytic flops_xla frac_peak peak_gflops peak_rss_bytes"


def test_cli_writes_jsonl_plot_and_tables(tmp_path):
  out = tmp_path / "bench" / "tiny.jsonl"
  args = "--lengths=64,128 --dim=16 --heads=2 --window=4 --mixers=local,dpa_local "
  args += f"--repeats=1 --warmup=0 --peak_size=128 --malloc=tuned --out={out}"
  cmd = [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), *args.split()]
  env = os.environ | {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}  # compile faster; never timed
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["mixer"], r["length"]) for r in records] == [
    (m, L) for m in ("local", "dpa_local") for L in (64, 128)
  ]
  for r in records:
    assert r["status"] == "ok", r
    assert not [k for k in REQUIRED if k not in r]
    assert all(r[k] > 0 for k in POSITIVE.split()), r
    assert len(r["times_ms"]) == 1 and r["median_ms"] == r["times_ms"][0]
    assert r["flops_analytic"] == 3 * r["flops_fwd"] * r["batch"]
    frac = r["flops_analytic"] / (r["median_ms"] / 1e3) / (r["peak_gflops"] * 1e9)
    assert r["frac_peak"] == pytest.approx(frac)
    assert r["glibc_tunables"] == bench_runner.TUNED_MALLOC  # the env reached the worker
    # The dense baseline computes all L^2 scores; only the window's are useful work.
    assert (r["flops_impl"] > r["flops_analytic"]) == (r["mixer"] == "dpa_local")
  assert (tmp_path / "bench" / "tiny.png").stat().st_size > 0
  md = (tmp_path / "bench" / "tiny.md").read_text()
  assert md.startswith(bench_report.markdown(records))
  assert f"| local | {records[0]['impl']} |" in md and "| dpa_local | xla_dense |" in md
  assert "local vs dpa_local" in md  # the ratio line
  # The README table is rebuilt from the committed JSONL alone.
  table = subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "bench_table.py"), str(out)],
    capture_output=True,
    text=True,
  )
  assert table.returncode == 0, table.stderr[-2000:]
  assert bench_report.markdown(records, brief=True) in table.stdout


def test_parse_mixer_presets_overrides_and_errors():
  conv = parse_mixer("conv", dim=16, heads=2, window=4)
  assert conv["kernel_size"] == 9 and conv["depthwise"]
  assert parse_mixer("local:impl=dense", dim=16, heads=2, window=4)["impl"] == "dense"
  bb = parse_mixer("bigbird:block_size=8", dim=16, heads=2, window=4)
  assert (bb["block_size"], bb["random_blocks"], bb["global_blocks"]) == (8, 3, 2)
  assert parse_mixer("dpa_local", dim=16, heads=2, window=4)["window"] == 4
  assert parse_mixer("xla_conv", dim=16, heads=2, window=4)["kernel_size"] == 9
  with pytest.raises(ValueError, match="unknown mixer 'nope'.*local"):
    parse_mixer("nope", dim=16, heads=2, window=4)
  with pytest.raises(ValueError, match="name:key=value"):
    parse_mixer("local:impl", dim=16, heads=2, window=4)
  with pytest.raises(ValueError, match="unknown option"):
    parse_mixer("local:bogus=1", dim=16, heads=2, window=4)
  with pytest.raises(ValueError, match="baseline 'dpa_full' takes only"):
    parse_mixer("dpa_full:window=3", dim=16, heads=2, window=4)


def test_over_limit_cell_is_refused_before_running(fast_compile):
  spec = parse_mixer("dpa_full", dim=16, heads=2, window=4)
  cell = dict(kind="mixer", mixer="dpa_full", spec=spec, length=64, dim=16, heads=2, window=4)
  cell |= dict(batch=1, mode="fwd", dtype="float32", repeats=1, warmup=0, mem_limit_bytes=1)
  res = measure_mixer(cell)
  assert res["status"] == "oom" and "XLA needs" in res["reason"] and "times_ms" not in res
  assert res["xla_total_bytes"] > 1


def test_train_step_runs_a_baseline_inside_the_encoder(fast_compile):
  cells = bench_runner.train_cells(
    ["dpa_local"], window=2, batch=2, repeats=2, warmup=0, length=64, dim=16, depth=1, heads=2
  )
  res = measure_train(cells[0])
  assert res["status"] == "ok" and res["impl"] == "xla_dense" and len(res["times_ms"]) == 2
  assert res["num_params"] > 0 and res["flops_xla"] > 0
  assert 0 < res["flops_fwd"] < res["flops_impl_fwd"]  # useful work excludes masked scores


def test_failures_are_classified():
  assert bench_runner.classify_failure(-9, "")["status"] == "oom"
  msg = "jax.errors.JaxRuntimeError: INTERNAL: Out of memory allocating 12936019968 bytes."
  assert bench_runner.classify_failure(1, f"Traceback\n{msg}\n")["status"] == "oom"
  footer = "--------------------\nFor simplicity, JAX has removed its internal frames: x."
  stderr = f"Traceback\nValueError: dim=16 is not divisible\n{footer}\n"
  err = bench_runner.classify_failure(1, stderr)
  assert err == {
    "status": "error",
    "reason": "ValueError: dim=16 is not divisible",
    "returncode": 1,
  }


def test_worker_error_is_recorded_not_raised():
  spec = {"name": "local", "window": 4, "num_heads": 3}  # 16 is not divisible by 3
  cell = dict(kind="mixer", mixer="bad", spec=spec, length=32, dim=16, heads=3, window=4)
  cell |= dict(batch=1, mode="fwd", dtype="float32", repeats=1, warmup=0)
  res = bench_runner.run_cell(cell, env=bench_runner.malloc_env("default"), timeout=120)
  assert res["status"] == "error" and "divisible" in res["reason"]


def test_longer_lengths_are_skipped_after_a_timeout(tmp_path):
  cells = bench_runner.mixer_cells(["local"], [64, 32], dim=16, heads=2, window=4)
  out = tmp_path / "t.jsonl"
  recs = bench_runner.run_cells(cells, str(out), malloc=("default",), timeout=0.05, log=lambda s: 0)
  assert [(r["length"], r["status"]) for r in recs] == [(32, "timeout"), (64, "skipped")]
  assert len(out.read_text().splitlines()) == 2


def _rec(mixer, L, ms, mib, frac=0.5, status="ok", **spec):
  r = dict(kind="mixer", mode="fwdbwd", dtype="float32", batch=1, dim=256, heads=4, window=128)
  r |= dict(malloc="tuned", mixer=mixer, length=L, status=status, spec={"name": mixer} | spec)
  if status == "ok":
    r |= dict(median_ms=ms, xla_total_bytes=mib * 2**20, frac_peak=frac)
  return r


def _records(bigbird_growth=2.0, dpa_factor=20.0, frac=0.5):
  out = []
  for i, L in enumerate((4096, 8192, 16384, 32768)):
    local = 10.0 * 2**i
    out.append(_rec("local", L, local, 10 * 2**i, frac))
    out.append(_rec("bigbird", L, 12.0 * bigbird_growth**i, 12 * 2**i, frac))
    out.append(_rec("conv", L, 0.5 * local, 5 * 2**i))
    if L < 32768:
      out.append(_rec("dpa_local", L, dpa_factor * local, dpa_factor * 10 * 2**i))
    else:
      out.append(_rec("dpa_local", L, 0, 0, status="oom"))
  return out


def _verdicts(records):
  (recs,) = bench_report.groups(records).values()
  return [met for _, met, _ in bench_report.targets(recs)]


def test_targets_follow_the_numbers():
  assert _verdicts(_records()) == [True, True, True, True]
  assert _verdicts(_records(bigbird_growth=2.5))[0] is False  # superlinear growth
  assert _verdicts(_records(dpa_factor=5.0))[1] is False  # only 5x faster than dpa_local
  assert _verdicts(_records(frac=0.2))[3] is False  # 20% of the matmul peak
  assert _verdicts([_rec("local", 1024, 1.0, 1)]) == [None, None, None, None]
  lines = bench_report.ratios(_records())
  assert any(ln.startswith("local vs dpa_local") and "dpa_local OOM" in ln for ln in lines)
  md = bench_report.markdown(_records())
  assert "| dpa_local |  | 200.0 | 400.0 | 800.0 | OOM |" in md
