"""One benchmark cell, measured in this (fresh) process.

  python benchmarks/worker.py <cell.json> <result.json>

``benchmarks/runner.py`` starts one such process per cell, so the process's peak RSS belongs
to that cell alone and running out of memory kills only that cell. A cell is a plain dict;
its ``kind`` is

* ``"mixer"``: one mixer (or a hybrid label's mixers applied in turn), its jitted forward or
  forward+backward with respect to the input and the parameters;
* ``"train"``: one step of lrm's trainer (``lrm.train.step.Steps`` with the optimizer of
  ``lrm.train.optim.make_optimizer``: the same AdamW, clipping and weight-decay mask) on the
  model the task builds from an experiment config, on a batch of random tokens;
* ``"peak"``: a large square matmul, the machine's practical FLOP/s ceiling.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from flax import nnx

from benchmarks import cells
from lrm import mixers, tasks
from lrm.analysis import counting
from lrm.train import runtime
from lrm.train.optim import make_optimizer
from lrm.train.step import Steps

# ----------------------------------------------------------------------------- what runs


class Stack(nnx.Module):
  """The mixers of one label applied in turn (no norms, no MLPs: only mixing is timed)."""

  def __init__(self, specs: list[dict], *, dim: int, causal: bool, rngs: nnx.Rngs):
    layers = [
      mixers.build(s, dim=dim, causal=causal, rngs=rngs, layer_idx=i) for i, s in enumerate(specs)
    ]
    self.layers = nnx.List(layers)

  def __call__(self, x: jax.Array) -> jax.Array:
    for m in self.layers:
      x = m(x)  # [B, L, D]
    return x

  @property
  def impl(self) -> str:
    return "+".join(m.impl for m in self.layers)

  def flops(self, length: int) -> int:
    return sum(m.flops(length) for m in self.layers)


def useful_spec(mixer: nnx.Module, spec: Mapping[str, Any]) -> dict | None:
  """The efficient mixer computing the same pattern as ``mixer`` (None: ``mixer`` is it).

  A baseline names it (``reference_spec``); a dense oracle's is its spec without ``impl``.
  """
  if hasattr(mixer, "reference_spec"):
    return mixer.reference_spec()
  if spec.get("impl") == cells.DENSE:
    return {k: v for k, v in spec.items() if k != "impl"}
  return None


def useful_flops(layers: list[nnx.Module], specs: list[dict], length: int) -> int:
  """Analytic FLOPs of each pattern's efficient mixer: the work the pattern needs, without
  the masked-out scores a dense implementation also computes. ``specs`` cycle over layers."""
  total = 0
  for i, m in enumerate(layers):
    ref = useful_spec(m, specs[i % len(specs)])
    if ref is None:
      total += m.flops(length)
      continue
    total += _abstract(ref, dim=m.dim, causal=m.causal).flops(length)
  return int(total)


def _abstract(spec: dict, *, dim: int, causal: bool) -> nnx.Module:
  """The mixer of ``spec`` with shapes for parameters: its analytic counts, no compute."""
  return nnx.eval_shape(lambda: mixers.build(spec, dim=dim, causal=causal, rngs=nnx.Rngs(0)))


# ----------------------------------------------------------------------------- measuring


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
  f = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
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
  """Time one label's jitted forward (or forward+backward w.r.t. input and parameters)."""
  info, lowered, args = mixer_call(cell)
  return info | _run_compiled(cell, lowered, lambda c: lambda: c(*args))


def mixer_call(cell: dict) -> tuple[dict, Any, tuple]:
  """(info, the lowered jitted forward or forward+backward, its arguments) of a mixer cell."""
  dtype = jnp.dtype(cell["dtype"])
  B, L, D = cell["batch"], cell["length"], cell["dim"]
  specs = cells.spec_list(cell["spec"])
  module = Stack(specs, dim=D, causal=cell.get("causal", False), rngs=nnx.Rngs(0))
  impl = "+".join(mixers.impl_of(m, dtype, L) for m in module.layers)  # auto: what ran
  info = {"impl": impl, "num_params": mixers.param_count(module)}
  info |= {"flops_impl_fwd": module.flops(L), "flops_fwd": useful_flops(module.layers, specs, L)}
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  params = _cast(params, dtype)
  kx, kc = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (B, L, D), dtype)

  if cell["mode"] == "fwd":
    fn, args = (lambda p, r, x: nnx.merge(graphdef, p, r)(x)), (params, rest, x)
  else:
    ct = jax.random.normal(kc, (B, L, D), jnp.float32)  # a fixed random cotangent

    def loss(p: Any, r: Any, x: jax.Array, ct: jax.Array) -> jax.Array:
      return jnp.sum(nnx.merge(graphdef, p, r)(x).astype(jnp.float32) * ct)

    fn, args = jax.grad(loss, argnums=(0, 2)), (params, rest, x, ct)
  return info, jax.jit(fn).lower(*args), args


def random_batch(task: tasks.Task, batch: int, length: int) -> dict[str, np.ndarray]:
  """A full-length batch of random tokens in the classification tasks' format."""
  if task.num_classes < 1:
    raise ValueError(
      f"the train benchmark feeds classification batches; task '{task.registered_name}' has "
      f"no classes (use a classification experiment, e.g. {cells.TRAIN_CONFIG})"
    )
  rng = np.random.default_rng(0)
  return {
    "inputs": rng.integers(1, task.vocab_size, (batch, length)).astype(np.int32),  # 0 = PAD
    "lengths": np.full((batch,), length, np.int32),
    "label": rng.integers(0, task.num_classes, (batch,)).astype(np.int32),
    "valid": np.ones((batch,), bool),
  }


def measure_train(cell: dict) -> dict:
  """Time one step of lrm's trainer: forward, backward and the optimizer update."""
  cfg: Mapping[str, Any] = cell["config"]
  task = tasks.build({"name": cfg["task"], **cfg["data"]})  # no setup(): no data is read
  seed, tc = int(cfg["seed"]), cfg["train"]

  def build() -> nnx.Module:  # as the trainer builds its model
    return task.build_model(cfg["model"], nnx.Rngs(params=seed, dropout=seed + 1, random=seed + 2))

  model = nnx.eval_shape(build)
  tx, schedule = make_optimizer(cfg["optim"], int(tc["steps"]))
  mesh = runtime.make_mesh()
  steps = Steps(
    task, model, tx, schedule, dtype=tc["dtype"], grad_accum=int(tc["grad_accum"]), mesh=mesh
  )
  L, B = task.seq_len, int(tc["batch_size"])
  host = random_batch(task, B, L)
  try:
    state = steps.init_state(build, host)
  except KeyError as e:  # the task's loss reads another batch format (e.g. two documents)
    raise ValueError(
      f"task '{task.registered_name}' reads batch key {e} that the train benchmark's "
      f"classification batches ({', '.join(host)}) lack"
    ) from None
  batch = runtime.put_batch(host, runtime.batch_sharding(mesh))

  layers = model.encoder.mixer_list()
  specs = cells.spec_list(cfg["model"]["mixer"])
  flops = counting.forward_flops(model, L)
  useful = flops - sum(m.flops(L) for m in layers) + useful_flops(layers, specs, L)
  info = {
    "impl": "+".join(mixers.impl_of(m, steps.dtype, L) for m in layers[: len(specs)]),
    "num_params": int(sum(x.size for x in jax.tree.leaves(state["model"]["params"]))),
    "flops_impl_fwd": flops,
    "flops_fwd": useful,
    "vocab_size": task.vocab_size,
    "num_classes": task.num_classes,
  }
  box = {"state": state}

  def make_call(compiled: Any) -> Callable[[], Any]:
    def call() -> Any:  # the state is donated, so thread it through
      box["state"] = compiled(box["state"], batch)
      return box["state"]["train"]["acc"]["loss"]

    return call

  out = info | _run_compiled(cell, steps.train_step.lower(state, batch), make_call)
  if "times_ms" in out:  # the optimizer steps taken, read from the trainer's state
    out["steps"] = int(jax.device_get(box["state"]["train"]["step"]))
  return out


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


def measure(cell: dict) -> dict:
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


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print("usage: python benchmarks/worker.py <cell.json> <result.json>", file=sys.stderr)
    return 2
  with open(argv[1]) as f:
    cell = json.load(f)
  result = measure(cell)
  with open(argv[2], "w") as f:
    json.dump(result, f)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
