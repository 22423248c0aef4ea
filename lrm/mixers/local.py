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
running pools (``local_cache.py``).

Global tokens, ``global_tokens=g`` on top of the window, in one of three modes:

* ``"summary"`` (the ``local_global`` preset): g slots whose keys and values pool the whole
  sequence (causal: the whole past) with learned queries (``summary.py``); every token reads
  them in the same softmax as its window. One layer reaches everything (everything before,
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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import dispatch, masks, summary
from lrm.mixers.attention import SOFTMAX_FLOPS, AttentionBase, dense_attention, key_mask, rotary
from lrm.mixers.blocked import block_sparse_attention, full_rows
from lrm.mixers.local_cache import LocalDecoding
from lrm.registry import register

GLOBAL_MODES = ("summary", "first", "learned")


def pad_positions(a: jax.Array, extra: int) -> jax.Array:
  """Zero-pad axis 2 (positions of ``[B, N, L, ...]``) by ``extra`` at the end."""
  pads = [(0, 0)] * a.ndim
  pads[2] = (0, extra)
  return jnp.pad(a, pads)


@register("mixer", "local")
class LocalAttention(LocalDecoding, AttentionBase):
  """Sliding-window multi-head attention (radius ``window``) + optional global tokens."""

  IMPLS = ("auto", "blocked", "dense", *dispatch.FUSED)  # auto: dispatch.py
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
    self._impl = dispatch.local_impl(self, jnp.float32)  # what runs in float32 here
    self.summary = global_mode == "summary" and global_tokens > 0
    init = nnx.initializers.normal(0.02)
    if self.learned:
      self.global_emb = nnx.Param(init(rngs.params(), (global_tokens, dim)))  # [G, D]
    if self.summary:  # the slots' pooling queries, [G, N, H]
      self.slot_query = nnx.Param(init(rngs.params(), (global_tokens, num_heads, self.head_dim)))

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
    impl = dispatch.local_impl(self, q.dtype, Lx)  # fused: cuDNN / Pallas sliding window
    if impl in dispatch.FUSED:
      o = dispatch.attend(
        impl, q, k, v, None if mask is None else valid, causal=self.causal, window=w
      )
    elif impl == "dense":
      m = valid[:, None, None, :] & masks.local_global_mask(Lx, w, g, causal=self.causal)
      o = (
        dense_attention(q, k, v, m)
        if slots is None
        else summary.dense_with_slots(q, k, v, m, slots)
      )
    else:
      o = self._blocked(q, k, v, valid, w, T, W, g, slots)
    if self.learned:
      o = o[:, :, self.global_tokens :]  # drop the learned tokens' rows
    return self.merge(o, x.dtype), k, v, pooled

  def _slots(self, q, k, v, valid) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Summary slots of un-rotated ``q, k, v``: (scores ``[B, N, L, G]``, values, ok)."""
    u = self.slot_query[...].astype(k.dtype) * (1.0 / math.sqrt(self.head_dim))  # [G, N, H]
    logits = summary.pool_logits(u, k)  # [B, N, G, L]
    if self.impl == "dense":
      ks, vs, ok = summary.pooled_dense(logits, k, v, valid, causal=self.causal)
    else:
      pool = summary.pooled_prefix if self.causal else summary.pooled_all
      ks, vs, ok = pool(logits, k, v, valid)  # [B, N, L|1, G, H], [B, 1, L|1, G]
    return summary.slot_scores(q, ks), vs, ok

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
      rows = full_rows(q, k, v, valid, 0, g, causal=False)  # [B, N, G, H]
      o = jnp.concatenate([rows, o[:, :, g:]], axis=2)
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
