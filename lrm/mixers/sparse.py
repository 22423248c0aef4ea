"""Block-sparse attention with random blocks: ``random`` and ``bigbird`` (ITC).

Both cut the sequence into ``W = ceil(L / T)`` blocks of ``T = min(block_size, L)``
tokens (the tail is padded internally and stripped) and gather whole key blocks, so time
and memory are linear in L. The random blocks come from one pure function of the block
count (``masks.draw_random_blocks`` / ``masks.sample_random_blocks``), which the gather
kernel and the dense oracle (``impl="dense"``) both consume.

Decoding (causal): the cache (below) keeps each key block until the last query block that
reads it, for the pattern of ``max_len``.

Random-block policy:
  * ``"fixed"`` (BigBird paper): drawn once per layer with ``np.random.default_rng((seed,
    layer_idx))``; identical across steps, examples and heads. ``seed`` is the run's config
    seed (``lrm.run.Run`` writes it into the spec, ``lrm.mixers.with_run_options``, so
    config.json records it and a resumed run draws the same pattern); each seed of a study
    draws its own.
  * ``"resample"``: a fresh pattern on every training call from an RNG stream forked at
    construction (``rngs.random``, else ``default``, else ``dropout``). In eval mode
    (``model.eval()`` sets ``deterministic=True``) the fixed pattern is used.

Decoding
--------

Decoding for the block-sparse patterns ``random`` and ``bigbird`` (and ``local_random``).

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
from flax import nnx

from lrm.mixers import masks
from lrm.mixers.attention import (
  AttentionBase,
  attend_one,
  block_sparse_attention,
  dense_attention,
  full_rows,
  key_mask,
  merge_one,
  project_one,
  rows,
)
from lrm.registry import register


# ---- decoding ------------------------------------------------------------------------------------
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


# ---- the mixer -----------------------------------------------------------------------------------
POLICIES = ("fixed", "resample")


def _fork_stream(rngs: nnx.Rngs, name: str) -> nnx.RngStream:
  for stream in ("random", "default", "dropout"):
    if stream in rngs:
      return rngs[stream].fork()
  raise ValueError(
    f"{name}: policy='resample' needs an RNG stream; build with nnx.Rngs(..., random=<seed>)"
  )


class RandomBlocksBase(AttentionBase):
  """Block geometry, random-pattern policy and padding shared by random and BigBird."""

  IMPLS = ("gather", "dense")
  RUN_OPTIONS = ("rotary", "seed")

  def _setup(self, rngs: nnx.Rngs, block_size: int, policy: str, seed: int):
    name = self.mixer_name()
    if block_size < 1:
      raise ValueError(f"{name}: block_size must be >= 1, got {block_size}")
    if policy not in POLICIES:
      raise ValueError(f"{name}: unknown policy '{policy}'; choose one of {', '.join(POLICIES)}")
    self.block_size, self.policy, self.seed = block_size, policy, seed
    self.deterministic = False  # model.eval() sets True: then "resample" uses the fixed draw
    self.rng = _fork_stream(rngs, name) if policy == "resample" else None

  def geometry(self, length: int) -> tuple[int, int]:
    """(block T, blocks W) at sequence length ``length``."""
    T = min(self.block_size, length)
    return T, masks.num_blocks(length, T)

  def candidates(self, blocks: int) -> np.ndarray:
    raise NotImplementedError  # each pattern defines where random blocks may land

  def pattern(self, blocks: int) -> tuple[jax.Array | np.ndarray, jax.Array | np.ndarray]:
    """The random block table ``(idx [W, R], valid [W, R])`` for this call."""
    cand = self.candidates(blocks)
    if self.policy == "resample" and not self.deterministic:
      return masks.sample_random_blocks(self.rng(), cand, self.num_random)
    return masks.draw_random_blocks(cand, self.num_random, (self.seed, self.layer_idx))

  def table_width(self, blocks: int) -> int:
    return min(self.num_random, int(self.candidates(blocks).sum(1).max(initial=0)))

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self._forward(x, mask, self.pattern)[0]

  def _forward(self, x: jax.Array, mask: jax.Array | None, pattern) -> tuple[jax.Array, ...]:
    """(output ``[B, L, D]``, keys and values ``[B, N, L|W*T, H]``) with the block table
    ``pattern(W)`` (decoding's prefill passes the fixed draw)."""
    B, L, _ = x.shape
    valid = key_mask(mask, B, L)
    T, W = self.geometry(L)
    idx, ok = pattern(W)
    q, k, v = self.project(x)  # [B, N, L, H]
    if self.impl == "dense":
      o = dense_attention(q, k, v, valid[:, None, None, :] & self.dense_mask(L, T, idx, ok))
    else:
      Lp = W * T
      pad = ((0, 0), (0, 0), (0, Lp - L), (0, 0))
      q, k, v = (jnp.pad(a, pad) for a in (q, k, v))  # [B, N, W*T, H]
      valid = jnp.pad(valid, ((0, 0), (0, Lp - L)))  # padded tail is never a key
      o = self.gather(q, k, v, valid, T, W, idx, ok)[:, :, :L]
    return self.merge(o, x.dtype), k, v

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
    q, k, v = (rows(a) for a in project_one(self, x, pos))  # [B*N, H]
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
      return attend_one(q, kb, vb, ok.reshape(-1))[0]

    if "full" not in cache:
      o = gathered(None)
    else:
      new["slot_block"] = cache["slot_block"].at[s].set(c)

      def everything(_) -> jax.Array:  # a global row: every slot written so far
        kpos = new["slot_block"][:, None] * T + offsets  # [S, T]
        ok = (new["slot_block"][:, None] >= 0) & (kpos <= pos)
        flat = lambda a: a.reshape(BN, S * T, H)  # noqa: E731
        return attend_one(q, flat(kc), flat(vc), ok.reshape(-1))[0]

      o = jax.lax.cond(cache["full"][c], everything, gathered, None)
    return merge_one(self, o, x.dtype), new

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


@register("mixer", "random")
class RandomAttention(RandomBlocksBase):
  """Each query block attends to its own block plus r random key blocks.

  Bidirectional: random blocks are drawn among all other blocks. Causal: among earlier
  blocks only, and the own block is masked causally. Cost per layer: O(L * (1 + r) * T).
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    block_size: int = 64,
    num_random_blocks: int = 3,
    num_heads: int = 4,
    policy: str = "fixed",
    seed: int = 0,
    impl: str = "gather",
    rotary: bool = False,
  ):
    if num_random_blocks < 0:
      raise ValueError(f"random: num_random_blocks must be >= 0, got {num_random_blocks}")
    super().__init__(
      dim,
      causal=causal,
      rngs=rngs,
      layer_idx=layer_idx,
      num_heads=num_heads,
      rotary=rotary,
      impl=impl,
    )
    self.num_random = num_random_blocks
    self._setup(rngs, block_size, policy, seed)

  def candidates(self, blocks: int) -> np.ndarray:
    return masks.random_candidates(blocks, causal=self.causal)

  def dense_mask(self, length: int, T: int, idx, ok) -> jax.Array:
    return masks.random_mask(length, T, idx, ok, causal=self.causal)

  def decode_adjacency(self, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    adj = masks.block_adjacency(*self.fixed_pattern(blocks), blocks) | np.eye(blocks, dtype=bool)
    return adj & masks.causal_mask(blocks), np.zeros(blocks, bool)

  def gather(self, q, k, v, valid, T: int, W: int, idx, ok) -> jax.Array:
    return block_sparse_attention(
      q, k, v, valid, block=T, first=0, count=W, causal=self.causal, table=idx, table_ok=ok
    )

  def flops(self, length: int) -> int:
    T, W = self.geometry(length)
    per_block = (1 + self.table_width(W)) * T
    pairs = length * length if self.impl == "dense" else W * T * per_block
    return int(self.projection_flops(length) + self.score_flops(pairs))


@register("mixer", "bigbird")
class BigBirdAttention(RandomBlocksBase):
  """BigBird (ITC): window blocks + global blocks + random blocks, gathered per block.

  ``global_blocks=g`` makes the first ceil(g/2) and the last floor(g/2) blocks global:
  their rows attend to every key (g*T x L, computed separately) and every query attends to
  them. A middle query block attends to its ``window_blocks`` neighbours (odd, centred),
  all global blocks and r random blocks drawn outside its window and the global blocks.

  Causal: the pattern is the bidirectional one AND ``j <= i``. Hence the last global
  blocks are invisible to every earlier query (their rows are ordinary full causal rows),
  window blocks after the query's own are dropped, and random blocks are drawn among
  strictly earlier blocks. Globals are positions in the padded array: a sequence shorter
  than L (padding mask) does not move the last global block onto its real end.
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    block_size: int = 64,
    window_blocks: int = 3,
    global_blocks: int = 2,
    random_blocks: int = 3,
    num_heads: int = 4,
    policy: str = "fixed",
    seed: int = 0,
    impl: str = "gather",
    rotary: bool = False,
  ):
    if window_blocks < 1 or window_blocks % 2 == 0:
      raise ValueError(
        f"bigbird: window_blocks must be odd and >= 1 (centred), got {window_blocks}"
      )
    if global_blocks < 0 or random_blocks < 0:
      raise ValueError(
        f"bigbird: global_blocks and random_blocks must be >= 0, got {global_blocks}, "
        f"{random_blocks}"
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
    self.window_blocks, self.global_blocks = window_blocks, global_blocks
    self.num_random = random_blocks
    self._setup(rngs, block_size, policy, seed)

  def candidates(self, blocks: int) -> np.ndarray:
    return masks.bigbird_candidates(
      blocks, self.window_blocks, self.global_blocks, causal=self.causal
    )

  def dense_mask(self, length: int, T: int, idx, ok) -> jax.Array:
    return masks.bigbird_mask(
      length, T, self.window_blocks, self.global_blocks, idx, ok, causal=self.causal
    )

  def decode_adjacency(self, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    glob = masks.is_global_block(blocks, self.global_blocks)
    c, d = np.arange(blocks)[:, None], np.arange(blocks)[None, :]
    near = np.abs(c - d) <= self.window_blocks // 2
    adj = masks.block_adjacency(*self.fixed_pattern(blocks), blocks) | near | glob | glob[:, None]
    return adj & masks.causal_mask(blocks), glob

  def layout(self, W: int) -> tuple[int, int, tuple[int, ...], np.ndarray]:
    """(front, back) global block counts, window offsets, band_ok [Q, O] (Q middle blocks)."""
    front, back = masks.global_blocks_split(W, self.global_blocks)
    h = self.window_blocks // 2
    offsets = tuple(range(-h, 1 if self.causal else h + 1))
    glob = masks.is_global_block(W, self.global_blocks)
    nbr = np.arange(front, W - back)[:, None] + np.asarray(offsets)  # [Q, O], Q middle blocks
    inside = (nbr >= 0) & (nbr < W)
    band_ok = inside & ~glob[np.clip(nbr, 0, W - 1)]  # global neighbours come via `shared`
    return front, back, offsets, band_ok

  def gather(self, q, k, v, valid, T: int, W: int, idx, ok) -> jax.Array:
    Lp = W * T
    front, back, offsets, band_ok = self.layout(W)
    mid = W - front - back
    pieces = []
    if front:
      pieces.append(full_rows(q, k, v, valid, 0, front * T, self.causal))  # [B, N, front*T, H]
    if mid:
      shared = np.arange(front * T)  # earlier-or-later global keys every middle row sees
      if back and not self.causal:
        shared = np.concatenate([shared, np.arange((W - back) * T, Lp)])
      pieces.append(
        block_sparse_attention(
          q,
          k,
          v,
          valid,
          block=T,
          first=front,
          count=mid,
          causal=self.causal,
          offsets=offsets,
          band_ok=band_ok,
          table=idx[front : W - back],
          table_ok=ok[front : W - back],
          shared=shared,
        )
      )  # [B, N, mid*T, H]
    if back:
      pieces.append(full_rows(q, k, v, valid, (W - back) * T, Lp, self.causal))
    return jnp.concatenate(pieces, axis=2)  # [B, N, W*T, H]

  def flops(self, length: int) -> int:
    T, W = self.geometry(length)
    if self.impl == "dense":
      return int(self.projection_flops(length) + self.score_flops(length * length))
    front, back, offsets, _ = self.layout(W)
    mid = W - front - back
    shared = front * T + (0 if self.causal else back * T)
    pairs = (front + back) * T * W * T
    if mid:
      pairs += mid * T * ((len(offsets) + self.table_width(W)) * T + shared)
    return int(self.projection_flops(length) + self.score_flops(pairs))
