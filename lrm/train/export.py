"""The real training step lowered for a platform this machine need not have (TPU, GPU).

  exported = lower_train_step(run, "tpu")      # forward, backward, optimizer update, sharded
  exported.impls                               # the kernel each layer got for that platform
  exported.kernel_calls(MOSAIC)                # Mosaic (Pallas TPU) kernel launches per step
  exported.stablehlo_bytes, exported.exported  # the module's size; a ``jax.export.Exported``

What ``scripts/export_step.py`` prints and ``tests/test_export.py`` checks. The run's jitted
step (``Run.make_steps``, with the run's mesh: parameters replicated, the batch split over
the data axis) is traced for ``lrm.mixers.Target(platform)``, so every ``choose_impl`` picks
that platform's kernel (splash as a Mosaic custom call for TPU, not Pallas' interpreter), and
exported by ``jax.export`` with ``platforms=[platform]``: JAX lowers for TPU and GPU on a CPU
host. Nothing is compiled or run: the lowering proves the program is well-formed for the
target and which kernels it holds, not that it is fast or that XLA's backend compiles it.

cuDNN is the exception: JAX traces a cuDNN attention call only where cuDNN is loaded, so on a
machine without it a step that would run cuDNN on a GPU cannot be lowered (``CannotLower``,
naming the fallback); ``cudnn=False`` lowers what a GPU without cuDNN runs instead.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax import export

from lrm import mixers
from lrm.mixers import attention
from lrm.run import Run
from lrm.train import runtime

PLATFORMS = ("tpu", "cuda", "rocm", "cpu")  # jax.export's platform names
GPUS = ("cuda", "rocm")
MOSAIC = "tpu_custom_call"  # a Pallas TPU kernel (splash attention) in the lowered module
CUDNN = "__cudnn$fmha"  # cuDNN's fused attention custom calls start with this


class CannotLower(ValueError):
  """The step cannot be lowered for this platform on this machine (one line)."""


@dataclasses.dataclass
class Exported:
  """A train step lowered for ``platform``: its kernels, module and timings."""

  platform: str
  dtype: str
  layers: list[tuple[str, str]]  # (mixer name, impl) per layer
  exported: export.Exported
  seconds: float  # trace + lower + export

  @property
  def impls(self) -> list[str]:
    return [impl for _, impl in self.layers]

  @property
  def text(self) -> str:
    """The StableHLO module as text."""
    return self.exported.mlir_module()

  @property
  def stablehlo_bytes(self) -> int:
    """Size of the serialized StableHLO (MLIR bytecode) that a TPU or GPU host would load."""
    return len(self.exported.mlir_module_serialized)

  def kernel_calls(self, target: str) -> int:
    """Custom calls whose target starts with ``target`` executed per step (``kernel_calls``)."""
    return kernel_calls(self.text, target)


def kernel_calls(text: str, target: str) -> int:
  """How many custom calls to ``target*`` one run of ``@main`` executes: the module's private
  functions are shared by every call site (two layers with the same kernel call one function
  twice), so counts follow the call graph instead of the text."""
  bodies: dict[str, str] = {}
  for block in re.split(r"\n\s*func\.func ", text)[1:]:
    name = re.match(r"(?:public |private )?@([\w$.-]+)", block)
    if name:
      bodies[name.group(1)] = block
  pattern = re.compile(r"custom_call @" + re.escape(target))
  memo: dict[str, int] = {}

  def count(name: str) -> int:
    if name not in memo:
      memo[name] = 0  # no recursion in StableHLO; guards against a malformed module
      body = bodies.get(name, "")
      callees = re.findall(r"(?<![\w.])(?:func\.)?call @([\w$.-]+)\(", body)
      memo[name] = len(pattern.findall(body)) + sum(count(c) for c in callees)
    return memo[name]

  return count("main")


def cudnn_here() -> bool:
  """Whether JAX can trace cuDNN attention on this machine (a GPU with cuDNN loaded)."""
  return attention.cudnn_supports("bfloat16", 64, True, None, 256)


def batch_shapes(run: Run) -> tuple[dict[str, np.ndarray], dict[str, jax.ShapeDtypeStruct]]:
  """One training batch of the run (host arrays) and its shapes, split over the data axis as
  the trainer places it."""
  batch = next(iter(run.task.dataset("train").train_batches(run.config.train.batch_size, seed=0)))
  sh = runtime.batch_sharding(run.mesh)
  return batch, {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh) for k, v in batch.items()}


def target_for(run: Run, platform: str, *, cudnn: bool = True) -> mixers.Target:
  """The target to lower ``run``'s step for on this machine; raises ``CannotLower`` if that
  step runs cuDNN on a GPU (``cudnn=True``: one with cuDNN) and cuDNN is not here."""
  if platform not in PLATFORMS:
    raise ValueError(f"unknown platform '{platform}'; choose one of {', '.join(PLATFORMS)}")
  if platform not in GPUS:
    return mixers.Target(platform)
  if cudnn and cudnn_here():
    return mixers.Target(platform)  # on a GPU: JAX answers for its own cuDNN
  wanted = layers(run, mixers.Target(platform, cudnn=cudnn))
  fused = [f"{i} ({name})" for i, (name, impl) in enumerate(wanted) if impl == "cudnn"]
  if not fused:
    return mixers.Target(platform, cudnn=cudnn)
  fallback = ", ".join(impl for _, impl in layers(run, mixers.Target(platform, cudnn=False)))
  layer = "layer {} runs" if len(fused) == 1 else "layers {} run"
  how = (
    f"a GPU without cuDNN runs [{fallback}]: lower that with --nocudnn"
    if "cudnn" not in fallback
    else f"a layer asks impl='cudnn' explicitly, which has no fallback (without cuDNN: "
    f"[{fallback}]); set it to 'auto' or 'xla'"
  )
  raise CannotLower(
    f"cannot lower for {platform} here: {layer.format(', '.join(fused))} cuDNN attention on a "
    f"GPU with cuDNN (in {run.config.train.dtype}), and JAX traces cuDNN only where it is "
    f"loaded (not on this machine); {how}"
  )


def layers(run: Run, target: mixers.Target) -> list[tuple[str, str]]:
  """``(mixer name, impl)`` of each layer when traced for ``target``."""
  with mixers.for_platform(target):
    impls = run.impls()
  names = [m.mixer_name() for m in run.model.encoder.mixer_list()]
  return list(zip(names, impls, strict=True))


def lower_train_step(run: Run, platform: str, *, cudnn: bool = True) -> Exported:
  """``run``'s training step (its dtype, sharding and optimizer) exported for ``platform``."""
  target = target_for(run, platform, cudnn=cudnn)
  start = time.perf_counter()
  steps = run.make_steps(target)
  host, batch = batch_shapes(run)
  state = steps.abstract_state(run.build_model, host)
  exported = export.export(steps.train_step, platforms=[platform])(state, batch)
  seconds = time.perf_counter() - start
  return Exported(platform, run.config.train.dtype, layers(run, target), exported, seconds)


def summary(e: Exported, spec: str = "") -> dict[str, Any]:
  """What ``scripts/export_step.py`` prints, as data."""
  return {
    "config": spec,
    "platform": ",".join(e.exported.platforms),
    "dtype": e.dtype,
    "devices": e.exported.nr_devices,
    "layers": [{"mixer": name, "impl": impl} for name, impl in e.layers],
    "mosaic_kernel_calls": e.kernel_calls(MOSAIC),
    "cudnn_calls": e.kernel_calls(CUDNN),
    "stablehlo_bytes": e.stablehlo_bytes,
    "stablehlo_text_bytes": len(e.text.encode()),
    "seconds": round(e.seconds, 2),
  }


def format_summary(s: Mapping[str, Any]) -> str:
  lines = [f"train step of {s['config'] or 'the config'} lowered for {s['platform']}"]
  lines.append(f"  dtype {s['dtype']}, {s['devices']} device(s), {s['seconds']:.2f}s to lower")
  for i, layer in enumerate(s["layers"]):
    lines.append(f"  layer {i}: {layer['mixer']:<14} {layer['impl']}")
  lines.append(
    f"  StableHLO {s['stablehlo_bytes'] / 1024:.1f} KiB bytecode "
    f"({s['stablehlo_text_bytes'] / 1024:.1f} KiB text); per step: "
    f"{s['mosaic_kernel_calls']} Mosaic kernel calls, {s['cudnn_calls']} cuDNN calls"
  )
  return "\n".join(lines)
