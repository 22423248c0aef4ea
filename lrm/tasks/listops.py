"""LRA ListOps: the value (0-9) of a nested MIN/MAX/MED/SM expression over digits.

Data (``path``):
  * ``""``: generated offline by ``lrm.data.listops_gen`` with this task's own ``num_train``,
    ``num_val``, ``num_test`` (defaults 2000/200/200, sized for a CPU), ``min_len``,
    ``max_len``, ``max_depth``, ``max_args`` and ``seed``; written once as the official TSVs
    under ``$LRM_DATA_CACHE`` and read back by the loader below. (``scripts/prepare_data.py
    --task=listops`` writes LRA's sizes, 96k/2k/2k, by default.)
  * a folder holding the release files ``basic_{train,val,test}.tsv`` (``listops-1000/`` of
    ``lra_release``; the folder above it, or the nested ``lra_release/lra_release``, also work);
  * a ``save_to_disk`` DatasetDict with columns ``Source``, ``Target`` and splits
    ``train``, ``validation`` (or ``val``) and ``test``.

Tokens follow LRA's input pipeline: ``]`` becomes ``X``, ``(`` and ``)`` are deleted, and the
rest is split on whitespace. The vocabulary is fixed and sorted (LRA built it from a Python
``set``, so its ids changed from process to process): ``0 = <pad>``, then ``0``-``9``,
``X``, ``[MAX``, ``[MED``, ``[MIN``, ``[SM`` as ids 1..15. Any other token is an error, and
so is an expression whose brackets do not balance (an operator never closed by ``]``, a ``]``
or ``)`` with nothing open, a ``(`` never closed, or more than one expression on a row): LRA's
pipeline would train on such a row, but its label is no value of it, so the row is refused
with its file and line rather than skipped (a skipped row would change the split's size).

Length: ``max_len`` (2000, as in LRA) is the padded length the model sees and the
generator's exclusive upper bound, so generated rows always fit. A longer row in a given
file is truncated to ``max_len`` as LRA's pipeline did (``inputs[:max_length]``), and the
number of truncated rows is printed per split and kept in ``vocab()["data"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lrm.data import DataError, listops_gen
from lrm.registry import register
from lrm.tasks.classify import Splits, TableTask

TOKENS = ("<pad>", *sorted([str(d) for d in range(10)] + ["X", *listops_gen.OPERATORS]))
TOKEN_ID = {t: i for i, t in enumerate(TOKENS) if i > 0}  # <pad> never comes from text
_LRA_RENAME = str.maketrans({"(": None, ")": None, "]": "X"})
TSV_FOLDERS = (
  "",
  "listops-1000",
  "lra_release/listops-1000",
  "lra_release/lra_release/listops-1000",
)
HF_SPLITS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


def tokenize(source: str) -> list[str]:
  """LRA's ListOps tokens: ``( ( [MIN 4 ) 7 ) ] )`` -> ``['[MIN', '4', '7', 'X']``."""
  return source.translate(_LRA_RENAME).split()


def bracket_error(source: str) -> str | None:
  """Why the brackets of ``source`` do not balance (None: they do). ``[OP`` opens an operator
  that ``]`` closes; parentheses, which LRA's files wrap around every argument, must pair up
  too; a row is one expression (nothing may follow the outermost ``]``)."""
  ops = parens = 0
  closed = False  # the outermost expression is complete
  for tok in source.split():
    if closed and tok != ")":
      return f"{tok!r} follows the end of the expression (one expression per row)"
    if tok.startswith("["):
      ops += 1
    elif tok == "]":
      ops -= 1
      if ops < 0:
        return "a ']' closes no operator"
      closed = ops == 0
    elif tok in "()":
      parens += 1 if tok == "(" else -1
      if parens < 0:
        return "a ')' closes no '('"
  if ops:
    return f"{ops} operator(s) never closed by ']'"
  if parens:
    return f"{parens} '(' never closed by ')'"
  return None


def encode(source: Any, where: str) -> np.ndarray:
  """Token ids (uint8) of one expression; ``where`` names it in errors."""
  if not isinstance(source, str):
    raise DataError(f"{where}: Source is {type(source).__name__}, expected a string")
  toks = tokenize(source)
  if not toks:
    raise DataError(f"{where}: empty expression; every row needs a ListOps expression")
  problem = bracket_error(source)
  if problem:
    raise DataError(f"{where}: unbalanced brackets ({problem}); fix or remove that row")
  try:
    return np.fromiter(map(TOKEN_ID.__getitem__, toks), np.uint8, len(toks))
  except KeyError as e:
    raise DataError(
      f"{where}: unknown token {e.args[0]!r}; ListOps expressions use only "
      f"{' '.join(TOKENS[1:])} (with ']' for X) and parentheses"
    ) from None


def parse_label(target: Any, where: str) -> int:
  """The class 0-9 from a Target field (a digit string in the TSV, an int in a Dataset)."""
  t = target.strip() if isinstance(target, str) else target
  if isinstance(t, str) and t.isascii() and t.isdigit():
    t = int(t)
  if isinstance(t, bool) or not isinstance(t, int | np.integer) or not 0 <= t <= 9:
    raise DataError(f"{where}: label {target!r} is not an integer in 0..9; fix the Target field")
  return int(t)


def pack(rows: list[np.ndarray], labels: list[int], max_len: int) -> tuple[dict, int]:
  """Pad (and truncate) to ``[N, max_len]`` uint8; return the columns and #truncated rows."""
  inputs = np.zeros((len(rows), max_len), np.uint8)  # [N, L]
  lengths = np.empty(len(rows), np.int32)
  for r, ids in enumerate(rows):
    n = min(len(ids), max_len)
    inputs[r, :n] = ids[:n]
    lengths[r] = n
  cut = sum(len(ids) > max_len for ids in rows)
  return {"inputs": inputs, "lengths": lengths, "label": np.asarray(labels, np.int32)}, cut


def read_tsv(path: Path) -> tuple[list[np.ndarray], list[int]]:
  """Rows of an official ``basic_*.tsv``: header ``Source<TAB>Target``, then one per line."""
  if not path.is_file():
    raise DataError(f"{path}: file not found; ListOps needs basic_train/val/test.tsv side by side")
  rows, labels = [], []
  i = 0
  try:
    with open(path, encoding="utf-8") as f:  # universal newlines: \r\n (the release) or \n
      for i, line in enumerate(f, 1):
        fields = line.rstrip("\n").split("\t")
        if i == 1:
          if fields != list(listops_gen.HEADER):
            raise DataError(f"{path} line 1: expected the header 'Source<TAB>Target'")
          continue
        where = f"{path} line {i}"
        if len(fields) != 2:
          raise DataError(
            f"{where}: expected 2 tab-separated fields (Source, Target), got {len(fields)}"
          )
        labels.append(parse_label(fields[1], where))
        rows.append(encode(fields[0], where))
  except UnicodeDecodeError:
    raise DataError(f"{path} line {i + 1}: not UTF-8 text") from None
  if not rows:
    raise DataError(f"{path}: no examples after the header")
  return rows, labels


def read_saved(path: Path) -> dict[str, tuple[list[np.ndarray], list[int]]]:
  """Rows of a ``save_to_disk`` DatasetDict with ``Source`` and ``Target`` columns."""
  import datasets

  d = datasets.load_from_disk(str(path))
  out = {}
  for split, aliases in HF_SPLITS.items():
    name = next((a for a in aliases if a in d), None)
    if name is None:
      raise DataError(f"{path}: no '{aliases[0]}' split; it has {sorted(d)}")
    table = d[name]
    missing = {"Source", "Target"} - set(table.column_names)
    if missing:
      raise DataError(f"{path} split '{name}': missing column(s) {sorted(missing)}")
    where = f"{path} split '{name}' row"
    labels = [parse_label(t, f"{where} {i + 1}") for i, t in enumerate(table["Target"])]
    rows = [encode(s, f"{where} {i + 1}") for i, s in enumerate(table["Source"])]
    out[split] = rows, labels
  return out


def read_folder(path: Path) -> dict[str, tuple[list[np.ndarray], list[int]]]:
  """Rows of every split from release TSVs or a ``save_to_disk`` folder under ``path``."""
  if (path / "dataset_dict.json").is_file():
    return read_saved(path)
  for sub in TSV_FOLDERS:
    d = path / sub
    if (d / listops_gen.SPLIT_FILES["train"]).is_file():
      return {s: read_tsv(d / name) for s, name in listops_gen.SPLIT_FILES.items()}
  raise DataError(
    f"{path}: no ListOps data; expected basic_train.tsv, basic_val.tsv and basic_test.tsv "
    f"(lra_release/listops-1000) or a save_to_disk dataset there"
  )


@register("task", "listops")
class ListOps(TableTask):
  """Ten-way classification of ListOps expressions (LRA)."""

  num_classes = 10
  gen_format = 1

  def __init__(
    self,
    *,
    path: str = "",
    max_len: int = 2000,
    min_len: int = 500,
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 200,
    max_depth: int = 10,
    max_args: int = 10,
    seed: int = 0,
  ):
    if max_len < 1:
      raise DataError(f"listops: max_len must be at least 1, got {max_len}")
    self.max_len = max_len
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    shape = {"min_len": min_len, "max_len": max_len, "max_depth": max_depth, "max_args": max_args}
    super().__init__(path=path, seq_len=max_len, gen_options={"seed": seed, **sizes, **shape})
    if not path:
      try:
        listops_gen.check_options(**shape)
      except ValueError as e:
        raise DataError(f"listops: {e}") from None

  @property
  def vocab_size(self) -> int:
    return len(TOKENS)

  def vocab(self) -> dict[str, Any]:
    return {"kind": "listops", "tokens": list(TOKENS), "pad_id": 0, "data": self._info}

  def read(self, source: str) -> Splits:
    folder = Path(source).expanduser()
    if not folder.is_dir():
      raise DataError(f"{folder}: ListOps data folder not found; fix data.path")
    splits, truncated = {}, {}
    for split, (rows, labels) in read_folder(folder).items():
      splits[split], truncated[split] = pack(rows, labels, self.max_len)
      if truncated[split]:
        print(
          f"[lrm] listops {split}: {truncated[split]}/{len(rows)} examples truncated to "
          f"max_len={self.max_len} tokens"
        )
    self._info.update(
      source=self.path or f"generated ({folder})", truncated=truncated, max_len=self.max_len
    )
    return splits

  @classmethod
  def generate(
    cls,
    out: Path,
    *,
    seed: int = 0,
    num_train: int = 96_000,
    num_val: int = 2_000,
    num_test: int = 2_000,
    **options: int,
  ) -> list[Path]:
    """Write ``basic_{train,val,test}.tsv`` (LRA's generator rules and sizes by default);
    ``options`` are ``listops_gen.generate``'s (``min_len``, ``max_len``, ``max_depth``,
    ``max_args``)."""
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    return listops_gen.write_splits(Path(out), seed=seed, **sizes, **options)
