"""LRA Text: byte-level IMDB sentiment classification (Tay et al. 2021).

Data (``path``):
  * ``""``: an offline synthetic stand-in (``TextTask.generate``), written once as
    ``{train,validation,test}.jsonl`` with the IMDB schema (``text``, ``label``) and read back
    through the same loader as real data. It is NOT IMDB: templated reviews whose label is
    the majority polarity of a few sentiment sentences spread over the whole review (some
    negated, "not good"), so a model must combine evidence that lies far apart.
  * a local folder: a ``save_to_disk`` DatasetDict, or ``train``/``test`` (and optionally
    ``validation``) ``.jsonl``/``.json``/``.csv``/``.parquet`` files, columns ``text``, ``label``.
  * a hub name, e.g. ``imdb`` (splits train/test; needs network once).

Splits: if the source has a validation split it is used; otherwise, as in the LRA code
(``text_classification/input_pipeline.py``: "use test set for validation because IMDb doesn't
have val set"), validation IS the test split, unless ``holdout > 0`` holds out that many
train examples (a fixed seeded choice) as validation instead.

Tokens: UTF-8 bytes (``lrm.data.bytes``), truncated to ``max_len`` (LRA code 1000; the paper
says 4K and S4 used 4096) and padded; the truncation count is printed per split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrm.data import bytes as tok
from lrm.data.arrays import ArrayDataset
from lrm.data.cache import cache_root, generated
from lrm.registry import register
from lrm.tasks.base import SPLITS, DataError
from lrm.tasks.classify import ClassificationTask

SPLIT_ALIASES = {
  "train": ("train",),
  "validation": ("validation", "val", "valid", "eval", "dev"),
  "test": ("test",),
}
FILE_KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# ---- reading HuggingFace-style tables (shared with the lm and image tasks) -----------------
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


# ---- the task ------------------------------------------------------------------------------
@register("task", "text")
class TextTask(ClassificationTask):
  """Byte-level binary sentiment classification (LRA Text)."""

  num_classes = 2
  DEFAULT_SIZES = {"num_train": 10_000, "num_val": 1_000, "num_test": 1_000}

  def __init__(
    self,
    *,
    path: str = "",
    max_len: int = 1000,
    holdout: int = 0,
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["num_train"],
    num_val: int = DEFAULT_SIZES["num_val"],
    num_test: int = DEFAULT_SIZES["num_test"],
  ):
    if max_len < 1:
      raise DataError(f"text: max_len must be at least 1, got {max_len}")
    if min(num_train, num_val, num_test) < 1:
      raise DataError("text: num_train, num_val and num_test must each be at least 1")
    self.path, self.max_len, self.holdout, self.seed = path, max_len, holdout, seed
    self.sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    self.seq_len = max_len
    self._data: dict[str, ArrayDataset] = {}
    self._info: dict[str, Any] = {}

  @property
  def vocab_size(self) -> int:
    return tok.VOCAB_SIZE

  def vocab(self) -> dict[str, Any]:
    return {**tok.vocab(), "max_len": self.max_len, "data": self._info}

  def setup(self) -> None:
    if self._data:
      return
    path = self.path
    if not path:
      params = {"seed": self.seed, **self.sizes, "doc_len": self.max_len}
      path = str(generated("text", params, lambda d: self.generate(d, **params)))
    tables = open_splits(path, what="text")
    if "test" not in tables:
      raise DataError(f"{path}: no test split found (expected a 'test' split or test.jsonl)")
    cols = {}
    for split, table in tables.items():
      require_columns(table, ("text", "label"))
      texts, labels = checked_texts(table), checked_labels(table, self.num_classes)
      ids, lengths, cut = tok.encode_padded(texts, self.max_len)
      tok.report_truncation(f"text {split}", cut, len(texts), self.max_len)
      cols[split] = {"inputs": ids, "lengths": lengths, "label": labels}
    val_rule = "source validation split"
    if "validation" not in cols:
      if self.holdout:
        keep, held = holdout_split(len(cols["train"]["label"]), self.holdout, path)
        train = cols["train"]
        cols["train"] = {k: v[keep] for k, v in train.items()}
        cols["validation"] = {k: v[held] for k, v in train.items()}
        val_rule = f"{self.holdout} held-out train examples"
      else:
        cols["validation"] = cols["test"]
        val_rule = "the test split (LRA protocol)"
    self._data = {s: ArrayDataset(cols[s]) for s in SPLITS}
    self._info = {
      "source": self.path or "generated",
      "validation": val_rule,
      "examples": {s: len(self._data[s]) for s in SPLITS},
    }

  # ---- offline generator ---------------------------------------------------------------------
  @classmethod
  def generate(
    cls,
    out: Path,
    *,
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["num_train"],
    num_val: int = DEFAULT_SIZES["num_val"],
    num_test: int = DEFAULT_SIZES["num_test"],
    doc_len: int = 1000,
  ) -> list[Path]:
    """Write ``{train,validation,test}.jsonl`` synthetic reviews of at most ``doc_len`` bytes."""
    out = Path(out)
    files = []
    for i, (split, n) in enumerate(
      (("train", num_train), ("validation", num_val), ("test", num_test))
    ):
      rng = np.random.default_rng([seed, i])
      f = out / f"{split}.jsonl"
      with f.open("w", encoding="utf-8", newline="\n") as fh:
        for _ in range(n):
          text, label = synthetic_review(rng, doc_len)
          fh.write(json.dumps({"text": text, "label": label}) + "\n")
      files.append(f)
    return files


# ---- synthetic reviews ---------------------------------------------------------------------
POSITIVE = ("good", "great", "superb", "wonderful", "brilliant", "moving", "delightful", "gripping")
NEGATIVE = ("bad", "awful", "dull", "boring", "terrible", "weak", "clumsy", "tedious")
ASPECTS = ("acting", "plot", "script", "score", "pacing", "camera work", "ending", "dialogue")
CUES = ("The {a} was {n}{w}.", "I found the {a} {n}{w}.", "Honestly, the {a} felt {n}{w}.")
NAMES = ("Ana", "Bruno", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ivo", "Jun")
PLACES = ("Lisbon", "a mining town", "Osaka", "the coast", "a small farm", "Berlin", "the desert")
THINGS = ("a letter", "an old car", "a debt", "a brother", "a storm", "a stolen map", "a trial")
FILLERS = (
  "The film follows {p}, who lives in {l}.",
  "{p} meets {q} at the station and they talk about {t}.",
  "Most of the story takes place in {l}.",
  "It runs for about {k} minutes.",
  "In the second half {p} has to deal with {t}.",
  'The poster calls it "a story about {t}".',
  "{q}'s part is small but it matters later.",
  "There is a long scene in {l} with {k} extras.",
)


def synthetic_review(rng: np.random.Generator, doc_len: int) -> tuple[str, int]:
  """One review of at most ``doc_len`` bytes and its label (1 = positive).

  An odd number of sentiment sentences is scattered among neutral ones; the label is the
  majority polarity, where "not <word>" flips a word's polarity.
  """
  label = int(rng.integers(2))
  n = int(rng.choice([1, 3, 3, 5]))
  while True:  # shrink the number of cues until they fit the length budget
    agree = int(rng.integers(n // 2 + 1, n + 1))
    polarity = [1] * agree + [0] * (n - agree)
    cues = []
    for pol in rng.permutation(polarity):
      target = label if pol else 1 - label  # this cue's sentiment
      negate = rng.random() < 0.3
      words = POSITIVE if (target == 1) != negate else NEGATIVE
      cues.append(
        CUES[rng.integers(len(CUES))].format(
          a=ASPECTS[rng.integers(len(ASPECTS))],
          n="not " if negate else "",
          w=words[rng.integers(len(words))],
        )
      )
    if sum(len(c) + 1 for c in cues) <= doc_len or n == 1:
      break
    n -= 2
  budget = int(rng.integers(doc_len // 3, doc_len + 1))
  sentences, used = list(cues), sum(len(c) + 1 for c in cues)
  if used - 1 > doc_len:
    raise ValueError(f"doc_len={doc_len} is too short for one sentiment sentence; use >= 48")
  while True:
    f = FILLERS[rng.integers(len(FILLERS))].format(
      p=NAMES[rng.integers(len(NAMES))],
      q=NAMES[rng.integers(len(NAMES))],
      l=PLACES[rng.integers(len(PLACES))],
      t=THINGS[rng.integers(len(THINGS))],
      k=int(rng.integers(2, 200)),
    )
    if used + len(f) + 1 > budget:
      break
    sentences.insert(int(rng.integers(len(sentences) + 1)), f)
    used += len(f) + 1
  return " ".join(sentences), label
