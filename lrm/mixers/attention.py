"""Shared attention pieces and the full-attention mixer ``global``.

* ``AttentionBase``: QKV / output projections, rotary positions, option checks, FLOP
  accounting for the projections. Every attention mixer subclasses it.
* ``masked_softmax``: float32 softmax over one or several score tensors that share a
  row (a block's window keys and its global keys), exact zeros where masked, and zeros
  (not NaN) for rows with no visible key, also under ``jax.grad``.
* ``dense_attention``: the O(L*S) masked oracle every efficient kernel is tested against.

Inside the kernels tensors use the layout ``[B, N, L, H]`` so that every einsum has its
batch dimensions leading and contracts the last one (no transposes inside dots).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import masks
from lrm.mixers.base import Mixer
from lrm.registry import register

# Masked scores are replaced by this finite value (not -inf) so that neither softmax nor
# its gradient can meet inf - inf; masked probabilities are then set to exactly zero.
_NEG = -1e30
# XLA's cost model charges about this many flops per score element for mask + softmax
# (select, max, subtract, exp, select, sum, divide, ...): calibrated against cost_analysis
# at dim=64, L=256; tests/test_attention.py checks every mixer total to 15%.
SOFTMAX_FLOPS = 8


def masked_softmax(
  parts: Sequence[tuple[jax.Array, jax.Array]],
) -> list[jax.Array]:
  """Softmax over the concatenation of several ``(scores, mask)`` along the last axis.

  Scores must be float32 and share all leading axes. Returns one probability tensor per
  part (float32), zero where masked and zero on rows where every entry is masked.
  """
  parts = [(jnp.where(m, s, _NEG), m) for s, m in parts]
  top = jax.lax.stop_gradient(
    jnp.max(jnp.stack([s.max(axis=-1) for s, _ in parts]), axis=0, keepdims=False)
  )[..., None]  # row max over all parts
  exps = [jnp.where(m, jnp.exp(s - top), 0.0) for s, m in parts]
  denom = sum(e.sum(axis=-1, keepdims=True) for e in exps)
  inv = 1.0 / jnp.maximum(denom, 1e-30)  # fully-masked rows: 0 * 1e30 = 0
  return [e * inv for e in exps]


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked softmax attention; the oracle. ``q [B,N,L,H]``, ``k, v [B,N,S,H]``, ``mask``
  broadcastable to ``[B, N, L, S]`` (True = may attend). ``q`` is pre-scaled.
  Returns float32 ``[B, N, L, H]``."""
  s = jnp.einsum("bnlh,bnsh->bnls", q, k, preferred_element_type=jnp.float32)  # [B, N, L, S]
  (p,) = masked_softmax([(s, mask)])
  return jnp.einsum("bnls,bnsh->bnlh", p.astype(v.dtype), v, preferred_element_type=jnp.float32)


def rotary(x: jax.Array, positions: np.ndarray, base: float = 10_000.0) -> jax.Array:
  """RoPE on ``x [B, N, L, H]`` by absolute ``positions [L]`` (rotate-half pairing)."""
  half = x.shape[-1] // 2
  freq = base ** (-np.arange(half) / half)  # [H/2]
  angle = positions[:, None].astype(np.float64) * freq[None, :]  # [L, H/2]
  cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def full_rows(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, start: int, stop: int, causal: bool
) -> jax.Array:
  """Queries ``start:stop`` attend to every (real, and if causal earlier) key: O(R*S).

  Used for global query rows. Returns float32 ``[B, N, stop-start, H]``."""
  m = valid[:, None, None, :]  # [B, 1, 1, S]
  if causal:
    m = m & (np.arange(k.shape[2])[None, :] <= np.arange(start, stop)[:, None])
  return dense_attention(q[:, :, start:stop], k, v, m)


def _band(xb: jax.Array, first: int, count: int, offsets: Sequence[int]) -> jax.Array:
  """Blocks ``c + o`` for query blocks c in ``first:first+count``, each offset o in order.

  ``xb [B, N, W, T, ...]`` -> ``[B, N, count, len(offsets)*T, ...]``; blocks outside
  ``0..W-1`` come out as zeros (callers mask them). Static slices, no gather.
  """
  W = xb.shape[2]
  lo = max(0, -(first + min(offsets)))
  hi = max(0, first + count - 1 + max(offsets) - (W - 1))
  pad = [(0, 0)] * xb.ndim
  pad[2] = (lo, hi)
  mod = masks.array_module(xb)  # numpy for static position bookkeeping
  xpad = mod.pad(xb, pad)
  pieces = [xpad[:, :, first + o + lo : first + o + lo + count] for o in offsets]
  return mod.concatenate(pieces, axis=3)


def _positions(x: jax.Array, idx: np.ndarray) -> jax.Array:
  """``x[:, :, idx]``, as static slices when ``idx`` is a union of contiguous runs."""
  cuts = np.flatnonzero(np.diff(idx) != 1) + 1
  runs = np.split(idx, cuts)
  return jnp.concatenate([x[:, :, r[0] : r[-1] + 1] for r in runs], axis=2)


def _take(xb: jax.Array, table: jax.Array) -> jax.Array:
  """``xb [B, N, W, T, ...]`` gathered by ``table [Q, R]`` -> ``[B, N, Q, R*T, ...]``."""
  g = masks.array_module(xb, table).take(xb, table, axis=2)  # [B, N, Q, R, T, ...]
  return g.reshape(*g.shape[:3], -1, *g.shape[5:])


def block_sparse_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  valid: jax.Array,
  *,
  block: int,
  first: int,
  count: int,
  causal: bool,
  offsets: Sequence[int] = (0,),
  band_ok: np.ndarray | None = None,
  window: int | None = None,
  min_key: int = 0,
  table: jax.Array | np.ndarray | None = None,
  table_ok: jax.Array | np.ndarray | None = None,
  shared: np.ndarray | None = None,
) -> jax.Array:
  """Block-sparse attention for query blocks ``first .. first+count-1``: O(count*T*keys).

  ``q, k, v [B, N, W*T, H]`` (already padded to whole blocks, q pre-scaled), ``valid
  [B, W*T]`` key padding mask. Query block c sees three kinds of keys:

  * band: key blocks ``c + o`` for ``o in offsets`` (sliced; ``band_ok [count, O]`` drops
    single entries, e.g. a window block that is also a global block);
  * table: key blocks ``table [count, R]`` (gathered; ``table_ok`` marks real entries);
  * shared: key positions ``shared [G]`` that every query sees (global columns).

  Token-level rules on top: causal ``j <= i``; ``window``: ``|i - j| <= window`` and
  ``min_key``: ``j >= min_key`` for band/table keys. One softmax spans all keys of a row.
  Returns float32 ``[B, N, count*T, H]``.
  """
  B, N, Lp, H = q.shape
  T, W = block, Lp // block
  blocks = lambda a: a.reshape(a.shape[0], a.shape[1], W, T, *a.shape[3:])  # [B, N, W, T, ...]
  qb = q[:, :, first * T : (first + count) * T].reshape(B, N, count, T, H)  # [B, N, Q, T, H]
  kv_valid = blocks(valid[:, None])  # [B, 1, W, T]
  pos = np.arange(Lp).reshape(1, 1, W, T)  # [1, 1, W, T]
  xp = masks.array_module(table, table_ok)  # jnp only for a traced (resampled) table
  ks, vs, keyv, ps, oks = [], [], [], [], []  # per key source; S = keys per query block
  if offsets:
    ks.append(_band(blocks(k), first, count, offsets))  # [B, N, Q, O*T, H]
    vs.append(_band(blocks(v), first, count, offsets))
    keyv.append(_band(kv_valid, first, count, offsets))  # [B, 1, Q, O*T]
    ps.append(_band(pos, first, count, offsets)[0, 0])  # [Q, O*T]
    ok = np.ones((count, len(offsets)), bool) if band_ok is None else band_ok
    oks.append(np.repeat(ok, T, axis=1))  # [Q, O*T]
  if table is not None and table.shape[1]:
    ks.append(_take(blocks(k), table))  # [B, N, Q, R*T, H]
    vs.append(_take(blocks(v), table))
    keyv.append(_take(kv_valid, table))  # [B, 1, Q, R*T]
    ps.append(_take(pos, table)[0, 0])  # [Q, R*T]
    oks.append(xp.repeat(table_ok, T, axis=1))  # [Q, R*T]
  kg, vg = jnp.concatenate(ks, axis=3), jnp.concatenate(vs, axis=3)  # [B, N, Q, S, H]
  # which (query, key) pairs the pattern allows, before padding: [Q, T, S]
  kpos = xp.concatenate(ps, axis=1)[:, None, :]  # [Q, 1, S]
  qpos = (first * T + np.arange(count * T)).reshape(count, T, 1)  # [Q, T, 1]
  rule = xp.concatenate(oks, axis=1)[:, None, :]  # [Q, 1, S]
  if causal:
    rule = rule & (kpos <= qpos)
  if window is not None:
    rule = rule & (abs(kpos - qpos) <= window)
  if min_key:
    rule = rule & (kpos >= min_key)
  m = jnp.concatenate(keyv, axis=3)[:, :, :, None, :] & rule  # [B, 1, Q, T, S]
  s = jnp.einsum("bnqth,bnqsh->bnqts", qb, kg, preferred_element_type=jnp.float32)
  parts = [(s, m)]  # s: [B, N, Q, T, S]
  if shared is not None and len(shared):
    kh, vh = _positions(k, shared), _positions(v, shared)  # [B, N, G, H]
    sh = jnp.einsum("bnqth,bngh->bnqtg", qb, kh, preferred_element_type=jnp.float32)
    mh = _positions(valid[:, None], shared)[:, :, None, None, :]  # [B, 1, 1, 1, G]
    if causal:
      mh = mh & (shared <= qpos)  # [B, 1, Q, T, G]
    parts.append((sh, mh))
  probs = masked_softmax(parts)
  o = jnp.einsum(
    "bnqts,bnqsh->bnqth", probs[0].astype(vg.dtype), vg, preferred_element_type=jnp.float32
  )  # [B, N, Q, T, H]
  if len(probs) > 1:
    o = o + jnp.einsum(
      "bnqtg,bngh->bnqth", probs[1].astype(vh.dtype), vh, preferred_element_type=jnp.float32
    )
  return o.reshape(B, N, count * T, H)


class AttentionBase(Mixer):
  """Projections and bookkeeping shared by all attention mixers (not registered)."""

  IMPLS: tuple[str, ...] = ()

  def __init__(
    self, dim: int, *, causal: bool, rngs: nnx.Rngs, num_heads: int, rotary: bool, impl: str
  ):
    name = getattr(type(self), "registered_name", type(self).__name__)
    if num_heads < 1 or dim % num_heads:
      raise ValueError(f"{name}: dim={dim} is not divisible by num_heads={num_heads}; change one")
    if rotary and (dim // num_heads) % 2:
      raise ValueError(f"{name}: rotary needs an even head dim, got {dim // num_heads}")
    if impl not in self.IMPLS:
      raise ValueError(f"{name}: unknown impl '{impl}'; choose one of {', '.join(self.IMPLS)}")
    self.dim, self.causal, self.num_heads = dim, causal, num_heads
    self.head_dim = dim // num_heads
    self.rotary, self._impl = rotary, impl
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  @property
  def impl(self) -> str:
    return self._impl

  def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x [B, L, D]`` -> q (scaled by 1/sqrt(H)), k, v, each ``[B, N, L, H]``."""
    B, L, _ = x.shape
    qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, N, H]
    q, k, v = jnp.moveaxis(qkv, (2, 1), (0, 3))  # each [B, N, L, H]
    if self.rotary:
      pos = np.arange(L)
      q, k = rotary(q, pos), rotary(k, pos)
    return q * jnp.asarray(1.0 / math.sqrt(self.head_dim), q.dtype), k, v

  def merge(self, o: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``o [B, N, L, H]`` -> output projection ``[B, L, D]`` in ``dtype``."""
    B, _, L, _ = o.shape
    o = jnp.moveaxis(o, 1, 2).reshape(B, L, self.dim)  # [B, L, D]
    return self.out(o.astype(dtype)).astype(dtype)

  def projection_flops(self, length: int, out_length: int | None = None) -> int:
    """QKV (+ q scaling, rotary) on ``length`` tokens, output projection on ``out_length``."""
    d, out_length = self.dim, length if out_length is None else out_length
    f = 2 * length * d * 3 * d + 3 * length * d + 2 * out_length * d * d + out_length * d
    f += length * d  # q * 1/sqrt(H)
    if self.rotary:
      f += 2 * 3 * length * d  # q and k: 4 mul + 2 add per pair
    return f

  def score_flops(self, pairs: int) -> int:
    """FLOPs of ``pairs`` (query, key) scores per head: QK^T, PV and the masked softmax."""
    return pairs * self.num_heads * (4 * self.head_dim + SOFTMAX_FLOPS)


def key_mask(mask: jax.Array | None, batch: int, length: int) -> jax.Array:
  """Padding mask ``[B, L]`` (True = real), all-True when ``mask`` is None."""
  if mask is None:
    return jnp.ones((batch, length), bool)
  if mask.shape != (batch, length):
    raise ValueError(f"mask shape {mask.shape} does not match x's [B, L] = {(batch, length)}")
  return mask.astype(bool)


@register("mixer", "global")
class GlobalAttention(AttentionBase):
  """Full softmax multi-head attention (the Transformer baseline): O(L^2) time.

  ``impl="xla"`` calls ``jax.nn.dot_product_attention`` (which on CPU also materialises
  the L x L scores); ``impl="dense"`` is the einsum oracle. Causal is honoured by both.
  """

  IMPLS = ("xla", "dense")

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    num_heads: int = 4,
    rotary: bool = False,
    impl: str = "xla",
  ):
    super().__init__(dim, causal=causal, rngs=rngs, num_heads=num_heads, rotary=rotary, impl=impl)
    self.layer_idx = layer_idx

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, _ = x.shape
    valid = key_mask(mask, B, L)
    q, k, v = self.project(x)  # [B, N, L, H]
    if self.impl == "dense":
      m = valid[:, None, None, :]  # [B, 1, 1, S]
      if self.causal:
        m = m & masks.causal_mask(L)
      o = dense_attention(q, k, v, m)
    else:
      t = lambda a: jnp.moveaxis(a, 1, 2)  # [B, N, L, H] <-> [B, L, N, H]
      o = t(
        jax.nn.dot_product_attention(
          t(q), t(k), t(v), mask=valid[:, None, None, :], scale=1.0, is_causal=self.causal
        )
      )
    return self.merge(o, x.dtype)

  def flops(self, length: int) -> int:
    return int(self.projection_flops(length) + self.score_flops(length * length))

  def receptive_field(self) -> tuple[int, int] | None:
    return None
