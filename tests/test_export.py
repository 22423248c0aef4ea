"""Proven to lower for TPU and GPU on a CPU host: the real train step (forward, backward,
optimizer update, the run's sharding) of every registered preset and the named hybrid stacks,
exported by ``lrm.train.export`` for ``tpu`` and ``cuda``; the Mosaic (splash) kernel sits in
the TPU module exactly where ``local``/``global`` choose it; the choice of attention kernel per
(platform, dtype, causal, window, head dim); ``scripts/export_step.py``'s output and refusals.

Tiny models (width 32, 2 heads, 32 tokens, bfloat16): each lowering takes about a second.
"""

from __future__ import annotations

import importlib.util
import json

import jax
import jax.numpy as jnp
import pytest
from conftest import REPO, script
from flax import nnx
from test_hybrids import HYBRIDS

from lrm import mixers
from lrm.config import set_mixer
from lrm.mixers import attention, presets
from lrm.run import Run
from lrm.train import export

BF16, F32 = jnp.bfloat16, jnp.float32
MOSAIC_PER_LAYER = 3  # splash forward, and its backward's dq and dkv kernels
ATTENTION = {"local", "global"}  # the mixers with a fused path (attention_impl)


def tiny_run(tiny_config, stack: str, *, task: str = "recall", dtype: str = "bfloat16") -> Run:
  """The tiny config (recall: causal; listops: bidirectional) with preset stack ``stack``."""
  spec = importlib.util.spec_from_file_location("tiny_export", tiny_config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"task={task}")
  specs = presets.spec_list(stack, window=4, heads=2, block=8, causal=task == "recall")
  set_mixer(c.model, specs)
  c.model.depth = len(specs)
  c.train.dtype = dtype
  return Run(c)


# ---- the train step of every preset and hybrid stack lowers -------------------------------------
@pytest.mark.parametrize("name", presets.names())
def test_every_preset_lowers_for_tpu_with_splash_exactly_where_chosen(
  name, tiny_config, data_cache
):
  run = tiny_run(tiny_config, name)
  e = export.lower_train_step(run, "tpu")
  assert e.exported.platforms == ("tpu",)
  check_tpu_kernels(run, e)
  assert e.kernel_calls(export.CUDNN) == 0 and e.stablehlo_bytes > 10_000
  assert all("xbf16>" in line for line in mosaic_lines(e))  # the step's dtype reaches them


def check_tpu_kernels(run: Run, e: export.Exported) -> None:
  """Each layer got its TPU choice, splash exactly for local/global without global tokens,
  and the module holds the Mosaic kernel exactly that often."""
  layers = run.model.encoder.mixer_list()
  with mixers.for_platform("tpu"):
    assert e.impls == [mixers.impl_of(m, BF16, 32) for m in layers]
  fused = [m.mixer_name() in ATTENTION and not getattr(m, "global_tokens", 0) for m in layers]
  assert [impl == "splash" for impl in e.impls] == fused
  assert e.kernel_calls(export.MOSAIC) == MOSAIC_PER_LAYER * sum(fused)


def mosaic_lines(e: export.Exported) -> list[str]:
  """The lines of the module's Mosaic calls (operand and result types at their end)."""
  return [line for line in e.text.splitlines() if f"custom_call @{export.MOSAIC}" in line]


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_lowers_for_cuda_as_a_gpu_without_cudnn(name, tiny_config, data_cache):
  run = tiny_run(tiny_config, name)
  e = export.lower_train_step(run, "cuda", cudnn=False)
  assert e.exported.platforms == ("cuda",)
  assert "cudnn" not in e.impls and "splash" not in e.impls
  assert e.kernel_calls(export.MOSAIC) == 0 and e.kernel_calls(export.CUDNN) == 0


# the hybrids the trainer's tests name, and the stacks registered under a name (where the
# registry has them: ``presets.stacks``)
STACKS = [*HYBRIDS, *sorted(getattr(presets, "stacks", dict)())]


@pytest.mark.parametrize("stack", STACKS)
def test_hybrid_stacks_lower_for_tpu(stack, tiny_config, data_cache):
  run = tiny_run(tiny_config, stack)
  check_tpu_kernels(run, export.lower_train_step(run, "tpu"))


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_bidirectional_attention_lowers_for_tpu_in_float32_too(name, tiny_config, data_cache):
  run = tiny_run(tiny_config, name, task="listops", dtype="float32")
  e = export.lower_train_step(run, "tpu")
  assert e.impls == ["splash"]  # splash takes float32 (cuDNN does not)
  assert e.kernel_calls(export.MOSAIC) == MOSAIC_PER_LAYER
  assert mosaic_lines(e) and all("xbf16>" not in line for line in mosaic_lines(e))


def test_cuda_with_cudnn_is_refused_here_naming_the_fallback(tiny_config, data_cache):
  if export.cudnn_here():
    pytest.skip("this machine has cuDNN: the step lowers with it")
  run = tiny_run(tiny_config, "conv+conv+global")
  with pytest.raises(
    export.CannotLower, match=r"layer 2 \(global\) runs cuDNN.*\[direct, direct, xla\]"
  ):
    export.lower_train_step(run, "cuda")
  f32 = tiny_run(tiny_config, "conv+conv+global", dtype="float32")  # cuDNN takes no float32
  assert export.lower_train_step(f32, "cuda").impls == ["direct", "direct", "xla"]


def test_the_target_decides_in_one_process_tpu_cpu_tpu(tiny_config, data_cache):
  """Lowering for one platform leaves no trace in the next (no cached choice)."""
  run = tiny_run(tiny_config, "local")
  counts = [export.lower_train_step(run, p).kernel_calls(export.MOSAIC) for p in ("tpu", "cpu")]
  assert counts == [MOSAIC_PER_LAYER, 0]
  assert run.impls() == ["blocked"]  # outside any for_platform: this machine (CPU)
  assert export.lower_train_step(run, "tpu").kernel_calls(export.MOSAIC) == MOSAIC_PER_LAYER


# ---- the choice: one function, per (platform, dtype, causal, window, head dim) -------------------
def cudnn_like(dtype, head_dim, causal, window, length):
  """A stand-in for a GPU with cuDNN: head dims up to 128 in steps of 8 (as cuDNN's flash)."""
  return head_dim % 8 == 0 and head_dim <= 128


def choose(platform, dtype, causal, window, head_dim):
  return attention.attention_impl(
    "auto",
    platform=platform,
    dtype=dtype,
    causal=causal,
    window=window,
    global_tokens=0,
    head_dim=head_dim,
    length=512,
    cudnn_ok=cudnn_like,
    splash_ok=lambda: True,
  )


# (platform, dtype, causal, window, head dim) -> kernel
CHOICES = {
  ("cpu", BF16, False, None, 64): "xla",
  ("cpu", BF16, True, 16, 64): "blocked",
  ("cpu", F32, True, None, 64): "xla",
  ("tpu", BF16, False, None, 64): "splash",
  ("tpu", F32, True, None, 64): "splash",
  ("tpu", BF16, False, 16, 64): "splash",
  ("tpu", BF16, True, 16, 20): "splash",  # any head dim: padded to 128 lanes
  ("cuda", BF16, False, None, 64): "cudnn",
  ("cuda", BF16, True, None, 128): "cudnn",
  ("cuda", BF16, True, None, 20): "xla",  # a head dim cuDNN refuses
  ("cuda", F32, True, None, 64): "xla",  # cuDNN takes bfloat16 / float16 only
  ("cuda", BF16, True, 16, 64): "cudnn",  # a causal window: cuDNN's left window
  ("cuda", BF16, False, 16, 64): "blocked",  # bidirectional window: not cuDNN's
  ("cuda", F32, True, 16, 64): "blocked",
  ("gpu", jnp.float16, True, 16, 32): "cudnn",  # jax.default_backend()'s name for it
  ("rocm", BF16, False, None, 64): "cudnn",  # asked of JAX, which refuses without cuDNN
}


@pytest.mark.parametrize("case", list(CHOICES), ids=lambda c: "-".join(map(str, c)))
def test_the_choice_per_platform_dtype_causal_window_head_dim(case):
  platform, dtype, causal, window, head_dim = case
  assert choose(platform, dtype, causal, window, head_dim) == CHOICES[case]


def rngs():
  return nnx.Rngs(0)


def test_mixers_follow_the_target_and_its_cudnn():
  spec = {"name": "local", "window": 4, "num_heads": 2}
  local = mixers.build(spec, dim=32, causal=True, rngs=rngs())
  glob = mixers.build({"name": "global", "num_heads": 2}, dim=32, causal=False, rngs=rngs())
  conv = mixers.build({"name": "conv", "kernel_size": 33}, dim=32, causal=True, rngs=rngs())
  assert mixers.target() == mixers.Target(jax.default_backend())
  with mixers.for_platform("tpu"):
    assert [mixers.impl_of(m, BF16, 32) for m in (local, glob, conv)] == [
      "splash", "splash", "toeplitz"]  # fmt: skip
  with mixers.for_platform("cuda", cudnn=True):
    assert [mixers.impl_of(m, BF16, 32) for m in (local, glob)] == ["cudnn", "cudnn"]
    assert mixers.impl_of(glob, F32, 32) == "xla"
  with mixers.for_platform("cuda", cudnn=False):
    assert [mixers.impl_of(m, BF16, 32) for m in (local, glob, conv)] == ["blocked", "xla", "fft"]
  with pytest.raises(ValueError, match="unknown platform 'tpuv5'"):
    with mixers.for_platform("tpuv5"):
      pass


def test_splash_is_mosaic_for_tpu_and_interpreted_only_when_asked_elsewhere():
  m = mixers.build(
    {"name": "global", "num_heads": 2, "impl": "splash"}, dim=32, causal=True, rngs=rngs()
  )
  x = jax.ShapeDtypeStruct((2, 40, 32), BF16)
  here = jax.jit(lambda x: m(x)).trace(x).lower(lowering_platforms=("cpu",)).as_text()
  assert export.MOSAIC not in here  # impl="splash" on CPU: Pallas' interpreter (the tests)
  with mixers.for_platform("tpu"):
    tpu = jax.jit(lambda x: m(x)).trace(x).lower(lowering_platforms=("tpu",)).as_text()
  assert export.kernel_calls(tpu, export.MOSAIC) == 1


def test_kernel_calls_follow_the_call_graph():
  text = """module {
  func.func public @main(%a: tensor<f32>) -> tensor<f32> {
    %0 = call @k(%a) : (tensor<f32>) -> tensor<f32>
    %1 = func.call @k(%0) : (tensor<f32>) -> tensor<f32>
    %2 = stablehlo.custom_call @tpu_custom_call(%1) : (tensor<f32>) -> tensor<f32>
    return %2 : tensor<f32>
  }
  func.func private @k(%a: tensor<f32>) -> tensor<f32> {
    %0 = stablehlo.custom_call @tpu_custom_call(%a) : (tensor<f32>) -> tensor<f32>
    %1 = stablehlo.custom_call @__cudnn$fmhaSoftmax(%0) : (tensor<f32>) -> tensor<f32>
    return %1 : tensor<f32>
  }
}"""
  assert export.kernel_calls(text, export.MOSAIC) == 3
  assert export.kernel_calls(text, export.CUDNN) == 2


# ---- scripts/export_step.py ------------------------------------------------------------------
def test_export_step_prints_the_kernels_and_refuses_in_one_line(tiny_config, data_cache, capsys):
  main = script("export_step").main
  cfg = f"--config={tiny_config}:mixer=local"
  assert main(["export_step.py", cfg, "--platform=tpu"]) == 0
  out = capsys.readouterr().out
  assert "lowered for tpu" in out and "layer 0: local" in out and "splash" in out
  assert "StableHLO" in out and "3 Mosaic kernel calls" in out
  if not export.cudnn_here():
    assert main(["export_step.py", cfg, "--platform=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[blocked]" in err and "--nocudnn" in err
  assert main(["export_step.py", cfg, "--platform=cuda", "--nocudnn", "--json"]) == 0
  line = capsys.readouterr().out.strip().splitlines()[-1]
  s = json.loads(line)
  assert s["platform"] == "cuda" and s["layers"] == [{"mixer": "local", "impl": "blocked"}]
  assert main(["export_step.py", cfg, "--platform=ipu"]) == 2
  assert "--platform" in capsys.readouterr().err
  assert main(["export_step.py", "--platform=tpu"]) == 2


@pytest.mark.slow
def test_export_keeps_the_runs_sharding_on_8_devices(cli, tiny_config):
  """8 emulated devices: the batch arguments of the TPU module are split over ``data``."""
  code = (
    "import sys\n"
    f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
    "from test_export import tiny_run\n"
    "from lrm.train import export\n"
    f"e = export.lower_train_step(tiny_run({str(tiny_config)!r}, 'local'), 'tpu')\n"
    "main = e.text[e.text.find('func.func public @main'):].split('\\n')[0]\n"
    "print(e.exported.nr_devices, main.count('[{\"data\"}'), e.kernel_calls(export.MOSAIC))\n"
  )
  proc = cli("", devices=8, code=code)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  devices, sharded, mosaic = map(int, out.strip().splitlines()[-1].split())
  assert devices == 8 and sharded == 6 and mosaic == MOSAIC_PER_LAYER  # recall: 6 batch arrays
