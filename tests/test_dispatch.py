"""The accelerator fast paths behind ``impl="auto"``: the decision for each backend name, and
every path that can run here (XLA, the blocked kernel, Pallas splash in interpret mode)
against the dense oracle, forward and gradients, with padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_attention import build, fwd_and_grads, normal

from lrm.mixers import dispatch

BF16, F32 = jnp.bfloat16, jnp.float32


def decide(backend, dtype=BF16, *, window=None, causal=False, cudnn=True, splash=True):
  return dispatch.choose(
    backend,
    fallback="xla" if window is None else "blocked",
    dtype=dtype,
    causal=causal,
    window=window,
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


def test_mixers_resolve_auto_through_the_backend(monkeypatch):
  monkeypatch.setattr(dispatch, "cudnn_supports", lambda *a: True)
  glob, causal_local = build({"name": "global"}, False), build({"name": "local"}, True)
  local, with_globals = (
    build({"name": "local"}, False),
    build({"name": "local", "global_tokens": 2}, False),
  )
  assert (glob.impl, local.impl) == ("xla", "blocked")  # built on CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert dispatch.impl_of(glob, BF16, 1024) == "cudnn"
  assert dispatch.impl_of(glob, F32, 1024) == "xla"
  assert dispatch.impl_of(causal_local, BF16, 1024) == "cudnn"
  assert dispatch.impl_of(local, BF16, 1024) == "blocked"
  assert dispatch.impl_of(with_globals, BF16, 1024) == "blocked"  # a pattern only blocked has
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert dispatch.impl_of(local, F32, 1024) == "splash"
  assert dispatch.impl_of(build({"name": "local", "impl": "dense"}, False), F32, 64) == "dense"
  assert dispatch.impl_of(build({"name": "conv"}, False), F32, 64) == "direct"  # not attention
  with pytest.raises(ValueError, match="has no global tokens"):
    build({"name": "local", "global_tokens": 2, "impl": "splash"}, False)


def test_cudnn_is_not_offered_without_cudnn():
  assert not dispatch.cudnn_supports("bfloat16", 64, False, None, 256)  # CPU: not detected


CASES = {  # spec, L: lengths that are not multiples of the splash tile (128)
  "global": ({"name": "global"}, 150),
  "local_w5": ({"name": "local", "window": 5}, 141),
  "local_rot": ({"name": "local", "window": 16, "rotary": True}, 130),
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
  assert Run(c).impls() == ["xla", "blocked", "direct"]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(dispatch, "cudnn_supports", lambda *a: True)
  assert Run(c).impls() == ["xla", "blocked", "direct"]  # float32: cuDNN does not take it
  c.train.dtype = "bfloat16"
  assert Run(c).impls() == ["cudnn", "cudnn", "direct"]
