"""``linear_attention`` (Based's linear attention): the feature map's identity, the chunked
kernel against the dense oracle (forward and gradients, odd lengths over several chunks,
padding, both directions), exact causality, decoding, a constant cache and a ``based`` stack
through the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mixer_checks as checks
import numpy as np
import pytest
from flax import nnx
from test_hybrids import recall_config

from lrm import mixers
from lrm.mixers import linear_attention as la
from lrm.mixers import presets
from lrm.train import loop

D, B, M = 16, 2, 4
TOL = checks.TOL

pytestmark = pytest.mark.usefixtures("fast_compile")  # most XLA passes off: compiles faster


def build(causal: bool, impl: str = "auto", seed: int = 0, **opts) -> la.LinearAttention:
  spec = {"name": "linear_attention", "num_heads": 2, "feature_dim": M, "impl": impl, **opts}
  m = mixers.build(spec, dim=D, causal=causal, rngs=nnx.Rngs(seed), layer_idx=0)
  m.eval()
  return m


def inputs(length: int, seed: int = 0, batch: int = B) -> jax.Array:
  return checks.inputs(length, D, seed, batch)


@pytest.mark.parametrize("m", [1, 3, 16])
def test_feature_map_gives_the_second_order_taylor_kernel(m):
  """phi(q) . phi(k) = 1 + s + s^2 / 2 with s = q . k / sqrt(d'), and F = 1 + d' + d'^2."""
  q, k = jax.random.normal(jax.random.key(m), (2, 7, m))
  fq, fk = la.feature_map(q), la.feature_map(k)
  assert fq.shape == (7, la.features(m)) == (7, 1 + m + m * m)
  s = jnp.sum(q * k, -1) / np.sqrt(m)
  np.testing.assert_allclose(jnp.sum(fq * fk, -1), 1 + s + s**2 / 2, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(la.taylor_kernel(s), 1 + s + s**2 / 2)
  assert bool(jnp.all(la.taylor_kernel(jnp.linspace(-50, 50, 1001)) >= 0.5))  # ((s+1)^2+1)/2


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [1, 6, 33, 37])
def test_chunked_equals_the_dense_oracle(causal, length):
  """Forward and gradients (parameters and input), padded and not, same weights; chunks of 8
  tokens, so 33 and 37 run over 5 chunks with a ragged tail."""
  fast, oracle = build(causal, "chunked", chunk_size=8), build(causal, "dense", chunk_size=8)
  checks.assert_kernels_agree(fast, oracle, inputs(length))


def test_kernels_normalise_like_based():
  """A row of the output is the kernel-weighted mean of the values it sees: all-equal values
  come out unchanged, and the first causal output is its own value (up to EPS)."""
  q, k = jax.random.normal(jax.random.key(1), (2, 1, 2, 11, M))
  valid = jnp.ones((1, 11), bool)

  @jax.jit
  def outputs(v):
    return (
      la.dense_linear_attention(q, k, v, valid, True),
      la.chunked_linear_attention(q, k, v, valid, 4),
      la.global_linear_attention(q, k, v, valid),
    )

  for y in outputs(jnp.full((1, 2, 11, 3), 2.5)):
    np.testing.assert_allclose(y, 2.5, rtol=1e-5)
  w = jax.random.normal(jax.random.key(2), (1, 2, 11, 3))
  np.testing.assert_allclose(outputs(w)[1][:, :, 0], w[:, :, 0], rtol=1e-5)


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_causality_is_exact_for_every_pair(impl):
  """d out_i / d x_j is exactly 0 for every j > i and not 0 for j <= i (bidirectional: never
  0); chunks of 3 tokens, so pairs inside a chunk and across chunks are both covered."""
  checks.assert_exact_causality(lambda causal: build(causal, impl, chunk_size=3), 10, D)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_padding_never_enters_either_direction(causal, impl):
  """A padded row gives the outputs of its real prefix alone, whatever the padding holds (the
  bidirectional sum covers every real token, no padded one); padded outputs and all gradients
  are finite, also for a row that is padding from its first token."""
  checks.assert_padding_never_enters(build(causal, impl, chunk_size=4), 13, 7, D)


def test_contract_field_impl_and_params():
  causal, both = build(True), build(False)
  assert causal.receptive_field() == (mixers.base.UNBOUNDED, 0) and both.receptive_field() is None
  for platform in ("cpu", "tpu", "cuda"):
    with mixers.for_platform(platform):
      assert causal.impl == "chunked" and both.impl == "chunked"
  assert build(True, "dense").impl == "dense"
  m = mixers.build({"name": "linear_attention"}, dim=256, causal=True, rngs=nnx.Rngs(0))
  assert (m.num_heads, m.feature_dim, m.head_dim) == (4, 16, 64)  # Based's d' = 16
  assert m.num_params() == 2 * 256 * 4 * 16 + 2 * 256 * 256  # q, k, v, out; no biases
  with pytest.raises(ValueError, match="feature_dim"):
    build(True, feature_dim=0)


def test_flops_follow_the_kernel():
  causal, both = build(True, chunk_size=64), build(False)
  L = 4096
  assert causal.flops(L, impl="dense") > 10 * causal.flops(L)  # L^2 F against L (T + F H)
  assert causal.flops(2 * L) == pytest.approx(2 * causal.flops(L), rel=0.01)  # linear in L
  assert both.flops(2 * L) == pytest.approx(2 * both.flops(L), rel=1e-6)
  assert causal.algorithmic_flops(L) == both.algorithmic_flops(L) < causal.flops(L)


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_decoding_equals_the_parallel_forward_at_every_position(impl):
  checks.assert_decoding_equals_forward(build(True, impl, chunk_size=4), (7, 1, 12), D)


def test_cache_is_the_state_whatever_max_len():
  """S [B, N, F, H] and z [B, N, F] in float32: N F (H + 1) floats per sequence."""
  m = build(True)
  F, N, H = la.features(M), 2, D // 2
  size = m.cache_bytes(B, 64)
  assert size == m.cache_bytes(B, 1 << 20) == B * N * F * (H + 1) * 4
  cache = m.init_cache(B, 64)
  assert cache["s"].shape == (B, N, F, H) and cache["z"].shape == (B, N, F)
  with pytest.raises(mixers.DecodeError, match="bidirectional"):
    build(False).init_cache(1, 8)


def test_based_is_a_named_stack():
  """Based's period of five layers: BaseConv, linear attention, sliding window, BaseConv x2."""
  specs = presets.spec("based", window=4, heads=2, causal=True)
  names = ["gated_conv", "linear_attention", "local", "gated_conv", "gated_conv"]
  assert [s["name"] for s in specs] == names and specs[2]["window"] == 4
  assert presets.is_hybrid("based") and presets.windowed("based")
  assert "based" in presets.stacks() and "based" not in presets.names()
  assert not presets.windowed("linear_attention")


def test_based_trains_end_to_end(tmp_path, data_cache):
  cfg = recall_config("mixer=based,size=small")
  assert [s["name"] for s in cfg.model.mixer] == [
    "conv",
    "gated_conv",
    "linear_attention",
    "local",
    "gated_conv",
    "gated_conv",
  ]
  res = loop.run(cfg, tmp_path)
  assert np.isfinite(res["final"]["test"][res["main_metric"]])
