"""In-memory, fixed-shape datasets with deterministic, resumable batching.

Loaders (HuggingFace ``datasets``, TSV files, generators) end in an ``ArrayDataset``: a dict
of numpy arrays sharing their first dimension, with explicit ``lengths`` columns from which
padding masks are made. Batches are a pure function of (seed, step), so a run resumed at
step s sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class ArrayDataset:
  arrays: dict[str, np.ndarray]

  def __post_init__(self) -> None:
    sizes = {k: len(v) for k, v in self.arrays.items()}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"columns have different numbers of rows: {sizes}")
    if not sizes:
      raise ValueError("an ArrayDataset needs at least one column")

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def select(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in self.arrays.items()}

  def shard(self, index: int, count: int) -> ArrayDataset:
    """Rows ``index, index + count, ...``: each host reads only its own shard."""
    if count == 1:
      return self
    return ArrayDataset({k: v[index::count] for k, v in self.arrays.items()})

  def train_batches(
    self, batch_size: int, *, seed: int, start_step: int = 0
  ) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches; batch s holds positions [s*B, (s+1)*B) of a stream that
    concatenates a fresh permutation per epoch (epoch e permuted by ``(seed, e)``)."""
    n = len(self)
    if n == 0:
      raise ValueError("cannot draw training batches from an empty dataset")
    step = start_step
    while True:
      pos = np.arange(step * batch_size, (step + 1) * batch_size)  # [B] stream positions
      epochs = pos // n
      idx = np.empty(batch_size, np.int64)
      for e in np.unique(epochs):
        sel = epochs == e
        idx[sel] = np.random.default_rng([seed, int(e)]).permutation(n)[pos[sel] % n]
      batch = self.select(idx)
      batch["valid"] = np.ones(batch_size, bool)
      yield batch
      step += 1

  def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every row exactly once, in order; the last batch is padded and marked by ``valid``."""
    n = len(self)
    for start in range(0, n, batch_size):
      idx = np.arange(start, start + batch_size)
      valid = idx < n
      batch = self.select(np.where(valid, idx, n - 1))
      batch["valid"] = valid
      yield batch

  def num_eval_batches(self, batch_size: int) -> int:
    return -(-len(self) // batch_size)
