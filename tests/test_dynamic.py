"""``dynamic_conv`` and ``involution``: fast paths against the dense banded oracle, exact
receptive fields, causality, padding, FLOPs, parameter counts and the ``auto`` choice."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import mixers
from lrm.mixers import dynamic

B, D = 2, 16
NAMES = ("dynamic_conv", "involution")


def build(name, causal=False, dim=D, **opts):
  return mixers.build(dict(name=name, **opts), dim=dim, causal=causal, rngs=nnx.Rngs(0))


def abstract(name, causal=False, dim=D, **opts):
  """The module with shape-only parameters: no init computations to compile."""
  return nnx.eval_shape(lambda: build(name, causal, dim, **opts))


FAST = {"xla_backend_optimization_level": 0}  # halves compile time, which dominates these tests


def run_jit(fn, m, *args):
  """``fn(m, *args)`` compiled once with ``FAST`` (the module passes as its state)."""
  g, state = nnx.split(m)
  f = jax.jit(lambda state, *args: fn(nnx.merge(g, state), *args))
  return f.lower(state, *args).compile(FAST)(state, *args)


def inputs(L, seed=0):
  # numpy, not jax.random: eager jax ops compile once per new shape, which costs here.
  x = np.random.default_rng(seed).normal(size=(B, L, D)).astype(np.float32)
  mask = np.arange(L)[None] < np.asarray([L, L - 6])[:, None]  # [B, L]; second row padded
  return x, mask


def outputs_and_grads(ms, x, mask):
  """Per module: (y, (d loss/dparams, d loss/dx)), the loss (and y) on real positions only.

  All modules go through one compilation (compile time dominates these tests)."""
  cot = np.random.default_rng(7).normal(size=x.shape).astype(np.float32) * mask[..., None]

  def one(m, x):
    def loss(state, x):
      y = nnx.merge(nnx.graphdef(m), state)(x, mask)
      return jnp.sum(y * cot), y

    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(nnx.state(m), x)
    return y * mask[..., None], grads

  return run_jit(lambda ms, x: [one(m, x) for m in ms], ms, x)


CASES = [  # (name, causal, kernel_size, L, options); blocks of T=16 tokens in "blocked"
  ("dynamic_conv", False, 4, 33, {}),  # even K, odd L, three blocks
  ("dynamic_conv", True, 20, 17, {}),  # window longer than the sequence
  ("dynamic_conv", True, 5, 21, dict(glu=False)),  # the ablation without the GLU input
  ("involution", True, 3, 32, {}),
  ("involution", False, 20, 33, {}),  # three windows per block
]


@pytest.mark.parametrize("name,causal,K,L,opts", CASES)
def test_fast_paths_match_dense_oracle(name, causal, K, L, opts):
  x, mask = inputs(L)
  impls = ("dense", "unfold", "blocked")
  ms = [build(name, causal, kernel_size=K, impl=impl, **opts) for impl in impls]
  assert [m.impl for m in ms] == ["dense", "unfold", "blocked"]
  (y0, (gs0, gx0)), *fast = outputs_and_grads(ms, x, mask)
  for y1, (gs1, gx1) in fast:
    np.testing.assert_allclose(y1, y0, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(gx1, gx0, atol=2e-5, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(gs1), jax.tree.leaves(gs0), strict=True):
      np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize(
  "name,causal,K,impl",
  [("dynamic_conv", False, 3, "unfold"), ("dynamic_conv", True, 3, "blocked"),
   ("involution", True, 3, "unfold"), ("involution", False, 4, "blocked")],
)  # fmt: skip
def test_receptive_field_is_exact(name, causal, K, impl):
  """d out_i / d x_j is nonzero exactly on the window of output i (K=3: i-1..i+1 or i-2..i)."""
  L = 17
  extra = dict(reduction=1) if name == "involution" else {}  # no all-dead ReLU bottleneck
  m = build(name, causal, kernel_size=K, impl=impl, **extra)
  x, _ = inputs(L)
  jac = run_jit(lambda m, x0: jax.jacrev(lambda x0: m(x0[None])[0].sum(-1))(x0), m, x[0])
  support = np.abs(np.asarray(jac)).max(-1) > 0  # [L_out, L_in]
  left, right = m.receptive_field()
  assert (left, right) == ((K - 1, 0) if causal else ((K - 1) // 2, K // 2))
  i, j = np.arange(L)[:, None], np.arange(L)[None, :]
  np.testing.assert_array_equal(support, (j >= i - left) & (j <= i + right))


@pytest.mark.parametrize("name", NAMES)
def test_causal_padding_and_nan_safety(name):
  L, t = 33, 20
  m = build(name, True, kernel_size=5)
  x, mask = inputs(L)
  x_future = x.copy()
  x_future[:, t + 1 :] = np.random.default_rng(9).normal(size=(B, L - t - 1, D)) * 100
  x_nan = np.where(mask[..., None], x, np.nan).astype(np.float32)

  def run(m):
    return m(x), m(x_future), m(x, mask), m(x_nan, mask)

  y, y_future, y_mask, y_nan = run_jit(run, m)
  np.testing.assert_allclose(y_future[:, : t + 1], y[:, : t + 1], atol=1e-5)
  assert bool(jnp.isfinite(y_nan).all())
  np.testing.assert_allclose(y_nan * mask[..., None], y_mask * mask[..., None], atol=1e-6)


def test_dynamic_weights_are_a_softmax_over_real_taps():
  """Renormalised over real taps: with the values x / 2 (GLU: a = x, gate sigmoid(0)) and
  an output layer 2 I, a constant input gives a constant output even next to padding and
  sequence edges (weights sum to 1)."""
  m = build("dynamic_conv", False, kernel_size=5)
  m.value.kernel[...] = jnp.concatenate([jnp.eye(D), jnp.zeros((D, D))], axis=1)
  m.out.kernel[...] = 2 * jnp.eye(D)
  x = np.ones((B, 12, D), np.float32)
  mask = np.arange(12)[None] < np.asarray([12, 7])[:, None]
  y = run_jit(lambda m: m(x, mask), m)
  np.testing.assert_allclose(y * mask[..., None], np.ones(y.shape) * mask[..., None], atol=1e-6)


def xla_flops(m, L):
  g, state = nnx.split(m)
  x = jax.ShapeDtypeStruct((1, L, m.dim), jnp.float32)
  return jax.jit(lambda s, x: nnx.merge(g, s)(x)).lower(state, x).compile().cost_analysis()["flops"]


@pytest.mark.parametrize("name", [*NAMES, "dynamic_conv:glu=False"])
@pytest.mark.parametrize("impl", ["unfold", "blocked", "dense"])
def test_flops_match_xla(name, impl):
  L = 64
  name, _, glu = name.partition(":glu=")
  opts = dict(glu=False) if glu else {}
  m = abstract(name, dim=32, kernel_size=7, impl=impl, **opts)
  ours, xla = m.flops(L), xla_flops(m, L)
  assert abs(ours - xla) <= 0.15 * xla, (ours, xla)


def test_param_counts():
  K, N, r = 5, 4, 4
  dyn = abstract("dynamic_conv", kernel_size=K, num_heads=N)
  assert dyn.num_params() == (D * 2 * D + 2 * D) + (D * D + D) + D * N * K + N * K
  plain = abstract("dynamic_conv", kernel_size=K, num_heads=N, glu=False)
  assert plain.num_params() == 2 * (D * D + D) + D * N * K + N * K
  inv = abstract("involution", kernel_size=K, num_heads=N, reduction=r)
  R = D // r
  assert inv.num_params() == D * R + R + R * N * K + N * K + D * D + D


@pytest.mark.parametrize("name", NAMES)
def test_auto_choice_and_reported_impl(name):
  assert abstract(name, kernel_size=3).impl == "unfold"
  assert abstract(name, kernel_size=257).impl == "blocked"
  assert abstract(name, kernel_size=257).requested_impl == "auto"
  assert abstract(name, kernel_size=3, impl="dense").impl == "dense"


@pytest.mark.parametrize(
  "name,opts,needle",
  [("dynamic_conv", dict(num_heads=3), "num_heads"), ("involution", dict(impl="im2col"), "impl"),
   ("involution", dict(reduction=0), "reduction"), ("dynamic_conv", dict(kernel_size=0), "kernel")],
)  # fmt: skip
def test_bad_options_fail_clearly(name, opts, needle):
  with pytest.raises(ValueError, match=needle):
    build(name, **opts)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_keeps_dtype(name):
  m = build(name, kernel_size=5)
  x, mask = inputs(32)
  y, y32 = run_jit(lambda m, x: (m(x.astype(jnp.bfloat16), mask), m(x, mask)), m, x)
  assert y.dtype == jnp.bfloat16 and bool(jnp.isfinite(y.astype(jnp.float32)).all())
  np.testing.assert_allclose(y.astype(jnp.float32), y32, atol=0.1, rtol=0.05)


def test_skew_helpers():
  w = jnp.arange(1.0, 7.0).reshape(2, 3)  # [T=2, K=3]
  band = dynamic.skew_rows(w, 4)
  np.testing.assert_array_equal(band, [[1, 2, 3, 0], [0, 4, 5, 6]])
  np.testing.assert_array_equal(dynamic.unskew_rows(band, 3), w)
