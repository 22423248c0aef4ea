"""Sliding-window attention with an exact contiguous window, optionally with global tokens.

Query i attends to keys j with ``|i - j| <= window`` (bidirectional) or
``i - window <= j <= i`` (causal). This is a true token-centred band, unlike LRA's
"local attention" baseline, which attends within strided groups: google-research/
long-range-arena ``lra_benchmarks/models/local/local_attention.py`` reshapes the L tokens to
``[block_size, L / block_size]`` and attends along the first axis, so token t sees the tokens
with the same ``t mod (L / block_size)``, not its neighbours. A window ``>= L - 1`` is the
same pattern as full attention, so it is clamped to ``L - 1`` rather than rejected (a model
may be run at several lengths).

``impl="blocked"`` (default): the sequence is cut into blocks of ``T = max(window, 16)``
tokens (``T <= L``); a query block needs only key blocks c-1, c (causal) or c-1, c, c+1,
so time and memory are O(L * 3T) and no L x L matrix is ever formed. The tail is padded
internally and stripped. ``impl="dense"`` is the O(L^2) masked oracle.

Decoding (causal): a ring buffer of the last w keys and values, plus the summary slots'
running pools (see Decoding below).

Global tokens, ``global_tokens=g`` on top of the window, in one of three modes:

* ``"summary"`` (the ``local_global`` preset): g slots whose keys and values pool the whole
  sequence (causal: the whole past) with learned queries (Summary slots, below); every token
  reads them in the same softmax as its window. One layer reaches everything (everything before,
  when causal), and it is exactly causal: slot j at position i pools tokens <= i only.
* ``"first"`` (Longformer/ETC, bidirectional only): the first g tokens attend to everything
  and are attended by everything. Their keys are appended to every block's keys (L x g
  scores) and their rows computed separately (g x L scores), so memory stays linear. Another
  token reads them as keys and values of their *inputs*, so one layer reaches the window
  and the first g positions, and a second layer everything (what those rows gathered).
  Causal, those rows see only themselves, so the mode gives a causal model no reach beyond
  the window: it is refused.
* ``"learned"``: g learned vectors (parameters) prepended internally and stripped from the
  output. A mixer maps [B, L, D] -> [B, L, D], so they are re-made from the parameters in
  every layer: key/value slots every query can read (an attention sink) that carry nothing
  across the sequence; the field stays the window. Causal: they come before every token.

Summary slots
-------------

Global summary slots: g learned queries pool the keys and values of the sequence.

``local`` with ``global_mode="summary"`` gives every token, on top of its window, g extra keys
whose values summarise the sequence (the whole past, when causal). Slot j of head n has a
learned query ``u[j, n]``; at query position i its key and value are the softmax-weighted
averages, over the tokens t that i may see (t <= i causal, all real tokens otherwise), of
the tokens' keys and values with weights ``softmax_t(u[j, n] . k_t / sqrt(H))``. This is
attention pooling by induced points (Set Transformer, Lee et al. 2019; Luna, Ma et al. 2021)
made causal with a prefix scan, so a causal layer's field is the whole past in one layer,
whereas "first g tokens are global" gives a causal model no reach at all (those tokens see
only themselves).

Why it is causal: slot j at position i is a function of the keys and values of tokens
``<= i`` only, computed by an associative scan of (running max, weight sum, weighted sums),
the streaming form of a softmax; no later token enters.

Positions: the pooling logits and slot scores use the un-rotated query and keys, i.e. a slot
behaves like a token at the query's own position (relative offset 0 under RoPE).

``pooled_prefix`` and ``pooled_all`` are the fast forms (O(L G D)); ``pooled_dense`` builds
the explicit ``[G, L, S]`` pooling matrices, the oracle.

Decoding
--------

Decoding for ``local`` (causal sliding window, optionally with learned or summary tokens).

The cache of one layer, per sequence:

* a ring buffer of the keys and values of the last ``w`` tokens, position p in slot
  ``p % w``: O(w D), independent of ``max_len`` (``w`` is clamped to ``max_len - 1`` as the
  forward clamps it to its length; one slot when ``w = 0``). A step reads the ring and the
  current token's own key (a score of its own in the same softmax), then overwrites the
  slot of position ``pos - w``, which no later query sees;
* ``global_mode="learned"``: nothing more (the g learned keys are re-made from the parameters
  at every step at internal positions 0..g-1; real token t sits at internal position t + g);
* ``global_mode="summary"`` (the ``local_global`` preset): the running pool of every slot,
  the state of ``pooled_prefix``'s scan: running max ``[B, N, G]``, weight sum
  ``[B, N, G]`` and weighted key and value sums ``[B, N, G, H]``, O(G D). Slot j's key and
  value at position i are the sums divided by the weight sum after token i, exactly the
  forward's prefix pool (a streaming softmax; only the order of float additions differs).

``prefill`` is the parallel forward plus a cache fill, so a long prompt costs what training
costs. Letters follow the legend in ``base.py``; S is the ring's ``w`` slots.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import masks
from lrm.mixers.attention import (
  FUSED,
  SOFTMAX_FLOPS,
  AttentionBase,
  attend_one,
  attention_impl,
  block_sparse_attention,
  dense_attention,
  full_rows,
  fused_attend,
  key_mask,
  merge_one,
  project_one,
  rotary,
  rotary_at,
  rows,
  slot_values,
  write_at,
)
from lrm.mixers.base import MASKED_LOGIT
from lrm.mixers.masks import masked_softmax
from lrm.registry import register

# ---- summary slots -------------------------------------------------------------------------------
F32 = jnp.float32


def pool_logits(u: jax.Array, k: jax.Array) -> jax.Array:
  """``u [G, N, H]`` (pre-scaled) and ``k [B, N, L, H]`` -> float32 ``[B, N, G, L]``."""
  return jnp.einsum("GNH,BNLH->BNGL", u, k, preferred_element_type=F32)


def _combine(a: tuple, b: tuple) -> tuple:
  """Join two pooled spans (running max m, weight sum s, weighted key and value sums)."""
  m1, s1, k1, v1 = a
  m2, s2, k2, v2 = b
  m = jnp.maximum(m1, m2)
  c1, c2 = jnp.exp(m1 - m), jnp.exp(m2 - m)
  scale = lambda z1, z2: z1 * c1[..., None] + z2 * c2[..., None]  # noqa: E731
  return m, s1 * c1 + s2 * c2, scale(k1, k2), scale(v1, v2)


def pooled_prefix(
  logits: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Causal slots: for every position i, the pool of the real tokens t <= i.

  ``logits [B, N, G, L]``, ``k, v [B, N, L, H]``, ``valid [B, L]``. Returns keys and values
  ``[B, N, L, G, H]`` (float32) and ``ok [B, 1, L, G]`` (at least one real token so far).
  The running max carries no gradient (the pooled averages do not depend on it); each
  token's weight enters as ``exp(a - stop_gradient(a))``, 1 in value with the right slope.
  """
  real = valid[:, None, None, :]  # [B, 1, 1, L]
  a = jnp.where(real, logits, MASKED_LOGIT)
  m = jax.lax.stop_gradient(a)
  s = jnp.where(real, jnp.exp(a - m), 0.0)  # [B, N, G, L]
  zk = s[..., None] * k.astype(F32)[:, :, None]  # [B, N, G, L, H]
  zv = s[..., None] * v.astype(F32)[:, :, None]
  _, s, zk, zv = jax.lax.associative_scan(_combine, (m, s, zk, zv), axis=3)
  inv = jnp.where(s > 0, 1.0 / jnp.maximum(s, 1e-30), 0.0)[..., None]
  ok = jnp.cumsum(valid, axis=1)[:, None, :, None] > 0  # [B, 1, L, 1]
  order = (0, 1, 3, 2, 4)  # [B, N, G, L, H] -> [B, N, L, G, H]
  G = logits.shape[2]
  return (zk * inv).transpose(order), (zv * inv).transpose(order), jnp.repeat(ok, G, axis=3)


def pooled_all(
  logits: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Bidirectional slots, the same for every position: keys and values ``[B, N, 1, G, H]``,
  ``ok [B, 1, 1, G]``."""
  (p,) = masked_softmax([(logits, valid[:, None, None, :])])  # [B, N, G, L]
  ks = jnp.einsum("BNGL,BNLH->BNGH", p, k.astype(F32))[:, :, None]
  vs = jnp.einsum("BNGL,BNLH->BNGH", p, v.astype(F32))[:, :, None]
  ok = jnp.broadcast_to(valid.any(axis=1)[:, None, None, None], (valid.shape[0], 1, 1, p.shape[2]))
  return ks, vs, ok


def pooled_dense(
  logits: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, *, causal: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Oracle of both: explicit pooling matrices ``[B, N, G, L, S]`` (row i: softmax over the
  tokens query i may see), applied to k and v. Same outputs as ``pooled_prefix`` (causal)
  with ``L`` in place of the broadcast axis otherwise."""
  L = logits.shape[-1]
  see = masks.causal_mask(L) if causal else np.ones((L, L), bool)  # [L, S]
  allowed = jnp.asarray(see)[None, None, None] & valid[:, None, None, None, :]  # [B, 1, 1, L, S]
  scores = jnp.broadcast_to(logits[:, :, :, None, :], (*logits.shape[:3], L, L))
  (p,) = masked_softmax([(scores, allowed)])  # [B, N, G, L, S]
  ks = jnp.einsum("BNGLS,BNSH->BNLGH", p, k.astype(F32))
  vs = jnp.einsum("BNGLS,BNSH->BNLGH", p, v.astype(F32))
  ok = jnp.moveaxis(allowed.any(-1), 2, 3)  # [B, 1, L, 1]
  return ks, vs, jnp.repeat(ok, logits.shape[2], axis=3)


def slot_scores(q: jax.Array, ks: jax.Array) -> jax.Array:
  """``q [B, N, L, H]`` (scaled) against ``ks [B, N, L|1, G, H]`` -> float32 ``[B, N, L, G]``."""
  if ks.shape[2] == 1:
    return jnp.einsum("BNLH,BNGH->BNLG", q, ks[:, :, 0], preferred_element_type=F32)
  return jnp.einsum("BNLH,BNLGH->BNLG", q, ks, preferred_element_type=F32)


def dense_with_slots(
  q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, slots: tuple
) -> jax.Array:
  """The oracle of attention with slots: ``dense_attention`` with the slots' scores in the
  same softmax. ``mask`` broadcastable to ``[B, N, L, S]``; returns float32 ``[B, N, L, H]``."""
  ss, vs, ok = slots
  s = jnp.einsum("BNLH,BNSH->BNLS", q, k, preferred_element_type=F32)  # [B, N, L, S]
  p, ps = masked_softmax([(s, mask), (ss, ok)])
  o = jnp.einsum("BNLS,BNSH->BNLH", p.astype(v.dtype), v, preferred_element_type=F32)
  return o + slot_values(ps, vs)


# ---- decoding ------------------------------------------------------------------------------------


def _pool_push(cache: dict, a: jax.Array, k: jax.Array, v: jax.Array) -> dict:
  """Add one token (pooling logits ``a [B, N, G]``, ``k, v [B, N, H]``) to the running pools:
  ``_combine`` of the pool so far with the token's own span (max a, sum 1)."""
  m0, s0 = cache["pool_max"], cache["pool_sum"]
  m = jnp.maximum(m0, a)
  c0, c1 = jnp.exp(m0 - m), jnp.exp(a - m)  # [B, N, G]
  join = lambda z, x: z * c0[..., None] + x.astype(F32)[:, :, None] * c1[..., None]  # noqa: E731
  return {
    "pool_max": m,
    "pool_sum": s0 * c0 + c1,
    "pool_k": join(cache["pool_k"], k),
    "pool_v": join(cache["pool_v"], v),
  }


# ---- the mixer -----------------------------------------------------------------------------------
GLOBAL_MODES = ("summary", "first", "learned")


def pad_positions(a: jax.Array, extra: int) -> jax.Array:
  """Zero-pad axis 2 (positions of ``[B, N, L, ...]``) by ``extra`` at the end."""
  pads = [(0, 0)] * a.ndim
  pads[2] = (0, extra)
  return jnp.pad(a, pads)


@register("mixer", "local")
class LocalAttention(AttentionBase):
  """Sliding-window multi-head attention (radius ``window``) + optional global tokens."""

  IMPLS = ("auto", "blocked", "dense", *FUSED)  # auto: choose_impl
  MIN_BLOCK = 16  # smaller blocks make matmuls too small to be efficient

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    window: int = 64,
    num_heads: int = 4,
    global_tokens: int = 0,
    global_mode: str = "first",
    impl: str = "auto",
    rotary: bool = False,
  ):
    if not isinstance(window, int | np.integer) or window < 0:
      raise ValueError(f"local: window must be an int >= 0 (the radius w), got {window!r}")
    if global_tokens < 0:
      raise ValueError(f"local: global_tokens must be >= 0, got {global_tokens}")
    if global_mode not in GLOBAL_MODES:
      raise ValueError(
        f"local: unknown global_mode '{global_mode}'; choose one of {', '.join(GLOBAL_MODES)}"
      )
    if impl in FUSED and global_tokens:
      raise ValueError(f"local: impl='{impl}' has no global tokens; use impl='auto' or 'blocked'")
    if causal and global_tokens and global_mode == "first":
      raise ValueError(
        "local: global_mode='first' gives a causal model no reach (the first tokens see only "
        "themselves); use global_mode='summary'"
      )
    super().__init__(
      dim,
      causal=causal,
      rngs=rngs,
      layer_idx=layer_idx,
      num_heads=num_heads,
      rotary=rotary,
      impl=impl,
    )
    self.window = int(window)
    self.global_tokens, self.global_mode = int(global_tokens), global_mode
    self.learned = global_mode == "learned" and global_tokens > 0
    self.summary = global_mode == "summary" and global_tokens > 0
    init = nnx.initializers.normal(0.02)
    if self.learned:
      self.global_emb = nnx.Param(init(rngs.params(), (global_tokens, dim)))  # [G, D]
    if self.summary:  # the slots' pooling queries, [G, N, H]
      self.slot_query = nnx.Param(init(rngs.params(), (global_tokens, num_heads, self.head_dim)))

  def choose_impl(self, dtype: jnp.dtype = F32, length: int | None = None) -> str:
    return attention_impl(
      self.requested_impl,
      dtype=dtype,
      causal=self.causal,
      window=self.window,
      global_tokens=self.global_tokens,
      head_dim=self.head_dim,
      length=length,
    )

  def geometry(self, length: int) -> tuple[int, int, int, int]:
    """(window, block T, blocks W, global g) used at internal length ``length``."""
    w = min(self.window, length - 1)
    T = min(max(w, self.MIN_BLOCK), length)
    g = 0 if self.summary else min(self.global_tokens, length)  # global positions
    return w, T, masks.num_blocks(length, T), g

  def offsets(self, w: int, W: int) -> tuple[int, ...]:
    if w == 0 or W == 1:
      return (0,)
    return (-1, 0) if self.causal else (-1, 0, 1)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self._forward(x, mask)[0]

  def _forward(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, ...]:
    """(output ``[B, L, D]``, and for decoding's prefill: keys and values ``[B, N, G+L|L, H]``
    as the band reads them, and the un-rotated keys that summary slots pool, or None)."""
    B, L, _ = x.shape
    valid = key_mask(mask, B, L)
    h = x
    if self.learned:
      g = self.global_tokens
      glob = jnp.broadcast_to(self.global_emb[...].astype(x.dtype), (B, g, self.dim))
      h = jnp.concatenate([glob, x], axis=1)  # [B, G+L, D]
      valid = jnp.concatenate([jnp.ones((B, g), bool), valid], axis=1)
    Lx = h.shape[1]
    w, T, W, g = self.geometry(Lx)
    if self.summary:
      q, k, v = self.project(h, rotate=False)  # [B, N, L, H]
      slots, pooled = self._slots(q, k, v, valid), k
      if self.rotary:
        q, k = rotary(q, np.arange(Lx)), rotary(k, np.arange(Lx))
    else:
      q, k, v = self.project(h)  # [B, N, G+L, H] (learned) or [B, N, L, H]
      slots = pooled = None
    impl = self.choose_impl(q.dtype, Lx)  # fused: cuDNN / Pallas sliding window
    if impl in FUSED:
      o = fused_attend(impl, q, k, v, None if mask is None else valid, causal=self.causal, window=w)
    elif impl == "dense":
      m = valid[:, None, None, :] & masks.local_global_mask(Lx, w, g, causal=self.causal)
      o = dense_attention(q, k, v, m) if slots is None else dense_with_slots(q, k, v, m, slots)
    else:
      o = self._blocked(q, k, v, valid, w, T, W, g, slots)
    if self.learned:
      o = o[:, :, self.global_tokens :]  # drop the learned tokens' rows
    return self.merge(o, x.dtype), k, v, pooled

  def _slots(self, q, k, v, valid) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Summary slots of un-rotated ``q, k, v``: (scores ``[B, N, L, G]``, values, ok)."""
    u = self.slot_query[...].astype(k.dtype) * (1.0 / math.sqrt(self.head_dim))  # [G, N, H]
    logits = pool_logits(u, k)  # [B, N, G, L]
    if self.impl == "dense":
      ks, vs, ok = pooled_dense(logits, k, v, valid, causal=self.causal)
    else:
      pool = pooled_prefix if self.causal else pooled_all
      ks, vs, ok = pool(logits, k, v, valid)  # [B, N, L|1, G, H], [B, 1, L|1, G]
    return slot_scores(q, ks), vs, ok

  def _blocked(self, q, k, v, valid, w: int, T: int, W: int, g: int, slots) -> jax.Array:
    Lx, Lp = q.shape[2], W * T
    pad = ((0, 0), (0, 0), (0, Lp - Lx), (0, 0))
    q, k, v = (jnp.pad(a, pad) for a in (q, k, v))  # [B, N, W*T, H]
    valid = jnp.pad(valid, ((0, 0), (0, Lp - Lx)))  # padded tail is never a key
    if slots is not None:  # per-position slot arrays are padded like the queries
      slots = tuple(a if a.shape[2] == 1 else pad_positions(a, Lp - Lx) for a in slots)
    o = block_sparse_attention(
      q,
      k,
      v,
      valid,
      block=T,
      first=0,
      count=W,
      causal=self.causal,
      offsets=self.offsets(w, W),
      window=w,
      min_key=g,  # global keys come through `shared`, never twice
      shared=np.arange(g) if g else None,
      slots=slots,
    )  # [B, N, W*T, H]
    if g and not self.causal and not self.learned:  # learned rows are discarded anyway
      first = full_rows(q, k, v, valid, 0, g, causal=False)  # [B, N, G, H]
      o = jnp.concatenate([first, o[:, :, g:]], axis=2)
    return o[:, :, :Lx]

  def flops(self, length: int) -> int:
    Lx = length + (self.global_tokens if self.learned else 0)
    w, T, W, g = self.geometry(Lx)
    if self.impl == "dense":
      pairs = Lx * Lx
    else:
      pairs = W * T * (len(self.offsets(w, W)) * T + g)
      if g and not self.causal and not self.learned:
        pairs += g * W * T
    f = self.projection_flops(Lx, length) + self.score_flops(pairs)
    return int(
      f + (self.slot_flops(Lx, Lx if self.impl == "dense" else W * T) if self.summary else 0)
    )

  def slot_flops(self, length: int, queries: int) -> int:
    """Summary slots: pooling logits, the pooling itself and ``queries`` x G slot scores."""
    L, G, N, H = length, self.global_tokens, self.num_heads, self.head_dim
    if self.impl == "dense":
      pool = L * L * (4 * H + SOFTMAX_FLOPS)  # the [L, S] pooling matrix, times k and v
    elif self.causal:
      pool = L * (16 * H + 21)  # prefix scan: ~2L joins of (max, sum, k and v sums)
    else:
      pool = L * (4 * H + SOFTMAX_FLOPS)
    return int(2 * L * G * N * H + G * N * pool + self.score_flops(queries * G))

  def receptive_field(self) -> tuple[int, int] | None:
    if self.summary:
      return super().receptive_field()  # the whole sequence (the whole past, if causal)
    if self.global_tokens and not self.learned:
      # "first" (bidirectional): one layer reaches its window and the first g tokens, a
      # second one everything (what their rows gathered); stacked reach is the whole sequence
      return None
    return (self.window, 0 if self.causal else self.window)

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): each query scores only the keys
    inside its window (i-w..i causal, |i-j| <= w otherwise, clipped at the ends) and its
    global tokens, whatever blocks the kernel computes."""
    L, w, g = length, min(self.window, length - 1), self.global_tokens
    i = np.arange(L)
    lo, hi = np.maximum(i - w, 0), i if self.causal else np.minimum(i + w, L - 1)
    pairs = int((hi - lo + 1).sum()) + L * g  # every query also sees the g global keys
    if g and not self.causal and not self.learned and not self.summary:
      pairs += g * L  # the global rows see everything
    Lx = L + (g if self.learned else 0)
    f = self.projection_flops(Lx, L) + self.score_flops(pairs)
    return int(f + (self.slot_flops(L, L) if self.summary else 0))

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    slots = max(min(self.window, max_len - 1), 1)
    shape = (batch * self.num_heads, slots, self.head_dim)  # [B*N, S, H]
    cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    if self.summary:
      pools = (batch, self.num_heads, self.global_tokens)  # [B, N, G]
      cache |= {
        "pool_max": jnp.full(pools, MASKED_LOGIT, F32),
        "pool_sum": jnp.zeros(pools, F32),
        "pool_k": jnp.zeros((*pools, self.head_dim), F32),  # [B, N, G, H]
        "pool_v": jnp.zeros((*pools, self.head_dim), F32),
      }
    return cache

  def _slot_query(self, dtype: jnp.dtype) -> jax.Array:
    """The summary slots' pooling queries, scaled as ``LocalAttention._slots``: ``[G, N, H]``."""
    return self.slot_query[...].astype(dtype) * (1.0 / math.sqrt(self.head_dim))

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    g = self.global_tokens if self.learned else 0
    q, k, v = project_one(self, x, pos + g, rotate=not self.summary)  # [B, N, H]
    extras, new = [], {}
    if self.summary:  # pool the un-rotated key first; slots score the un-rotated query
      a = jnp.einsum("GNH,BNH->BNG", self._slot_query(k.dtype), k, preferred_element_type=F32)
      new = _pool_push(cache, a, k, v)
      inv = (1.0 / new["pool_sum"])[..., None]  # > 0: the token itself is in the pool
      ks, vs = new["pool_k"] * inv, new["pool_v"] * inv  # [B, N, G, H]
      slot_scores = jnp.einsum("BNH,BNGH->BNG", q, ks, preferred_element_type=F32)
      extras = [(rows(slot_scores), True)]  # [B*N, G]
      if self.rotary:
        q, k = rotary_at(q, pos), rotary_at(k, pos)
    q, k, v = rows(q), rows(k), rows(v)  # [B*N, H]
    S = cache["k"].shape[1]
    held = pos - S + (jnp.arange(S) - pos) % S  # [S]: the position in each slot, pos-S..pos-1
    ok = (held >= 0) & (held >= pos - self.window)
    keys, values = cache["k"], cache["v"]  # [B*N, S, H]
    if g:  # learned tokens: keys at internal positions 0..g-1, seen by every query
      B = x.shape[0]
      emb = jnp.broadcast_to(self.global_emb[...].astype(x.dtype), (B, g, self.dim))
      _, gk, gv = (rows(a) for a in self.project(emb))  # [B*N, G, H]
      keys = jnp.concatenate([gk.astype(keys.dtype), keys], axis=1)  # [B*N, G+S, H]
      values = jnp.concatenate([gv.astype(values.dtype), values], axis=1)
      ok = jnp.concatenate([jnp.ones((g,), bool), ok])
    own = jnp.sum(q.astype(F32) * k.astype(F32), axis=-1, keepdims=True)  # [B*N, 1]
    o, px = attend_one(q, keys, values, ok, [(own, True), *extras])  # [B*N, H]
    o = o + px[0] * v.astype(F32)
    if self.summary:
      o = o + jnp.einsum("BNG,BNGH->BNH", px[1].reshape(vs.shape[:3]), vs).reshape(o.shape)
    ring_k = write_at(cache["k"], k, pos % S)  # position pos - S leaves
    ring_v = write_at(cache["v"], v, pos % S)
    return merge_one(self, o, x.dtype), {"k": ring_k, "v": ring_v, **new}

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward of a prompt ``x [B, P, D]`` (positions 0..P-1) into a fresh cache:
    the ring gets the last ``w`` keys and values, the pools the whole prompt."""
    if not self.causal:
      raise self.decode_error()
    P, S = x.shape[1], cache["k"].shape[1]
    y, k, v, pooled = self._forward(x, None)  # k, v [B, N, G+P|P, H]
    if self.learned:
      k, v = k[:, :, self.global_tokens :], v[:, :, self.global_tokens :]  # [B, N, P, H]
    keep = np.arange(max(0, P - S), P)  # the last S positions, each into slot p % S
    new = {
      "k": cache["k"].at[:, keep % S].set(rows(k[:, :, keep]).astype(cache["k"].dtype)),
      "v": cache["v"].at[:, keep % S].set(rows(v[:, :, keep]).astype(cache["v"].dtype)),
    }
    if self.summary:  # the pool of the whole prompt in one reduction
      a = jnp.einsum(
        "GNH,BNPH->BNGP", self._slot_query(pooled.dtype), pooled, preferred_element_type=F32
      )
      top = a.max(axis=-1)  # [B, N, G]
      e = jnp.exp(a - top[..., None])  # [B, N, G, P]
      new |= {
        "pool_max": top,
        "pool_sum": e.sum(axis=-1),
        "pool_k": jnp.einsum("BNGP,BNPH->BNGH", e, pooled.astype(F32)),
        "pool_v": jnp.einsum("BNGP,BNPH->BNGH", e, v.astype(F32)),
      }
    return y, new
