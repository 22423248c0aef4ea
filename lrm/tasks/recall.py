"""Diagnostic tasks that separate locality from content-based recall.

* ``recall``: multi-query associative recall (MQAR, Arora et al. 2023 "Zoology").
* ``selective_copy``: selective copying (Gu & Dao 2023 "Mamba").

Layouts, ids and worked examples are in ``lrm/data/recall_gen.py``. Data is generated in
memory from ``(seed, split)``: no files and no ``path``. Both tasks are causal with an LM
head; the answer at a position is predicted *at* that position (no shift), so the model
must look back ``distance`` tokens to find it. Batches hold ``inputs, targets, weights,
distance [B, L]`` and ``lengths [B]``; the loss is cross-entropy over the weighted positions.
Metrics: ``accuracy`` (per answer), ``exact`` (every answer of an example right) and
accuracy per distance bucket (``acc_d<=8``, ``acc_d9-32``, ..., ``acc_d>128`` for
``distance_buckets=(8, 32, 128)``; empty buckets are left out).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm.data import guess, recall_gen
from lrm.data.arrays import ArrayDataset
from lrm.registry import register
from lrm.tasks.base import SPLITS, CausalTask, DataError, Sums, length_mask


def bucket_names(edges: Sequence[int]) -> list[str]:
  """Metric names for the buckets ``(0, e0], (e0, e1], ..., (e_last, inf)``."""
  names, lo = [], 0
  for e in edges:
    names.append(f"acc_d<={e}" if lo == 0 else f"acc_d{lo + 1}-{e}")
    lo = e
  return [*names, f"acc_d>{lo}"]


def _check_buckets(task: str, edges: Sequence[int]) -> tuple[int, ...]:
  try:
    out = tuple(int(e) for e in edges)
  except (TypeError, ValueError):
    raise DataError(
      f"{task}: distance_buckets={edges!r} must be a list of increasing positive ints"
    ) from None
  if any(e < 1 for e in out) or any(b <= a for a, b in zip(out, out[1:], strict=False)):
    raise DataError(f"{task}: distance_buckets={edges!r} must be increasing positive ints")
  return out


class PositionAnswerTask(CausalTask):
  """Shared base: per-position answers at weighted positions of a causal sequence."""

  main_metric = "accuracy"
  main_mode = "max"
  answers: int = 1  # how many symbols an answer is drawn from (for the chance level)
  _name = ""

  def __init__(self, *, seed: int, sizes: Mapping[str, int], distance_buckets: Sequence[int]):
    self.seed = int(seed)
    for split, n in sizes.items():
      if int(n) < 1:
        raise DataError(f"{self._name}: num_{split}={n} must be at least 1")
    self.sizes = {k: int(v) for k, v in sizes.items()}
    self.buckets = _check_buckets(self._name, distance_buckets)
    self._data: dict[str, ArrayDataset] = {}

  @classmethod
  def refuse_path(cls, path: str) -> None:
    """A ``path`` is an error: these tasks are generated in memory."""
    if path:
      raise DataError(
        f"{cls._name}: path='{path}' given, but this task is generated in memory; use ''"
      )

  def _generate(self, n: int, seed: list[int]) -> dict[str, np.ndarray]:
    raise NotImplementedError  # abstract: each task generates its own layout

  def setup(self) -> None:
    if self._data:
      return
    t0 = time.perf_counter()
    for i, split in enumerate(SPLITS):  # split i is drawn from the stream (seed, i)
      self._data[split] = ArrayDataset(self._generate(self.sizes[split], [self.seed, i]))
    total = sum(self.sizes.values())
    print(f"{self._name}: generated {total} examples in {time.perf_counter() - t0:.2f}s")

  def dataset(self, split: str) -> ArrayDataset:
    if split not in SPLITS:
      raise DataError(f"{self._name}: unknown split '{split}'; use one of {', '.join(SPLITS)}")
    self.setup()
    return self._data[split]

  @property
  def vocab_size(self) -> int:
    return self.num_classes

  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Sums]:
    tokens = batch["inputs"].astype(jnp.int32)  # [B, L]
    mask = length_mask(batch["lengths"], tokens.shape[1])  # [B, L]
    logits = model(tokens, mask).astype(jnp.float32)  # [B, L, V]
    targets = batch["targets"].astype(jnp.int32)  # [B, L], -1 where nothing is asked
    w = batch["weights"].astype(jnp.float32) * mask * batch["valid"][:, None]  # [B, L]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 0))
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)  # [B, L]
    n = w.sum()
    asked = w.sum(axis=1) > 0  # [B] rows with at least one answer
    row_ok = jnp.all((correct > 0) | (w == 0), axis=1) & asked  # [B]
    sums: Sums = {
      "loss": ((ce * w).sum(), n),
      "accuracy": ((correct * w).sum(), n),
      "exact": (row_ok.sum().astype(jnp.float32), asked.sum().astype(jnp.float32)),
    }
    d = batch["distance"].astype(jnp.int32)  # [B, L]
    lo = 0
    for name, hi in zip(bucket_names(self.buckets), [*self.buckets, None], strict=True):
      in_bucket = (d > lo) if hi is None else (d > lo) & (d <= hi)
      wb = w * in_bucket  # [B, L]
      sums[name] = ((correct * wb).sum(), wb.sum())
      lo = hi
    return (ce * w).sum() / jnp.maximum(n, 1.0), sums

  def summarize(self, sums: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Total / count per metric; distance buckets with no answers are left out."""
    return self.ordered(
      {
        k: float(t) / max(float(c), 1e-12)
        for k, (t, c) in sums.items()
        if not (k.startswith("acc_d") and float(c) == 0)
      }
    )

  def metric_order(self) -> list[str]:
    """Loss, accuracy, exact, then the distance buckets from near to far."""
    return ["loss", "accuracy", "exact", *bucket_names(self.buckets)]

  def reference_levels(self) -> dict[str, dict[str, float]]:
    """Chance: a uniform guess among the symbols an answer can be."""
    return {
      "accuracy": {"chance": 1.0 / self.answers},
      "loss": {"chance": float(np.log(self.answers))},
    }


@register("task", "recall")
class RecallTask(PositionAnswerTask):
  """Multi-query associative recall (MQAR); layout in ``lrm/data/recall_gen.py``.

  Options:
    num_pairs: key-value pairs per example.
    num_queries: how many of those keys are queried later (<= num_pairs); the rest distract.
    vocab_size: total ids; keys get ``(vocab_size-1)//2`` ids, values as many, 0 is blank.
    seq_len: length of every example.
    min_distance, max_distance: each query lies ``d`` tokens after its value, ``d`` uniform
      in ``[min_distance, max_distance]`` (``max_distance=0`` means ``seq_len - 2``).
    distance_buckets: edges of the per-distance accuracy metrics.
    num_train, num_val, num_test: split sizes; seed: generation seed.
    path: must be empty (the data is generated in memory).
  """

  _name = "recall"

  def __init__(
    self,
    *,
    path: str = "",
    num_pairs: int = 8,
    num_queries: int = 0,
    vocab_size: int = 64,
    seq_len: int = 128,
    min_distance: int = 1,
    max_distance: int = 0,
    distance_buckets: Sequence[int] = (8, 32, 128),
    num_train: int = 20_000,
    num_val: int = 1_000,
    num_test: int = 1_000,
    seed: int = 0,
  ):
    self.refuse_path(path)
    self.opts = dict(
      num_pairs=int(num_pairs),
      num_queries=int(num_queries) or int(num_pairs),  # 0 = query every pair
      vocab_size=int(vocab_size),
      seq_len=int(seq_len),
      min_distance=int(min_distance),
      max_distance=int(max_distance),
    )
    try:
      self.opts["max_distance"] = recall_gen.check_recall_options(**self.opts)
    except ValueError as e:
      raise DataError(f"recall: {e}") from None
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(seed=seed, sizes=sizes, distance_buckets=distance_buckets)
    self.seq_len = self.opts["seq_len"]
    self.num_classes = self.opts["vocab_size"]
    self.answers = (self.num_classes - 1) // 2  # the value ids

  def _generate(self, n: int, seed: list[int]) -> dict[str, np.ndarray]:
    return recall_gen.recall_arrays(n, seed=seed, **self.opts)

  def reference_levels(self) -> dict[str, dict[str, float]]:
    """Chance, and a uniform guess among the values in reach (``lrm/data/guess.py``) on the
    test split: the whole past (``context_guess``) and each bucket edge r (``guess_w<r>``)."""
    levels = super().reference_levels()
    if getattr(self, "_guess", None) is None:
      k = (self.num_classes - 1) // 2
      test = self.dataset("test").arrays
      self._guess = guess.guess_levels(test, (k + 1, 2 * k), reaches=self.buckets)
    levels["accuracy"].update(self._guess)
    return levels

  def vocab(self) -> dict[str, Any]:
    k = (self.num_classes - 1) // 2
    return {
      "size": self.num_classes,
      "blank": recall_gen.BLANK,
      "keys": [1, k],  # inclusive id ranges
      "values": [k + 1, 2 * k],
    }


@register("task", "selective_copy")
class SelectiveCopyTask(PositionAnswerTask):
  """Selective copying (Mamba); layout in ``lrm/data/recall_gen.py``.

  Options:
    num_tokens: content symbols to copy per example.
    vocab_size: total ids; 0 is blank, 1 the marker ``?``, content ``2 .. vocab_size-1``.
    seq_len: length of every example (the last ``num_tokens`` positions are the markers).
    distance_buckets, num_train, num_val, num_test, seed, path: as for ``recall``.
  """

  _name = "selective_copy"

  def __init__(
    self,
    *,
    path: str = "",
    num_tokens: int = 8,
    vocab_size: int = 10,
    seq_len: int = 64,
    distance_buckets: Sequence[int] = (8, 32, 128),
    num_train: int = 20_000,
    num_val: int = 1_000,
    num_test: int = 1_000,
    seed: int = 0,
  ):
    self.refuse_path(path)
    self.opts = dict(num_tokens=int(num_tokens), vocab_size=int(vocab_size), seq_len=int(seq_len))
    try:
      recall_gen.check_copy_options(**self.opts)
    except ValueError as e:
      raise DataError(f"selective_copy: {e}") from None
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(seed=seed, sizes=sizes, distance_buckets=distance_buckets)
    self.seq_len = self.opts["seq_len"]
    self.num_classes = self.opts["vocab_size"]
    self.answers = self.num_classes - 2  # the content symbols

  def _generate(self, n: int, seed: list[int]) -> dict[str, np.ndarray]:
    return recall_gen.selective_copy_arrays(n, seed=seed, **self.opts)

  def vocab(self) -> dict[str, Any]:
    return {
      "size": self.num_classes,
      "blank": recall_gen.BLANK,
      "marker": recall_gen.MARKER,
      "content": [2, self.num_classes - 1],  # inclusive id range
    }
