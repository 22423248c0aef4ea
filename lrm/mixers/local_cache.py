"""Decoding for ``local`` (causal sliding window, optionally with learned or summary tokens).

The cache of one layer, per sequence:

* a ring buffer of the keys and values of the last ``w`` tokens, position p in slot
  ``p % w``: O(w D), independent of ``max_len`` (``w`` is clamped to ``max_len - 1`` as the
  forward clamps it to its length; one slot when ``w = 0``). A step reads the ring and the
  current token's own key (a score of its own in the same softmax), then overwrites the
  slot of position ``pos - w``, which no later query sees;
* ``global_mode="learned"``: nothing more (the g learned keys are re-made from the parameters
  at every step at internal positions 0..g-1; real token t sits at internal position t + g);
* ``global_mode="summary"`` (the ``local_global`` preset): the running pool of every slot,
  the state of ``summary.pooled_prefix``'s scan: running max ``[B, N, G]``, weight sum
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

from lrm.mixers import attention_cache as ac
from lrm.mixers.base import MASKED_LOGIT

F32 = jnp.float32


def _pool_push(cache: dict, a: jax.Array, k: jax.Array, v: jax.Array) -> dict:
  """Add one token (pooling logits ``a [B, N, G]``, ``k, v [B, N, H]``) to the running pools:
  ``summary._combine`` of the pool so far with the token's own span (max a, sum 1)."""
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


class LocalDecoding:
  """``init_cache``, ``step`` and ``prefill`` of ``LocalAttention`` (a mixin)."""

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
    q, k, v = ac.project_one(self, x, pos + g, rotate=not self.summary)  # [B, N, H]
    extras, new = [], {}
    if self.summary:  # pool the un-rotated key first; slots score the un-rotated query
      a = jnp.einsum("GNH,BNH->BNG", self._slot_query(k.dtype), k, preferred_element_type=F32)
      new = _pool_push(cache, a, k, v)
      inv = (1.0 / new["pool_sum"])[..., None]  # > 0: the token itself is in the pool
      ks, vs = new["pool_k"] * inv, new["pool_v"] * inv  # [B, N, G, H]
      slot_scores = jnp.einsum("BNH,BNGH->BNG", q, ks, preferred_element_type=F32)
      extras = [(ac.rows(slot_scores), True)]  # [B*N, G]
      if self.rotary:
        q, k = ac.rotary_at(q, pos), ac.rotary_at(k, pos)
    q, k, v = ac.rows(q), ac.rows(k), ac.rows(v)  # [B*N, H]
    S = cache["k"].shape[1]
    held = pos - S + (jnp.arange(S) - pos) % S  # [S]: the position in each slot, pos-S..pos-1
    ok = (held >= 0) & (held >= pos - self.window)
    keys, values = cache["k"], cache["v"]  # [B*N, S, H]
    if g:  # learned tokens: keys at internal positions 0..g-1, seen by every query
      B = x.shape[0]
      emb = jnp.broadcast_to(self.global_emb[...].astype(x.dtype), (B, g, self.dim))
      _, gk, gv = (ac.rows(a) for a in self.project(emb))  # [B*N, G, H]
      keys = jnp.concatenate([gk.astype(keys.dtype), keys], axis=1)  # [B*N, G+S, H]
      values = jnp.concatenate([gv.astype(values.dtype), values], axis=1)
      ok = jnp.concatenate([jnp.ones((g,), bool), ok])
    own = jnp.sum(q.astype(F32) * k.astype(F32), axis=-1, keepdims=True)  # [B*N, 1]
    o, px = ac.attend_one(q, keys, values, ok, [(own, True), *extras])  # [B*N, H]
    o = o + px[0] * v.astype(F32)
    if self.summary:
      o = o + jnp.einsum("BNG,BNGH->BNH", px[1].reshape(vs.shape[:3]), vs).reshape(o.shape)
    ring_k = ac.write_at(cache["k"], k, pos % S)  # position pos - S leaves
    ring_v = ac.write_at(cache["v"], v, pos % S)
    return ac.merge_one(self, o, x.dtype), {"k": ring_k, "v": ring_v, **new}

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
      "k": cache["k"].at[:, keep % S].set(ac.rows(k[:, :, keep]).astype(cache["k"].dtype)),
      "v": cache["v"].at[:, keep % S].set(ac.rows(v[:, :, keep]).astype(cache["v"].dtype)),
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
