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
from lrm.mixers.base import MASKED_LOGIT
from lrm.mixers.block_core import attend


def full_rows(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, start: int, stop: int, causal: bool
) -> jax.Array:
  """Queries ``start:stop`` attend to every (real, and if causal earlier) key.

  O((stop - start) * S), used for global query rows: one query block of all those rows whose
  keys are the whole sequence (no copy). Returns float32 ``[B, N, stop-start, H]``."""
  qb = q[:, :, None, start:stop]  # [B, N, 1, T, H], T = stop - start
  key = jnp.where(valid, 0.0, MASKED_LOGIT)[:, None, None, None, :]  # [B, 1, 1, 1, S]
  biases = [key]
  if causal:
    rule = np.arange(k.shape[2])[None, :] <= np.arange(start, stop)[:, None]  # [T, S]
    biases.append(np.where(rule, 0.0, MASKED_LOGIT).astype(np.float32))
  o, _ = attend(qb, k[:, :, None], v[:, :, None], biases, [])
  return o[:, :, 0]


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
  * shared: key positions ``shared [G]`` that every query sees (global columns), appended to
    every block's keys (causal ones inside the query blocks: extra score columns);
  * slots: G extra keys per query given by their scores: ``(scores [B, N, W*T, G] float32,
    values [B, N, W*T|1, G, H], ok [B, 1, W*T|1, G])`` (per query position, or one set for
    all; ``summary.py``).

  Band, table and shared keys together are the U = (O + R) * T + G keys of the block.
  Token-level rules on top: causal ``j <= i``; ``window``: ``|i - j| <= window`` and
  ``min_key``: ``j >= min_key`` for band keys. One softmax spans all keys (and slots) of a row.
  Returns float32 ``[B, N, Q*T, H]``.
  """
  B, N, Lp, H = q.shape
  T, W = block, Lp // block
  blocks = lambda a: a.reshape(a.shape[0], a.shape[1], W, T, *a.shape[3:])  # [B, N, W, T, ...]
  qb = q[:, :, first * T : (first + count) * T].reshape(B, N, count, T, H)  # [B, N, Q, T, H]
  kv_valid = blocks(valid[:, None])  # [B, 1, W, T]
  pos = np.arange(Lp).reshape(1, 1, W, T)  # [1, 1, W, T]
  qblock = first + np.arange(count)[:, None]  # [Q, 1]
  xp = masks.array_module(table, table_ok)  # jnp only for a traced (resampled) table
  ks, vs, keyv, keyok, rel = [], [], [], [], []  # per key source (band, table)
  if offsets:
    O = len(offsets)
    ks.append(_band(blocks(k), first, count, offsets))  # [B, N, Q, O*T, H]
    vs.append(_band(blocks(v), first, count, offsets))
    keyv.append(_band(kv_valid, first, count, offsets))  # [B, 1, Q, O*T]
    ok = np.ones((count, O), bool) if band_ok is None else band_ok
    ok = np.repeat(ok, T, axis=1)  # [Q, O*T]
    if min_key:
      ok = ok & (_band(pos, first, count, offsets)[0, 0] >= min_key)
    keyok.append(ok)
    # token rules depend on kpos - qpos = o*T + u - t only: one [T, O*T] table for every block
    d = (np.asarray(offsets)[:, None] * T + np.arange(T)).reshape(1, -1) - np.arange(T)[:, None]
    rule = np.ones_like(d, bool)
    if causal:
      rule &= d <= 0
    if window is not None:
      rule &= np.abs(d) <= window
    rel.append(np.where(rule, 0.0, MASKED_LOGIT).astype(np.float32))
  if table is not None and table.shape[1]:
    if window is not None or min_key:
      raise ValueError("block_sparse_attention: window and min_key apply to band keys only")
    ks.append(_take(blocks(k), table))  # [B, N, Q, R*T, H]
    vs.append(_take(blocks(v), table))
    keyv.append(_take(kv_valid, table))  # [B, 1, Q, R*T]
    ok = table_ok
    if causal:  # a table never holds its query's own block (masks.*_candidates): whole blocks
      if xp is np and np.any(table_ok & (table == qblock)):
        raise ValueError("block_sparse_attention: a causal table lists its query's own block")
      ok = ok & (table < qblock)
    keyok.append(xp.repeat(ok, T, axis=1))  # [Q, R*T]
    rel.append(np.zeros((T, table.shape[1] * T), np.float32))
  has_shared = shared is not None and len(shared) > 0
  # shared keys join every block's keys, unless causal ones fall inside the queries' blocks
  # (learned tokens): then their scores go in as extra columns with a token-level rule
  late = has_shared and causal and shared.max() >= first * T
  if has_shared and not late:
    bcast = lambda a: jnp.broadcast_to(a[:, :, None], (*a.shape[:2], count, *a.shape[2:]))  # noqa: E731
    ks.append(bcast(_positions(k, shared)))  # [B, N, Q, G, H]
    vs.append(bcast(_positions(v, shared)))
    keyv.append(bcast(_positions(valid[:, None], shared)))  # [B, 1, Q, G]
    keyok.append(np.ones((count, len(shared)), bool))
    rel.append(np.zeros((T, len(shared)), np.float32))
  kg, vg = jnp.concatenate(ks, axis=3), jnp.concatenate(vs, axis=3)  # [B, N, Q, U, H]
  allowed = jnp.concatenate(keyv, axis=3) & xp.concatenate(keyok, axis=1)  # [B, 1, Q, U]
  biases = [
    np.concatenate(rel, axis=1),  # [T, U]
    jnp.where(allowed, 0.0, MASKED_LOGIT)[:, :, :, None, :],  # [B, 1, Q, 1, U]
  ]
  extras = []
  if late:
    kh, vh = _positions(k, shared), _positions(v, shared)  # [B, N, G, H]
    sh = jnp.einsum("BNQTH,BNGH->BNQTG", qb, kh, preferred_element_type=jnp.float32)
    qpos = (first * T + np.arange(count * T)).reshape(count, T, 1)  # [Q, T, 1]
    mh = _positions(valid[:, None], shared)[:, :, None, None, :] & (shared <= qpos)
    extras.append(jnp.where(mh, sh, MASKED_LOGIT))  # [B, N, Q, T, G]
  if slots is not None:
    ss, svs, sok = (
      a if a.shape[2] == 1 else a[:, :, first * T : (first + count) * T] for a in slots
    )
    extras.append(
      jnp.where(_query_blocks(sok, count, T), _query_blocks(ss, count, T), MASKED_LOGIT)
    )
  o, probs = attend(qb, kg, vg, biases, extras)  # [B, N, Q, T, H]
  if late:
    o = o + jnp.einsum("BNQTG,BNGH->BNQTH", probs[0], vh.astype(jnp.float32))
  o = o.reshape(B, N, count * T, H)
  if slots is not None:
    o = o + summary.slot_values(probs[-1].reshape(B, N, count * T, -1), svs)
  return o


def _query_blocks(x: jax.Array, count: int, T: int) -> jax.Array:
  """``[B, N|1, Q*T|1, G] -> [B, N|1, Q|1, T|1, G]`` (a broadcast axis stays one)."""
  if x.shape[2] == 1:
    return x[:, :, :, None]
  return x.reshape(x.shape[0], x.shape[1], count, T, x.shape[3])
