"""Packing documents into fixed-length language-modelling windows with explicit lengths.

The documents of a split become one stream ``SEP d1 SEP d2 ... SEP`` which is cut into
windows of ``seq_len + 1`` tokens overlapping by one, so every token after the first is a
target exactly once: ``inputs = w[:-1]``, ``targets = w[1:]``. The last window is padded and
its padding excluded through ``lengths``; nothing is dropped. Each window also records how
many text bytes its targets cover (``bytes``), so bits per byte is comparable across
tokenisations.
"""

from __future__ import annotations

import numpy as np

from lrm.data import bytes as tok
from lrm.data.tokenizer import Tokenizer


def pack(
  docs: list[np.ndarray], sep: int, seq_len: int, join: bool, doc_bytes: list[np.ndarray] | None
) -> dict[str, np.ndarray]:
  """Windows ``inputs/targets [W, L]``, ``lengths [W]`` and ``bytes [W]`` from token ids.

  ``join`` concatenates the documents without separators between them (one SEP at each end
  of the stream). ``doc_bytes`` (per-token byte counts, tokenizer only) gives each window's
  ``bytes``; for byte tokens every target is one byte (SEP included), so ``bytes == lengths``.
  """
  sep_arr = np.asarray([sep], docs[0].dtype if docs else np.int64)
  if join:
    parts = [sep_arr, *docs, sep_arr]
  else:
    parts = [sep_arr]
    for d in docs:
      parts += [d, sep_arr]
  stream = np.concatenate(parts)
  num_targets = len(stream) - 1
  w = -(-num_targets // seq_len)  # windows, the last one partial
  dtype = tok.DTYPE if stream.max(initial=0) < 2**16 else np.int32
  padded = np.zeros(w * seq_len + 1, dtype)
  padded[: len(stream)] = stream
  lengths = np.minimum(num_targets - np.arange(w) * seq_len, seq_len).astype(np.int32)
  if doc_bytes is None:
    nbytes = lengths.copy()
  else:  # same layout as the stream; the end-of-document SEP counts as one byte
    one, zero = np.ones(1, np.int64), np.zeros(1, np.int64)
    bparts = [zero, *doc_bytes, one] if join else [zero] + [x for b in doc_bytes for x in (b, one)]
    target_bytes = np.zeros(w * seq_len, np.int64)
    target_bytes[:num_targets] = np.concatenate(bparts)[1:]
    nbytes = target_bytes.reshape(w, seq_len).sum(1).astype(np.int32)  # [W]
  return {
    "inputs": padded[:-1].reshape(w, seq_len),  # [W, L]
    "targets": padded[1:].reshape(w, seq_len),  # [W, L]
    "lengths": lengths,
    "bytes": nbytes,
  }


def pack_texts(
  docs: list[str | bytes], seq_len: int, join: bool, tokenizer: Tokenizer | None = None
) -> dict[str, np.ndarray]:
  """``pack`` after encoding: bytes (``lrm.data.bytes``) or a ``Tokenizer``."""
  if tokenizer is None:
    return pack([tok.encode(d) for d in docs], tok.SEP, seq_len, join, None)
  texts = [d if isinstance(d, str) else d.decode("utf-8", errors="replace") for d in docs]
  ids, nbytes = zip(*(tokenizer.encode(t) for t in texts), strict=True)
  return pack(list(ids), tokenizer.sep, seq_len, join, list(nbytes))
