"""Causal language modelling on packed fixed-length windows; bits per byte is the metric.

Data (``path``):
  * ``""``: the embedded corpus, Python's own standard library (``lrm.data.corpus``: real
    text present on every machine; capped by ``corpus_bytes``; differs between Python
    versions, so its version and per-split file/byte counts are recorded in ``vocab()``).
  * a local text file: split by position into the first 90% / next 5% / last 5% of its
    bytes (the enwik8 convention).
  * a local folder of text files (``TEXT_SUFFIXES``): one document per file, split by a hash
    of the relative path (90/5/5), as for the embedded corpus.
  * a ``save_to_disk`` folder, a folder of ``<split>.jsonl/csv/parquet`` files, or a hub
    dataset name (``hub_config`` = its configuration), each row's ``text_column`` one
    document. A missing validation (test) split is carved from train: rows with
    ``index % 20 == 19`` (``== 18``). ``join_rows=True`` concatenates rows without a
    separator, for sources that store one line per row (e.g. wikitext).

Packing: the documents of a split become one stream ``SEP d1 SEP d2 ... SEP`` which is cut
into windows of ``seq_len + 1`` tokens overlapping by one, so every token after the first is
a target exactly once: ``inputs = w[:-1]``, ``targets = w[1:]``. The last window is padded and
its padding excluded through ``lengths``; nothing is dropped.

Tokens: bytes by default (``lrm.data.bytes``; SEP counts as one byte); or ``tokenizer`` = the
path of a HuggingFace ``tokenizers`` JSON file (needs ``pip install tokenizers``), in which
case each window also records how many text bytes its targets cover, so ``bits_per_byte`` =
total nats / ln 2 / total bytes stays comparable with the byte models.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm.data import bytes as tok
from lrm.data import corpus
from lrm.data.arrays import ArrayDataset
from lrm.data.tables import FILE_KINDS, checked_texts, open_splits, require_columns
from lrm.registry import register
from lrm.tasks.base import SPLITS, DataError, Sums, Task
from lrm.tasks.classify import length_mask

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".tex", ".c", ".h", ".cpp", ".js", ".html")
SEP_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]", "<sep>")
FILE_SPLIT = {"train": (0, 90), "validation": (90, 95), "test": (95, 100)}  # % of a single file


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


def pack(
  docs: list[np.ndarray], sep: int, seq_len: int, join: bool, doc_bytes: list[np.ndarray] | None
) -> dict[str, np.ndarray]:
  """Windows ``inputs/targets [W, L]``, ``lengths [W]`` and ``bytes [W]`` from token ids.

  ``doc_bytes`` (per-token byte counts, tokenizer only) gives each window's ``bytes``; for
  byte tokens every target is one byte (SEP included), so ``bytes == lengths``.
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


def split_file(f: Path) -> dict[str, list[bytes]]:
  data = f.read_bytes()
  cut = {s: (len(data) * lo // 100, len(data) * hi // 100) for s, (lo, hi) in FILE_SPLIT.items()}
  return {s: [data[a:b]] for s, (a, b) in cut.items()}


def carve(rows: list[str], have: set[str]) -> dict[str, list[str]]:
  """Train rows -> train + the missing validation/test splits (every 20th row, see above)."""
  picks = {s: r for s, r in (("validation", 19), ("test", 18)) if s not in have}
  out: dict[str, list[str]] = {"train": [], **{s: [] for s in picks}}
  for i, row in enumerate(rows):
    out[next((s for s, r in picks.items() if i % 20 == r), "train")].append(row)
  return out


@register("task", "lm")
class LanguageModelTask(Task):
  """Next-token prediction with a causal encoder and a (tied) LM head."""

  causal = True
  head = "lm"
  main_metric = "bits_per_byte"
  main_mode = "min"

  def __init__(
    self,
    *,
    path: str = "",
    seq_len: int = 512,
    tokenizer: str = "bytes",
    corpus_bytes: int = 4_000_000,
    text_column: str = "text",
    hub_config: str = "",
    join_rows: bool = False,
  ):
    if seq_len < 1:
      raise DataError(f"lm: seq_len must be at least 1, got {seq_len}")
    if corpus_bytes < 0:
      raise DataError(f"lm: corpus_bytes must be >= 0 (0 = no cap), got {corpus_bytes}")
    self.path, self.seq_len, self.corpus_bytes = path, seq_len, corpus_bytes
    self.text_column, self.hub_config, self.join_rows = text_column, hub_config, join_rows
    self.tokenizer = None if tokenizer == "bytes" else Tokenizer(tokenizer)
    self._data: dict[str, ArrayDataset] = {}
    self._info: dict[str, Any] = {}

  @property
  def vocab_size(self) -> int:
    return tok.VOCAB_SIZE if self.tokenizer is None else self.tokenizer.size

  def vocab(self) -> dict[str, Any]:
    base = tok.vocab() if self.tokenizer is None else self.tokenizer.vocab()
    return {**base, "seq_len": self.seq_len, "data": self._info}

  # ---- data ------------------------------------------------------------------------------
  def _documents(self) -> tuple[dict[str, list[str | bytes]], dict[str, Any]]:
    if not self.path:
      return corpus.load(self.corpus_bytes)
    p = Path(self.path).expanduser()
    if p.is_file():
      info = {"source": "file", "root": str(p)}
      return self._cap(split_file(p), info)
    tabular = p.is_dir() and (
      any((p / n).exists() for n in ("dataset_dict.json", "state.json"))
      or any((p / f"train{ext}").exists() for ext in FILE_KINDS)
    )
    if p.is_dir() and not tabular:
      try:
        return corpus.load(self.corpus_bytes, root=p, suffixes=TEXT_SUFFIXES)
      except FileNotFoundError as e:
        raise DataError(f"{e}; put text files there or give a dataset") from None
    tables = open_splits(self.path, what="lm", hub_config=self.hub_config)
    if "train" not in tables:
      raise DataError(f"{self.path}: no train split (found {sorted(tables)})")
    docs = {}
    for split, table in tables.items():
      require_columns(table, (self.text_column,))
      docs[split] = checked_texts(table, self.text_column)
    docs.update(carve(docs["train"], set(tables)))
    return self._cap(docs, {"source": self.path})

  def _cap(self, docs: dict[str, list], info: dict[str, Any]) -> tuple[dict, dict]:
    """Documents in order until ``corpus_bytes`` (split shares 90/5/5 %) is reached."""
    out = {}
    for split, (lo, hi) in corpus.SPLIT_BUCKETS.items():
      budget, used, kept = self.corpus_bytes * (hi - lo) // 100, 0, []
      for d in docs.get(split, []):
        if self.corpus_bytes and used >= budget:
          break
        kept.append(d)
        used += len(tok.as_bytes(d))
      out[split] = kept
    info = {
      **info,
      "corpus_bytes_cap": self.corpus_bytes,
      "files": {s: len(v) for s, v in out.items()},
      "bytes": {s: sum(len(tok.as_bytes(d)) for d in v) for s, v in out.items()},
    }
    return out, info

  def _pack(self, docs: list[str | bytes]) -> dict[str, np.ndarray]:
    if self.tokenizer is None:
      return pack([tok.encode(d) for d in docs], tok.SEP, self.seq_len, self.join_rows, None)
    texts = [d if isinstance(d, str) else d.decode("utf-8", errors="replace") for d in docs]
    ids, nbytes = zip(*(self.tokenizer.encode(t) for t in texts), strict=True)
    return pack(list(ids), self.tokenizer.sep, self.seq_len, self.join_rows, list(nbytes))

  def setup(self) -> None:
    if self._data:
      return
    docs, info = self._documents()
    data = {}
    for split in SPLITS:
      if not docs.get(split):
        raise DataError(
          f"lm: the {split} split of {self.path or 'the stdlib corpus'} is empty; "
          f"raise corpus_bytes (now {self.corpus_bytes}) or add data"
        )
      arrays = self._pack(docs[split])
      data[split] = ArrayDataset(arrays)
      print(
        f"[lrm] lm {split}: {len(docs[split])} documents, {info['bytes'][split]} bytes, "
        f"{int(arrays['lengths'].sum())} targets in {len(arrays['lengths'])} windows"
      )
    self._data = data
    self._info = {**info, "windows": {s: len(d) for s, d in data.items()}}

  # ---- training ----------------------------------------------------------------------------
  def loss(self, model: nnx.Module, batch: dict[str, jax.Array]) -> tuple[jax.Array, Sums]:
    inputs = batch["inputs"].astype(jnp.int32)  # [B, L]
    targets = batch["targets"].astype(jnp.int32)  # [B, L]
    mask = length_mask(batch["lengths"], inputs.shape[1])  # [B, L]
    logits = model(inputs, mask).astype(jnp.float32)  # [B, L, V]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, L]
    valid = batch["valid"].astype(jnp.float32)  # [B]
    w = mask.astype(jnp.float32) * valid[:, None]  # [B, L]
    nats, n = (ce * w).sum(), w.sum()
    correct = ((jnp.argmax(logits, -1) == targets) * w).sum()
    nbytes = (batch["bytes"].astype(jnp.float32) * valid).sum()
    sums = {
      "loss": (nats, n),  # nats per token
      "bits_per_byte": (nats / math.log(2), nbytes),
      "accuracy": (correct, n),
    }
    return nats / jnp.maximum(n, 1.0), sums

  def summarize(self, sums: Any) -> dict[str, float]:
    out = super().summarize(sums)
    out["perplexity"] = math.exp(min(out["loss"], 700.0))  # per token
    out["bits_per_token"] = out["loss"] / math.log(2)
    return out
