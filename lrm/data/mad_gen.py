"""Pure-numpy generators for MAD's six synthetic tasks (Poli et al. 2024, "Mechanistic Design
and Scaling of Hybrid Architectures", arXiv 2403.17844; reference code: the mad-lab repository,
``mad/data/instances.py``).

Every generator is split in two: ``draw_*`` takes every random number from one
``np.random.Generator`` (vectorised over examples), and ``layout_*`` turns those draws into
sequences without randomness, so the tests check each layout on literal draws. The public
``*_arrays(n, seed=..., **options)`` is ``layout(draw(default_rng(seed)))``: a pure function of
``seed`` (no global state; MAD's selective copying draws its blank positions from numpy's
global generator).

Token ids follow MAD's layout: content ids from 0 (keys, then values, then noise), special
tokens at the top of the vocabulary. As in ``recall_gen.py`` there is no shift in the arrays:
``targets[b, i]`` is what the model must output *at* position ``i`` after reading
``inputs[b, : i + 1]`` (``-1`` and ``weights == 0`` where nothing is asked), and
``distance[b, i]`` is how far back the answer can be found (0 where nothing is asked). The
recall family also has ``next [n, L]``: the next token of the stream at every position, the
target of MAD's training loss (next-token prediction on all positions).

In-context recall (MAD ``generate_in_context_recall_instance``, multi-query)
---------------------------------------------------------------------------
``K = C // 2`` key ids ``0..K-1`` and value ids ``K..C-1`` with ``C = vocab_size -
noise_vocab_size`` (minus 1 more for the copy token without ``multi_query``); noise ids
``C..C+noise-1``. A stream of ``seq_len`` tokens holds ``seq_len/2 - 1`` "key value" pairs
(keys uniform with replacement; each example draws its own key->value map, values uniform
with replacement) and a final pair whose key is drawn uniformly among the keys already shown.
Each pair is replaced by two noise tokens with probability ``frac_noise`` (one pair, drawn
uniformly, never is). The model reads the stream but its last token (``L = seq_len - 1``), so at
a key's position it must output the key's value; it is asked wherever the key was shown
before. Worked example (``vocab_size=8``, ``seq_len=8``: keys 0..3, values 4..7; keys drawn
1, 3, 1, map 0->5 1->4 2->7 3->6, final key 3)::

  stream     1 4 3 6 1 4 3 6
  position   0 1 2 3 4 5 6
  inputs     1 4 3 6 1 4 3
  targets    - - - - 4 - 6
  distance   0 0 0 0 3 0 3
  next       4 3 6 1 4 3 6

Without ``multi_query`` only the final key is asked, after a copy token ``vocab_size-1``
(``L = seq_len``).

Fuzzy in-context recall (MAD ``generate_fuzzy_in_context_recall_instance``)
--------------------------------------------------------------------------
Keys and values are motifs: ordered tuples of 1..``k_motif_size`` distinct key ids and
1..``v_motif_size`` distinct value ids (sizes uniform; evaluation splits use keys of exactly
``k_motif_size`` tokens, as MAD's test set). ``pad = vocab_size - 1`` (``vocab_size - 2``, and
copy ``vocab_size - 1``, without ``multi_query``); the other ``C = vocab_size - 1`` ids split
into ``C // 2`` key ids and the rest value ids. A probe pair (key k*, value v*) is drawn first
and placed at a random point among pairs appended until the stream reaches ``seq_len - |k*v*|
- (k_motif_size + v_motif_size)`` tokens; a repeated key shows its first value again, and a
randomly drawn k* takes v*. The stream ends with the probe's key and value (asked), is
left-padded to ``seq_len + 1`` tokens, and the model reads its first ``seq_len`` (``L =
seq_len``). The value tokens of a key shown before are asked one by one (teacher forced: the
model reads value token j-1 when it must output token j). Worked example (``vocab_size=9``:
key ids 0..3, value ids 4..7, pad 8; ``seq_len=20``, motifs of up to 2 tokens; the probe
(0 1) -> (5) goes in at position 3; pairs drawn: (2) -> (6 7), (2) again, (3 0) -> (4), then
(0 1), which is k* and so shows v*)::

  stream    8 8 8 2 6 7 0 1 5 2 6 7 3 0 4 0 1 5 0 1 5
  position  0 1 2 3 4 5 6 7 8 9 ...                 19
  inputs    8 8 8 2 6 7 0 1 5 2 6 7 3 0 4 0 1 5 0 1
  targets   - - - - - - - - - 6 7 - - - - - 5 - - 5
  distance  0 0 0 0 0 0 0 0 0 5 5 0 0 0 0 0 8 0 0 2

Selective copying (MAD ``generate_selective_copying_instance``)
--------------------------------------------------------------
Content ids ``0..vocab_size-3``, blank ``vocab_size-2``, copy token ``vocab_size-1``. ``n =
num_tokens`` content tokens (uniform, repeats allowed) with ``seq_len - 2n - 1`` blanks put
into the n gaps *before* each content token (each blank picks its gap uniformly, as MAD's
``np.insert`` at indices in ``[0, n)``: so the last content token is always right before the
copy token), then the copy token and n blanks, at which the model must output the content
tokens in order (``L = seq_len``). Example (``vocab_size=6``: content 0..3, blank 4, copy
5; ``seq_len=10``, n=3, content 2 0 2, gap counts 1 0 2)::

  position   0 1 2 3 4 5 6 7 8 9
  inputs     4 2 0 4 4 2 5 4 4 4
  targets    - - - - - - - 2 0 2
  distance   0 0 0 0 0 0 0 6 6 4

Compression (MAD ``generate_compression_instance``)
--------------------------------------------------
``seq_len - 1`` tokens uniform over ``0..vocab_size-2`` and the compression token
``vocab_size-1``; the target at every position is the input itself (reconstructed from the
compression token's features, see ``lrm/tasks/mad.py``); ``distance`` is how far the token
lies before the compression token.

Memorization (MAD ``generate_memorization_instance``)
-----------------------------------------------------
Insert token ``vocab_size-1``; key ids ``0..K-1`` with ``K = (vocab_size-1)//2``, value ids
``K..vocab_size-2``. One fixed injective key->value map (shared by every example and split,
drawn from its own stream ``(seed, 3)``); an example is ``seq_len/2`` pairs "key insert"
(keys uniform with replacement) and the target at each insert token is the key's value
(``distance`` 1). Only the weights can store the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lrm.data.recall_gen import IGNORE, sample_distinct, token_dtype

MAP_STREAM = 3  # memorization's key->value map: stream (seed, 3); splits use (seed, 0..2)
_CHUNK = 1024  # fuzzy recall draws in chunks of this many examples (fixed: part of the stream)


def _columns(
  inputs: np.ndarray, targets: np.ndarray, distance: np.ndarray, vocab_size: int
) -> dict[str, np.ndarray]:
  """The standard columns, compactly typed (batches are cast to int32 later)."""
  n, length = inputs.shape
  dt = token_dtype(vocab_size)
  return {
    "inputs": inputs.astype(dt),
    "targets": targets.astype(dt),
    "weights": (targets != IGNORE).astype(np.float32),
    "distance": distance.astype(np.int16 if length < 2**15 else np.int32),
    "lengths": np.full(n, length, np.int32),
  }


# ---- in-context recall and noisy recall ---------------------------------------------------------
def recall_ids(vocab_size: int, noise_vocab_size: int, multi_query: bool) -> dict[str, int]:
  """``{num_keys, num_values, noise_start, copy}`` of MAD's recall vocabulary layout."""
  content = vocab_size - (0 if multi_query else 1) - noise_vocab_size
  k = content // 2
  return {"num_keys": k, "num_values": content - k, "noise_start": content, "copy": vocab_size - 1}


def check_recall_options(
  *, vocab_size: int, seq_len: int, noise_vocab_size: int, frac_noise: float, multi_query: bool
) -> None:
  """Validate (noisy) in-context recall options. Raises ValueError."""
  ids = recall_ids(vocab_size, noise_vocab_size, multi_query)
  if seq_len < 4 or seq_len % 2:
    raise ValueError(f"seq_len={seq_len} must be even and at least 4 (pairs of tokens)")
  if ids["num_keys"] < 1:
    raise ValueError(
      f"vocab_size={vocab_size} leaves no key ids after {noise_vocab_size} noise ids"
      + ("" if multi_query else " and the copy token")
    )
  if not 0.0 <= frac_noise < 1.0:
    raise ValueError(f"frac_noise={frac_noise} must be in [0, 1)")
  if frac_noise > 0 and noise_vocab_size < 1:
    raise ValueError(f"frac_noise={frac_noise} > 0 needs noise_vocab_size >= 1")


@dataclass
class RecallDraws:
  """Every random number of ``n`` recall examples with ``P = seq_len/2`` pairs."""

  keys: np.ndarray  # [n, P-1] key ids of the random pairs
  kv_map: np.ndarray  # [n, K] each example's value per key
  noise: np.ndarray  # [n, P-1] bool: the pair is replaced by noise
  noise_tokens: np.ndarray  # [n, P-1, 2] the noise ids used there
  probe: np.ndarray  # [n] uniform in [0, 1): which shown key the final pair repeats


def draw_recall(
  rng: np.random.Generator,
  n: int,
  *,
  vocab_size: int,
  seq_len: int,
  noise_vocab_size: int = 0,
  frac_noise: float = 0.0,
  multi_query: bool = True,
) -> RecallDraws:
  ids = recall_ids(vocab_size, noise_vocab_size, multi_query)
  k, pairs = ids["num_keys"], seq_len // 2 - 1
  keys = rng.integers(0, k, (n, pairs))
  kv_map = rng.integers(k, k + ids["num_values"], (n, k))
  noise = np.zeros((n, pairs), bool)
  noise_tokens = np.zeros((n, pairs, 2), np.int64)
  if frac_noise > 0:
    noise = rng.random((n, pairs)) < frac_noise
    noise[np.arange(n), rng.integers(0, pairs, n)] = False  # one pair is always real
    noise_tokens = rng.integers(
      ids["noise_start"], ids["noise_start"] + noise_vocab_size, (n, pairs, 2)
    )
  return RecallDraws(keys, kv_map, noise, noise_tokens, rng.random(n))


def layout_recall(
  d: RecallDraws, *, vocab_size: int, noise_vocab_size: int = 0, multi_query: bool = True
) -> dict[str, np.ndarray]:
  """The sequences of ``draw_recall``'s numbers (module docstring); adds ``next``."""
  n, pairs = d.keys.shape
  ids = recall_ids(vocab_size, noise_vocab_size, multi_query)
  rows = np.arange(n)
  extra = 0 if multi_query else 1  # the copy token before the final pair
  stream = np.zeros((n, 2 * pairs + 2 + extra), np.int64)
  answer = np.full(stream.shape, IGNORE, np.int64)  # asked at the stream position of a value
  source = np.zeros(stream.shape, np.int64)  # where that value was shown before
  last = np.full((n, ids["num_keys"]), -1)  # stream position of each key's latest value
  first = np.full((n, ids["num_keys"]), pairs + 1)  # pair index of each key's first showing
  for j in range(pairs):
    key, real = d.keys[:, j], ~d.noise[:, j]
    value = d.kv_map[rows, key]
    stream[:, 2 * j] = np.where(real, key, d.noise_tokens[:, j, 0])
    stream[:, 2 * j + 1] = np.where(real, value, d.noise_tokens[:, j, 1])
    seen = real & (last[rows, key] >= 0)
    if multi_query:
      answer[seen, 2 * j + 1] = value[seen]
      source[seen, 2 * j + 1] = last[rows, key][seen]
    r = rows[real]
    last[r, key[real]] = 2 * j + 1
    first[r, key[real]] = np.minimum(first[r, key[real]], j)
  # the final key: uniform among the keys shown, in order of first showing (MAD's dict order)
  order = np.argsort(first, axis=1, kind="stable")
  shown = (first < pairs).sum(axis=1)
  probe = order[rows, (d.probe * shown).astype(np.int64)]
  at = 2 * pairs + extra
  if not multi_query:
    stream[:, at - 1] = ids["copy"]
  stream[:, at] = probe
  stream[:, at + 1] = d.kv_map[rows, probe]
  answer[:, at + 1] = stream[:, at + 1]
  source[:, at + 1] = last[rows, probe]
  # the model reads all but the last token; position i answers stream position i + 1
  out = _columns(
    stream[:, :-1],
    answer[:, 1:],
    np.where(answer[:, 1:] != IGNORE, np.arange(stream.shape[1] - 1) - source[:, 1:], 0),
    vocab_size,
  )
  out["next"] = stream[:, 1:].astype(out["inputs"].dtype)
  return out


def recall_arrays(
  n: int,
  *,
  seed: int | list[int],
  vocab_size: int,
  seq_len: int,
  noise_vocab_size: int = 0,
  frac_noise: float = 0.0,
  multi_query: bool = True,
) -> dict[str, np.ndarray]:
  """``n`` (noisy) in-context recall examples; ``L = seq_len - 1`` (``seq_len`` single-query)."""
  opts = dict(vocab_size=vocab_size, noise_vocab_size=noise_vocab_size, multi_query=multi_query)
  check_recall_options(seq_len=seq_len, frac_noise=frac_noise, **opts)
  d = draw_recall(np.random.default_rng(seed), n, seq_len=seq_len, frac_noise=frac_noise, **opts)
  return layout_recall(d, **opts)


# ---- fuzzy in-context recall ------------------------------------------------------------------
def fuzzy_ids(vocab_size: int, noise_vocab_size: int, multi_query: bool) -> dict[str, int]:
  """``{num_keys, num_values, noise_start, pad, copy}`` (key and value *token* ids)."""
  content = vocab_size - (1 if multi_query else 2) - noise_vocab_size
  k = content // 2
  pad = vocab_size - 1 if multi_query else vocab_size - 2
  return {
    "num_keys": k,
    "num_values": content - k,
    "noise_start": content,
    "pad": pad,
    "copy": vocab_size - 1,
  }


def _fuzzy_budget(seq_len: int, probe_len: int, k_motif_size: int, v_motif_size: int) -> int:
  """Pairs are appended while the stream is shorter than this (MAD's loop bound)."""
  return seq_len - probe_len - (k_motif_size + v_motif_size)


def check_fuzzy_options(
  *,
  vocab_size: int,
  seq_len: int,
  k_motif_size: int,
  v_motif_size: int,
  noise_vocab_size: int,
  frac_noise: float,
  multi_query: bool,
) -> None:
  """Validate fuzzy recall options. Raises ValueError."""
  ids = fuzzy_ids(vocab_size, noise_vocab_size, multi_query)
  if not 0.0 <= frac_noise < 1.0:
    raise ValueError(f"frac_noise={frac_noise} must be in [0, 1)")
  if frac_noise > 0 and noise_vocab_size < 1:
    raise ValueError(f"frac_noise={frac_noise} > 0 needs noise_vocab_size >= 1")
  if k_motif_size < 1 or v_motif_size < 1:
    raise ValueError(f"k_motif_size={k_motif_size}, v_motif_size={v_motif_size} must be >= 1")
  if ids["num_keys"] < k_motif_size or ids["num_values"] < v_motif_size:
    raise ValueError(
      f"vocab_size={vocab_size} gives {ids['num_keys']} key and {ids['num_values']} value ids, "
      f"fewer than the motif sizes ({k_motif_size}, {v_motif_size}) of distinct tokens"
    )
  m = k_motif_size + v_motif_size
  if seq_len < 3 * m + 1:
    raise ValueError(f"seq_len={seq_len} is too short for motifs of {m} tokens; use >= {3 * m + 1}")


@dataclass
class FuzzyDraws:
  """Every random number of ``n`` fuzzy recall examples; ``M`` candidate pairs each (more
  than a stream can hold: pairs are consumed in order until the stream is full)."""

  key_size: np.ndarray  # [n, M]
  value_size: np.ndarray  # [n, M]
  key_tokens: np.ndarray  # [n, M, k_motif_size] distinct key ids (the first key_size used)
  value_tokens: np.ndarray  # [n, M, v_motif_size] distinct value ids
  noise: np.ndarray  # [n, M] bool
  noise_tokens: np.ndarray  # [n, M, k_motif_size + v_motif_size]
  probe_key: np.ndarray  # [n, k_motif_size] (first probe_key_size used)
  probe_key_size: np.ndarray  # [n]
  probe_value: np.ndarray  # [n, v_motif_size]
  probe_value_size: np.ndarray  # [n]
  probe_at: np.ndarray  # [n] the probe pair goes at the first pair boundary at or after this


def draw_fuzzy(
  rng: np.random.Generator,
  n: int,
  *,
  vocab_size: int,
  seq_len: int,
  k_motif_size: int,
  v_motif_size: int,
  training: bool,
  noise_vocab_size: int = 0,
  frac_noise: float = 0.0,
  multi_query: bool = True,
) -> FuzzyDraws:
  """Draws for ``n`` examples; evaluation (``training=False``) keys have ``k_motif_size``
  tokens. Noise (MAD's option, unused by its benchmark): a pair is replaced by as many noise
  tokens with probability ``frac_noise``."""
  ids = fuzzy_ids(vocab_size, noise_vocab_size, multi_query)
  nk, nv = ids["num_keys"], ids["num_values"]
  km, vm = k_motif_size, v_motif_size
  m = seq_len // 2 + 1  # every pair has >= 2 tokens

  def sizes(shape: tuple[int, ...], top: int, fixed: bool) -> np.ndarray:
    return np.full(shape, top) if fixed else rng.integers(1, top + 1, shape)

  key_size = sizes((n, m), km, not training)
  value_size = sizes((n, m), vm, False)
  key_tokens = sample_distinct(rng, n * m, km, nk).reshape(n, m, km)
  value_tokens = nk + sample_distinct(rng, n * m, vm, nv).reshape(n, m, vm)
  noise = rng.random((n, m)) < frac_noise if frac_noise > 0 else np.zeros((n, m), bool)
  start = ids["noise_start"]
  noise_tokens = rng.integers(start, start + max(noise_vocab_size, 1), (n, m, km + vm))
  probe_key_size = sizes((n,), km, not training)
  probe_value_size = sizes((n,), vm, False)
  probe_key = sample_distinct(rng, n, km, nk)
  probe_value = nk + sample_distinct(rng, n, vm, nv)
  budget = _fuzzy_budget(seq_len, probe_key_size + probe_value_size, km, vm)
  probe_at = rng.integers(0, budget - (km + vm) + 1)  # always placed (module docstring)
  return FuzzyDraws(
    key_size, value_size, key_tokens, value_tokens, noise, noise_tokens,
    probe_key, probe_key_size, probe_value, probe_value_size, probe_at,
  )  # fmt: skip


def layout_fuzzy_row(
  d: FuzzyDraws, b: int, *, seq_len: int, k_motif_size: int, v_motif_size: int, ids: dict
) -> tuple[list[int], list[int], list[int]]:
  """Example ``b`` as stream lists ``(tokens, answers (-1: not asked), source position of
  each answer)`` of ``seq_len + 1`` tokens, left-padded."""
  probe_k = tuple(int(t) for t in d.probe_key[b, : d.probe_key_size[b]])
  probe_v = tuple(int(t) for t in d.probe_value[b, : d.probe_value_size[b]])
  budget = _fuzzy_budget(seq_len, len(probe_k) + len(probe_v), k_motif_size, v_motif_size)
  tokens: list[int] = []
  answers: list[int] = []
  source: list[int] = []
  shown: dict[tuple[int, ...], tuple[tuple[int, ...], int]] = {}  # key -> (value, value pos)

  def pair(k: tuple[int, ...], v: tuple[int, ...]) -> None:
    before = shown.get(k)  # (value, position of its first token) where k was shown last
    tokens.extend(k)
    answers.extend([IGNORE] * len(k))
    source.extend([0] * len(k))
    if before is not None and ids["multi_query"]:  # asked, token by token
      answers.extend(v)
      source.extend(before[1] + t for t in range(len(v)))
    else:
      answers.extend([IGNORE] * len(v))
      source.extend([0] * len(v))
    shown[k] = (v, len(tokens))
    tokens.extend(v)

  placed, j = False, 0
  while len(tokens) < budget:
    if not placed and len(tokens) >= d.probe_at[b]:
      pair(probe_k, probe_v)
      placed = True
      continue
    ks, vs = int(d.key_size[b, j]), int(d.value_size[b, j])
    if d.noise[b, j]:
      noise = [int(t) for t in d.noise_tokens[b, j, : ks + vs]]
      tokens.extend(noise)
      answers.extend([IGNORE] * len(noise))
      source.extend([0] * len(noise))
    else:
      k = tuple(int(t) for t in d.key_tokens[b, j, :ks])
      if k == probe_k:
        v, placed = probe_v, True
      elif k in shown:
        v = shown[k][0]
      else:
        v = tuple(int(t) for t in d.value_tokens[b, j, :vs])
      pair(k, v)
    j += 1
  if not ids["multi_query"]:
    tokens.append(ids["copy"])
    answers.append(IGNORE)
    source.append(0)
  # the final query: always asked (the probe was shown above)
  value_pos = shown[probe_k][1]
  tokens.extend(probe_k)
  answers.extend([IGNORE] * len(probe_k))
  source.extend([0] * len(probe_k))
  tokens.extend(probe_v)
  answers.extend(probe_v)
  source.extend(value_pos + t for t in range(len(probe_v)))
  pad = seq_len + 1 - len(tokens)
  return (
    [ids["pad"]] * pad + tokens,
    [IGNORE] * pad + answers,
    [0] * pad + [s + pad for s in source],
  )


def fuzzy_arrays(
  n: int,
  *,
  seed: int | list[int],
  vocab_size: int,
  seq_len: int,
  k_motif_size: int = 3,
  v_motif_size: int = 3,
  training: bool = True,
  noise_vocab_size: int = 0,
  frac_noise: float = 0.0,
  multi_query: bool = True,
) -> dict[str, np.ndarray]:
  """``n`` fuzzy recall examples (``L = seq_len``); ``training=False``: evaluation keys."""
  check_fuzzy_options(
    vocab_size=vocab_size,
    seq_len=seq_len,
    k_motif_size=k_motif_size,
    v_motif_size=v_motif_size,
    noise_vocab_size=noise_vocab_size,
    frac_noise=frac_noise,
    multi_query=multi_query,
  )
  rng = np.random.default_rng(seed)
  ids = {**fuzzy_ids(vocab_size, noise_vocab_size, multi_query), "multi_query": multi_query}
  stream = np.empty((n, seq_len + 1), np.int64)
  answer = np.empty((n, seq_len + 1), np.int64)
  source = np.empty((n, seq_len + 1), np.int64)
  for s in range(0, n, _CHUNK):
    c = min(_CHUNK, n - s)
    d = draw_fuzzy(
      rng, c, vocab_size=vocab_size, seq_len=seq_len, k_motif_size=k_motif_size,
      v_motif_size=v_motif_size, training=training, noise_vocab_size=noise_vocab_size,
      frac_noise=frac_noise, multi_query=multi_query,
    )  # fmt: skip
    for b in range(c):
      row = layout_fuzzy_row(
        d, b, seq_len=seq_len, k_motif_size=k_motif_size, v_motif_size=v_motif_size, ids=ids
      )
      stream[s + b], answer[s + b], source[s + b] = row
  asked = answer[:, 1:] != IGNORE
  out = _columns(
    stream[:, :-1],
    answer[:, 1:],
    np.where(asked, np.arange(seq_len) - source[:, 1:], 0),
    vocab_size,
  )
  out["next"] = stream[:, 1:].astype(out["inputs"].dtype)
  return out


# ---- selective copying ----------------------------------------------------------------------
def check_copy_options(*, vocab_size: int, seq_len: int, num_tokens: int) -> None:
  if vocab_size < 3:
    raise ValueError(f"vocab_size={vocab_size} leaves no content ids (blank and copy take 2)")
  if num_tokens < 1:
    raise ValueError(f"num_tokens={num_tokens} must be at least 1")
  if seq_len <= 2 * num_tokens + 1:
    raise ValueError(
      f"seq_len={seq_len} must exceed 2 * num_tokens + 1 = {2 * num_tokens + 1} (MAD's bound)"
    )


def draw_copy(
  rng: np.random.Generator, n: int, *, vocab_size: int, seq_len: int, num_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
  """``(content [n, N], blanks before each content token [n, N])``."""
  content = rng.integers(0, vocab_size - 2, (n, num_tokens))
  blanks = seq_len - 2 * num_tokens - 1
  gaps = rng.multinomial(blanks, np.full(num_tokens, 1.0 / num_tokens), size=n)
  return content, gaps


def layout_copy(
  content: np.ndarray, gaps: np.ndarray, *, vocab_size: int, seq_len: int
) -> dict[str, np.ndarray]:
  n, m = content.shape
  blank, copy = vocab_size - 2, vocab_size - 1
  pos = np.cumsum(gaps, axis=1) + np.arange(m)  # [n, N] position of each content token
  rows = np.arange(n)[:, None]
  inputs = np.full((n, seq_len), blank, np.int64)
  inputs[rows, pos] = content
  inputs[:, seq_len - m - 1] = copy
  targets = np.full((n, seq_len), IGNORE, np.int64)
  targets[:, seq_len - m :] = content
  distance = np.zeros((n, seq_len), np.int64)
  distance[:, seq_len - m :] = np.arange(seq_len - m, seq_len) - pos
  return _columns(inputs, targets, distance, vocab_size)


def copy_arrays(
  n: int, *, seed: int | list[int], vocab_size: int, seq_len: int, num_tokens: int
) -> dict[str, np.ndarray]:
  """``n`` selective copying examples (``L = seq_len``)."""
  check_copy_options(vocab_size=vocab_size, seq_len=seq_len, num_tokens=num_tokens)
  rng = np.random.default_rng(seed)
  content, gaps = draw_copy(rng, n, vocab_size=vocab_size, seq_len=seq_len, num_tokens=num_tokens)
  return layout_copy(content, gaps, vocab_size=vocab_size, seq_len=seq_len)


# ---- compression --------------------------------------------------------------------------------
def compression_arrays(
  n: int, *, seed: int | list[int], vocab_size: int, seq_len: int
) -> dict[str, np.ndarray]:
  """``n`` compression examples: every position is asked for its own input."""
  if vocab_size < 2 or seq_len < 2:
    raise ValueError(f"vocab_size={vocab_size} and seq_len={seq_len} must be at least 2")
  rng = np.random.default_rng(seed)
  inputs = np.concatenate(
    [rng.integers(0, vocab_size - 1, (n, seq_len - 1)), np.full((n, 1), vocab_size - 1)], axis=1
  )
  # how far before the compression token each input lies (the token itself counts as 1)
  distance = np.broadcast_to(np.maximum(np.arange(seq_len)[::-1], 1), (n, seq_len))
  return _columns(inputs, inputs, distance, vocab_size)


# ---- memorization ---------------------------------------------------------------------------
def memorization_map(vocab_size: int, seed: int) -> np.ndarray:
  """``[K]``: the fixed value id of each key id (a uniformly random injection)."""
  k = (vocab_size - 1) // 2
  values = np.arange(k, vocab_size - 1)
  return np.random.default_rng([seed, MAP_STREAM]).permutation(values)[:k]


def memorization_arrays(
  n: int, *, seed: int | list[int], vocab_size: int, seq_len: int, kv_map: np.ndarray
) -> dict[str, np.ndarray]:
  """``n`` memorization examples of ``kv_map`` (``memorization_map``; ``L = seq_len``)."""
  if seq_len < 2 or seq_len % 2:
    raise ValueError(f"seq_len={seq_len} must be even and at least 2 (key, insert pairs)")
  if vocab_size < 4:
    raise ValueError(f"vocab_size={vocab_size} must be at least 4")
  rng = np.random.default_rng(seed)
  keys = rng.integers(0, len(kv_map), (n, seq_len // 2))
  inputs = np.full((n, seq_len), vocab_size - 1, np.int64)
  inputs[:, 0::2] = keys
  targets = np.full((n, seq_len), IGNORE, np.int64)
  targets[:, 1::2] = kv_map[keys]
  distance = np.where(targets != IGNORE, 1, 0)
  return _columns(inputs, targets, distance, vocab_size)
