"""Checks every recurrent or linear-time mixer passes (``rglru``, ``ssm``, ``linear_attention``):
its fast kernel against its oracle (forward and every gradient, padded and not), exact
causality for every input/output pair, padding that never enters a state, and decoding equal
to the parallel forward. Each test file builds its own mixer and calls these; one place says
what "agree" means."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TOL = dict(atol=1e-5, rtol=1e-5)
PARAM_TOL = dict(atol=1e-4, rtol=1e-4)  # parameter gradients sum over every position


def inputs(length: int, dim: int, seed: int = 0, batch: int = 2) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, length, dim))  # [B, L, D]


def lengths_mask(length: int) -> jax.Array:
  """``[2, L]``: row 0 is whole, row 1 is padded after ``length // 2 + 1`` tokens."""
  return jnp.arange(length)[None, :] < jnp.array([[length], [length // 2 + 1]])


def assert_kernels_agree(fast: nnx.Module, oracle: nnx.Module, x: jax.Array) -> None:
  """Same weights, two kernels: outputs, input gradients and parameter gradients agree, without
  and with padding (``lengths_mask``)."""
  mask = lengths_mask(x.shape[1])
  g = jax.random.normal(jax.random.key(5), x.shape)

  @nnx.jit
  def run(m, x):  # (output, input gradient, parameter gradients) without and with padding
    out = []
    for k in (None, mask):
      gm, gx = nnx.grad(lambda m, x, k=k: jnp.sum(m(x, k) * g), argnums=(0, 1))(m, x)
      out.append((m(x, k), gx, jax.tree.leaves(nnx.state(gm, nnx.Param))))
    return out

  for (y1, gx1, gp1), (y2, gx2, gp2) in zip(run(fast, x), run(oracle, x), strict=True):
    np.testing.assert_allclose(y1, y2, **TOL)
    np.testing.assert_allclose(gx1, gx2, **TOL)
    for a, b in zip(gp1, gp2, strict=True):
      np.testing.assert_allclose(a, b, **PARAM_TOL)


def assert_exact_causality(build: Callable[[bool], nnx.Module], length: int, dim: int) -> None:
  """``d out_i / d x_j`` is exactly 0 for every j > i and not 0 for j <= i in the causal
  mixer ``build(True)``, and never 0 in the bidirectional ``build(False)``."""
  x = inputs(length, dim, batch=1)
  future = np.triu(np.ones((length, length), bool), 1)
  for causal in (True, False):
    m = build(causal)
    jac = jax.jacrev(lambda x, m=m: m(x)[0])(x)[:, :, 0]  # [L, D, L, D]
    reach = np.asarray(jnp.abs(jac).max(axis=(1, 3)))  # [L, L]: output i, input j
    if causal:
      assert np.all(reach[future] == 0.0) and np.all(reach[~future] > 0)
    else:
      assert np.all(reach > 0)


def assert_padding_never_enters(m: nnx.Module, length: int, real: int, dim: int) -> None:
  """Rows padded after ``real`` tokens give their real prefix's outputs whatever the padding
  holds (a bidirectional reverse pass starts on the padding); every output and gradient is
  finite, also for rows whose padding comes first (no real token seen yet)."""
  batch = 2
  x = inputs(length, dim, batch=batch)
  mask = jnp.broadcast_to(jnp.arange(length) < real, (batch, length))
  noise = 1e3 * jax.random.normal(jax.random.key(3), (batch, length - real, dim))
  noisy = x.at[:, real:].set(noise)
  y = m(noisy, mask)
  np.testing.assert_allclose(y[:, :real], m(x[:, :real]), **TOL)
  left = jnp.broadcast_to(jnp.arange(length) >= length - real, (batch, length))
  for k in (mask, left):
    assert bool(jnp.all(jnp.isfinite(m(noisy, k))))
    grads = nnx.grad(lambda m, x, k=k: jnp.sum(m(x, k) ** 2), argnums=(0, 1))(m, noisy)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def assert_decoding_equals_forward(m: nnx.Module, prompts: tuple[int, ...], dim: int) -> None:
  """Prefill of each prompt length then cached steps, and steps from position 0, give the
  parallel forward's outputs at every one of 19 positions (``max_len`` 24)."""
  from test_decode_mixers import decode_all

  x = np.random.default_rng(0).standard_normal((2, 19, dim), dtype=np.float32)
  y, runs, steps = decode_all(m, x, max_len=24, prompts=prompts)
  for p, got in zip(prompts, runs, strict=True):
    np.testing.assert_allclose(got, y, **TOL, err_msg=f"prompt {p}")
  np.testing.assert_allclose(steps, y, **TOL, err_msg="steps from 0")
