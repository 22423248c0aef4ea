"""The accelerator fast paths behind ``impl="auto"``: the decision for each platform, and
every path that can run here (XLA, the blocked kernel, Pallas splash in interpret mode)
against the dense oracle, forward and gradients, with padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_attention import build, fwd_and_grads, normal

from lrm import mixers
from lrm.mixers import attention

BF16, F32 = jnp.bfloat16, jnp.float32


def decide(backend, dtype=BF16, *, window=None, causal=False, cudnn=True, splash=True, globals_=0):
  return attention.attention_impl(
    "auto",
    platform=backend,
    dtype=dtype,
    causal=causal,
    window=window,
    global_tokens=globals_,
    head_dim=64,
    length=4096,
    cudnn_ok=lambda *a: cudnn,
    splash_ok=lambda: splash,
  )


def test_decision_for_each_backend_name():
  for causal in (False, True):
    assert decide("cpu", causal=causal) == "xla"  # on CPU nothing changes
    assert decide("cpu", causal=causal, window=64) == "blocked"
    assert decide("gpu", causal=causal) == "cudnn"  # cuDNN flash attention
    assert decide("cuda", F32, causal=causal) == "xla"  # cuDNN takes bf16/fp16 only
    assert decide("gpu", causal=causal, cudnn=False) == "xla"  # shape/version refused
    assert decide("tpu", causal=causal) == "splash"
    assert decide("tpu", F32, causal=causal, window=64) == "splash"
    assert decide("tpu", causal=causal, splash=False) == "xla"
    assert decide("tpu", causal=causal, window=64, splash=False) == "blocked"
  assert decide("gpu", window=64, causal=True) == "cudnn"  # its window is left-only:
  assert decide("gpu", window=64, causal=False) == "blocked"  # bidirectional stays blocked
  assert decide("gpu", F32, window=64, causal=True) == "blocked"
  assert decide("rocm", cudnn=True) == "cudnn"  # asked of JAX, which refuses without cuDNN
  assert decide("tpu", window=64, globals_=2) == "blocked"  # a pattern only blocked has
  assert decide("gpu", window=64, causal=True, globals_=2) == "blocked"


def test_mixers_resolve_auto_through_the_backend(monkeypatch):
  monkeypatch.setattr(attention, "cudnn_supports", lambda *a: True)
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # as if built on CPU, anywhere
  glob, causal_local = build({"name": "global"}, False), build({"name": "local"}, True)
  local, with_globals = (
    build({"name": "local"}, False),
    build({"name": "local", "global_tokens": 2}, False),
  )
  assert (glob.impl, local.impl) == ("xla", "blocked")
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert mixers.impl_of(glob, BF16, 1024) == "cudnn"
  assert mixers.impl_of(glob, F32, 1024) == "xla"
  assert mixers.impl_of(causal_local, BF16, 1024) == "cudnn"
  assert mixers.impl_of(local, BF16, 1024) == "blocked"
  assert mixers.impl_of(with_globals, BF16, 1024) == "blocked"  # a pattern only blocked has
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert mixers.impl_of(local, F32, 1024) == "splash"
  assert mixers.impl_of(build({"name": "local", "impl": "dense"}, False), F32, 64) == "dense"
  assert mixers.impl_of(build({"name": "conv"}, False), F32, 64) == "direct"  # not attention
  with pytest.raises(ValueError, match="has no global tokens"):
    build({"name": "local", "global_tokens": 2, "impl": "splash"}, False)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="asks this machine's JAX")
def test_cudnn_is_not_offered_without_cudnn():
  assert not attention.cudnn_supports("bfloat16", 64, False, None, 256)  # CPU: not detected


CASES = {  # spec, L: lengths that are not multiples of the splash tile (128)
  "global": ({"name": "global"}, 150),
  "local_w5": ({"name": "local", "window": 5}, 141),
}


@pytest.mark.parametrize("causal", [False, True], ids=["bi", "causal"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_splash_path_matches_dense_oracle(case, causal):
  """Pallas splash attention (interpret mode off TPU): forward, gradients, padding inert."""
  spec, L = CASES[case]
  fast, oracle = build(spec, causal, impl="splash"), build(spec, causal, impl="dense")
  lengths = np.array([L, L - 40, 0])
  mask = np.arange(L)[None, :] < lengths[:, None]  # [3, L]: full, padded tail, all padding
  x, r = normal(1, 3, L, 16), normal(2, 3, L, 16)
  y1, gp1, gx1 = fwd_and_grads(fast, x, mask, r)
  y2, gp2, gx2 = fwd_and_grads(oracle, x, mask, r)
  np.testing.assert_allclose(y1[mask], y2[mask], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(gx1, gx2, atol=2e-5, rtol=1e-4)
  for a, b in zip(gp1, gp2, strict=True):
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)
  assert np.isfinite(y1).all() and not gx1[~mask].any()


def test_run_names_the_impl_each_layer_runs(tiny_config, data_cache, monkeypatch):
  """What the trainer writes to results.json as ``impl``: one entry per layer."""
  import importlib.util

  from lrm.config import set_mixer
  from lrm.run import Run

  spec = importlib.util.spec_from_file_location("tiny", tiny_config)
  tiny = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tiny)
  c = tiny.get_config("steps=2")  # recall: a causal task
  c.model.depth = 3
  set_mixer(c.model, [{"name": "global"}, {"name": "local", "window": 4}, {"name": "conv"}])
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert Run(c).impls() == ["xla", "blocked", "direct"]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(attention, "cudnn_supports", lambda *a: True)
  assert Run(c).impls() == ["xla", "blocked", "direct"]  # float32: cuDNN does not take it
  c.train.dtype = "bfloat16"
  assert Run(c).impls() == ["cudnn", "cudnn", "direct"]


def compare_cudnn_with_oracle(causal, window, dtype, tol):
  """``attention.fused_attend("cudnn")`` (padding as key lengths, a left window) vs the dense
  oracle: outputs on real rows and gradients w.r.t. q, k, v."""
  from lrm.mixers import masks
  from lrm.mixers.attention import dense_attention

  B, N, L, H = 2, 2, 256, 64
  q, k, v = (jnp.asarray(normal(i, B, N, L, H), dtype) for i in range(3))
  q = q * jnp.asarray(H**-0.5, dtype)
  valid = np.arange(L)[None, :] < np.array([[L], [L - 50]])  # [B, L]
  pattern = masks.causal_mask(L) if window is None else masks.local_mask(L, window, causal=True)
  mask = valid[:, None, None, :] & (pattern if causal else True)
  r = jnp.asarray(normal(4, B, N, L, H) * valid[:, None, :, None])  # real rows only

  def grads(fn):
    def loss(q, k, v):
      o = fn(q, k, v).astype(jnp.float32)
      return jnp.sum(o * r), o

    return jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(q, k, v)

  (_, o1), g1 = grads(
    lambda *a: attention.fused_attend("cudnn", *a, valid, causal=causal, window=window)
  )
  (_, o2), g2 = grads(lambda *a: dense_attention(*a, mask))
  rows = np.broadcast_to(valid[:, None, :], (B, N, L))
  np.testing.assert_allclose(np.asarray(o1)[rows], np.asarray(o2)[rows], atol=tol, rtol=tol)
  for a, b in zip(g1, g2, strict=True):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max())


CUDNN_CASES = [(False, None), (True, None), (True, 16)]


@pytest.mark.parametrize("causal, window", CUDNN_CASES)
def test_cudnn_call_means_the_oracle_pattern(causal, window, monkeypatch):
  """The arguments of the cuDNN call (key lengths, ``local_window_size=(w, 0)``) checked on
  CPU through XLA's implementation of the same call, in float32."""
  real = jax.nn.dot_product_attention
  xla = lambda *a, implementation=None, **kw: real(*a, implementation="xla", **kw)  # noqa: E731
  monkeypatch.setattr(jax.nn, "dot_product_attention", xla)
  compare_cudnn_with_oracle(causal, window, F32, 2e-5)


@pytest.mark.skipif(
  not attention.cudnn_supports("bfloat16", 64, True, 16, 256), reason="needs a GPU with cuDNN"
)
@pytest.mark.parametrize("causal, window", CUDNN_CASES)
def test_cudnn_path_matches_dense_oracle(causal, window):
  """cuDNN flash attention itself (bfloat16) against the dense oracle."""
  compare_cudnn_with_oracle(causal, window, BF16, 3e-2)
