"""``hyena``: the FFT path against the dense Toeplitz oracle (forward and gradients, causal and
bidirectional, padding, odd lengths), causality from the Jacobian, the measured receptive
field (the whole past / the whole sequence), the implicit filter, and FLOPs against XLA."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_gated_conv import D, inputs, outputs_and_grads, run_jit, xla_flops

from lrm import mixers
from lrm.analysis import receptive_field as rf
from lrm.mixers import hyena
from lrm.mixers.base import UNBOUNDED
from lrm.model import Encoder


def build(causal=False, dim=D, **opts):
  return mixers.build(dict(name="hyena", **opts), dim=dim, causal=causal, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("causal,L", [(True, 33), (False, 17), (True, 16)])
def test_fft_matches_dense_oracle(causal, L):
  """Forward and gradients (x and every parameter, the filter MLP's included) of the FFT path
  equal the oracle's; garbage in the padding changes nothing and gets zero gradient."""
  ms = [build(causal, impl=impl, short_kernel=4) for impl in ("dense", "fft")]
  x, mask = inputs(L)
  x[1, L - 5 :] = 1e3
  (y0, (gs0, gx0)), (y1, (gs1, gx1)) = outputs_and_grads(ms, x, mask)
  assert not np.asarray(gx0)[~mask].any() and not np.asarray(gx1)[~mask].any()
  np.testing.assert_allclose(y1, y0, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(gx1, gx0, atol=1e-4, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(gs1), jax.tree.leaves(gs0), strict=True):
    np.testing.assert_allclose(a, b, atol=5e-4, rtol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_jacobian_is_causal_and_reaches_everything(causal):
  """Causal: d out_i / d x_j is exactly 0 for j > i with the dense oracle, and at FFT round-off
  (< 1e-6 of the largest entry) with the FFT path; every j <= i (bidirectional: every j)
  has a real dependence, so the field is the whole past (the whole sequence)."""
  L = 19
  x, _ = inputs(L)
  for impl in ("dense", "fft"):
    m = build(causal, impl=impl)
    jac = run_jit(lambda m, x0: jax.jacrev(lambda x0: m(x0[None])[0].sum(-1))(x0), m, x[0])
    mag = np.abs(np.asarray(jac)).max(-1)  # [L_out, L_in]
    past = np.tril(np.ones((L, L), bool))
    if causal:
      future = mag[~past]
      assert (future == 0).all() if impl == "dense" else future.max() < 1e-6 * mag.max()
    assert (mag[past if causal else np.ones((L, L), bool)] > 1e-4 * mag.max()).all()
  assert m.receptive_field() == ((UNBOUNDED, 0) if causal else None)


@pytest.mark.parametrize("causal", [True, False])
def test_measured_field_is_the_analytic_one(causal):
  """In the encoder (short conv first, then hyena), the measured field equals the analytic."""
  enc = Encoder(
    vocab_size=7, dim=16, depth=2, mixer=[{"name": "conv", "kernel_size": 3}, {"name": "hyena"}],
    causal=causal, max_len=48, rngs=nnx.Rngs(0),
  )  # fmt: skip
  fields = rf.measure(enc, 48, position=30)
  assert fields[1].measured == fields[1].analytic == ((0, 30) if causal else (0, 47))
  assert fields[1].contiguous and fields[1].size == fields[1].analytic_size


def test_filter_features_and_decay_window():
  t = np.array([0.0, 0.5])
  np.testing.assert_allclose(hyena.lag_features(t, 1), [[0, 1, 0], [0.5, 0, 1]], atol=1e-7)
  w = hyena.decay_window(np.array([0.0, -hyena.FAST]), 2)  # slowest channel first
  np.testing.assert_allclose(w, [[1, 1], [hyena.TARGET ** (hyena.FAST / hyena.SLOW), 1e-2]])
  np.testing.assert_array_equal(hyena.lags(3, causal=True), [0, 1, 2])
  np.testing.assert_array_equal(hyena.lags(3, causal=False), [-2, -1, 0, 1, 2])


def test_parameters_do_not_grow_with_length():
  m = build(True, dim=16)
  n = m.num_params()
  for L in (8, 40):
    y = m(np.ones((1, L, 16), np.float32))
    assert y.shape == (1, L, 16) and m.num_params() == n
  F = 64
  filt = (17 * F + F) + (F * F + F) + F * 16 + F  # implicit filter MLP and its frequencies
  assert n == (16 * 48 + 48) + (3 * 48 + 48) + filt + 16 + (16 * 16 + 16)


def fft_cost_ratio(n: int) -> float:
  """XLA's count for one real FFT of size n over the conventional 2.5 n log2 n."""
  x = jax.ShapeDtypeStruct((n, 64), jnp.float32)
  f = jax.jit(lambda x: jnp.fft.rfft(x, n, axis=0)).lower(x).compile()
  return f.cost_analysis()["flops"] / (2.5 * n * math.log2(n) * 64)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("impl", ["fft", "dense"])
def test_flops_match_xla(causal, impl):
  """Within 15% of XLA's count; FFTs are converted to XLA's own cost per transform first."""
  L = 64
  m = nnx.eval_shape(lambda: build(causal, dim=32, impl=impl))
  ours = m.flops(L)
  if impl == "fft":
    n = hyena.fft_length(L)
    fft = 3 * 32 * mixers.conv.fft_flops(n)  # z, y and the filter; per channel
    ours += fft * (fft_cost_ratio(n) - 1)
  xla = xla_flops(m, L)
  assert abs(ours - xla) <= 0.15 * xla, (ours, xla)
