"""Attention patterns as small pure functions: dense boolean masks and block-index tables.

Every mask is ``[L, S]`` with True = query i may attend to key j. The dense oracle in
``attention.py`` consumes these masks; the efficient kernels consume the *same* block
tables (``draw_random_blocks`` / ``sample_random_blocks``), so kernel-vs-oracle tests
compare identical patterns. Padding is not part of these masks: callers AND a key mask.
Functions of a block table return numpy arrays for a numpy table and jax arrays for a jax
(e.g. resampled) one.

Block patterns work on ``W = ceil(L / T)`` blocks of ``T`` tokens; a last partial block
is treated as a whole block and the token mask is cut to ``[L, S]`` (S = L).

``masked_softmax`` applies masks: a float32 softmax over one or several score tensors that
share a row (a block's window keys and its global keys), exact zeros where masked, and zeros
(not NaN) for rows with no visible key, also under ``jax.grad``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrm.mixers.base import MASKED_LOGIT

ArrayLike = np.ndarray | jax.Array


def causal_mask(length: int) -> np.ndarray:
  """Query i sees keys j <= i.  ``causal_mask(4)``::

  1 0 0 0
  1 1 0 0
  1 1 1 0
  1 1 1 1
  """
  return np.tril(np.ones((length, length), bool))


def local_mask(length: int, window: int, *, causal: bool) -> np.ndarray:
  """Exact contiguous window: |i-j| <= w (bidirectional) or i-w <= j <= i (causal).

  ``local_mask(5, 1, causal=False)`` and ``local_mask(5, 1, causal=True)``::

    1 1 0 0 0      1 0 0 0 0
    1 1 1 0 0      1 1 0 0 0
    0 1 1 1 0      0 1 1 0 0
    0 0 1 1 1      0 0 1 1 0
    0 0 0 1 1      0 0 0 1 1
  """
  if window < 0:
    raise ValueError(f"window must be >= 0, got {window}")
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  m = np.abs(i - j) <= window
  return m & (j <= i) if causal else m


def global_token_mask(length: int, num_global: int, *, causal: bool) -> np.ndarray:
  """The first g tokens attend to everything and are attended by everything.

  Causal: a global key is visible only to queries at or after it, and a global query
  sees only keys at or before it (so its row is an ordinary causal row).
  ``global_token_mask(5, 1, causal=False)`` and ``(..., causal=True)``::

    1 1 1 1 1      1 0 0 0 0
    1 0 0 0 0      1 0 0 0 0
    1 0 0 0 0      1 0 0 0 0
    1 0 0 0 0      1 0 0 0 0
    1 0 0 0 0      1 0 0 0 0
  """
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  m = (i < num_global) | (j < num_global)
  return m & (j <= i) if causal else m


def local_global_mask(length: int, window: int, num_global: int, *, causal: bool) -> np.ndarray:
  """Longformer/ETC pattern: the window OR the global tokens (see the two functions above).

  ``local_global_mask(6, 1, 1, causal=False)``::

    1 1 1 1 1 1
    1 1 1 0 0 0
    1 1 1 1 0 0
    1 0 1 1 1 0
    1 0 0 1 1 1
    1 0 0 0 1 1
  """
  local = local_mask(length, window, causal=causal)
  return local | global_token_mask(length, num_global, causal=causal)


def array_module(*arrays: object):
  """numpy for static patterns (free at trace time), jax.numpy once a table is traced."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def num_blocks(length: int, block: int) -> int:
  return -(-length // block)


def random_candidates(blocks: int, *, causal: bool) -> np.ndarray:
  """``[W, W]``: key blocks a query block may draw at random (not itself; causal: earlier)."""
  c, d = np.arange(blocks)[:, None], np.arange(blocks)[None, :]
  return d < c if causal else d != c


def global_blocks_split(blocks: int, global_blocks: int) -> tuple[int, int]:
  """(front, back) global block counts: ITC puts ceil(g/2) first and floor(g/2) last."""
  front = min((global_blocks + 1) // 2, blocks)
  back = min(global_blocks // 2, blocks - front)
  return front, back


def is_global_block(blocks: int, global_blocks: int) -> np.ndarray:
  """``[W]`` bool: which blocks are global (first ``front`` and last ``back``)."""
  front, back = global_blocks_split(blocks, global_blocks)
  ids = np.arange(blocks)
  return (ids < front) | (ids >= blocks - back)


def bigbird_candidates(
  blocks: int, window_blocks: int, global_blocks: int, *, causal: bool
) -> np.ndarray:
  """``[W, W]``: random-block candidates for BigBird (BigBird's plan excludes duplicates).

  A non-global query block draws among key blocks outside its window and not global
  (causal: also strictly earlier). Global query blocks attend everything: no candidates.
  """
  glob = is_global_block(blocks, global_blocks)
  c, d = np.arange(blocks)[:, None], np.arange(blocks)[None, :]
  cand = (np.abs(c - d) > window_blocks // 2) & ~glob[None, :] & ~glob[:, None]
  return cand & (d < c) if causal else cand


def draw_random_blocks(
  candidates: np.ndarray, r: int, seed: int | tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
  """Fixed pattern: r distinct candidate blocks per query block, from ``default_rng(seed)``.

  Returns ``idx [W, R]`` int32 and ``valid [W, R]`` bool with ``R = min(r, max row
  count)``; rows with fewer candidates than R are padded with index 0 and valid False.
  """
  rng = np.random.default_rng(seed)
  width = min(r, int(candidates.sum(1).max(initial=0)))
  idx = np.zeros((candidates.shape[0], width), np.int32)
  valid = np.zeros((candidates.shape[0], width), bool)
  for c, row in enumerate(candidates):
    pool = np.flatnonzero(row)
    n = min(width, pool.size)
    idx[c, :n] = np.sort(rng.choice(pool, size=n, replace=False))
    valid[c, :n] = True
  return idx, valid


def sample_random_blocks(
  key: jax.Array, candidates: np.ndarray, r: int
) -> tuple[jax.Array, jax.Array]:
  """Like ``draw_random_blocks`` but traced: a fresh uniform draw from a jax key."""
  width = min(r, int(candidates.sum(1).max(initial=0)))
  u = jax.random.uniform(key, candidates.shape)  # [W, W]
  u = jnp.where(candidates, u, 2.0)  # non-candidates sort last
  idx = jnp.argsort(u, axis=1)[:, :width].astype(jnp.int32)  # [W, R]
  valid = jnp.take_along_axis(jnp.asarray(candidates), idx, axis=1)
  return idx, valid


def block_adjacency(idx: ArrayLike, valid: ArrayLike, blocks: int) -> ArrayLike:
  """``[W, W]`` bool from a block table ``idx [W, R]`` (entries with valid False ignored)."""
  xp = array_module(idx, valid)
  onehot = xp.asarray(idx)[..., None] == xp.arange(blocks)  # [W, R, W]
  return xp.any(onehot & xp.asarray(valid)[..., None], axis=1)


def expand_blocks(adjacency: ArrayLike, block: int, length: int) -> ArrayLike:
  """Block-level ``[W, W]`` -> token-level ``[L, S]``.  A 2x2 [[1,0],[1,1]], T=2, L=3::

  1 1 0
  1 1 0
  1 1 1
  """
  xp = array_module(adjacency)
  m = xp.repeat(xp.repeat(adjacency, block, axis=0), block, axis=1)
  return m[:length, :length]


def random_mask(
  length: int, block: int, idx: ArrayLike, valid: ArrayLike, *, causal: bool
) -> ArrayLike:
  """Own block plus the random blocks of a table. L=6, T=2, table [[2],[0],[0]]::

  1 1 0 0 1 1
  1 1 0 0 1 1
  1 1 1 1 0 0
  1 1 1 1 0 0
  1 1 0 0 1 1
  1 1 0 0 1 1
  """
  w = num_blocks(length, block)
  adj = block_adjacency(idx, valid, w) | np.eye(w, dtype=bool)
  m = expand_blocks(adj, block, length)
  return m & causal_mask(length) if causal else m


def bigbird_mask(
  length: int,
  block: int,
  window_blocks: int,
  global_blocks: int,
  idx: ArrayLike,
  valid: ArrayLike,
  *,
  causal: bool,
) -> ArrayLike:
  """Window blocks OR global blocks (rows and columns) OR random blocks; causal ANDs j <= i.

  L=12, T=2 (6 blocks), 3 window blocks, 2 global blocks (0 and 5), one random entry
  (block 1 -> block 4)::

    1 1 1 1 1 1 1 1 1 1 1 1
    1 1 1 1 1 1 1 1 1 1 1 1
    1 1 1 1 1 1 0 0 1 1 1 1
    1 1 1 1 1 1 0 0 1 1 1 1
    1 1 1 1 1 1 1 1 0 0 1 1
    1 1 1 1 1 1 1 1 0 0 1 1
    1 1 0 0 1 1 1 1 1 1 1 1
    1 1 0 0 1 1 1 1 1 1 1 1
    1 1 0 0 0 0 1 1 1 1 1 1
    1 1 0 0 0 0 1 1 1 1 1 1
    1 1 1 1 1 1 1 1 1 1 1 1
    1 1 1 1 1 1 1 1 1 1 1 1
  """
  w = num_blocks(length, block)
  glob = is_global_block(w, global_blocks)
  c, d = np.arange(w)[:, None], np.arange(w)[None, :]
  window = np.abs(c - d) <= window_blocks // 2
  adj = block_adjacency(idx, valid, w) | (window | glob[None, :] | glob[:, None])
  m = expand_blocks(adj, block, length)
  return m & causal_mask(length) if causal else m


def masked_softmax(
  parts: Sequence[tuple[jax.Array, jax.Array]],
) -> list[jax.Array]:
  """Softmax over the concatenation of several ``(scores, mask)`` along the last axis.

  Scores must be float32 and share all leading axes. Returns one probability tensor per
  part (float32), zero where masked and zero on rows where every entry is masked.
  """
  parts = [(jnp.where(m, s, MASKED_LOGIT), m) for s, m in parts]
  top = jax.lax.stop_gradient(
    jnp.max(jnp.stack([s.max(axis=-1) for s, _ in parts]), axis=0, keepdims=False)
  )[..., None]  # row max over all parts
  exps = [jnp.where(m, jnp.exp(s - top), 0.0) for s, m in parts]
  denom = sum(e.sum(axis=-1, keepdims=True) for e in exps)
  inv = 1.0 / jnp.maximum(denom, 1e-30)  # fully-masked rows: 0 * 1e30 = 0
  return [e * inv for e in exps]
