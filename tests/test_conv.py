"""The ``conv`` mixer: every path against ``direct`` (and ``direct`` against XLA's conv),
exact receptive fields, causality, padding, FLOPs, parameter counts and the ``auto`` choice."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import mixers
from lrm.mixers import conv

B, D = 2, 8


def build(causal=False, dim=D, **opts):
  return mixers.build(dict(name="conv", **opts), dim=dim, causal=causal, rngs=nnx.Rngs(0))


def abstract(causal=False, dim=D, **opts):
  """The module with shape-only parameters: no init computations to compile."""
  return nnx.eval_shape(lambda: build(causal, dim, **opts))


FAST = {"xla_backend_optimization_level": 0}  # halves compile time, which dominates these tests


def run_jit(fn, m, *args):
  """``fn(m, *args)`` compiled once with ``FAST`` (the module passes as its state)."""
  g, state = nnx.split(m)
  f = jax.jit(lambda state, *args: fn(nnx.merge(g, state), *args))
  return f.lower(state, *args).compile(FAST)(state, *args)


def inputs(L, seed=0, lengths=None):
  # numpy, not jax.random: eager jax ops compile once per new shape, which costs here.
  x = np.random.default_rng(seed).normal(size=(B, L, D)).astype(np.float32)
  lengths = lengths or (L, L - 5)
  mask = np.arange(L)[None] < np.asarray(lengths)[:, None]  # [B, L]; second row padded
  return x, mask


def loss_and_grads(ms, x, mask):
  """Per module: (y, (d loss/dparams, d loss/dx)) with a fixed random cotangent.

  All modules go through one compilation (compile time dominates these tests)."""
  cot = np.random.default_rng(7).normal(size=x.shape).astype(np.float32) * mask[..., None]

  def one(m, x):
    def loss(state, x):
      y = nnx.merge(nnx.graphdef(m), state)(x, mask)
      return jnp.sum(y * cot), y

    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(nnx.state(m), x)
    return y, grads

  return run_jit(lambda ms, x: [one(m, x) for m in ms], ms, x)


def assert_trees_close(a, b, tol):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=tol, rtol=tol)


CASES = [  # (kernel_size, dilation, causal, L, depthwise, gate)
  (4, 1, False, 32, True, False),  # even K, centred
  (5, 2, True, 33, True, True),  # dilation, causal, gated
  (20, 1, False, 17, True, False),  # kernel longer than the sequence
  (4, 2, True, 33, False, True),  # full D x D x K conv (no toeplitz path)
]


@pytest.mark.parametrize("K,dil,causal,L,depthwise,gate", CASES)
def test_paths_match_direct(K, dil, causal, L, depthwise, gate):
  """Forward and gradients (inputs and every parameter) of each path equal ``direct``."""
  opts = dict(kernel_size=K, dilation=dil, depthwise=depthwise, gate=gate)
  impls = ("direct", "fft", "toeplitz") if depthwise else ("direct", "fft")
  ms = [build(causal, impl=impl, **opts) for impl in impls]
  assert tuple(m.impl for m in ms) == impls
  x, mask = inputs(L)
  (y0, (gs0, gx0)), *others = loss_and_grads(ms, x, mask)
  for m, (y1, (gs1, gx1)) in zip(ms[1:], others, strict=True):
    assert_trees_close(nnx.state(ms[0], nnx.Param), nnx.state(m, nnx.Param), 0)
    np.testing.assert_allclose(y1, y0, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(gx1, gx0, atol=2e-5, rtol=2e-5)
    assert_trees_close(gs1, gs0, 5e-5)


@pytest.mark.parametrize("K,dil,causal", [(3, 1, False), (4, 3, True)])
def test_direct_matches_xla_grouped_conv(K, dil, causal):
  """The shift-and-add kernel (and its hand-written VJP) equals XLA's depthwise conv."""
  left, right = conv.conv_offsets(K, dil, causal)
  x, _ = inputs(33)
  w = np.random.default_rng(3).normal(size=(K, D)).astype(np.float32)

  def grouped(x, w):
    return jax.lax.conv_general_dilated(
      x, w[:, None, :], (1,), [(left, right)], rhs_dilation=(dil,),
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=D,
    )  # fmt: skip

  def ours(x, w):
    return conv.depthwise_direct(x, w, left, right, dil)

  cot = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)

  def value_and_grads(f):
    def loss(x, w):
      y = f(x, w)
      return jnp.sum(y * cot), y

    return jax.value_and_grad(loss, (0, 1), has_aux=True)

  (_, y0), g0 = jax.jit(value_and_grads(ours)).lower(x, w).compile(FAST)(x, w)
  (_, y1), g1 = jax.jit(value_and_grads(grouped)).lower(x, w).compile(FAST)(x, w)
  np.testing.assert_allclose(y0, y1, atol=1e-5)
  assert_trees_close(g0, g1, 1e-5)


def expected_support(L, K, dil, causal):
  left, _ = conv.conv_offsets(K, dil, causal)
  E = np.zeros((L, L), bool)
  for i in range(L):
    for k in range(K):
      j = i - left + k * dil
      if 0 <= j < L:
        E[i, j] = True
  return E


@pytest.mark.parametrize(
  "K,dil,causal,impl",
  [(3, 1, False, "direct"), (3, 1, True, "direct"), (4, 2, False, "direct"),
   (3, 2, True, "toeplitz"), (5, 1, False, "fft")],
)  # fmt: skip
def test_receptive_field_is_exact(K, dil, causal, impl):
  """d out_i / d x_j is nonzero exactly on the analytic (dilated) window of output i."""
  L = 17
  m = build(causal, kernel_size=K, dilation=dil, impl=impl, gate=True)
  x, _ = inputs(L)
  jac = run_jit(lambda m, x0: jax.jacrev(lambda x0: m(x0[None])[0].sum(-1))(x0), m, x[0])
  # jac: [L_out, L_in, D]
  mag = np.abs(np.asarray(jac)).max(-1)
  # FFT round-off leaves ~1e-8 outside the window; the other paths give exact zeros.
  support = mag > (1e-5 * mag.max() if impl == "fft" else 0.0)
  np.testing.assert_array_equal(support, expected_support(L, K, dil, causal))
  cols = np.flatnonzero(support[L // 2])  # an interior row: its reach is not clipped
  assert m.receptive_field() == (L // 2 - cols.min(), cols.max() - L // 2)


@pytest.mark.parametrize("impl", ["direct", "fft", "toeplitz"])
def test_causal_and_padding_invariance(impl):
  L = 33
  m = build(True, kernel_size=5, dilation=2, impl=impl, gate=True)
  x, mask = inputs(L)
  t = 20
  x_future = x.copy()
  x_future[:, t + 1 :] = np.random.default_rng(9).normal(size=(B, L - t - 1, D)) * 100
  x_nan = np.where(mask[..., None], x, np.nan).astype(np.float32)

  def run(m):
    return m(x), m(x_future), m(x, mask), m(x_nan, mask)

  y, y_future, y_mask, y_nan = run_jit(run, m)
  # Causality: changing tokens after t leaves outputs <= t unchanged.
  np.testing.assert_allclose(y_future[:, : t + 1], y[:, : t + 1], atol=1e-4)
  # Padding: garbage (even NaN) in padded tokens changes no real output and gives no NaN.
  assert bool(jnp.isfinite(y_nan).all())
  np.testing.assert_allclose(y_nan * mask[..., None], y_mask * mask[..., None], atol=1e-5)


def xla_flops(m, L):
  g, state = nnx.split(m)
  x = jax.ShapeDtypeStruct((1, L, m.dim), jnp.float32)
  return jax.jit(lambda s, x: nnx.merge(g, s)(x)).lower(state, x).compile().cost_analysis()["flops"]


@pytest.mark.parametrize(
  "opts",
  [dict(kernel_size=3), dict(kernel_size=9, dilation=2, gate=True),
   dict(kernel_size=33, impl="toeplitz"), dict(kernel_size=5, depthwise=False)],
)  # fmt: skip
def test_flops_match_xla(opts):
  """Analytic FLOPs within 15% of XLA's count (FFT paths are counted differently: not here)."""
  L = 64
  m = abstract(dim=4 * D, **opts)
  ours, xla = m.flops(L), xla_flops(m, L)
  assert abs(ours - xla) <= 0.15 * xla, (ours, xla)


@pytest.mark.parametrize("depthwise,gate", [(True, False), (True, True), (False, False)])
def test_param_count(depthwise, gate):
  K = 5
  m = abstract(kernel_size=K, depthwise=depthwise, gate=gate)
  expected = (K * D if depthwise else K * D * D) + D
  expected += (D * D + D) * (int(depthwise) + int(gate))
  assert m.num_params() == expected


def test_auto_choice_and_reported_impl():
  assert abstract(kernel_size=3).impl == "direct"
  assert abstract(kernel_size=conv.DIRECT_MAX_TAPS).impl == "direct"
  long = abstract(kernel_size=257)
  assert long.impl == ("toeplitz" if jax.default_backend() == "tpu" else "fft")
  assert long.requested_impl == "auto"
  assert abstract(kernel_size=257, depthwise=False).impl == "direct"
  assert abstract(kernel_size=257, impl="toeplitz").impl == "toeplitz"


@pytest.mark.parametrize(
  "opts,needle",
  [(dict(impl="grouped"), "impl"), (dict(kernel_size=0), "kernel_size"),
   (dict(dilation=0), "dilation"), (dict(impl="toeplitz", depthwise=False), "depthwise")],
)  # fmt: skip
def test_bad_options_fail_clearly(opts, needle):
  with pytest.raises(ValueError, match=needle):
    build(**opts)


@pytest.mark.parametrize("impl", ["direct", "fft", "toeplitz"])
def test_bfloat16_keeps_dtype(impl):
  m = build(kernel_size=7, impl=impl)
  x, mask = inputs(32)
  y, y32 = run_jit(lambda m, x: (m(x.astype(jnp.bfloat16), mask), m(x, mask)), m, x)
  assert y.dtype == jnp.bfloat16 and bool(jnp.isfinite(y.astype(jnp.float32)).all())
  np.testing.assert_allclose(y.astype(jnp.float32), y32, atol=0.1, rtol=0.05)


def test_helpers():
  # next_fast_len: the smallest 2,3,5-smooth number >= n.
  def smooth(k):
    for p in (2, 3, 5):
      while k % p == 0:
        k //= p
    return k == 1

  for n in range(1, 300):
    assert conv.next_fast_len(n) == next(k for k in range(n, 2 * n + 2) if smooth(k))
  # skew: out[t, s] = u[s - t], zero below the diagonal.
  u = jnp.arange(1.0, 5.0)[:, None]  # [U=4, D=1]
  want = np.array([[1, 2, 3, 4], [0, 1, 2, 3], [0, 0, 1, 2]], np.float32)
  np.testing.assert_array_equal(conv.skew(u, 3)[..., 0], want)
  np.testing.assert_array_equal(conv.dilate(jnp.array([1.0, 2.0, 3.0]), 3), [1, 0, 0, 2, 0, 0, 3])


@pytest.mark.parametrize("K,dil,causal,L", [(5, 1, False, 61), (4, 2, True, 50), (3, 1, True, 7)])
def test_overlap_save_fft_matches_direct(K, dil, causal, L):
  """Long sequences go through overlap-save windows; forced here with a tiny chunk."""
  left, right = conv.conv_offsets(K, dil, causal)
  n, step, chunks = conv.fft_plan(L, K, dil, chunk=8)
  assert chunks > 1 or L < 8, (n, step, chunks)
  x, _ = inputs(L)
  w = np.random.default_rng(4).normal(size=(K, D)).astype(np.float32)
  cot = np.random.default_rng(5).normal(size=(B, L, D)).astype(np.float32)

  def loss(f):
    return lambda x, w: jnp.sum(f(x, w) * cot)

  def chunked(x, w):
    return conv.depthwise_fft(x, w, left, right, dil, chunk=8)

  def direct(x, w):
    return conv.depthwise_direct(x, w, left, right, dil)

  np.testing.assert_allclose(chunked(x, w), direct(x, w), atol=2e-4)
  g1 = jax.grad(loss(chunked), argnums=(0, 1))(x, w)
  g0 = jax.grad(loss(direct), argnums=(0, 1))(x, w)
  for a, b in zip(g1, g0, strict=True):
    np.testing.assert_allclose(a, b, atol=5e-4, rtol=1e-4)
