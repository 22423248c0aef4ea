"""Reading HuggingFace-style tables: the loader shared by the text, image and lm tasks.

A source is a ``save_to_disk`` DatasetDict, a folder of per-split ``.jsonl``/``.json``/``.csv``/
``.parquet`` files, or a hub name; ``open_splits`` returns one ``Table`` per split found, and
the checks below turn a bad column, label or text into a ``DataError`` naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrm.data import DataError
from lrm.data.cache import cache_root

SPLIT_ALIASES = {
  "train": ("train",),
  "validation": ("validation", "val", "valid", "eval", "dev"),
  "test": ("test",),
}
FILE_KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Table:
  """One split of a tabular source; ``where(i)`` names row i in error messages."""

  rows: Any  # datasets.Dataset
  source: str
  first_line: int = 0  # file line of row 0 (1 for jsonl, 2 for csv), 0 = count rows instead

  def where(self, i: int) -> str:
    if self.first_line:
      return f"{self.source} line {i + self.first_line}"
    return f"{self.source} row {i + 1}"


def _load_file(f: Path) -> Table:
  import datasets

  kind = FILE_KINDS[f.suffix]
  try:
    rows = datasets.load_dataset(
      kind, data_files=str(f), split="train", cache_dir=str(cache_root() / "hf")
    )
  except Exception as e:  # datasets wraps parser errors; find the bad line ourselves
    raise DataError(_describe_bad_file(f, e)) from None
  first = {".jsonl": 1, ".csv": 2}.get(f.suffix, 0)
  return Table(rows, str(f), first)


def _describe_bad_file(f: Path, e: Exception) -> str:
  if f.suffix == ".jsonl":
    with f.open(encoding="utf-8", errors="replace") as fh:
      for i, line in enumerate(fh, 1):
        try:
          if line.strip():
            json.loads(line)
        except json.JSONDecodeError as je:
          return f"{f} line {i}: invalid JSON ({je.msg}); fix or remove that line"
  cause = e.__cause__ or e
  msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
  return f"{f}: cannot be read as {FILE_KINDS[f.suffix]} ({msg})"


def _from_dict_like(d: Any, source: str) -> dict[str, Table]:
  out = {}
  for split, aliases in SPLIT_ALIASES.items():
    for a in aliases:
      if a in d:
        out[split] = Table(d[a], f"{source} split '{a}'")
        break
  return out


def open_splits(path: str, *, what: str, hub_config: str = "") -> dict[str, Table]:
  """Open a tabular source as ``{split: Table}`` for the splits it has.

  ``path`` is a ``save_to_disk`` folder, a folder of ``<split>.{jsonl,json,csv,parquet}``
  files, or a HuggingFace hub dataset name (``hub_config`` picks its configuration).
  """
  import datasets

  p = Path(path).expanduser()
  if p.is_dir():
    if (p / "dataset_dict.json").exists():
      return _from_dict_like(datasets.load_from_disk(str(p)), str(p))
    if (p / "state.json").exists():  # a single saved Dataset: all of it is train
      return {"train": Table(datasets.load_from_disk(str(p)), str(p))}
    out = {}
    for split, aliases in SPLIT_ALIASES.items():
      found = [p / f"{a}{ext}" for a in aliases for ext in FILE_KINDS if (p / f"{a}{ext}").exists()]
      if found:
        out[split] = _load_file(found[0])
    if "train" not in out:
      raise DataError(
        f"{p}: no {what} data found; expected a save_to_disk folder or "
        f"train.jsonl/train.csv/train.parquet (+ test, optional validation) files"
      )
    return out
  if p.exists() or path.startswith(("/", ".", "~")) or path.count("/") > 1:
    raise DataError(f"{path}: {what} data folder not found; give an existing folder or a hub name")
  try:
    d = datasets.load_dataset(path, hub_config or None, cache_dir=str(cache_root() / "hf"))
  except Exception as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(
      f"could not load '{path}' from the HuggingFace hub ({first}); "
      f"check the name, go online once, or give a local folder"
    ) from None
  return _from_dict_like(d, f"hub:{path}")


def require_columns(table: Table, columns: tuple[str, ...]) -> None:
  missing = [c for c in columns if c not in table.rows.column_names]
  if missing:
    raise DataError(
      f"{table.source}: missing column(s) {missing}; it has {table.rows.column_names} "
      f"(rename them to {list(columns)})"
    )


def checked_labels(table: Table, num_classes: int, column: str = "label") -> np.ndarray:
  """Labels as int32, or a DataError naming the first row outside ``0..num_classes-1``."""
  raw = table.rows[column]
  for i, v in enumerate(raw):
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v < num_classes:
      raise DataError(
        f"{table.where(i)}: label {v!r} is not an integer in 0..{num_classes - 1}; fix the label"
      )
  return np.asarray(raw, np.int32).reshape(len(raw))


def checked_texts(table: Table, column: str = "text") -> list[str]:
  texts = table.rows[column]
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise DataError(f"{table.where(i)}: '{column}' is {type(t).__name__}, expected a string")
  return list(texts)


def holdout_split(n: int, holdout: int, what: str) -> tuple[np.ndarray, np.ndarray]:
  """Fixed (seed 0) choice of ``holdout`` of ``n`` train rows: (kept, held out) indices."""
  if not 0 < holdout < n:
    raise DataError(f"{what}: holdout={holdout} must be between 1 and {n - 1} (train rows)")
  perm = np.random.default_rng(0).permutation(n)
  return np.sort(perm[holdout:]), np.sort(perm[:holdout])
