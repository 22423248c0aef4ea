"""Block-sparse attention, the kernel shared by ``local``, ``random`` and ``bigbird``.

The (padded) sequence is cut into W blocks of T tokens. Each query block reads only the key
blocks its pattern allows: a band of neighbours (static slices), a table of gathered blocks
(random blocks) and a few shared key positions (global tokens), so time and memory are
linear in L and no L x S matrix is formed. Query blocks that attend to every key (global
rows) go through ``full_rows``, a slice of the dense oracle. Everything is tested against
``attention.dense_attention`` with the masks of ``masks.py``. Tensors use the layout
``[B, N, L, H]`` of ``attention.py``; letters are those of the legend in ``base.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrm.mixers import masks, summary
from lrm.mixers.attention import dense_attention, masked_softmax


def full_rows(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, start: int, stop: int, causal: bool
) -> jax.Array:
  """Queries ``start:stop`` attend to every (real, and if causal earlier) key.

  O((stop - start) * S), used for global query rows. Returns float32 ``[B, N, stop-start, H]``."""
  m = valid[:, None, None, :]  # [B, 1, 1, S]
  if causal:
    m = m & (np.arange(k.shape[2])[None, :] <= np.arange(start, stop)[:, None])
  return dense_attention(q[:, :, start:stop], k, v, m)


def _band(xb: jax.Array, first: int, count: int, offsets: Sequence[int]) -> jax.Array:
  """Blocks ``c + o`` for query blocks c in ``first:first+count``, each offset o in order.

  ``xb [B, N, W, T, ...]`` -> ``[B, N, Q, O*T, ...]`` (Q = count, O = len(offsets)); blocks outside
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
  """``x[:, :, idx]`` (``[B, N, G, ...]``), as static slices, one per contiguous run of ``idx``."""
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
  slots: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> jax.Array:
  """Block-sparse attention for query blocks ``first .. first+count-1``: O(count*T*keys).

  ``q, k, v [B, N, W*T, H]`` (already padded to whole blocks, q pre-scaled), ``valid
  [B, W*T]`` key padding mask. Query block c (one of Q = ``count``) sees U + G keys:

  * band: key blocks ``c + o`` for ``o in offsets`` (sliced; ``band_ok [Q, O]`` drops
    single entries, e.g. a window block that is also a global block);
  * table: key blocks ``table [Q, R]`` (gathered; ``table_ok`` marks real entries);
  * shared: key positions ``shared [G]`` that every query sees (global columns);
  * slots: G extra keys per query given by their scores: ``(scores [B, N, W*T, G] float32,
    values [B, N, W*T|1, G, H], ok [B, 1, W*T|1, G])`` (per query position, or one set for
    all; ``summary.py``).

  Band and table keys together are the U = (O + R) * T keys of the block. Token-level rules
  on top: causal ``j <= i``; ``window``: ``|i - j| <= window`` and ``min_key``:
  ``j >= min_key`` for band/table keys. One softmax spans all keys of a row.
  Returns float32 ``[B, N, Q*T, H]``.
  """
  B, N, Lp, H = q.shape
  T, W = block, Lp // block
  blocks = lambda a: a.reshape(a.shape[0], a.shape[1], W, T, *a.shape[3:])  # [B, N, W, T, ...]
  qb = q[:, :, first * T : (first + count) * T].reshape(B, N, count, T, H)  # [B, N, Q, T, H]
  kv_valid = blocks(valid[:, None])  # [B, 1, W, T]
  pos = np.arange(Lp).reshape(1, 1, W, T)  # [1, 1, W, T]
  xp = masks.array_module(table, table_ok)  # jnp only for a traced (resampled) table
  ks, vs, keyv, ps, oks = [], [], [], [], []  # per key source (band, table)
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
  kg, vg = jnp.concatenate(ks, axis=3), jnp.concatenate(vs, axis=3)  # [B, N, Q, U, H]
  # which (query, key) pairs the pattern allows, before padding: [Q, T, U]
  kpos = xp.concatenate(ps, axis=1)[:, None, :]  # [Q, 1, U]
  qpos = (first * T + np.arange(count * T)).reshape(count, T, 1)  # [Q, T, 1]
  rule = xp.concatenate(oks, axis=1)[:, None, :]  # [Q, 1, U]
  if causal:
    rule = rule & (kpos <= qpos)
  if window is not None:
    rule = rule & (abs(kpos - qpos) <= window)
  if min_key:
    rule = rule & (kpos >= min_key)
  m = jnp.concatenate(keyv, axis=3)[:, :, :, None, :] & rule  # [B, 1, Q, T, U]
  s = jnp.einsum("BNQTH,BNQUH->BNQTU", qb, kg, preferred_element_type=jnp.float32)
  parts = [(s, m)]  # s: [B, N, Q, T, U]
  if shared is not None and len(shared):
    kh, vh = _positions(k, shared), _positions(v, shared)  # [B, N, G, H]
    sh = jnp.einsum("BNQTH,BNGH->BNQTG", qb, kh, preferred_element_type=jnp.float32)
    mh = _positions(valid[:, None], shared)[:, :, None, None, :]  # [B, 1, 1, 1, G]
    if causal:
      mh = mh & (shared <= qpos)  # [B, 1, Q, T, G]
    parts.append((sh, mh))
  if slots is not None:
    ss, vs, ok = (a if a.shape[2] == 1 else a[:, :, first * T : (first + count) * T] for a in slots)
    parts.append((_query_blocks(ss, count, T), _query_blocks(ok, count, T)))  # [B, N, Q, T, G]
  probs = masked_softmax(parts)
  o = jnp.einsum(
    "BNQTU,BNQUH->BNQTH", probs[0].astype(vg.dtype), vg, preferred_element_type=jnp.float32
  )  # [B, N, Q, T, H]
  if shared is not None and len(shared):
    o = o + jnp.einsum(
      "BNQTG,BNGH->BNQTH", probs[1].astype(vh.dtype), vh, preferred_element_type=jnp.float32
    )
  o = o.reshape(B, N, count * T, H)
  if slots is not None:
    o = o + summary.slot_values(probs[-1].reshape(B, N, count * T, -1), vs)
  return o


def _query_blocks(x: jax.Array, count: int, T: int) -> jax.Array:
  """``[B, N|1, Q*T|1, G] -> [B, N|1, Q|1, T|1, G]`` (a broadcast axis stays one)."""
  if x.shape[2] == 1:
    return x[:, :, :, None]
  return x.reshape(x.shape[0], x.shape[1], count, T, x.shape[3])
