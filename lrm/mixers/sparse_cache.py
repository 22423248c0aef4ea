"""Decoding for the block-sparse patterns ``random`` and ``bigbird`` (and ``local_random``).

The pattern is a fixed function of the block count W (the random table is drawn for W blocks
and BigBird's last global blocks are the last of W), so decoding reproduces the parallel
forward at length ``max_len``: ``init_cache`` draws the table for ``W = ceil(max_len / T)``
(the fixed draw, as the forward in eval mode; a ``"resample"`` policy decodes with it too).

What is kept: the causal block adjacency ``adj [W, W]`` (query block c reads key block d)
says when each key block is last read, ``last(d) = max{c : adj[c, d]}``; from then on it is
dropped. Blocks live over ``[d, last(d)]``, and the cache has as many block slots as blocks
are alive at once (intervals coloured greedily in order of start, which is optimal), each
block written into a slot whose block is dead. So a window block leaves after
``window_blocks // 2`` blocks, a random block after the last query block whose table names
it, and a block no later query reads leaves after its own block. Sizes at one ``max_len``:

* ``random`` / ``local_random``: the blocks alive at once. Tables of later query blocks name
  earlier blocks uniformly, so about ``1 - 2**-r`` of the first half of the blocks are still
  named in the middle of the sequence: O(L D), about half of full attention's (the presets'
  r = 3 with T = 64: 61 of 128 blocks at 8K tokens, 252 of 512 at 32K); per-token time is
  O((1 + w + r) T D), independent of L.
* ``bigbird`` (ITC, causal): the last global block's queries read every earlier key, so every
  block stays alive until the end: the cache is full attention's. Those rows (and the first
  global blocks') read all slots (``lax.cond``); the other rows gather their few blocks.

The cache also carries the plan (``write [W]`` slot per block, ``read [W, U]`` slots each query
block gathers, ``read_block``, ``read_ok``; ``full [W]`` and the slots' current blocks
``slot_block [S]`` when some row reads everything): small integer tables, no batch axis.
Letters follow the legend in ``base.py``; S is a cache's block slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrm.mixers import attention_cache as ac
from lrm.mixers import masks


def plan(adj: np.ndarray, full: np.ndarray) -> dict[str, np.ndarray]:
  """Slots and read tables for a causal block adjacency ``adj [W, W]`` (``adj[c, c]`` True);
  ``full [W]``: rows that read every earlier block (they read all slots instead of a table)."""
  W = adj.shape[0]
  last = np.array([np.flatnonzero(adj[:, d]).max() for d in range(W)])  # [W], >= d
  write, ends = np.zeros(W, np.int32), []  # ends[s]: last reader of slot s's block
  for d in range(W):
    free = [s for s, end in enumerate(ends) if end < d]  # their blocks are read no more
    if free:
      ends[free[0]] = last[d]
    else:
      ends.append(last[d])
    write[d] = free[0] if free else len(ends) - 1
  rows = [np.flatnonzero(adj[c]) for c in range(W)]
  U = max([len(r) for c, r in enumerate(rows) if not full[c]], default=1)
  read_block, read_ok = np.zeros((W, U), np.int32), np.zeros((W, U), bool)
  for c, r in enumerate(rows):
    if not full[c]:
      read_block[c, : len(r)], read_ok[c, : len(r)] = r, True
  out = dict(write=write, read=write[read_block], read_block=read_block, read_ok=read_ok)
  if full.any():
    out |= dict(full=full, slot_block=np.full(len(ends), -1, np.int32))
  return out


class BlockSparseDecoding:
  """``init_cache``, ``step`` and ``prefill`` of ``RandomBlocksBase`` (a mixin)."""

  def decode_adjacency(self, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(causal block adjacency ``[W, W]``, rows that see every earlier block ``[W]``)."""
    raise NotImplementedError  # each pattern defines it

  def fixed_pattern(self, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """The table the forward uses in eval mode (and always under ``"fixed"``)."""
    return masks.draw_random_blocks(
      self.candidates(blocks), self.num_random, (self.seed, self.layer_idx)
    )

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    T, W = self.geometry(max_len)
    tables = plan(*self.decode_adjacency(W))
    S = len(tables.get("slot_block", ())) or int(tables["write"].max()) + 1
    shape = (batch * self.num_heads, S, T, self.head_dim)  # [B*N, S, T, H]
    cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    return cache | {name: jnp.asarray(a) for name, a in tables.items()}

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    BN, S, T, H = cache["k"].shape  # BN = B*N rows
    q, k, v = (ac.rows(a) for a in ac.project_one(self, x, pos))  # [B*N, H]
    c, u, s = pos // T, pos % T, cache["write"][pos // T]
    at = lambda a: a[:, None, None]  # noqa: E731  [B*N, 1, 1, H]: slot s, row u
    kc = jax.lax.dynamic_update_slice(cache["k"], at(k).astype(cache["k"].dtype), (0, s, u, 0))
    vc = jax.lax.dynamic_update_slice(cache["v"], at(v).astype(cache["v"].dtype), (0, s, u, 0))
    new = dict(cache, k=kc, v=vc)
    offsets = jnp.arange(T)

    def gathered(_) -> jax.Array:  # the blocks of this row's table
      slots = cache["read"][c]  # [U]
      kb = jnp.take(kc, slots, axis=1).reshape(BN, -1, H)  # [B*N, U*T, H]
      vb = jnp.take(vc, slots, axis=1).reshape(BN, -1, H)
      kpos = cache["read_block"][c][:, None] * T + offsets  # [U, T]
      ok = cache["read_ok"][c][:, None] & (kpos <= pos)
      return ac.attend_one(q, kb, vb, ok.reshape(-1))[0]

    if "full" not in cache:
      o = gathered(None)
    else:
      new["slot_block"] = cache["slot_block"].at[s].set(c)

      def everything(_) -> jax.Array:  # a global row: every slot written so far
        kpos = new["slot_block"][:, None] * T + offsets  # [S, T]
        ok = (new["slot_block"][:, None] >= 0) & (kpos <= pos)
        flat = lambda a: a.reshape(BN, S * T, H)  # noqa: E731
        return ac.attend_one(q, flat(kc), flat(vc), ok.reshape(-1))[0]

      o = jax.lax.cond(cache["full"][c], everything, gathered, None)
    return ac.merge_one(self, o, x.dtype), new

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A prompt ``x [B, P, D]`` (positions 0..P-1) into a fresh cache by the parallel forward.

    The forward runs at the cache's whole length ``W * T`` (the prompt zero-padded; at the
    prompt's own length the pattern would differ): the same pattern as at ``max_len``, and
    causal, so the padding changes no prompt position. Each slot then gets the last block
    written into it by the end of the prompt, as ``step`` would have left it; keys past the
    prompt in its last block are masked until ``step`` overwrites them.
    """
    if not self.causal:
      raise self.decode_error()
    (B, P, _), (_, S, T, H) = x.shape, cache["k"].shape
    N = self.num_heads
    W = cache["write"].shape[0]
    y, k, v = self._forward(jnp.pad(x, ((0, 0), (0, W * T - P), (0, 0))), None, self.fixed_pattern)
    write = plan(*self.decode_adjacency(W))["write"]  # the cache's tables, as numpy
    latest = np.full(S, -1, np.int32)  # [S]: the block each slot holds after the prompt
    for d in range(-(-P // T)):
      latest[write[d]] = d
    blocks = lambda a: a.reshape(B * N, W, T, H)[:, np.maximum(latest, 0)]  # noqa: E731
    new = dict(cache, k=blocks(k).astype(cache["k"].dtype), v=blocks(v).astype(cache["v"].dtype))
    if "slot_block" in cache:
      new["slot_block"] = jnp.asarray(latest)
    return y[:, :P], new
