"""Decoding pieces shared by the attention mixers: one token's projections at a traced
position, its attention over cached keys, and the output projection.

A cache keeps keys already rotated at their own absolute positions (RoPE makes a score depend
on the offset only, so stored keys never change). ``rotary_at`` rotates by a position that is
traced under jit and reproduces ``attention.rotary``'s float64 angles to float32 rounding at
any position below ``2**21``: the angle of ``pos = sum_l d_l 128**l`` is put together from
three float64 tables of 128 digits by the angle-addition formulas. (A float32 ``pos * freq``
would be off by ``pos * 6e-8`` radians: 2e-3 at 32K tokens.)

The attention mixers call these from their ``step`` and ``prefill`` (``attention.py`` for
``global``, ``local_cache.py`` for ``local``, ``sparse_cache.py`` for ``random`` and
``bigbird``). Letters follow the legend in ``base.py``; S is a cache's key slots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrm.mixers.masks import masked_softmax

F32 = jnp.float32
DIGIT_BITS, DIGITS = 7, 3  # positions < 2**21


def rotary_at(x: jax.Array, pos: jax.Array, base: float = 10_000.0) -> jax.Array:
  """``attention.rotary`` of one token ``x [B, N, H]`` at position ``pos`` (int scalar array)."""
  half = x.shape[-1] // 2
  freq = base ** (-np.arange(half) / half)  # [H/2], float64
  cos, sin = jnp.ones((half,), F32), jnp.zeros((half,), F32)
  for level in range(DIGITS):
    angle = (np.arange(2**DIGIT_BITS) << (DIGIT_BITS * level))[:, None] * freq  # [128, H/2]
    digit = (pos >> (DIGIT_BITS * level)) & (2**DIGIT_BITS - 1)
    c = jnp.asarray(np.cos(angle).astype(np.float32))[digit]  # [H/2]
    s = jnp.asarray(np.sin(angle).astype(np.float32))[digit]
    cos, sin = cos * c - sin * s, sin * c + cos * s
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def project_one(
  m, x: jax.Array, pos: jax.Array, *, rotate: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``AttentionBase.project`` of one token ``x [B, D]`` at ``pos``: q (scaled), k, v, each
  ``[B, N, H]``; rotary positions (if the mixer has them) unless ``rotate=False``."""
  B = x.shape[0]
  qkv = m.qkv(x).reshape(B, 3, m.num_heads, m.head_dim)  # [B, 3, N, H]
  q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
  if m.rotary and rotate:
    q, k = rotary_at(q, pos), rotary_at(k, pos)
  return q * jnp.asarray(1.0 / math.sqrt(m.head_dim), q.dtype), k, v


def rows(a: jax.Array) -> jax.Array:
  """``[B, N, ...] -> [B*N, ...]``: caches keep batch and heads as one axis of rows.

  With a batch of one, XLA (CPU) drops the unit axis of a ``[1, N, S, H]`` cache by a
  bitcast, then fuses the step's write into that bitcast and into the cache output alike and
  copies the whole cache several times per token (measured: 130 ms instead of 7 ms per step
  at S = 32K, D = 256); ``[B*N, S, H]`` needs no bitcast."""
  return a.reshape(-1, *a.shape[2:])


def attend_one(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  ok: jax.Array,
  extras: Sequence[tuple[jax.Array, jax.Array]] = (),
) -> tuple[jax.Array, list[jax.Array]]:
  """One query per row over S cached keys: ``q [B*N, H]``, ``k, v [B*N, S, H]``, ``ok``
  broadcastable to ``[B*N, S]`` (True = visible); ``extras``: ``(scores [B*N, G], ok)`` in the
  same softmax. Returns float32 ``o = P V [B*N, H]`` and the extras' probabilities."""
  s = jnp.matmul(k, q[:, :, None], preferred_element_type=F32)[:, :, 0]  # [B*N, S]
  p, *px = masked_softmax([(s, ok), *extras])
  o = jnp.matmul(p[:, None].astype(v.dtype), v, preferred_element_type=F32)  # [B*N, 1, H]
  return o[:, 0], px


def merge_one(m, o: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """``o [B*N, H]`` -> the output projection ``[B, D]`` in ``dtype`` (``AttentionBase.merge``)."""
  return m.out(o.reshape(-1, m.dim).astype(dtype)).astype(dtype)


def write_at(buf: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """``buf [B*N, S, ...]`` with slot ``index`` (traced) set to ``new [B*N, ...]``."""
  start = (0, index) + (0,) * (buf.ndim - 2)
  return jax.lax.dynamic_update_slice(buf, new[:, None].astype(buf.dtype), start)
