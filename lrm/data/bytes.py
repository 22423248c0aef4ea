"""Byte-level tokenisation shared by the byte tasks (``lm``, ``text``, ``retrieval``).

The vocabulary is fixed and needs no data: id 0 is padding, id 1 separates documents, and
byte ``b`` is id ``b + 2``, so ids are a pure function of the text and every checkpoint
reloads with the same ids. Padding is never inferred from id 0: every encoded batch carries
explicit ``lengths``. Ids are stored as ``uint16`` (258 ids do not fit a byte) and cast to
int32 on the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

PAD = 0  # padding; masked by lengths, never predicted
SEP = 1  # document separator / end of document (language modelling)
OFFSET = 2  # byte b -> id b + OFFSET
VOCAB_SIZE = 256 + OFFSET
DTYPE = np.uint16


def vocab() -> dict[str, Any]:
  """JSON-able description of the fixed byte vocabulary."""
  return {
    "kind": "bytes",
    "size": VOCAB_SIZE,
    "specials": {"<pad>": PAD, "<sep>": SEP},
    "byte_offset": OFFSET,
    "rule": "id = byte + 2 for UTF-8 bytes 0..255",
  }


def as_bytes(text: str | bytes) -> bytes:
  return text if isinstance(text, bytes) else text.encode("utf-8")


def encode(text: str | bytes) -> np.ndarray:
  """Text (UTF-8 encoded if ``str``) -> ids ``[n]`` uint16."""
  return np.frombuffer(as_bytes(text), np.uint8).astype(DTYPE) + OFFSET


def decode(ids: Iterable[int]) -> str:
  """Inverse of ``encode`` (specials dropped, invalid UTF-8 replaced)."""
  raw = bytes(int(i) - OFFSET for i in ids if int(i) >= OFFSET)
  return raw.decode("utf-8", errors="replace")


def encode_padded(texts: Iterable[str | bytes], max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Encode, truncate to ``max_len`` and right-pad with ``PAD``.

  Returns ``(ids [N, max_len] uint16, lengths [N] int32, num_truncated)``.
  """
  if max_len < 1:
    raise ValueError(f"max_len must be at least 1, got {max_len}")
  rows, lengths, truncated = [], [], 0
  for t in texts:
    raw = as_bytes(t)
    truncated += len(raw) > max_len
    rows.append(raw[:max_len])
    lengths.append(min(len(raw), max_len))
  ids = np.full((len(rows), max_len), PAD, DTYPE)
  for i, raw in enumerate(rows):
    ids[i, : len(raw)] = np.frombuffer(raw, np.uint8) + OFFSET
  return ids, np.asarray(lengths, np.int32).reshape(len(rows)), truncated


def report_truncation(what: str, truncated: int, total: int, max_len: int) -> None:
  """Say once per split how many examples ``max_len`` cut (truncation is never silent)."""
  if truncated:
    pct = 100.0 * truncated / max(total, 1)
    print(f"[lrm] {what}: {truncated}/{total} examples ({pct:.1f}%) truncated to {max_len} bytes")
