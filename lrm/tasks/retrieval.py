"""LRA Retrieval (AAN): does paper 1 cite paper 2? Byte-level, two documents, dual encoder.

Official files ``new_aan_pairs.{train,eval,test}.tsv`` (``eval`` is validation): no header,
five tab-separated columns ``label, id1, id2, text1, text2``. Texts contain quote characters
that are text, not CSV quoting (LRA reads them with ``use_quote_delim=False``), so lines are
split on tabs only; a line without exactly five columns is a ``DataError`` naming file and
line. Labels are read as numbers (LRA parses a float, then casts) and must be 0 or 1.

``path`` is the folder holding the files (or the ``lra_release`` tree above it). ``""``
generates an offline stand-in in the same format (``RetrievalTask.generate``): pseudo-papers
built from invented words, where a pair is positive iff both documents mention the same
rare key phrase (a "citation"); it is NOT the AAN corpus. Texts include balanced and
unbalanced quotes and apostrophes to exercise the no-quoting rule.

Each document is truncated to ``max_len`` bytes (LRA: 4000) and encoded separately; the
model is ``heads.DualEncoder`` (one shared encoder, no cross-attention between documents).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm import heads
from lrm.data import DataError
from lrm.data import bytes as tok
from lrm.model import Encoder
from lrm.registry import register
from lrm.tasks.base import SPLITS, length_mask
from lrm.tasks.classify import BytesTableTask, Splits

FILES = {"train": "train", "validation": "eval", "test": "test"}
SUBDIRS = ("", "tsv_data", "lra_release/tsv_data", "lra_release/lra_release/tsv_data")


def file_name(split: str) -> str:
  return f"new_aan_pairs.{FILES[split]}.tsv"


def find_folder(path: str) -> Path:
  """The folder that holds ``new_aan_pairs.train.tsv`` (tolerates the nested release tree)."""
  root = Path(path).expanduser()
  for sub in SUBDIRS:
    if (root / sub / file_name("train")).is_file():
      return root / sub
  raise DataError(
    f"{root}: {file_name('train')} not found (looked in {', '.join(s or '.' for s in SUBDIRS)}); "
    f"download lra_release and point data.path at its tsv_data folder"
  )


def read_tsv(f: Path, max_len: int = 0) -> tuple[list[bytes], list[bytes], np.ndarray, int]:
  """``(texts1, texts2, labels, num_truncated)`` from one official TSV file, checking every
  line; texts are cut to ``max_len`` bytes while reading (0 = keep whole) to bound memory."""
  if not f.is_file():
    raise DataError(f"{f}: file not found")
  texts1, texts2, labels, cut = [], [], [], 0
  keep = slice(0, max_len or None)
  with f.open("rb") as fh:
    for lineno, line in enumerate(fh, 1):
      line = line.removesuffix(b"\n").removesuffix(b"\r")
      cols = line.split(b"\t")
      if len(cols) != 5:
        raise DataError(
          f"{f} line {lineno}: expected 5 tab-separated columns (label, id1, id2, text1, "
          f"text2), got {len(cols)}; tabs inside texts must be removed"
        )
      try:
        label = float(cols[0])
      except ValueError:
        label = -1.0
      if label not in (0.0, 1.0):
        shown = cols[0][:20].decode("utf-8", errors="replace")
        raise DataError(f"{f} line {lineno}: label {shown!r} is not 0 or 1")
      labels.append(int(label))
      for text, out in ((cols[3], texts1), (cols[4], texts2)):
        cut += bool(max_len) and len(text) > max_len
        out.append(text[keep])
  if not labels:
    raise DataError(f"{f}: the file is empty")
  return texts1, texts2, np.asarray(labels, np.int32), cut


@register("task", "retrieval")
class RetrievalTask(BytesTableTask):
  """Byte-level document matching with a dual encoder (LRA Retrieval / AAN)."""

  num_classes = 2
  DEFAULT_SIZES = {"num_train": 4_000, "num_val": 500, "num_test": 500}

  def __init__(
    self,
    *,
    path: str = "",
    max_len: int = 4000,
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["num_train"],
    num_val: int = DEFAULT_SIZES["num_val"],
    num_test: int = DEFAULT_SIZES["num_test"],
  ):
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    super().__init__(path=path, max_len=max_len, seed=seed, sizes=sizes)

  def read(self, source: str) -> Splits:
    folder = find_folder(source)
    self._info["source"] = str(folder)
    splits = {}
    for split in SPLITS:
      t1, t2, labels, cut = read_tsv(folder / file_name(split), self.max_len)
      ids1, len1, _ = tok.encode_padded(t1, self.max_len)
      ids2, len2, _ = tok.encode_padded(t2, self.max_len)
      tok.report_truncation(f"retrieval {split} documents", cut, 2 * len(labels), self.max_len)
      splits[split] = dict(inputs1=ids1, lengths1=len1, inputs2=ids2, lengths2=len2, label=labels)
    return splits

  def build_head(self, encoder: Encoder, options: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    pool = options.get("pool", "mean")
    return heads.DualEncoder(encoder, self.num_classes, pool=pool, rngs=rngs)

  def logits(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> jax.Array:
    t1 = batch["inputs1"].astype(jnp.int32)  # [B, L]
    t2 = batch["inputs2"].astype(jnp.int32)  # [B, L]
    m1 = length_mask(batch["lengths1"], t1.shape[1])  # [B, L]
    m2 = length_mask(batch["lengths2"], t2.shape[1])  # [B, L]
    return model(t1, m1, t2, m2)  # [B, C]

  # ---- offline generator ---------------------------------------------------------------------
  @classmethod
  def generate(cls, out: Path, *, seed: int = 0, doc_len: int = 4000, **sizes: int) -> list[Path]:
    """Write the three official-format TSV files of synthetic document pairs (``sizes`` as
    in ``generated_splits``)."""
    out = Path(out)
    vocab = np.random.default_rng([seed, 99])  # word list and key phrases shared by all splits
    words = [pseudo_word(vocab) for _ in range(400)]
    keys = [f"{pseudo_word(vocab)}-{pseudo_word(vocab)} {pseudo_word(vocab)}" for _ in range(48)]
    files = []
    for split, n, rng in cls.generated_splits(seed, sizes):
      f = out / file_name(split)
      with f.open("wb") as fh:
        for _ in range(n):
          label = int(rng.integers(2))
          k1 = int(rng.integers(len(keys)))
          k2 = k1 if label else int((k1 + rng.integers(1, len(keys))) % len(keys))
          id1, id2 = paper_id(rng), paper_id(rng)
          d1 = synthetic_paper(rng, words, keys[k1], doc_len)
          d2 = synthetic_paper(rng, words, keys[k2], doc_len)
          fh.write(f"{label}\t{id1}\t{id2}\t{d1}\t{d2}\n".encode())
      files.append(f)
    return files


SYLLABLES = ("ka", "lo", "mir", "ten", "sa", "vo", "qu", "ra", "bel", "dun", "ix", "or", "pe", "zy")
TEMPLATES = (
  "We study {w} {w} under {w} conditions.",
  'Our "{w}" model improves on the {w} baseline.',
  "Results on {w} show a gain of {n}% over {w}.",
  "The {w}'s {w} is estimated with {w} sampling.",
  "As {w} et al. note, {w} remains open.",
  'Reviewers called the {w} approach "{w}.',  # unbalanced quote on purpose
  "Section {n} describes the {w} corpus in detail.",
)


def pseudo_word(rng: np.random.Generator) -> str:
  return "".join(SYLLABLES[i] for i in rng.integers(len(SYLLABLES), size=int(rng.integers(2, 4))))


def paper_id(rng: np.random.Generator) -> str:
  return f"{'PWCNJ'[rng.integers(5)]}{int(rng.integers(0, 13)):02d}-{int(rng.integers(10_000)):04d}"


def synthetic_paper(rng: np.random.Generator, words: list[str], key: str, doc_len: int) -> str:
  """Filler sentences with the key phrase inserted once or twice at random places."""
  sentence = f"We build on the {key} of prior work."
  if len(sentence) > doc_len:
    raise ValueError(f"doc_len={doc_len} is too short for a key phrase; use >= 64")
  budget = int(rng.integers(doc_len // 3, doc_len + 1))
  parts, used = [sentence], len(sentence)
  if rng.random() < 0.5 and 2 * (len(sentence) + 1) <= budget:
    parts.append(sentence)
    used += len(sentence) + 1
  while True:
    t = TEMPLATES[rng.integers(len(TEMPLATES))]
    s = t.replace("{n}", str(int(rng.integers(1, 100))))
    while "{w}" in s:
      s = s.replace("{w}", words[rng.integers(len(words))], 1)
    if used + len(s) + 1 > budget:
      break
    parts.insert(int(rng.integers(len(parts) + 1)), s)
    used += len(s) + 1
  return " ".join(parts)
