"""Block-sparse attention with random blocks: ``random`` and ``bigbird`` (ITC).

Both cut the sequence into ``W = ceil(L / T)`` blocks of ``T = min(block_size, L)``
tokens (the tail is padded internally and stripped) and gather whole key blocks, so time
and memory are linear in L. The random blocks come from one pure function of the block
count (``masks.draw_random_blocks`` / ``masks.sample_random_blocks``), which the gather
kernel and the dense oracle (``impl="dense"``) both consume.

Decoding (causal): ``sparse_cache.py`` keeps each key block until the last query block that
reads it, for the pattern of ``max_len``.

Random-block policy:
  * ``"fixed"`` (BigBird paper): drawn once per layer with ``np.random.default_rng((seed,
    layer_idx))``; identical across steps, examples and heads. ``seed`` is the run's config
    seed (``lrm.run.Run`` fills it through ``lrm.mixers.seeded``, so config.json records it
    and a resumed run draws the same pattern); each seed of a study draws its own.
  * ``"resample"``: a fresh pattern on every training call from an RNG stream forked at
    construction (``rngs.random``, else ``default``, else ``dropout``). In eval mode
    (``model.eval()`` sets ``deterministic=True``) the fixed pattern is used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import masks
from lrm.mixers.attention import AttentionBase, dense_attention, key_mask
from lrm.mixers.blocked import block_sparse_attention, full_rows
from lrm.mixers.sparse_cache import BlockSparseDecoding
from lrm.registry import register

POLICIES = ("fixed", "resample")


def _fork_stream(rngs: nnx.Rngs, name: str) -> nnx.RngStream:
  for stream in ("random", "default", "dropout"):
    if stream in rngs:
      return rngs[stream].fork()
  raise ValueError(
    f"{name}: policy='resample' needs an RNG stream; build with nnx.Rngs(..., random=<seed>)"
  )


class RandomBlocksBase(BlockSparseDecoding, AttentionBase):
  """Block geometry, random-pattern policy and padding shared by random and BigBird."""

  IMPLS = ("gather", "dense")

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
