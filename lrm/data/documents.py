"""Language-modelling documents from any source, split into train / validation / test.

``path``:
  * ``""``: the embedded corpus, Python's own standard library (``lrm.data.corpus``: real
    text present on every machine; capped by ``corpus_bytes``; differs between Python
    versions, so its version and per-split file/byte counts are recorded in the info).
  * a local text file: split by position into the first 90% / next 5% / last 5% of its
    bytes (the enwik8 convention).
  * a local folder with one text file per split (``SPLIT_FILE``: ``train.txt``,
    ``valid.txt`` or ``validation.txt``, ``test.txt``, also with a prefix and ``.raw``, as in
    PTB's ``ptb.train.txt`` or WikiText's ``wiki.train.raw``): each file is its split, whole.
  * any other local folder of text files (``TEXT_SUFFIXES``): one document per file, split by
    a hash of the relative path (90/5/5), as for the embedded corpus.
  * a table source (``lrm.data.tables``: ``save_to_disk`` folder, single saved Dataset,
    ``<split>.jsonl/csv/parquet`` files, hub snapshot, hub name with ``hub_config``), each
    row's ``text_column`` one document. A missing validation (test) split is carved from
    train: rows with ``index % 20 == 19`` (``== 18``).

``info["layout"]`` names which of these was read; ``empty_split_hint`` turns it into the fix
for a split with no text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lrm.data import DataError, corpus
from lrm.data import bytes as tok
from lrm.data.tables import checked_texts, is_tabular, open_splits, require_columns

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".tex", ".c", ".h", ".cpp", ".js", ".html")
FILE_SPLIT = {"train": (0, 90), "validation": (90, 95), "test": (95, 100)}  # % of a single file
SPLIT_FILE = re.compile(r"^(?:.*[._-])?(train|valid|validation|val|dev|test)\.(txt|raw)$", re.I)
SPLIT_NAMES = {"valid": "validation", "val": "validation", "dev": "validation"}
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


def split_files(folder: Path) -> dict[str, Path]:
  """``{split: file}`` of the per-split text files in ``folder`` (``SPLIT_FILE``)."""
  out: dict[str, Path] = {}
  for f in sorted(folder.iterdir()):
    m = SPLIT_FILE.match(f.name)
    if m and f.is_file():
      split = SPLIT_NAMES.get(m.group(1).lower(), m.group(1).lower())
      if split in out:
        raise DataError(f"{folder}: both {out[split].name} and {f.name} look like the {split} file")
      out[split] = f
  return out


def read_split_files(folder: Path, files: dict[str, Path]) -> tuple[Documents, dict[str, Any]]:
  missing = [s for s in FILE_SPLIT if s not in files]
  if missing:
    names = {"validation": "valid.txt (or validation.txt, val.txt, dev.txt)"}
    raise DataError(
      f"{folder}: has {', '.join(f.name for f in files.values())} but no {missing[0]} file; "
      f"add {names.get(missing[0], f'{missing[0]}.txt')}"
    )
  docs: Documents = {s: [files[s].read_bytes()] for s in FILE_SPLIT}
  info = {
    "source": "split files",
    "layout": "split files",
    "root": str(folder),
    "split_files": {s: f.name for s, f in files.items()},
    "files": {s: 1 for s in docs},
    "bytes": {s: len(d[0]) for s, d in docs.items()},
  }
  return docs, info


def load(
  path: str, *, corpus_bytes: int, text_column: str = "text", hub_config: str = ""
) -> tuple[Documents, dict[str, Any]]:
  """``({split: [document, ...]}, info)`` from any of the sources above."""
  if not path:
    docs, info = corpus.load(corpus_bytes)
    return docs, {**info, "layout": "stdlib"}
  p = Path(path).expanduser()
  if p.is_file():
    return cap(split_file(p), {"source": "file", "layout": "file", "root": str(p)}, corpus_bytes)
  if p.is_dir() and split_files(p).get("train"):
    return read_split_files(p, split_files(p))
  if p.is_dir() and not is_tabular(p, hub_config):
    try:
      docs, info = corpus.load(corpus_bytes, root=p, suffixes=TEXT_SUFFIXES)
    except FileNotFoundError as e:
      raise DataError(f"{e}; put text files there or give a dataset") from None
    return docs, {**info, "layout": "folder"}
  tables = open_splits(path, what="lm", hub_config=hub_config)
  if "train" not in tables:
    raise DataError(f"{path}: no train split (found {sorted(tables)})")
  docs = {}
  for split, table in tables.items():
    require_columns(table, {text_column: "text_column"})
    docs[split] = checked_texts(table, text_column)
  docs.update(carve(docs["train"], set(tables)))
  return cap(docs, {"source": path, "layout": "table"}, corpus_bytes)


def empty_split_hint(split: str, info: dict[str, Any], corpus_bytes: int) -> str:
  """The fix for a split without text, for the layout that was read."""
  layout = info.get("layout", "")
  if layout == "stdlib":
    return f"raise corpus_bytes (now {corpus_bytes})"
  if layout == "file":
    return "the file is too short: validation and test get 5% of its bytes each"
  if layout == "split files":
    return f"{info['split_files'][split]} is empty; put the {split} text there"
  if layout == "folder":
    return (
      "give it more text files (whole files go to one split each, by a hash of their path), "
      "or name them train.txt, valid.txt and test.txt"
    )
  return f"the source's {split} split has no text in its rows"
