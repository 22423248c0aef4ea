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

Global tokens (Longformer/ETC): ``global_tokens=g`` positions attend to everything and
are attended by everything, on top of the window. ``global_mode="first"`` makes the
first g tokens global: their keys are appended to every block's keys (L x g scores) and
their rows are computed separately (g x L scores), so memory stays linear.
``global_mode="learned"`` prepends g learned vectors (parameters) internally and strips
them from the output. Because a mixer maps [B, L, D] -> [B, L, D], the learned tokens are
re-created from the parameters in every layer: they act as learned key/value slots that
every query can read (an attention sink), but they cannot carry information from one
end of the sequence to the other. Use ``"first"`` for one-layer global reach.

Causal + global: a global key is visible only to queries at or after it, and the rows of
the first g tokens are ordinary causal rows (for ``"first"``, nothing extra to compute);
causality therefore holds exactly. Learned tokens come before every real token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import dispatch, masks
from lrm.mixers.attention import AttentionBase, dense_attention, key_mask
from lrm.mixers.blocked import block_sparse_attention, full_rows
from lrm.registry import register

GLOBAL_MODES = ("first", "learned")


@register("mixer", "local")
class LocalAttention(AttentionBase):
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
    if self.learned:
      init = nnx.initializers.normal(0.02)
      self.global_emb = nnx.Param(init(rngs.params(), (global_tokens, dim)))  # [G, D]

  def geometry(self, length: int) -> tuple[int, int, int, int]:
    """(window, block T, blocks W, global g) used at internal length ``length``."""
    w = min(self.window, length - 1)
    T = min(max(w, self.MIN_BLOCK), length)
    return w, T, masks.num_blocks(length, T), min(self.global_tokens, length)

  def offsets(self, w: int, W: int) -> tuple[int, ...]:
    if w == 0 or W == 1:
      return (0,)
    return (-1, 0) if self.causal else (-1, 0, 1)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
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
    q, k, v = self.project(h)  # [B, N, G+L, H] (learned) or [B, N, L, H]
    impl = dispatch.local_impl(self, q.dtype, Lx)  # fused: cuDNN / Pallas sliding window
    if impl in dispatch.FUSED:
      o = dispatch.attend(
        impl, q, k, v, None if mask is None else valid, causal=self.causal, window=w
      )
    elif impl == "dense":
      m = masks.local_global_mask(Lx, w, g, causal=self.causal)
      o = dense_attention(q, k, v, valid[:, None, None, :] & m)
    else:
      o = self._blocked(q, k, v, valid, w, T, W, g)
    if self.learned:
      o = o[:, :, self.global_tokens :]  # drop the learned tokens' rows
    return self.merge(o, x.dtype)

  def _blocked(self, q, k, v, valid, w: int, T: int, W: int, g: int) -> jax.Array:
    Lx, Lp = q.shape[2], W * T
    pad = ((0, 0), (0, 0), (0, Lp - Lx), (0, 0))
    q, k, v = (jnp.pad(a, pad) for a in (q, k, v))  # [B, N, W*T, H]
    valid = jnp.pad(valid, ((0, 0), (0, Lp - Lx)))  # padded tail is never a key
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
    return int(self.projection_flops(Lx, length) + self.score_flops(pairs))

  def receptive_field(self) -> tuple[int, int] | None:
    if self.global_tokens and not self.learned:
      return None  # any position reaches the first g tokens and they reach everything
    return (self.window, 0 if self.causal else self.window)
