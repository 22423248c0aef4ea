"""Evaluation: the metrics of one split, every row once, for a model state.

The trainer calls ``evaluate`` on its live state; ``lrm.run.Run.evaluate`` restores a saved
checkpoint of a run directory (on however many devices this machine has) and calls it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from lrm.data.arrays import ArrayDataset
from lrm.train import sharding
from lrm.train.step import Steps


def eval_batches(
  full: ArrayDataset, batch_size: int, max_batches: int = 0
) -> tuple[Iterator[dict[str, np.ndarray]], int, int]:
  """This process's eval batches: ``(iterator, used, total)`` batch counts.

  Every process runs the same number of steps (required by the collective step): shards
  that run out of rows send padding batches whose rows are all ``valid=False``.
  """
  procs = jax.process_count()
  local = batch_size // procs
  total = math.ceil(math.ceil(len(full) / procs) / local)
  used = min(total, max_batches) if max_batches > 0 else total
  shard = full.shard(jax.process_index(), procs)

  def gen() -> Iterator[dict[str, np.ndarray]]:
    it = shard.eval_batches(local) if len(shard) else iter(())
    last = None
    for _ in range(used):
      batch = next(it, None)
      if batch is None:  # this shard is shorter: pad with invalid rows
        batch = dict(last) if last is not None else full.select(np.zeros(local, np.int64))
        batch["valid"] = np.zeros(local, bool)
      last = batch
      yield batch

  return gen(), used, total


def evaluate(
  steps: Steps,
  model_state: Any,
  dataset: ArrayDataset,
  *,
  batch_size: int,
  max_batches: int = 0,
  split: str = "validation",
  note: Callable[[str], None] = print,
  stop: Callable[[], bool] | None = None,
) -> dict[str, float] | None:
  """Metrics of ``model_state`` on ``dataset`` (the full split; each process reads its shard);
  None if ``stop()`` became true between batches (a SIGTERM)."""
  batches, used, total = eval_batches(dataset, batch_size, max_batches)
  if used < total:
    note(
      f"evaluating {split} on {used} of {total} batches (train.max_eval_batches={max_batches}); "
      f"set it to 0 to use the whole split"
    )
  data_sh = sharding.batch_sharding(steps.mesh)
  acc = None
  for batch in batches:
    if stop is not None and stop():
      return None
    if acc is None:
      acc = steps.zero_eval_acc(model_state, batch)
    acc = steps.eval_step(model_state, sharding.put_batch(batch, data_sh), acc)
  sums = {k: (float(t), float(c)) for k, (t, c) in jax.device_get(acc).items()}
  return steps.task.summarize(sums)
