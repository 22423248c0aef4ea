"""Pure-numpy generators for two diagnostic tasks: associative recall and selective copying.

Both produce fixed-length sequences for a causal model with per-position answers and no
shift: ``targets[b, i]`` is what the model must output *at* position ``i`` after reading
``inputs[b, : i + 1]``; positions that are not asked anything have ``targets == -1`` and
``weights == 0``. ``distance[b, i]`` is how far back (in tokens) the answer to position ``i``
lies, so accuracy can be broken down by distance (0 where nothing is asked).

Everything is vectorised over examples and a pure function of ``seed``; no global state.

Multi-query associative recall (Arora et al. 2023, "Zoology", MQAR)
-------------------------------------------------------------------
Ids: ``0`` is a blank filler, keys are ``1 .. K`` and values ``K+1 .. 2K`` with
``K = (vocab_size - 1) // 2`` (disjoint ranges). Each example holds ``num_pairs`` pairs
"key value" on two adjacent positions (distinct keys, distinct values), scattered over a
blank background; ``num_queries`` of those keys appear once more later as a query, and the
answer at the query is the value that followed the key. The query distance ``d`` is the
query's position minus its value's position, drawn uniformly from
``[min_distance, max_distance]``. Worked example (``seq_len=16``, ``num_pairs=3``,
``num_queries=2``, ``vocab_size=21`` so keys 1..10 and values 11..20; ``.`` = blank 0)::

  position   0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
  inputs     .  4 17  .  9 12  .  .  4  .  2 15  .  9  .  .
  targets    -  -  -  -  -  -  -  -  17 -  -  -  -  12 -  -
  distance   0  0  0  0  0  0  0  0  6  0  0  0  0  8  0  0

Pairs (4, 17), (9, 12) and the distractor (2, 15); the query "4" at position 8 must answer
17, found 6 tokens back, and "9" at 13 answers 12 from 8 tokens back. A causal mixer whose
reach (summed over layers) is below ``d`` cannot see the value and is at chance, while
attention that can look back ``d`` tokens solves it by matching the query to the key.
With ``min_distance == max_distance`` a fixed shift solves it, so keep the range wide.

Selective copying (Gu & Dao 2023, "Mamba", section 3.1)
---------------------------------------------------------
Ids: ``0`` blank (noise), ``1`` the copy marker ``?``, content symbols ``2 .. vocab_size-1``.
The first ``seq_len - num_tokens`` positions hold ``num_tokens`` content symbols (repeats
allowed) at random positions among blanks; then ``num_tokens`` markers, where the model must
output the content symbols in their order of appearance (no teacher forcing: the inputs
after the first marker are markers too). Example (``seq_len=12``, ``num_tokens=3``)::

  position   0  1  2  3  4  5  6  7  8  9 10 11
  inputs     .  5  .  .  3  .  .  5  .  ?  ?  ?
  targets    -  -  -  -  -  -  -  -  -  5  3  5
  distance   0  0  0  0  0  0  0  0  0  8  6  4

Unlike a fixed-delay copy, the content positions vary, so a time-invariant filter cannot
solve it: the model must select tokens by content and count them.
"""

from __future__ import annotations

import numpy as np

BLANK = 0
MARKER = 1  # selective copy only
IGNORE = -1
_MAX_TRIES = 2000  # rejection rounds per placed item before declaring the layout infeasible


def token_dtype(vocab_size: int) -> type[np.integer]:
  """Compact storage dtype for ids below ``vocab_size`` (batches are cast to int32 later)."""
  return np.int16 if vocab_size <= np.iinfo(np.int16).max else np.int32


def blank_layout(n: int, seq_len: int, vocab_size: int) -> tuple[np.ndarray, ...]:
  """``(inputs, targets, distance)``, each ``[n, L]`` in a compact dtype: all blank, nothing
  asked (``IGNORE``), distance 0. A generator writes its examples onto them."""
  dt = token_dtype(vocab_size)
  inputs = np.full((n, seq_len), BLANK, dt)
  targets = np.full((n, seq_len), IGNORE, dt)
  distance = np.zeros((n, seq_len), np.int16 if seq_len < 2**15 else np.int32)
  return inputs, targets, distance


def columns(inputs: np.ndarray, targets: np.ndarray, distance: np.ndarray) -> dict[str, np.ndarray]:
  """The generated batch: the three layouts, ``weights [n, L]`` float32 (1 where an answer
  is asked) and ``lengths [n]`` int32 (every example is full length)."""
  n, seq_len = targets.shape
  return {
    "inputs": inputs,
    "targets": targets,
    "weights": (targets != IGNORE).astype(np.float32),
    "distance": distance,
    "lengths": np.full(n, seq_len, np.int32),
  }


def sample_distinct(rng: np.random.Generator, rows: int, k: int, pool: int) -> np.ndarray:
  """``[rows, k]`` int64: per row, ``k`` distinct values from ``range(pool)``, random order."""
  if k > pool:
    raise ValueError(f"cannot draw {k} distinct values from {pool}")
  out = np.empty((rows, k), np.int64)
  if pool <= 4 * k or pool <= 512:
    # small pools: rank random scores (memory rows*pool, processed in chunks)
    chunk = max(1, 4_000_000 // pool)
    for s in range(0, rows, chunk):
      n = min(chunk, rows - s)
      scores = rng.random((n, pool))  # [n, pool]
      if k < pool:
        out[s : s + n] = np.argpartition(scores, k - 1, axis=1)[:, :k]
      else:
        out[s : s + n] = np.argsort(scores, axis=1)
    # argpartition leaves the first k in arbitrary (score-dependent) order: shuffle them
    return rng.permuted(out, axis=1)
  # large pools: draw with replacement, redraw only the rows that hold a repeat
  pending = np.arange(rows)
  for _ in range(_MAX_TRIES):
    draw = rng.integers(0, pool, (len(pending), k))  # [n, k]
    s = np.sort(draw, axis=1)
    ok = np.all(s[:, 1:] != s[:, :-1], axis=1)
    out[pending[ok]] = draw[ok]
    pending = pending[~ok]
    if len(pending) == 0:
      return out
  raise RuntimeError("sample_distinct did not converge")  # unreachable for k <= pool / 4


def _place(
  rng: np.random.Generator, occupied: np.ndarray, min_d: int, max_d: int, with_query: bool
) -> tuple[np.ndarray, np.ndarray]:
  """Place one pair (and its query) in every row; returns key positions and distances [B].

  A pair takes positions ``p, p+1``; its query sits at ``p + 1 + d``. Rows whose draw hits
  an occupied slot are redrawn; ``occupied [B, L]`` is updated in place.
  """
  rows, L = occupied.shape
  key_pos = np.empty(rows, np.int64)
  dist = np.zeros(rows, np.int64)
  pending = np.arange(rows)
  for _ in range(_MAX_TRIES):
    n = len(pending)
    if with_query:
      d = rng.integers(min_d, max_d + 1, n)  # [n]
      q = rng.integers(d + 1, L)  # query position; key = q - d - 1 >= 0
      p = q - d - 1
      ok = ~occupied[pending, p] & ~occupied[pending, p + 1] & ~occupied[pending, q]
    else:
      d = np.zeros(n, np.int64)
      p = rng.integers(0, L - 1, n)
      q = p  # no query
      ok = ~occupied[pending, p] & ~occupied[pending, p + 1]
    r = pending[ok]
    occupied[r, p[ok]] = True
    occupied[r, p[ok] + 1] = True
    occupied[r, q[ok]] = True
    key_pos[r], dist[r] = p[ok], d[ok]
    pending = pending[~ok]
    if len(pending) == 0:
      return key_pos, dist
  raise ValueError(
    f"could not place every pair without overlap after {_MAX_TRIES} tries; increase seq_len "
    f"or lower num_pairs / num_queries / min_distance"
  )


def check_recall_options(
  *,
  num_pairs: int,
  num_queries: int,
  vocab_size: int,
  seq_len: int,
  min_distance: int,
  max_distance: int,
) -> int:
  """Validate MQAR options; return the effective ``max_distance``. Raises ValueError."""
  if num_pairs < 1:
    raise ValueError(f"num_pairs={num_pairs} must be at least 1")
  if not 1 <= num_queries <= num_pairs:
    raise ValueError(f"num_queries={num_queries} must be in [1, num_pairs={num_pairs}]")
  num_keys = (vocab_size - 1) // 2
  if num_keys < num_pairs:
    raise ValueError(
      f"vocab_size={vocab_size} gives {num_keys} keys, fewer than num_pairs={num_pairs}; "
      f"use vocab_size >= {2 * num_pairs + 1}"
    )
  if 2 * num_pairs + num_queries > seq_len:
    raise ValueError(
      f"seq_len={seq_len} cannot hold {num_pairs} pairs + {num_queries} queries "
      f"({2 * num_pairs + num_queries} tokens); raise seq_len"
    )
  hi = seq_len - 2 if max_distance <= 0 else max_distance
  if not 1 <= min_distance <= hi <= seq_len - 2:
    raise ValueError(
      f"need 1 <= min_distance ({min_distance}) <= max_distance ({hi}) <= seq_len - 2 "
      f"({seq_len - 2}); max_distance=0 means seq_len - 2"
    )
  return hi


def recall_arrays(
  n: int,
  *,
  seed: int | list[int],
  num_pairs: int,
  num_queries: int,
  vocab_size: int,
  seq_len: int,
  min_distance: int = 1,
  max_distance: int = 0,
) -> dict[str, np.ndarray]:
  """``n`` MQAR examples (layout in the module docstring).

  Returns ``inputs, targets, distance [n, L]`` (compact ints), ``weights [n, L]`` float32,
  ``lengths [n]`` int32.
  """
  max_d = check_recall_options(
    num_pairs=num_pairs,
    num_queries=num_queries,
    vocab_size=vocab_size,
    seq_len=seq_len,
    min_distance=min_distance,
    max_distance=max_distance,
  )
  rng = np.random.default_rng(seed)
  num_keys = (vocab_size - 1) // 2
  keys = 1 + sample_distinct(rng, n, num_pairs, num_keys)  # [n, P]
  values = 1 + num_keys + sample_distinct(rng, n, num_pairs, num_keys)  # [n, P]
  occupied = np.zeros((n, seq_len), bool)
  inputs, targets, distance = blank_layout(n, seq_len, vocab_size)
  rows = np.arange(n)
  # queried pairs first (they have the tighter constraints), then the distractors
  for j in range(num_pairs):
    queried = j < num_queries
    p, d = _place(rng, occupied, min_distance, max_d, queried)
    inputs[rows, p] = keys[:, j]
    inputs[rows, p + 1] = values[:, j]
    if queried:
      q = p + 1 + d
      inputs[rows, q] = keys[:, j]
      targets[rows, q] = values[:, j]
      distance[rows, q] = d
  return columns(inputs, targets, distance)


def check_copy_options(*, num_tokens: int, vocab_size: int, seq_len: int) -> None:
  """Validate selective-copy options. Raises ValueError."""
  if num_tokens < 1:
    raise ValueError(f"num_tokens={num_tokens} must be at least 1")
  if vocab_size < 3:
    raise ValueError(f"vocab_size={vocab_size} leaves no content symbols; use vocab_size >= 3")
  if seq_len < 2 * num_tokens:
    raise ValueError(
      f"seq_len={seq_len} cannot hold {num_tokens} content tokens + {num_tokens} markers; "
      f"use seq_len >= {2 * num_tokens}"
    )


def selective_copy_arrays(
  n: int, *, seed: int | list[int], num_tokens: int, vocab_size: int, seq_len: int
) -> dict[str, np.ndarray]:
  """``n`` selective-copy examples (layout in the module docstring); same columns as MQAR."""
  check_copy_options(num_tokens=num_tokens, vocab_size=vocab_size, seq_len=seq_len)
  rng = np.random.default_rng(seed)
  region = seq_len - num_tokens
  pos = np.sort(sample_distinct(rng, n, num_tokens, region), axis=1)  # [n, M] increasing
  symbols = rng.integers(2, vocab_size, (n, num_tokens))  # [n, M]
  inputs, targets, distance = blank_layout(n, seq_len, vocab_size)
  inputs[np.arange(n)[:, None], pos] = symbols
  inputs[:, region:] = MARKER
  targets[:, region:] = symbols
  distance[:, region:] = region + np.arange(num_tokens)[None, :] - pos
  return columns(inputs, targets, distance)
