"""``gated_conv``: every conv path against the dense banded oracle (forward and gradients,
causal and centred, padding, odd lengths), an exactly causal Jacobian whose support is the
kernel's window, the measured receptive field, FLOPs against XLA and the parameter count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import mixers
from lrm.analysis import receptive_field as rf
from lrm.mixers import conv, gated_conv
from lrm.model import Encoder

B, D = 2, 8
FAST = {"xla_backend_optimization_level": 0}  # compile time dominates these tests


def build(causal=False, dim=D, **opts):
  return mixers.build(dict(name="gated_conv", **opts), dim=dim, causal=causal, rngs=nnx.Rngs(0))


def run_jit(fn, m, *args):
  """``fn(m, *args)`` compiled once with ``FAST`` (the module passes as its state)."""
  g, state = nnx.split(m)
  f = jax.jit(lambda state, *args: fn(nnx.merge(g, state), *args))
  return f.lower(state, *args).compile(FAST)(state, *args)


def inputs(L, seed=0):
  x = np.random.default_rng(seed).normal(size=(B, L, D)).astype(np.float32)
  mask = np.arange(L)[None] < np.asarray([L, L - 5])[:, None]  # [B, L]; second row padded
  return x, mask


def outputs_and_grads(ms, x, mask):
  """Per module: (y on real tokens, (d loss/dparams, d loss/dx)), one compilation for all."""
  cot = np.random.default_rng(7).normal(size=x.shape).astype(np.float32) * mask[..., None]

  def one(m, x):
    def loss(state, x):
      y = nnx.merge(nnx.graphdef(m), state)(x, mask)
      return jnp.sum(y * cot), y

    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(nnx.state(m), x)
    return y * mask[..., None], grads

  return run_jit(lambda ms, x: [one(m, x) for m in ms], ms, x)


CASES = [  # (kernel_size, dilation, causal, L)
  (4, 1, False, 33),  # even K, centred, odd L
  (5, 2, True, 31),  # dilation, causal
  (20, 1, False, 17),  # kernel longer than the sequence
  (3, 1, True, 16),
]


@pytest.mark.parametrize("K,dil,causal,L", CASES)
def test_paths_match_dense_oracle(K, dil, causal, L):
  """Forward and gradients (x and every parameter) of direct, fft and toeplitz equal the
  oracle's, with a padded row (garbage in its padding changes nothing)."""
  impls = ("dense", "direct", "fft", "toeplitz")
  ms = [build(causal, kernel_size=K, dilation=dil, impl=impl) for impl in impls]
  assert tuple(m.impl for m in ms) == impls
  x, mask = inputs(L)
  x[1, L - 5 :] = 1e3  # padding: must not matter
  (y0, (gs0, gx0)), *fast = outputs_and_grads(ms, x, mask)
  assert not np.asarray(gx0)[~mask].any()  # padded inputs get exactly zero gradient
  for y1, (gs1, gx1) in fast:
    np.testing.assert_allclose(y1, y0, atol=3e-5, rtol=3e-5)
    np.testing.assert_allclose(gx1, gx0, atol=3e-5, rtol=3e-5)
    for a, b in zip(jax.tree.leaves(gs1), jax.tree.leaves(gs0), strict=True):
      np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)


def test_banded_matrix_is_the_literal_toeplitz():
  w = jnp.arange(1.0, 3.0)[:, None]  # [K=2, D=1]
  want = [[2, 0, 0], [1, 2, 0], [0, 1, 2]]  # causal K=2: taps i-1 (w0) and i (w1)
  np.testing.assert_array_equal(gated_conv.banded_matrix(w, 3, 1)[..., 0], want)
  dilated = gated_conv.banded_matrix(w, 4, 2, dilation=2)[..., 0]  # causal, taps i-2 and i
  np.testing.assert_array_equal(dilated, [[2, 0, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 1, 0, 2]])


@pytest.mark.parametrize(
  "K,dil,causal,impl",
  [(3, 1, True, "direct"), (4, 1, False, "toeplitz"), (3, 2, True, "fft"), (5, 1, False, "dense")],
)  # fmt: skip
def test_jacobian_support_is_the_kernels_window(K, dil, causal, impl):
  """d out_i / d x_j is nonzero exactly on output i's window: causal means no dependence on
  any later position, and the gate widens nothing."""
  L = 17
  m = build(causal, kernel_size=K, dilation=dil, impl=impl)
  x, _ = inputs(L)
  jac = run_jit(lambda m, x0: jax.jacrev(lambda x0: m(x0[None])[0].sum(-1))(x0), m, x[0])
  mag = np.abs(np.asarray(jac)).max(-1)  # [L_out, L_in]
  support = mag > (1e-5 * mag.max() if impl == "fft" else 0.0)  # FFT round-off ~1e-8
  left, right = m.receptive_field()
  assert (left, right) == ((K - 1) * dil, 0) if causal else ((K - 1) // 2 * dil, K // 2 * dil)
  i, j = np.arange(L)[:, None], np.arange(L)[None, :]
  want = (j >= i - left) & (j <= i + right) & ((j - i + left) % dil == 0)
  np.testing.assert_array_equal(support, want)
  if causal:
    assert not np.triu(support, 1).any()


@pytest.mark.parametrize("causal", [False, True])
def test_measured_field_equals_analytic_in_a_stack(causal):
  """Two gated convs of kernel 5 in the encoder: the measured field is the analytic one."""
  enc = Encoder(
    vocab_size=7, dim=16, depth=2, mixer={"name": "gated_conv", "kernel_size": 5},
    causal=causal, max_len=40, rngs=nnx.Rngs(0),
  )  # fmt: skip
  fields = rf.measure(enc, 40, position=20)
  assert [f.measured for f in fields] == [f.analytic for f in fields]
  assert [f.size for f in fields] == [5, 9]
  assert all(f.contiguous for f in fields)


def xla_flops(m, L):
  g, state = nnx.split(m)
  x = jax.ShapeDtypeStruct((1, L, m.dim), jnp.float32)
  return jax.jit(lambda s, x: nnx.merge(g, s)(x)).lower(state, x).compile().cost_analysis()["flops"]


@pytest.mark.parametrize(
  "opts",
  [dict(kernel_size=3), dict(kernel_size=33, impl="toeplitz"), dict(kernel_size=9, dilation=2),
   dict(kernel_size=5, impl="dense"), dict(kernel_size=33, impl="fft")],
)  # fmt: skip
def test_flops_match_xla(opts):
  """Analytic FLOPs within 15% of XLA's count; FFTs are converted to XLA's own cost per
  transform first (it counts a real FFT differently from the 2.5 n log2 n convention)."""
  from test_hyena import fft_cost_ratio

  L = 64
  m = nnx.eval_shape(lambda: build(dim=32, **opts))
  ours, xla = m.flops(L), xla_flops(m, L)
  if m.impl == "fft":
    n, _, chunks = conv.fft_plan(L, m.kernel_size, m.dilation)
    ours += (2 * chunks + 1) * 32 * conv.fft_flops(n) * (fft_cost_ratio(n) - 1)
  assert abs(ours - xla) <= 0.15 * xla, (ours, xla)


def test_param_count_and_auto_choice():
  K = 5
  m = nnx.eval_shape(lambda: build(kernel_size=K))
  assert m.num_params() == (D * 2 * D + 2 * D) + K * D + D + (D * D + D)
  assert m.impl == "direct" and m.requested_impl == "auto"
  assert nnx.eval_shape(lambda: build(kernel_size=257)).impl in ("fft", "toeplitz")
  spec = mixers.presets.spec("gated_conv", window=4, causal=True)
  assert spec == {"name": "gated_conv", "kernel_size": 5}
  with pytest.raises(ValueError, match="impl"):
    build(impl="grouped")
