"""Sequence classification: the shared loss, head and data plumbing (ListOps, Text, Image, ...).

``ClassificationTask`` computes cross-entropy and accuracy from ``logits(model, batch)``, an
overridable hook (retrieval's dual encoder reads two documents there), and builds a pooled
``heads.Classifier`` through ``build_head``.

``TableTask`` is the base of the tasks whose data is a set of split files: the official
release when ``path`` is given, otherwise the same format generated once by the task's
``generate`` (cached by ``lrm.data.cache``). A subclass reads one source in ``read`` and
declares, in ``validation_fallback``, how a source without a validation split gets one.
``BytesTableTask`` adds what the byte-level ones (Text, Retrieval) share.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm import heads
from lrm.data import DataError
from lrm.data import bytes as tok
from lrm.data.arrays import ArrayDataset
from lrm.data.cache import generated
from lrm.data.tables import holdout_split
from lrm.model import Encoder
from lrm.tasks.base import SPLITS, Sums, Task, length_mask

Splits = dict[str, dict[str, np.ndarray]]  # split -> columns ({"inputs": [N, L], ...})
SIZE_OPTIONS = {"train": "num_train", "validation": "num_val", "test": "num_test"}  # per split


def classification_sums(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> Sums:
  """Cross-entropy and accuracy totals over the valid rows of a batch."""
  w = valid.astype(jnp.float32)  # [B]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  n = w.sum()
  return {"loss": ((ce * w).sum(), n), "accuracy": ((correct * w).sum(), n)}


class ClassificationTask(Task):
  """A task whose batches hold ``inputs [B, L]``, ``lengths [B]`` and ``label [B]``."""

  main_metric = "accuracy"
  main_mode = "max"

  def build_head(self, encoder: Encoder, options: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    pool = options.get("pool", "mean")
    return heads.Classifier(encoder, self.num_classes, pool=pool, rngs=rngs)

  def logits(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> jax.Array:
    """``[B, C]`` class scores of a batch."""
    tokens = batch["inputs"].astype(jnp.int32)  # [B, L] (stored compactly, e.g. uint8)
    mask = length_mask(batch["lengths"], tokens.shape[1])  # [B, L]
    return model(tokens, mask)  # [B, C]

  def reference_levels(self) -> dict[str, dict[str, float]]:
    """Chance (uniform guess) and the majority class of the validation split."""
    labels = np.asarray(self.dataset("validation").arrays["label"])
    majority = np.bincount(labels, minlength=self.num_classes).max() / max(len(labels), 1)
    return {
      "accuracy": {"chance": 1.0 / self.num_classes, "majority": float(majority)},
      "loss": {"chance": float(np.log(self.num_classes))},
    }

  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Sums]:
    sums = classification_sums(self.logits(model, batch), batch["label"], batch["valid"])
    total, n = sums["loss"]
    return total / jnp.maximum(n, 1.0), sums


class TableTask(ClassificationTask):
  """Classification data read from split files, or generated in their format (``path=""``).

  Subclasses implement ``read(source) -> {split: columns}`` and the classmethod
  ``generate(out, **gen_options)``, and call ``__init__`` with their generator's options
  (which name the cache folder, so equal options reuse it). A generator that draws each
  split on its own takes the sizes as keywords and loops over ``generated_splits`` (sizes
  left out: ``DEFAULT_SIZES``). ``read`` may record facts about the source in
  ``self._info``; it is saved with the run as ``vocab()["data"]``.
  """

  # How a source without a validation split gets one: "" (the source must have it), "test"
  # (use the test split, as LRA Text does for IMDB) or "train_tail" (the last 10% of train,
  # as LRA Image does for CIFAR-10). ``holdout > 0`` holds out that many train rows instead.
  validation_fallback: str = ""
  holdout: int = 0
  gen_format: int = 0  # > 0: part of the cache key, raised when a generator's output changes
  DEFAULT_SIZES: Mapping[str, int] = {}  # generated examples per split, by SIZE_OPTIONS name

  def __init__(self, *, path: str, seq_len: int, gen_options: Mapping[str, Any]):
    if not path and min(gen_options[k] for k in SIZE_OPTIONS.values()) < 1:
      raise DataError(
        f"{self.registered_name}: num_train, num_val and num_test must each be at least 1"
      )
    self.path, self.seq_len, self.seed = path, seq_len, gen_options["seed"]
    self.gen_options = dict(gen_options)
    self._data: dict[str, ArrayDataset] = {}
    self._info: dict[str, Any] = {}

  @classmethod
  def generate(cls, out: Path, **gen_options: Any) -> list[Path]:
    """Write generated data to ``out`` in the source's official format; return the files."""
    raise NotImplementedError  # abstract

  @classmethod
  def generated_splits(
    cls, seed: int, sizes: Mapping[str, int]
  ) -> list[tuple[str, int, np.random.Generator]]:
    """``(split, examples, rng)`` for each split of ``generate``, in ``SPLITS`` order.

    ``sizes`` holds ``num_train``, ``num_val`` and ``num_test`` (those left out are the
    class's ``DEFAULT_SIZES``); split ``i`` draws from its own stream ``[seed, i]``.
    """
    unknown = sorted(set(sizes) - set(SIZE_OPTIONS.values()))
    if unknown:
      raise TypeError(f"{cls.__name__}.generate() got unexpected keyword arguments {unknown}")
    sizes = {**cls.DEFAULT_SIZES, **sizes}
    return [
      (split, sizes[key], np.random.default_rng([seed, i]))
      for i, (split, key) in enumerate(SIZE_OPTIONS.items())
    ]

  def read(self, source: str) -> Splits:
    """Every split found in ``source`` (``path``, or the generated folder) as columns."""
    raise NotImplementedError  # abstract

  def setup(self) -> None:
    if self._data:
      return
    source = self.path
    if not source:
      key = {"format": self.gen_format} if self.gen_format else {}
      write = lambda d: self.generate(d, **self.gen_options)  # noqa: E731
      source = str(generated(self.registered_name, {**key, **self.gen_options}, write))
    self._info = {"source": self.path or "generated"}
    splits = self.read(source)
    for split in ("train", "test") if self.validation_fallback else SPLITS:
      if split not in splits:
        raise DataError(f"{source}: no {split} split found (it has {', '.join(sorted(splits))})")
    if self.validation_fallback:
      self._info["validation"] = self.fill_validation(splits, source)
    self._data = {s: ArrayDataset(splits[s]) for s in SPLITS}
    self._info["examples"] = {s: len(self._data[s]) for s in SPLITS}

  def fill_validation(self, splits: Splits, source: str) -> str:
    """Give ``splits`` a validation split if it has none; return the rule used."""
    if "validation" in splits:
      return "source validation split"
    train = splits["train"]
    n = len(train["label"])
    if self.holdout:  # a fixed seeded choice of train rows
      keep, held = holdout_split(n, self.holdout, source)
      rule = f"{self.holdout} held-out train examples"
    elif self.validation_fallback == "test":
      splits["validation"] = splits["test"]
      return "the test split (LRA protocol)"
    else:  # "train_tail": LRA's train[:90%] / train[90%:]
      cut = round(0.9 * n)
      if cut in (0, n):
        raise DataError(f"{source}: too few train examples ({n}) to hold out 10%")
      keep, held = slice(0, cut), slice(cut, n)
      rule = "last 10% of train (LRA train[90%:])"
    splits["train"] = {k: v[keep] for k, v in train.items()}
    splits["validation"] = {k: v[held] for k, v in train.items()}
    return rule


class BytesTableTask(TableTask):
  """Documents as UTF-8 bytes (``lrm.data.bytes``) cut to ``max_len``; generated documents
  are at most ``max_len`` bytes long (``generate``'s ``doc_len``)."""

  def __init__(self, *, path: str, max_len: int, seed: int, sizes: Mapping[str, int]):
    if max_len < 1:
      raise DataError(f"{self.registered_name}: max_len must be at least 1, got {max_len}")
    self.max_len = max_len
    gen = {"seed": seed, **sizes, "doc_len": max_len}
    super().__init__(path=path, seq_len=max_len, gen_options=gen)

  @property
  def vocab_size(self) -> int:
    return tok.VOCAB_SIZE

  def vocab(self) -> dict[str, Any]:
    return {**tok.vocab(), "max_len": self.max_len, "data": self._info}
