"""The ``global`` mixer: full softmax attention, the Transformer baseline, O(L^2) time.

Its kernels are attention's shared ones (``attention.py``): ``attention_impl`` chooses among
XLA's ``dot_product_attention``, the fused cuDNN / Pallas splash paths and the dense einsum
oracle ``dense_attention``. Decoding keeps every past key and value, ``[B*N, S, H]`` up to
``max_len``, and a step attends its query to all of them (``attend_one``). Letters follow the
legend in ``base.py``; S is the cache's key slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers import masks
from lrm.mixers.attention import (
  F32,
  FUSED,
  AttentionBase,
  attend_one,
  attention_impl,
  dense_attention,
  fused_attend,
  key_mask,
  merge_one,
  project_one,
  rows,
  write_at,
)
from lrm.registry import register


@register("mixer", "global")
class GlobalAttention(AttentionBase):
  """Full softmax multi-head attention (the Transformer baseline): O(L^2) time.

  ``impl="auto"`` (default) picks per backend and dtype (``py``): cuDNN flash
  attention on GPU, Pallas splash attention on TPU, else ``"xla"``:
  ``jax.nn.dot_product_attention``'s XLA path (which materialises the L x L scores).
  ``"cudnn"``/``"splash"`` force a fused kernel; ``impl="dense"`` is the einsum oracle.
  """

  IMPLS = ("auto", "xla", "dense", *FUSED)

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

  def choose_impl(self, dtype: jnp.dtype = F32, length: int | None = None) -> str:
    return attention_impl(
      self.requested_impl,
      dtype=dtype,
      causal=self.causal,
      window=None,
      global_tokens=0,
      head_dim=self.head_dim,
      length=length,
    )

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    q, k, v = self.project(x)  # [B, N, L, H]
    return self.merge(self._attend(q, k, v, mask), x.dtype)

  def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    B, _, L, _ = q.shape
    valid = key_mask(mask, B, L)
    impl = self.choose_impl(q.dtype, L)
    if impl in FUSED:
      o = fused_attend(impl, q, k, v, None if mask is None else valid, causal=self.causal)
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
    q, k, v = (rows(a) for a in project_one(self, x, pos))  # [B*N, H]
    cache = {"k": write_at(cache["k"], k, pos), "v": write_at(cache["v"], v, pos)}
    ok = jnp.arange(cache["k"].shape[1]) <= pos  # [S]: keys written so far
    o, _ = attend_one(q, cache["k"], cache["v"], ok)
    return merge_one(self, o, x.dtype), cache

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward of a prompt ``x [B, P, D]`` (positions 0..P-1) into a fresh cache."""
    if not self.causal:
      raise self.decode_error()
    q, k, v = self.project(x)  # [B, N, P, H]
    y = self.merge(self._attend(q, k, v, None), x.dtype)

    def put(buf: jax.Array, new: jax.Array) -> jax.Array:  # keys 0..P-1 of every row
      return jax.lax.dynamic_update_slice_in_dim(buf, rows(new).astype(buf.dtype), 0, 1)

    return y, {"k": put(cache["k"], k), "v": put(cache["v"], v)}

  def flops(self, length: int) -> int:
    return int(self.projection_flops(length) + self.score_flops(length * length))

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): L(L+1)/2 pairs when causal (the
    kernel scores the whole square), L^2 otherwise."""
    L = length
    pairs = L * (L + 1) // 2 if self.causal else L * L
    return int(self.projection_flops(L) + self.score_flops(pairs))
