"""Language-modelling documents from any source, split into train / validation / test.

``path``:
  * ``""``: the embedded corpus, Python's own standard library (``lrm.data.corpus``: real
    text present on every machine; capped by ``corpus_bytes``; differs between Python
    versions, so its version and per-split file/byte counts are recorded in the info).
  * a local text file: split by position into the first 90% / next 5% / last 5% of its
    bytes (the enwik8 convention).
  * a local folder of text files (``TEXT_SUFFIXES``): one document per file, split by a hash
    of the relative path (90/5/5), as for the embedded corpus.
  * a ``save_to_disk`` folder, a folder of ``<split>.jsonl/csv/parquet`` files, or a hub
    dataset name (``hub_config`` = its configuration), each row's ``text_column`` one
    document. A missing validation (test) split is carved from train: rows with
    ``index % 20 == 19`` (``== 18``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrm.data import DataError, corpus
from lrm.data import bytes as tok
from lrm.data.tables import FILE_KINDS, checked_texts, open_splits, require_columns

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".tex", ".c", ".h", ".cpp", ".js", ".html")
FILE_SPLIT = {"train": (0, 90), "validation": (90, 95), "test": (95, 100)}  # % of a single file
Documents = dict[str, list[str | bytes]]


def split_file(f: Path) -> dict[str, list[bytes]]:
  """One file -> one document per split, cut by byte position (``FILE_SPLIT``)."""
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


def cap(docs: Documents, info: dict[str, Any], corpus_bytes: int) -> tuple[Documents, dict]:
  """Documents in order until ``corpus_bytes`` (split shares 90/5/5 %) is reached."""
  out = {}
  for split, (lo, hi) in corpus.SPLIT_BUCKETS.items():
    budget, used, kept = corpus_bytes * (hi - lo) // 100, 0, []
    for d in docs.get(split, []):
      if corpus_bytes and used >= budget:
        break
      kept.append(d)
      used += len(tok.as_bytes(d))
    out[split] = kept
  info = {
    **info,
    "corpus_bytes_cap": corpus_bytes,
    "files": {s: len(v) for s, v in out.items()},
    "bytes": {s: sum(len(tok.as_bytes(d)) for d in v) for s, v in out.items()},
  }
  return out, info


def load(
  path: str, *, corpus_bytes: int, text_column: str = "text", hub_config: str = ""
) -> tuple[Documents, dict[str, Any]]:
  """``({split: [document, ...]}, info)`` from any of the sources above."""
  if not path:
    return corpus.load(corpus_bytes)
  p = Path(path).expanduser()
  if p.is_file():
    return cap(split_file(p), {"source": "file", "root": str(p)}, corpus_bytes)
  tabular = p.is_dir() and (
    any((p / n).exists() for n in ("dataset_dict.json", "state.json"))
    or any((p / f"train{ext}").exists() for ext in FILE_KINDS)
  )
  if p.is_dir() and not tabular:
    try:
      return corpus.load(corpus_bytes, root=p, suffixes=TEXT_SUFFIXES)
    except FileNotFoundError as e:
      raise DataError(f"{e}; put text files there or give a dataset") from None
  tables = open_splits(path, what="lm", hub_config=hub_config)
  if "train" not in tables:
    raise DataError(f"{path}: no train split (found {sorted(tables)})")
  docs = {}
  for split, table in tables.items():
    require_columns(table, (text_column,))
    docs[split] = checked_texts(table, text_column)
  docs.update(carve(docs["train"], set(tables)))
  return cap(docs, {"source": path}, corpus_bytes)
