"""Speed, memory and FLOPs of one mixer (or a whole training step) at one sequence length.

Every measurement ("cell") runs in a fresh Python process, so the process's peak RSS belongs
to that cell alone and running out of memory kills only that cell. The parent
(``run_cells``) never touches an accelerator; it starts ``python -m lrm.analysis.benchmark
<cell.json> <result.json>`` per cell, reads the result back and classifies failures as
``oom`` / ``timeout`` / ``error``.

A cell is a plain dict. ``kind`` is ``"mixer"`` (one mixer, forward or forward+backward with
respect to input and parameters), ``"train"`` (forward+backward+AdamW of a whole classifier)
or ``"peak"`` (a large square matmul: the machine's practical FLOP/s ceiling).

Besides registered mixers, cells can run the baselines a user would otherwise pick
(``dpa_full``, ``dpa_local``, ``xla_conv``; see ``lrm/analysis/bench_baselines.py``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
from flax import nnx

from lrm import config, heads, mixers
from lrm.analysis import counting
from lrm.analysis.bench_baselines import BASELINES, baseline_spec, build_module, reference_spec
from lrm.model import Encoder

MODES = ("fwd", "fwdbwd")
DTYPES = ("float32", "bfloat16")
OOM_MARKERS = ("out of memory", "resource_exhausted", "memoryerror", "bad_alloc", "allocate of")


# ----------------------------------------------------------------------------- specs


def _value(text: str) -> Any:
  """CLI option value: int, float, true/false, else the string itself."""
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def parse_mixer(label: str, *, dim: int, heads: int, window: int, block: int = 64) -> dict:
  """Spec dict for a CLI mixer label such as ``local``, ``conv:impl=fft`` or ``dpa_local``.

  The base name is a preset of ``lrm.config.mixer_spec`` (same receptive field for every
  mixer: window radius w, conv kernel 2w+1, BigBird/random blocks of ``block`` tokens), a
  registered mixer name, or a baseline; ``:key=value`` parts override its options.
  """
  name, *parts = label.split(":")
  overrides = {}
  for part in parts:
    key, sep, value = part.partition("=")
    if not sep or not key:
      raise ValueError(f"bad mixer option '{part}' in '{label}'; write name:key=value[:key=value]")
    overrides[key] = _value(value)
  if name in BASELINES:
    return baseline_spec(name, overrides, heads=heads, window=window)
  try:
    spec = config.mixer_spec(name, window=window, heads=heads, block=block)
  except ValueError:
    if name not in mixers.names():
      known = sorted({*mixers.names(), *BASELINES})
      raise ValueError(f"unknown mixer '{name}'; known: {', '.join(known)}") from None
    spec = {"name": name}
  spec = spec | overrides
  mixers.check(spec)
  return spec


# ----------------------------------------------------------------------------- worker side


def machine_info() -> dict:
  """Versions and hardware, without the hostname."""
  model = ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
  except OSError:
    pass
  dev = jax.devices()[0]
  return {
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "backend": jax.default_backend(),
    "device_kind": dev.device_kind,
    "cpu_count": os.cpu_count(),
    "cpu_affinity": len(os.sched_getaffinity(0)),
    "cpu_model": model or platform.processor(),
    "arch": platform.machine(),
    "python": platform.python_version(),
    "libc": " ".join(platform.libc_ver()),
    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _times(call: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
  """Seconds per call, after ``warmup`` untimed calls (each call blocks until done)."""
  for _ in range(warmup):
    jax.block_until_ready(call())
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    out.append(time.perf_counter() - t0)
  return out


def _cast(tree: Any, dtype: Any) -> Any:
  f = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
  return jax.tree.map(f, tree)


def _compiled_stats(compiled: Any) -> dict:
  stats = {"flops_xla": float((compiled.cost_analysis() or {}).get("flops", 0.0))}
  mem = compiled.memory_analysis()
  if mem is not None:
    stats |= {
      "xla_temp_bytes": int(mem.temp_size_in_bytes),
      "xla_argument_bytes": int(mem.argument_size_in_bytes),
      "xla_output_bytes": int(mem.output_size_in_bytes),
      "xla_alias_bytes": int(mem.alias_size_in_bytes),
    }
    stats["xla_total_bytes"] = (
      stats["xla_temp_bytes"]
      + stats["xla_argument_bytes"]
      + stats["xla_output_bytes"]
      - stats["xla_alias_bytes"]
    )
  return stats


def _run_compiled(cell: dict, lowered: Any, make_call: Callable[[Any], Callable[[], Any]]) -> dict:
  """Compile, refuse if XLA's buffers exceed the memory limit, else time the calls."""
  t0 = time.perf_counter()
  compiled = lowered.compile()
  out = {"compile_s": time.perf_counter() - t0} | _compiled_stats(compiled)
  limit = cell.get("mem_limit_bytes") or 0
  if limit and out.get("xla_total_bytes", 0) > limit:
    need, have = out["xla_total_bytes"] / 2**30, limit / 2**30
    return out | {"status": "oom", "reason": f"XLA needs {need:.1f} GiB > limit {have:.1f} GiB"}
  times = _times(make_call(compiled), cell["warmup"], cell["repeats"])
  return out | {"status": "ok", "times_ms": [1e3 * t for t in times]}


def measure_mixer(cell: dict) -> dict:
  """Time one mixer's jitted forward (or forward+backward w.r.t. input and params)."""
  dtype = jnp.dtype(cell["dtype"])
  B, L, D = cell["batch"], cell["length"], cell["dim"]
  module = build_module(cell["spec"], dim=D, causal=cell.get("causal", False), rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  params = _cast(params, dtype)
  kx, kc = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (B, L, D), dtype)
  info = {"impl": module.impl, "num_params": module.num_params(), "flops_impl_fwd": module.flops(L)}
  ref = reference_spec(cell["spec"])
  if ref is not None:
    module_ref = build_module(ref, dim=D, causal=cell.get("causal", False), rngs=nnx.Rngs(0))
  info["flops_fwd"] = (module if ref is None else module_ref).flops(L)

  if cell["mode"] == "fwd":
    fn, args = (lambda p, r, x: nnx.merge(graphdef, p, r)(x)), (params, rest, x)
  else:
    ct = jax.random.normal(kc, (B, L, D), jnp.float32)  # a fixed random cotangent

    def loss(p, r, x, ct):
      return jnp.sum(nnx.merge(graphdef, p, r)(x).astype(jnp.float32) * ct)

    fn, args = jax.grad(loss, argnums=(0, 2)), (params, rest, x, ct)
  res = _run_compiled(cell, jax.jit(fn).lower(*args), lambda c: lambda: c(*args))
  return info | res


def measure_train(cell: dict) -> dict:
  """Time a whole training step (forward+backward+AdamW) of an encoder classifier."""
  B, L = cell["batch"], cell["length"]
  rngs = nnx.Rngs(params=0, dropout=1)
  spec = cell["spec"]
  baseline = spec["name"] in BASELINES  # not registered: build a stand-in, then swap it out
  enc = Encoder(
    vocab_size=cell["vocab_size"],
    dim=cell["dim"],
    depth=cell["depth"],
    mixer={"name": "global", "num_heads": cell["heads"]} if baseline else spec,
    causal=False,
    max_len=L,
    mlp_ratio=cell["mlp_ratio"],
    dropout=cell["dropout"],
    rngs=rngs,
  )
  if baseline:
    for block in enc.blocks:
      block.mixer = build_module(spec, dim=cell["dim"], causal=False, rngs=rngs)
  model = heads.Classifier(enc, cell["num_classes"], pool=cell["pool"], rngs=rngs)
  flops = counting.forward_flops(model, L)
  info = {"impl": enc.mixer_list()[0].impl, "num_params": mixers.param_count(model)}
  info |= {"flops_impl_fwd": flops, "flops_fwd": flops}
  ref = reference_spec(spec)
  if ref is not None:  # count the pattern's useful work, as for single mixers
    ref_flops = build_module(ref, dim=cell["dim"], causal=False, rngs=rngs).flops(L)
    info["flops_fwd"] += cell["depth"] * (ref_flops - enc.mixer_list()[0].flops(L))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = _cast(params, jnp.dtype(cell["dtype"]))
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, weight_decay=0.1)
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  tok = jnp.asarray(rng.integers(0, cell["vocab_size"], (B, L)), jnp.int32)
  mask = jnp.ones((B, L), bool)  # the trainer always passes a padding mask
  y = jnp.asarray(rng.integers(0, cell["num_classes"], (B,)), jnp.int32)

  def step(params, opt_state, rest, tok, mask, y):
    model = nnx.merge(graphdef, params, rest)

    def loss_fn(model):
      logits = model(tok, mask).astype(jnp.float32)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)  # w.r.t. nnx.Param, like params
    updates, opt_state = tx.update(grads, opt_state, params)
    rest = nnx.split(model, nnx.Param, ...)[2]  # dropout RNG counts advanced, as in training
    return optax.apply_updates(params, updates), opt_state, rest, loss

  jitted = jax.jit(step, donate_argnums=(0, 1, 2))
  state = {"p": params, "o": opt_state, "r": rest}

  def make_call(compiled):
    def call():  # the state is donated, so thread it through
      state["p"], state["o"], state["r"], loss = compiled(
        state["p"], state["o"], state["r"], tok, mask, y
      )
      return loss

    return call

  return info | _run_compiled(cell, jitted.lower(params, opt_state, rest, tok, mask, y), make_call)


def measure_peak(cell: dict) -> dict:
  """Best FLOP/s of an ``n x n x n`` jitted matmul: this machine's practical matmul peak."""
  n = cell["size"]
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.dtype(cell["dtype"]))
  b = jax.random.normal(kb, (n, n), jnp.dtype(cell["dtype"]))
  f = jax.jit(jnp.matmul)
  times = _times(lambda: f(a, b), max(cell["warmup"], 1), cell["repeats"])
  return {
    "status": "ok",
    "times_ms": [1e3 * t for t in times],
    "peak_gflops": 2 * n**3 / min(times) / 1e9,
  }


MEASURE = {"mixer": measure_mixer, "train": measure_train, "peak": measure_peak}


def worker(cell: dict) -> dict:
  """Run one cell in this (fresh) process and return its measurement."""
  if jax.default_backend() == "cpu" and cell.get("mem_limit_bytes"):
    # A hard cap turns a runaway allocation into a clean error instead of the OOM killer
    # picking some other process on a shared machine.
    lim = int(cell["mem_limit_bytes"])
    resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))
  elif jax.default_backend() != "cpu":  # accelerators: XLA's buffers must fit the device
    stats = jax.devices()[0].memory_stats() or {}
    cell = cell | {"mem_limit_bytes": int(stats.get("bytes_limit", 0))}
  rss_base = _rss_bytes()
  out = MEASURE[cell["kind"]](cell)
  out |= {"rss_base_bytes": rss_base, "peak_rss_bytes": _rss_bytes()}
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  if out.get("times_ms"):
    out["median_ms"] = statistics.median(out["times_ms"])
  return out | machine_info()


def _main(argv: list[str]) -> int:
  if len(argv) != 3:
    print("usage: python -m lrm.analysis.benchmark <cell.json> <result.json>", file=sys.stderr)
    return 2
  with open(argv[1]) as f:
    cell = json.load(f)
  result = worker(cell)
  with open(argv[2], "w") as f:
    json.dump(result, f)
  return 0


if __name__ == "__main__":
  sys.exit(_main(sys.argv))
