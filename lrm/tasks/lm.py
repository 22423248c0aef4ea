"""Causal language modelling on packed fixed-length windows; bits per byte is the metric.

Data (``path``): the embedded stdlib corpus (``""``), a text file, a folder of text files, a
``save_to_disk`` folder, a folder of split files or a hub dataset; see ``lrm.data.documents``
for how each is read and split. ``join_rows=True`` concatenates rows without a separator, for
sources that store one line per row (e.g. wikitext).

Packing (``lrm.data.packing``): each split is one stream ``SEP d1 SEP d2 ... SEP`` cut into
windows of ``seq_len + 1`` tokens overlapping by one, so every token after the first is a
target exactly once; the last window's padding is excluded through ``lengths``.

Tokens: bytes by default (``lrm.data.bytes``; SEP counts as one byte); or ``tokenizer`` = the
path of a HuggingFace ``tokenizers`` JSON file (``lrm.data.tokenizer``), in which case each
window also records how many text bytes its targets cover, so ``bits_per_byte`` = total nats
/ ln 2 / total bytes stays comparable with the byte models.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm.data import bytes as tok
from lrm.data import documents
from lrm.data.arrays import ArrayDataset
from lrm.data.packing import pack_texts
from lrm.data.tokenizer import Tokenizer
from lrm.registry import register
from lrm.tasks.base import SPLITS, CausalTask, DataError, Sums, length_mask


@register("task", "lm")
class LanguageModelTask(CausalTask):
  """Next-token prediction with a causal encoder and a (tied) LM head."""

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

  # ---- generation ---------------------------------------------------------------------------
  @property
  def sep(self) -> int:
    """The document separator id (it precedes every document of the training stream)."""
    return tok.SEP if self.tokenizer is None else self.tokenizer.sep

  def prompt_ids(self, text: str) -> np.ndarray:
    """A prompt as the start of a document: ``[SEP, *ids(text)]`` (int32), as in training."""
    ids = tok.encode(text) if self.tokenizer is None else self.tokenizer.encode(text)[0]
    return np.concatenate([[self.sep], ids]).astype(np.int32)

  def text(self, ids: np.ndarray) -> str:
    """Generated ids as text (the byte vocabulary drops its specials: pad, separator)."""
    if self.tokenizer is None:
      return tok.decode(ids)
    return self.tokenizer.tk.decode([int(i) for i in ids], skip_special_tokens=False)

  def setup(self) -> None:
    if self._data:
      return
    docs, info = documents.load(
      self.path,
      corpus_bytes=self.corpus_bytes,
      text_column=self.text_column,
      hub_config=self.hub_config,
    )
    data = {}
    for split in SPLITS:
      if not docs.get(split) or not info["bytes"].get(split):
        fix = documents.empty_split_hint(split, info, self.corpus_bytes)
        raise DataError(
          f"lm: the {split} split of {self.path or 'the stdlib corpus'} is empty (0 bytes); {fix}"
        )
      arrays = pack_texts(docs[split], self.seq_len, self.join_rows, self.tokenizer)
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
    return self.ordered(out)

  def metric_order(self) -> list[str]:
    return ["loss", "bits_per_byte", "bits_per_token", "perplexity", "accuracy"]

  def reference_levels(self) -> dict[str, dict[str, float]]:
    """Chance: a uniform guess over the vocabulary (over the 256 byte values: 8 bits)."""
    levels = {"loss": {"chance": math.log(self.vocab_size)}}
    if self.tokenizer is None:
      levels["bits_per_byte"] = {"chance": 8.0}
    return levels
