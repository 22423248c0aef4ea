"""A HuggingFace ``tokenizers`` JSON file as an alternative to byte tokens for language models.

Each token also records how many UTF-8 bytes of text it covers, so bits per byte stays
comparable with byte-level models (``lrm.data.packing``). Needs ``pip install tokenizers``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from lrm.data import DataError

SEP_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]", "<sep>")


class Tokenizer:
  """A HuggingFace ``tokenizers`` JSON file: ids and per-token byte counts."""

  def __init__(self, path: str):
    try:
      from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
      raise ImportError(
        f"tokenizer '{path}' needs the 'tokenizers' package: pip install tokenizers"
      ) from None
    f = Path(path).expanduser()
    if not f.is_file():
      raise DataError(f"{f}: tokenizer file not found (give a tokenizers JSON file or 'bytes')")
    self.path, self.sha256 = str(f), hashlib.sha256(f.read_bytes()).hexdigest()
    self.tk = HFTokenizer.from_file(str(f))
    self.size = self.tk.get_vocab_size(with_added_tokens=True)
    ids = [(t, self.tk.token_to_id(t)) for t in SEP_CANDIDATES]
    found = [(t, i) for t, i in ids if i is not None]
    if not found:
      raise DataError(f"{f}: none of {SEP_CANDIDATES} is a token; add a document separator")
    self.sep_token, self.sep = found[0]

  def encode(self, doc: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [n], bytes [n])``: each token owns the text bytes up to the end of its span."""
    enc = self.tk.encode(doc, add_special_tokens=False)
    ids = np.asarray(enc.ids, np.int64)
    cps = np.frombuffer(doc.encode("utf-32-le"), np.uint32)  # code points
    width = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)  # UTF-8 bytes per char
    cum = np.concatenate([[0], np.cumsum(width)])  # char index -> byte offset
    ends = np.maximum.accumulate(cum[[e for _, e in enc.offsets]]) if len(ids) else cum[:0]
    nbytes = np.diff(np.concatenate([[0], ends]))
    if len(ids):
      nbytes[-1] += cum[-1] - ends[-1]  # trailing text no span covers
    return ids, nbytes

  def vocab(self) -> dict[str, Any]:
    specials = {self.sep_token: self.sep}
    return {
      "kind": "tokenizer",
      "path": self.path,
      "sha256": self.sha256,
      "size": self.size,
      "specials": specials,
    }
