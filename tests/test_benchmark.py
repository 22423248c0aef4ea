"""The benchmark harness in ``benchmarks/``: CLI end to end on tiny sizes, labels, derived
defaults and pairs, the baselines against the mixers they stand beside, lrm's training step,
failure handling, and the committed results regenerating from their JSONL.

Benchmarks are not timed tests: nothing here asserts a speed. ``benchmarks/`` is imported
inside a fixture, not at collection, so its baselines never reach the generic mixer tests'
parametrisation; in-process compiles use conftest's ``fast_compile``.
"""

from __future__ import annotations

import functools
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import mixers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
REQUIRED = (
  "mixer spec impl length dim heads window batch mode dtype median_ms times_ms tokens_per_s "
  "flops_analytic flops_xla frac_peak peak_gflops xla_temp_bytes peak_rss_bytes jax jaxlib "
  "backend device_kind cpu_count cpu_model glibc_tunables malloc"
).split()
POSITIVE = "median_ms tokens_per_s flops_analytic flops_xla frac_peak peak_gflops peak_rss_bytes"


@pytest.fixture(scope="module")
def bench():
  """The ``benchmarks`` modules (the repository root on sys.path, as its scripts put it)."""
  sys.path.insert(0, str(ROOT))
  try:
    mods = {m: importlib.import_module(f"benchmarks.{m}") for m in ("cells", "report", "runner")}
    mods["worker"] = importlib.import_module("benchmarks.worker")
    yield SimpleNamespace(**mods)
  finally:
    sys.path.remove(str(ROOT))
    for name in ("dpa_full", "dpa_local", "xla_conv"):  # leave the preset list as found
      mixers.presets.unregister(name)


def test_cli_writes_jsonl_plot_and_tables(bench, tmp_path, session_env):
  """One baseline cell (registered in the worker process too) and one that fails there."""
  out = tmp_path / "bench" / "tiny.jsonl"
  args = "--lengths=64 --dim=16 --heads=2 --window=4 --mixers=dpa_local,local:num_heads=3 "
  args += f"--repeats=1 --warmup=0 --peak_size=128 --malloc=tuned --out={out}"
  cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), *args.split()]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=session_env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["mixer"] for r in records] == ["dpa_local", "local:num_heads=3"]
  r, bad = records
  assert bad["status"] == "error" and "divisible" in bad["reason"], bad  # recorded, not raised
  assert r["status"] == "ok" and r["impl"] == "xla_dense", r
  assert not [k for k in REQUIRED if k not in r]
  assert all(r[k] > 0 for k in POSITIVE.split()), r
  assert len(r["times_ms"]) == 1 and r["median_ms"] == r["times_ms"][0]
  assert r["flops_analytic"] == 3 * r["flops_fwd"] * r["batch"]
  frac = r["flops_analytic"] / (r["median_ms"] / 1e3) / (r["peak_gflops"] * 1e9)
  assert r["frac_peak"] == pytest.approx(frac)
  assert r["glibc_tunables"] == bench.runner.TUNED_MALLOC  # the env reached the worker
  assert (tmp_path / "bench" / "tiny.png").stat().st_size > 0
  md = (tmp_path / "bench" / "tiny.md").read_text()
  assert md == bench.report.text(records)
  assert "| dpa_local | xla_dense | " in md and "| local:num_heads=3 |  | ERROR |" in md
  table = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / "table.py"), str(out), "--full", "--ratios"],
    capture_output=True,
    text=True,
    cwd=tmp_path,
  )
  assert table.returncode == 0, table.stderr[-2000:]
  assert table.stdout == md  # the tables come back from the JSONL alone


def test_labels_are_presets_with_overrides_and_hybrids(bench):
  parse = lambda label, **kw: bench.cells.parse_label(label, window=4, heads=2, **kw)  # noqa: E731
  assert parse("conv") == [mixers.presets.spec("conv", window=4, heads=2)]
  assert parse("conv")[0]["kernel_size"] == 9 and parse("conv", causal=True)[0]["kernel_size"] == 5
  assert parse("local:impl=dense")[0]["impl"] == "dense"
  assert parse("bigbird:block_size=8")[0]["block_size"] == 8
  assert parse("dpa_local") == [{"name": "dpa_local", "window": 4, "num_heads": 2, "rotary": True}]
  assert parse("xla_conv")[0]["kernel_size"] == 9  # the conv preset's rule
  assert [s["name"] for s in parse("conv:impl=direct+global")] == ["conv", "global"]
  assert parse("conv:impl=direct+global")[0]["impl"] == "direct"
  with pytest.raises(ValueError, match="unknown mixer preset 'nope'.*local"):
    parse("nope")
  with pytest.raises(ValueError, match="preset:key=value"):
    parse("local:impl")
  with pytest.raises(ValueError, match="unknown option"):
    parse("local:bogus=1")
  with pytest.raises(ValueError, match=r"unknown option.*'window'.*dpa_full"):
    parse("dpa_full:window=3")


def test_a_named_stack_is_one_label_of_its_presets(bench):
  """Every named stack (``presets.stacks()``) is a label for its presets, alone, inside a
  ``+`` and in a cell; an option on a stack is refused (which of its layers would it set?)."""
  parse = lambda label: bench.cells.parse_label(label, window=4, heads=2)  # noqa: E731
  assert mixers.presets.stacks()  # named stacks register beside their mixers
  for name in mixers.presets.stacks():
    layers = mixers.presets.parts(name)
    assert [n for n, _ in bench.cells.split_label(name)] == layers
    assert parse(name) == mixers.presets.spec(name, window=4, heads=2)
    assert [s["name"] for s in parse(f"{name}+global:rotary=false")] == [
      s["name"] for s in mixers.presets.spec_list(f"{name}+global", window=4, heads=2)
    ]
    assert parse(f"{name}+global:rotary=false")[-1]["rotary"] is False
    (cell,) = bench.cells.mixer_cells([name], [16], dim=8, heads=2, window=4)
    assert cell["mixer"] == name and [s["name"] for s in cell["spec"]] == [
      s["name"] for s in parse(name)
    ]
    with pytest.raises(ValueError, match=f"'{name}' .* ambiguous; write its layers"):
      parse(f"{name}:impl=dense")


def _accepts_dense(spec: dict) -> bool:
  def build() -> nnx.Module:
    return mixers.build(spec | {"impl": "dense"}, dim=16, causal=False, rngs=nnx.Rngs(0))

  try:
    nnx.eval_shape(build)
  except ValueError:
    return False
  return True


def test_default_labels_come_from_the_registries(bench):
  labels = bench.cells.default_labels(dim=16, heads=2, window=4, block=4)
  presets = mixers.presets.names()
  base = [p for p in presets if bench.cells.baseline_of(mixers.presets.spec(p))]
  assert base == ["dpa_full", "dpa_local", "xla_conv"] and labels[-3:] == base
  assert set(presets) <= set(labels)
  oracles = {}  # mixer -> its first preset, for every mixer that builds with impl="dense"
  for p in presets:
    spec = mixers.presets.spec(p, window=4, heads=2, block=4)
    if p not in base and _accepts_dense(spec):
      oracles.setdefault(spec["name"], p)
  assert [x for x in labels if x.endswith(":impl=dense")] == [
    f"{p}:impl=dense" for p in sorted(oracles.values())
  ]
  assert {"local", "bigbird"} <= set(oracles) and "conv" not in oracles
  mixers.presets.register("tmp_bench_preset", lambda r: dict(name="conv", kernel_size=3))
  try:
    assert "tmp_bench_preset" in bench.cells.default_labels(dim=16, heads=2, window=4)
  finally:
    mixers.presets.unregister("tmp_bench_preset")


def test_ratio_pairs_are_derived(bench):
  labels = ["conv", "local", "bigbird", "local:impl=dense", "dpa_local", "xla_conv", "global"]
  labels += ["dpa_full", "involution", "conv:impl=fft", "conv+global"]
  specs = {
    x: bench.cells.record_spec(bench.cells.parse_label(x, window=4, heads=2)) for x in labels
  }
  pairs = bench.cells.pairs(specs)
  assert pairs == [
    ("local", "local:impl=dense"),
    ("local", "dpa_local"),
    ("conv", "xla_conv"),
    ("global", "dpa_full"),
    ("conv", "local"),
    ("conv", "involution"),
    ("local", "involution"),
  ]
  with_ref = bench.cells.pairs(specs, reference=["local"])
  assert with_ref[4:] == [
    (x, "local") for x in ("conv", "involution", "conv:impl=fft", "conv+global")
  ]


def _copy_params(src: nnx.Module, dst: nnx.Module, paths: dict[str, str]) -> None:
  """``dst``'s parameters at ``paths`` values set from ``src``'s (reshaped: same numbers)."""
  get = lambda m, path: functools.reduce(getattr, path.split("."), m)  # noqa: E731
  for a, b in paths.items():
    target = get(dst, b)
    target[...] = jnp.reshape(get(src, a)[...], target[...].shape)


ATTENTION = {p: p for p in ("qkv.kernel", "qkv.bias", "out.kernel", "out.bias")}
CONV = {"kernel": "conv.kernel", "bias": "conv.bias"}
CONV |= {p: p for p in ("pointwise.kernel", "pointwise.bias")}


@pytest.mark.parametrize("causal", [False, True])
def test_baselines_compute_what_they_stand_beside(bench, causal, fast_compile):
  """With the same parameters, dpa_local = local, dpa_full = global, xla_conv = conv."""
  B, L, D = 2, 21, 16
  x = jax.random.normal(jax.random.key(0), (B, L, D))
  mask = jnp.arange(L)[None, :] < jnp.array([L, L - 5])[:, None]  # [B, L]
  real = np.asarray(mask)
  for label, preset, oracle, paths in (
    ("dpa_local", "local", "local:impl=dense", ATTENTION),
    ("dpa_full", "global", "global:impl=dense", ATTENTION),
    ("xla_conv", "conv", "conv:impl=direct", CONV),
  ):
    (spec,), (ref_spec,) = (
      bench.cells.parse_label(x, window=3, heads=2, causal=causal) for x in (label, oracle)
    )
    base = mixers.build(spec, dim=D, causal=causal, rngs=nnx.Rngs(1))
    ref = mixers.build(ref_spec, dim=D, causal=causal, rngs=nnx.Rngs(2))
    assert base.baseline_of == preset
    assert base.reference_spec() == mixers.presets.spec(preset, window=3, heads=2, causal=causal)
    assert base.receptive_field() == ref.receptive_field(), label
    _copy_params(ref, base, paths)
    want, got = np.asarray(ref(x, mask))[real], np.asarray(base(x, mask))[real]
    np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"{label} vs {oracle}")


def test_train_cell_times_lrms_own_training_step(bench, fast_compile):
  (cell,) = bench.cells.train_cells(
    ["conv+dpa_local"],
    window=4,
    batch=2,
    config_arg="experiments/listops.py:size=small",
    length=128,
    repeats=2,
    warmup=0,
  )
  cfg = cell["config"]  # the experiment's config, with the label's mixers and the sizes
  want = bench.cells.load_config("experiments/listops.py:size=small").to_dict()
  assert cfg["optim"] == want["optim"] and cfg["model"]["pool"] == want["model"]["pool"]
  assert [s["name"] for s in cfg["model"]["mixer"]] == ["conv", "dpa_local"]
  assert (cfg["data"]["max_len"], cfg["train"]["batch_size"], cell["length"]) == (128, 2, 128)
  res = bench.worker.measure_train(cell)
  assert res["status"] == "ok" and len(res["times_ms"]) == 2
  assert res["steps"] == 2  # the timed calls advanced the trainer's own state
  assert res["impl"] in ("direct+xla_dense", "fft+xla_dense")
  # The model is the one the task builds from the config (same parameter count).
  task = bench.worker.tasks.build({"name": cfg["task"], **cfg["data"]})
  model = task.build_model(cfg["model"], nnx.Rngs(0))
  assert res["num_params"] == mixers.param_count(model)
  assert res["flops_xla"] > 0 and 0 < res["flops_fwd"] < res["flops_impl_fwd"]  # dense scores
  with pytest.raises(ValueError, match="data has no max_len"):
    bench.cells.train_cells(
      ["conv"], window=4, batch=2, config_arg="experiments/recall.py", length=8
    )


def test_over_limit_cell_is_refused_before_running(bench, fast_compile):
  (cell,) = bench.cells.mixer_cells(["dpa_local"], [64], dim=16, heads=2, window=4, mode="fwd")
  res = bench.worker.measure_mixer(cell | {"repeats": 1, "warmup": 0, "mem_limit_bytes": 1})
  assert res["status"] == "oom" and "XLA needs" in res["reason"] and "times_ms" not in res
  assert res["xla_total_bytes"] > 1
  # The dense baseline computes all L^2 scores; the useful work is local attention's.
  local = mixers.build(
    mixers.presets.spec("local", window=4, heads=2), dim=16, causal=False, rngs=nnx.Rngs(0)
  )
  assert res["flops_fwd"] == local.flops(64) < res["flops_impl_fwd"]


def test_failures_are_classified(bench):
  classify = bench.runner.classify_failure
  assert classify(-9, "")["status"] == "oom"
  msg = "jax.errors.JaxRuntimeError: INTERNAL: Out of memory allocating 12936019968 bytes."
  assert classify(1, f"Traceback\n{msg}\n")["status"] == "oom"
  footer = "--------------------\nFor simplicity, JAX has removed its internal frames: x."
  err = classify(1, f"Traceback\nValueError: dim=16 is not divisible\n{footer}\n")
  assert err == {
    "status": "error",
    "reason": "ValueError: dim=16 is not divisible",
    "returncode": 1,
  }


def test_longer_lengths_are_skipped_after_a_timeout(bench, tmp_path):
  cells = bench.cells.mixer_cells(["local"], [64, 32], dim=16, heads=2, window=4)
  out = tmp_path / "t.jsonl"
  recs = bench.runner.run_cells(
    cells, str(out), malloc=("default",), timeout=0.05, log=lambda s: None
  )
  assert [(r["length"], r["status"]) for r in recs] == [(32, "timeout"), (64, "skipped")]
  assert len(out.read_text().splitlines()) == 2


def test_shared_process_times_every_cell_in_alternating_rounds(bench, tmp_path):
  """``--process=shared``: one process compiles every cell, then times them round by round."""
  cells = bench.cells.mixer_cells(["local"], [32, 64], dim=16, heads=2, window=4, repeats=2)
  cells += bench.cells.mixer_cells(["local:num_heads=3"], [32], dim=16, heads=2, window=4)
  out = tmp_path / "s.jsonl"
  recs = bench.runner.run_shared(
    cells, str(out), malloc=("default",), peak_size=64, log=lambda s: None
  )
  assert [(r["length"], r["status"], r["process"]) for r in recs] == [
    (32, "ok", "shared"),
    (64, "ok", "shared"),
    (32, "error", "shared"),  # recorded, and the other cells still ran
  ]
  assert all(len(r["times_ms"]) == 2 and r["tokens_per_s"] > 0 for r in recs[:2])
  assert len(out.read_text().splitlines()) == 3
  assert "one process" in bench.report.growth(recs)[0]


def _rec(mixer, L, ms, mib, status="ok", **spec):
  r = dict(kind="mixer", mode="fwdbwd", dtype="float32", batch=1, dim=256, heads=4, window=128)
  r |= dict(malloc="tuned", mixer=mixer, length=L, status=status, spec={"name": mixer} | spec)
  if status == "ok":
    r |= dict(median_ms=ms, xla_total_bytes=mib * 2**20, frac_peak=0.5, flops_impl_fwd=L)
  return r


def test_report_tables_ratios_and_growth(bench):
  recs = []
  for i, L in enumerate((4096, 8192, 16384)):
    recs.append(_rec("local", L, 10.0 * 2**i, 10 * 2**i, window=128, num_heads=4))
    recs.append(_rec("conv", L, 5.0 * 2.5**i, 5 * 2**i, kernel_size=257, depthwise=True))
    ok = L < 16384
    recs.append(
      _rec("dpa_local", L, 200.0 * 4**i, 100 * 4**i, "ok" if ok else "oom", window=128, num_heads=4)
    )
  md = bench.report.markdown(recs)
  assert "| dpa_local |  | 200.0 | 800.0 | OOM |" in md
  assert "### fwdbwd, float32, width 256, 4 heads, window radius 128, batch 1, malloc tuned" in md
  ratios = bench.report.ratios(recs)
  assert ratios[0].startswith("local vs dpa_local (fwdbwd, malloc tuned): L=4096: 20.0x faster")
  assert ratios[0].endswith("L=16384: dpa_local OOM")
  assert ratios[1].startswith("local vs conv (fwdbwd, malloc tuned): L=4096: 0.5x faster")
  growth = bench.report.growth(recs)
  assert growth[1] == "conv (fwdbwd, malloc tuned): x2.50 (4096->8192), x2.50 (8192->16384)"
  assert growth[2].endswith("x4.00 (4096->8192), oom at 16384")


def test_committed_results_regenerate_from_their_jsonl(bench):
  """The tables in results/bench/*.md are what benchmarks/table.py prints from the JSONL."""
  for name in ("fwdbwd_cpu", "scaling_cpu", "train_listops_cpu", "malloc_cpu"):
    records = bench.report.load([RESULTS / f"{name}.jsonl"])
    md = (RESULTS / f"{name}.md").read_text()  # see results/bench/README.md for the commands
    assert md == bench.report.text(records, reference=["local"]), name


def test_the_package_never_imports_the_benchmarks():
  lines = [ln.strip() for p in (ROOT / "lrm").rglob("*.py") for ln in p.read_text().splitlines()]
  assert not [ln for ln in lines if ln.startswith(("import benchmarks", "from benchmarks"))]
