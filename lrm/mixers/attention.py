"""Shared attention pieces and the full-attention mixer ``global``.

* ``AttentionBase``: QKV / output projections, rotary positions, option checks, FLOP
  accounting for the projections. Every attention mixer subclasses it.
* ``dense_attention``: the O(L*S) masked oracle every efficient kernel is tested against
  (its softmax, ``masks.masked_softmax``, is shared with the kernels and the caches).

The block-sparse kernel of ``local``, ``random`` and ``bigbird`` is in ``blocked.py``.
Inside the kernels tensors use the layout ``[B, N, L, H]`` so that every einsum has its
batch dimensions leading and contracts the last one (no transposes inside dots).

Decoding (causal only): ``global`` keeps every past key and value, ``[B*N, S, H]`` up to
``max_len``, and a step attends its query to all of them; the pieces every attention mixer's
``step`` shares are in ``attention_cache.py``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import attention_cache as ac
from lrm.mixers import dispatch, masks
from lrm.mixers.base import Mixer
from lrm.mixers.block_core import unstack
from lrm.mixers.masks import masked_softmax
from lrm.registry import register

# XLA's cost model charges about this many flops per score element for mask + softmax
# (select, max, subtract, exp, select, sum, divide, ...): calibrated against cost_analysis
# at dim=64, L=256; tests/test_attention.py checks every mixer total to 15%.
SOFTMAX_FLOPS = 8


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked softmax attention; the oracle. ``q [B, N, L, H]``, ``k, v [B, N, S, H]``, ``mask``
  broadcastable to ``[B, N, L, S]`` (True = may attend). ``q`` is pre-scaled.
  Returns float32 ``[B, N, L, H]``."""
  s = jnp.einsum("BNLH,BNSH->BNLS", q, k, preferred_element_type=jnp.float32)  # [B, N, L, S]
  (p,) = masked_softmax([(s, mask)])
  return jnp.einsum("BNLS,BNSH->BNLH", p.astype(v.dtype), v, preferred_element_type=jnp.float32)


def rotary(x: jax.Array, positions: np.ndarray, base: float = 10_000.0) -> jax.Array:
  """RoPE on ``x [B, N, L, H]`` by absolute ``positions [L]`` (rotate-half pairing)."""
  half = x.shape[-1] // 2
  freq = base ** (-np.arange(half) / half)  # [H/2]
  angle = positions[:, None].astype(np.float64) * freq[None, :]  # [L, H/2]
  cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class AttentionBase(Mixer):
  """Projections and bookkeeping shared by all attention mixers (not registered)."""

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int,
    num_heads: int,
    rotary: bool,
    impl: str,
  ):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl, num_heads=num_heads)
    if rotary and self.head_dim % 2:
      raise ValueError(f"{self.mixer_name()}: rotary needs an even head dim, got {self.head_dim}")
    self.rotary = rotary
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def project(self, x: jax.Array, *, rotate: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x [B, L, D]`` -> q (scaled by 1/sqrt(H)), k, v, each ``[B, N, L, H]``; rotary
    positions (if on) unless ``rotate=False``."""
    B, L, _ = x.shape
    qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, N, H]
    q, k, v = unstack(jnp.moveaxis(qkv, (2, 1), (0, 3)))  # each [B, N, L, H]
    if self.rotary and rotate:
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

  ``impl="auto"`` (default) picks per backend and dtype (``dispatch.py``): cuDNN flash
  attention on GPU, Pallas splash attention on TPU, else ``"xla"``:
  ``jax.nn.dot_product_attention``'s XLA path (which materialises the L x L scores).
  ``"cudnn"``/``"splash"`` force a fused kernel; ``impl="dense"`` is the einsum oracle.
  """

  IMPLS = ("auto", "xla", "dense", *dispatch.FUSED)

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    num_heads: int = 4,
    rotary: bool = False,
    impl: str = "auto",
  ):
    super().__init__(
      dim,
      causal=causal,
      rngs=rngs,
      layer_idx=layer_idx,
      num_heads=num_heads,
      rotary=rotary,
      impl=impl,
    )
    self._impl = dispatch.global_impl(self, jnp.float32)  # what runs in float32 here

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    q, k, v = self.project(x)  # [B, N, L, H]
    return self.merge(self._attend(q, k, v, mask), x.dtype)

  def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    B, _, L, _ = q.shape
    valid = key_mask(mask, B, L)
    impl = dispatch.global_impl(self, q.dtype, L)
    if impl in dispatch.FUSED:
      o = dispatch.attend(impl, q, k, v, None if mask is None else valid, causal=self.causal)
    elif impl == "dense":
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
    return o  # [B, N, L, H]

  # ---- decoding: every past key and value up to max_len, O(L D) per layer ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    shape = (batch * self.num_heads, max_len, self.head_dim)  # [B*N, S, H]
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    q, k, v = (ac.rows(a) for a in ac.project_one(self, x, pos))  # [B*N, H]
    cache = {"k": ac.write_at(cache["k"], k, pos), "v": ac.write_at(cache["v"], v, pos)}
    ok = jnp.arange(cache["k"].shape[1]) <= pos  # [S]: keys written so far
    o, _ = ac.attend_one(q, cache["k"], cache["v"], ok)
    return ac.merge_one(self, o, x.dtype), cache

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward of a prompt ``x [B, P, D]`` (positions 0..P-1) into a fresh cache."""
    if not self.causal:
      raise self.decode_error()
    q, k, v = self.project(x)  # [B, N, P, H]
    y = self.merge(self._attend(q, k, v, None), x.dtype)

    def put(buf: jax.Array, new: jax.Array) -> jax.Array:  # keys 0..P-1 of every row
      return jax.lax.dynamic_update_slice_in_dim(buf, ac.rows(new).astype(buf.dtype), 0, 1)

    return y, {"k": put(cache["k"], k), "v": put(cache["v"], v)}

  def flops(self, length: int) -> int:
    return int(self.projection_flops(length) + self.score_flops(length * length))

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): L(L+1)/2 pairs when causal (the
    kernel scores the whole square), L^2 otherwise."""
    L = length
    pairs = L * (L + 1) // 2 if self.causal else L * L
    return int(self.projection_flops(L) + self.score_flops(pairs))
