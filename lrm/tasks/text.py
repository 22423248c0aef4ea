"""LRA Text: byte-level IMDB sentiment classification (Tay et al. 2021).

Data (``path``):
  * ``""``: an offline synthetic stand-in (``TextTask.generate``), written once as
    ``{train,validation,test}.jsonl`` with the IMDB schema (``text``, ``label``) and read back
    through the same loader as real data. It is NOT IMDB: templated reviews whose label is
    the majority polarity of a few sentiment sentences spread over the whole review (some
    negated, "not good"), so a model must combine evidence that lies far apart.
  * a local folder: a ``save_to_disk`` DatasetDict (or a single saved Dataset), ``train``/
    ``test`` (and optionally ``validation``) ``.jsonl``/``.json``/``.csv``/``.parquet``
    files, or a hub snapshot (``data/train-*.parquet``); see ``lrm.data.tables``. Columns
    ``text`` and ``label`` unless ``text_column`` / ``label_column`` name others.
  * a hub name, e.g. ``imdb`` (splits train/test; needs network once; ``hub_config`` picks
    a configuration).

Splits: if the source has a validation split it is used; otherwise, as in the LRA code
(``text_classification/input_pipeline.py``: "use test set for validation because IMDb doesn't
have val set"), validation IS the test split, unless ``holdout > 0`` holds out that many
train examples (a fixed seeded choice) as validation instead.

Tokens: UTF-8 bytes (``lrm.data.bytes``), truncated to ``max_len`` (LRA code 1000; the paper
says 4K and S4 used 4096) and padded; the truncation count is printed per split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lrm.data import bytes as tok
from lrm.data.tables import checked_labels, checked_texts, open_splits, require_columns
from lrm.registry import register
from lrm.tasks.classify import BytesTableTask, Splits


# ---- the task ------------------------------------------------------------------------------
@register("task", "text")
class TextTask(BytesTableTask):
  """Byte-level binary sentiment classification (LRA Text)."""

  num_classes = 2
  validation_fallback = "test"
  DEFAULT_SIZES = {"num_train": 10_000, "num_val": 1_000, "num_test": 1_000}

  def __init__(
    self,
    *,
    path: str = "",
    max_len: int = 1000,
    holdout: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    hub_config: str = "",
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["num_train"],
    num_val: int = DEFAULT_SIZES["num_val"],
    num_test: int = DEFAULT_SIZES["num_test"],
  ):
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    super().__init__(path=path, max_len=max_len, seed=seed, sizes=sizes)
    self.holdout = holdout
    self.text_column, self.label_column, self.hub_config = text_column, label_column, hub_config

  def read(self, source: str) -> Splits:
    splits = {}
    text, label = (self.text_column, self.label_column) if self.path else ("text", "label")
    for split, table in open_splits(source, what="text", hub_config=self.hub_config).items():
      require_columns(table, {text: "text_column", label: "label_column"})
      texts, labels = checked_texts(table, text), checked_labels(table, self.num_classes, label)
      ids, lengths, cut = tok.encode_padded(texts, self.max_len)
      tok.report_truncation(f"text {split}", cut, len(texts), self.max_len)
      splits[split] = {"inputs": ids, "lengths": lengths, "label": labels}
    return splits

  # ---- offline generator ---------------------------------------------------------------------
  @classmethod
  def generate(cls, out: Path, *, seed: int = 0, doc_len: int = 1000, **sizes: int) -> list[Path]:
    """Write ``{train,validation,test}.jsonl`` synthetic reviews of at most ``doc_len`` bytes
    (``sizes`` as in ``generated_splits``)."""
    out = Path(out)
    files = []
    for split, n, rng in cls.generated_splits(seed, sizes):
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
