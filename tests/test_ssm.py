"""``ssm`` (Mamba-2's SSD block): the chunked kernel against the sequential oracle (forward and
gradients, odd lengths over several chunks, padding, both directions), raw kernels on cases
computable by hand, exact causality, padding in both directions, decoding, a constant cache,
the initialisation, and a ``samba`` stack through the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mixer_checks as checks
import numpy as np
import pytest
from flax import nnx
from test_hybrids import recall_config

from lrm import mixers
from lrm.mixers import presets, ssm
from lrm.train import loop

D, B = 16, 2
TOL = checks.TOL
CHUNK = 8  # small chunks: the test lengths span one to five of them

pytestmark = pytest.mark.usefixtures("fast_compile")  # most XLA passes off: compiles faster


def build(causal: bool, impl: str = "auto", seed: int = 0, **opts) -> ssm.SSM:
  spec = {"name": "ssm", "num_heads": 2, "state_size": 4, "chunk_size": CHUNK, "impl": impl}
  m = mixers.build({**spec, **opts}, dim=D, causal=causal, rngs=nnx.Rngs(seed), layer_idx=0)
  m.eval()
  return m


def inputs(length: int, seed: int = 0, batch: int = B) -> jax.Array:
  return checks.inputs(length, D, seed, batch)


def raw_inputs(length: int, decays: list[float], state: int = 3, head_dim: int = 2):
  """Kernel inputs with one head per decay ``a`` (log a = log of it; a = 0 gives -inf, kept
  finite)."""
  N = len(decays)
  k = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(k[0], (B, length, N, head_dim))
  log_a = jnp.broadcast_to(jnp.log(jnp.maximum(jnp.array(decays), 1e-30)), (B, length, N))
  b = jax.random.normal(k[1], (B, length, state))
  c = jax.random.normal(k[2], (B, length, state))
  return x, log_a, b, c


@pytest.mark.parametrize("kernel", ["scan", "chunked"])
def test_kernels_on_hand_computable_cases(kernel):
  """a = 0: y_t = (c_t . b_t) x_t; a = 1: y_t = c_t . sum_{s <= t} b_s x_s (a running sum);
  over an odd length of several chunks; the last state is that sum."""
  L = 37
  x, log_a, b, c = raw_inputs(L, [0.0, 1.0])
  run = ssm.scan_ssd if kernel == "scan" else lambda *a: ssm.chunked_ssd(*a, chunk=CHUNK)
  y, h = run(x, log_a, b, c)
  cb = jnp.einsum("BLM,BLM->BL", c, b)
  np.testing.assert_allclose(y[:, :, 0], cb[..., None] * x[:, :, 0], **TOL)
  sums = jnp.cumsum(x[:, :, 1, :, None] * b[:, :, None, :], axis=1)  # [B, L, H, M]
  np.testing.assert_allclose(y[:, :, 1], jnp.einsum("BLHM,BLM->BLH", sums, c), atol=1e-4)
  np.testing.assert_allclose(h[:, 1], sums[:, -1], atol=1e-4)
  np.testing.assert_allclose(h[:, 0], x[:, -1, 0, :, None] * b[:, -1, None, :], **TOL)


@pytest.mark.parametrize("length", [1, 5, 8, 37, 64])
def test_chunked_kernel_equals_the_scan_on_raw_decays(length):
  """Decays from 0 to 1, one per head; lengths shorter than, equal to and odd past a chunk."""
  x, log_a, b, c = raw_inputs(length, [0.0, 0.3, 0.9, 0.999, 1.0])
  want, want_h = ssm.scan_ssd(x, log_a, b, c)
  got, got_h = ssm.chunked_ssd(x, log_a, b, c, chunk=CHUNK)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(got_h, want_h, atol=1e-4, rtol=1e-5)


def test_segsum_is_the_sum_strictly_after_s_up_to_t():
  x = jnp.array([1.0, 2.0, 4.0, 8.0])
  want = np.array([[0, 0, 0, 0], [2, 0, 0, 0], [6, 4, 0, 0], [14, 12, 8, 0]], np.float32)
  np.testing.assert_array_equal(np.tril(ssm.segsum(x)), want)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [1, 6, 33, 37])  # 37: five chunks of 8, the last odd
def test_chunked_kernel_equals_the_sequential_oracle(causal, length):
  """Forward and gradients (parameters and input), padded and not, same weights."""
  checks.assert_kernels_agree(build(causal, "chunked"), build(causal, "scan"), inputs(length))


@pytest.mark.parametrize("impl", ["scan", "chunked"])
def test_causality_is_exact_for_every_pair(impl):
  """d out_i / d x_j is exactly 0 for every j > i and not 0 for j <= i (bidirectional: never
  0); 11 tokens cross a chunk boundary."""
  checks.assert_exact_causality(lambda causal: build(causal, impl), 11, D)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("impl", ["scan", "chunked"])
def test_padding_never_enters_either_state(causal, impl):
  """A padded row gives the outputs of its real prefix alone, whatever the padding holds (the
  reverse pass starts on the padding); its padded outputs and all gradients are finite."""
  m, L, n = build(causal, impl), 21, 11
  x = inputs(L)
  mask = jnp.broadcast_to(jnp.arange(L) < n, (B, L))
  noisy = x.at[:, n:].set(1e3 * jax.random.normal(jax.random.key(3), (B, L - n, D)))

  @nnx.jit
  def run(m, noisy, x):  # one program: eager op-by-op scans are slow
    grads = nnx.grad(lambda m, x: jnp.sum(m(x, mask) ** 2), argnums=(0, 1))(m, noisy)
    return m(noisy, mask), m(x[:, :n]), m.states(noisy, mask)[2], m.states(x[:, :n])[2], grads

  y, want, h, want_h, grads = run(m, noisy, x)
  np.testing.assert_allclose(y[:, :n], want, **TOL)
  assert bool(jnp.all(jnp.isfinite(y)))
  if causal:  # the last real state is the state after the padding
    np.testing.assert_allclose(h, want_h, **TOL)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_initialisation_follows_mamba2():
  """dt = softplus(dt_bias) log-uniform in [1e-3, 1e-1]; -A = exp(A_log) in [1, 16]; D = 1; a
  4-tap conv over x, B and C; 64-channel heads by default; the bidirectional block has a second
  SSM with its own weights."""
  m = mixers.build({"name": "ssm"}, dim=256, causal=False, rngs=nnx.Rngs(0))
  assert (m.width, m.num_heads, m.head_dim, m.state_size) == (512, 8, 64, 64)
  big = mixers.build({"name": "ssm", "expand": 8}, dim=256, causal=True, rngs=nnx.Rngs(0))
  dt = np.asarray(jax.nn.softplus(big.forward_branch.dt_bias[...]))  # 32 heads
  assert 1e-3 <= dt.min() and dt.max() <= 1e-1
  log_dt = np.log10(np.asarray(jax.nn.softplus(ssm.dt_bias_init(jax.random.key(1), (10_000,)))))
  np.testing.assert_allclose(
    np.quantile(log_dt, [0.0, 0.25, 0.5, 0.75, 1.0]),  # log-uniform
    [-3.0, -2.5, -2.0, -1.5, -1.0],
    atol=0.03,
  )
  A = np.exp(np.asarray(big.forward_branch.a_log[...]))
  assert 1.0 <= A.min() and A.max() <= 16.0 and 4.0 < A.mean() < 12.0
  br = m.forward_branch
  assert np.all(np.asarray(br.skip[...]) == 1.0) and br.conv.shape == (4, 512 + 2 * 64)
  assert np.abs(np.asarray(br.conv[...])).max() <= 0.5  # +-1/sqrt(4)
  assert m.reverse_branch is not None and not np.array_equal(
    m.reverse_branch.a_log[...], br.a_log[...]
  )
  causal = build(True)
  assert causal.reverse_branch is None and causal.receptive_field() == (mixers.base.UNBOUNDED, 0)
  assert build(False).receptive_field() is None
  with pytest.raises(ValueError, match="not divisible by num_heads=3"):
    build(True, num_heads=3)


def test_auto_runs_the_chunked_kernel_on_every_platform():
  m = build(True)
  for platform in ("cpu", "tpu", "cuda"):
    with mixers.for_platform(platform):
      assert m.impl == "chunked"
  assert build(True, "scan").impl == "scan"


def test_bfloat16_inputs_give_bfloat16_outputs_near_float32():
  m, x = build(True), inputs(19)
  y = m(x.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), m(x), atol=0.1, rtol=0.1)


@pytest.mark.parametrize("impl", ["scan", "chunked"])
def test_decoding_equals_the_parallel_forward_at_every_position(impl):
  checks.assert_decoding_equals_forward(build(True, impl), (11, 1, 2), D)  # prompts < and > K - 1


def test_cache_is_the_conv_window_and_the_state_whatever_max_len():
  m = build(True, state_size=5)
  E, M = 2 * D, 5
  size = m.cache_bytes(B, 64)
  assert size == m.cache_bytes(B, 1 << 20) == B * (3 * (E + 2 * M) + E * M) * 4  # fp32
  with pytest.raises(mixers.DecodeError, match="bidirectional"):
    build(False).init_cache(1, 8)


def test_flops_count_each_direction_and_the_kernel():
  causal, both = build(True), build(False)
  assert both.flops(512) > causal.flops(512)
  assert causal.flops(512, impl="chunked") != causal.algorithmic_flops(512)
  assert causal.algorithmic_flops(512) == causal.flops(512, impl="scan")
  assert causal.flops(1024) == pytest.approx(2 * causal.flops(512), rel=1e-6)  # linear in L
  x = inputs(512, batch=1)
  for impl in ("scan", "chunked"):  # XLA's count of the forward, within a factor of 2
    m = build(True, impl)
    g, s = nnx.split(m)
    counted = jax.jit(lambda s, x, g=g: nnx.merge(g, s)(x)).lower(s, x).cost_analysis()["flops"]
    assert 0.5 < m.flops(512) / counted < 2.0, impl


def test_samba_is_a_named_stack():
  specs = presets.spec("samba", window=4, heads=2, causal=True)
  assert [s["name"] for s in specs] == ["ssm", "local"] and specs[1]["window"] == 4
  assert specs[0]["num_heads"] == 2
  assert presets.is_hybrid("samba") and presets.windowed("samba")
  assert presets.parts("samba+global") == ["ssm", "local", "global"]
  assert "samba" in presets.stacks() and "samba" not in presets.names()
  assert "ssm" in presets.names() and not presets.windowed("ssm")


def test_samba_trains_end_to_end(tmp_path, data_cache):
  cfg = recall_config("mixer=samba,size=small")
  assert [s["name"] for s in cfg.model.mixer] == ["conv", "ssm", "local"]
  res = loop.run(cfg, tmp_path)
  assert np.isfinite(res["final"]["test"][res["main_metric"]])
