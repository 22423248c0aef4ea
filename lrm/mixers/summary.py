"""Global summary slots: g learned queries pool the keys and values of the sequence.

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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrm.mixers import masks
from lrm.mixers.base import MASKED_LOGIT
from lrm.mixers.masks import masked_softmax

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


def slot_values(p: jax.Array, vs: jax.Array) -> jax.Array:
  """Probabilities ``p [B, N, L, G]`` times ``vs [B, N, L|1, G, H]`` -> ``[B, N, L, H]``."""
  if vs.shape[2] == 1:
    return jnp.einsum("BNLG,BNGH->BNLH", p, vs[:, :, 0])
  return jnp.einsum("BNLG,BNLGH->BNLH", p, vs)


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
