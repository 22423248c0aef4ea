"""Reading HuggingFace-style tables: the loader shared by the text, image and lm tasks.

A source (``open_splits``) is one of:

* a ``save_to_disk`` DatasetDict (``dataset_dict.json``);
* a single saved ``Dataset`` (``state.json``, no splits): split by row index, rows with
  ``i % 20 == 19`` validation, ``== 18`` test, the other 90% train (``SINGLE_SPLIT``), with a
  warning that says so;
* a folder of per-split files ``<split>.{jsonl,json,csv,parquet}``, or of shards
  ``<split>-00000-of-00002.parquet`` as in a hub snapshot (``huggingface-cli download``):
  the folder itself, its ``data/`` folder, its ``<hub_config>/`` folder, or its only
  subfolder that holds shards;
* a hub name (``hub_config`` picks its configuration).

Split names may be aliases (``valid``, ``val``, ``dev``, ``eval`` for validation). One
``Table`` per split found; the checks below turn a bad column, label or text into a
``DataError`` naming the file and line, and a missing column into one naming the option
that chooses the column.
"""

from __future__ import annotations

import codecs
import json
import sys
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
SINGLE_SPLIT = {"validation": 19, "test": 18}  # row index % 20 of a Dataset without splits


@dataclass
class Table:
  """One split of a tabular source; ``where(i)`` names row i in error messages."""

  rows: Any  # datasets.Dataset
  source: str
  first_line: int = 0  # file line of row 0 (1 for jsonl, 2 for csv), 0 = count rows instead
  index: Any = None  # row numbers in the source, when this table is a selection of it

  def where(self, i: int) -> str:
    i = int(self.index[i]) if self.index is not None else i
    if self.first_line:
      return f"{self.source} line {i + self.first_line}"
    return f"{self.source} row {i + 1}"


def check_utf8(f: Path) -> None:
  """A ``DataError`` naming the first line of text file ``f`` that is not UTF-8: the readers
  accept such bytes and fail later, deep in a row conversion, without naming the file."""
  decoder = codecs.getincrementaldecoder("utf-8")()
  line = 1
  with f.open("rb") as fh:
    while True:
      chunk = fh.read(1 << 24)
      try:
        decoder.decode(chunk, final=not chunk)
      except UnicodeDecodeError as e:
        line += chunk[: max(e.start, 0)].count(b"\n")
        raise DataError(f"{f} line {line}: not UTF-8 text; save the file as UTF-8") from None
      if not chunk:
        return
      line += chunk.count(b"\n")


def _load_files(files: list[Path]) -> Table:
  import datasets

  f = files[0]
  kind = FILE_KINDS[f.suffix]
  if kind in ("json", "csv"):
    for x in files:
      check_utf8(x)
  try:
    rows = datasets.load_dataset(
      kind, data_files=[str(x) for x in files], split="train", cache_dir=str(cache_root() / "hf")
    )
  except Exception as e:  # datasets wraps parser errors; find the bad line ourselves
    raise DataError(_describe_bad_file(f, e)) from None
  if len(files) > 1:  # shards: rows are numbered over all of them
    return Table(rows, f"{f.parent}/{f.name.split('-')[0]}-*{f.suffix}")
  return Table(rows, str(f), {".jsonl": 1, ".csv": 2}.get(f.suffix, 0))


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


def split_files(folder: Path) -> dict[str, list[Path]]:
  """``{split: files}`` of ``<split>.<ext>`` files or ``<split>-*.<ext>`` shards in ``folder``."""
  out = {}
  for split, aliases in SPLIT_ALIASES.items():
    for a, ext in ((a, ext) for a in aliases for ext in FILE_KINDS):
      found = [folder / f"{a}{ext}"] if (folder / f"{a}{ext}").is_file() else []
      found = found or sorted(folder.glob(f"{a}-*{ext}"))
      if found:
        out[split] = found
        break
  return out


def table_folder(p: Path, hub_config: str = "") -> Path | None:
  """Where a folder's split files are: itself, ``data/``, ``<hub_config>/`` or its only
  subfolder with shards (a hub snapshot); None if none has a train split."""
  candidates = [p, p / "data", *([p / hub_config] if hub_config else [])]
  subs = [d for d in sorted(p.iterdir()) if d.is_dir() and "train" in split_files(d)]
  candidates += subs if len(subs) == 1 else []
  return next((d for d in candidates if d.is_dir() and "train" in split_files(d)), None)


def is_tabular(p: Path, hub_config: str = "") -> bool:
  """Whether folder ``p`` holds one of the table layouts above."""
  if any((p / n).exists() for n in ("dataset_dict.json", "state.json")):
    return True
  return table_folder(p, hub_config) is not None


def split_single(rows: Any, source: str) -> dict[str, Table]:
  """A Dataset without splits -> train / validation / test by row index (``SINGLE_SPLIT``)."""
  import numpy as np

  n = len(rows)
  rest = np.arange(n) % 20
  picks = {s: np.flatnonzero(rest == r) for s, r in SINGLE_SPLIT.items()}
  picks["train"] = np.flatnonzero(~np.isin(rest, list(SINGLE_SPLIT.values())))
  sizes = {s: len(v) for s, v in picks.items()}
  print(
    f"warning: {source} is a single saved Dataset (no splits): rows with index % 20 == 19 "
    f"are validation, == 18 test, the rest train (90/5/5: {sizes['train']} / "
    f"{sizes['validation']} / {sizes['test']} rows); save a DatasetDict to choose the splits",
    file=sys.stderr,
  )
  return {s: Table(rows.select(idx), source, index=idx) for s, idx in picks.items()}


def open_splits(path: str, *, what: str, hub_config: str = "") -> dict[str, Table]:
  """Open a tabular source (see the module docstring) as ``{split: Table}`` for the splits
  it has."""
  import datasets

  p = Path(path).expanduser()
  if p.is_dir():
    if (p / "dataset_dict.json").exists():
      return _from_dict_like(datasets.load_from_disk(str(p)), str(p))
    if (p / "state.json").exists():
      return split_single(datasets.load_from_disk(str(p)), str(p))
    folder = table_folder(p, hub_config)
    if folder is None:
      raise DataError(
        f"{p}: no {what} data found; expected a save_to_disk folder, train.jsonl/train.csv/"
        f"train.parquet (+ test, optional validation) files, or a hub snapshot with "
        f"data/train-*.parquet shards"
      )
    return {split: _load_files(files) for split, files in split_files(folder).items()}
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


def require_columns(table: Table, columns: dict[str, str]) -> None:
  """``columns`` maps each needed column to the task option that names it."""
  have = table.rows.column_names
  missing = {c: opt for c, opt in columns.items() if c not in have}
  if missing:
    fix = ", ".join(f"--config.data.{opt}=<column>" for opt in missing.values())
    raise DataError(
      f"{table.source}: missing column(s) {list(missing)}; it has {have}; name the "
      f"column(s) to read with {fix}"
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
