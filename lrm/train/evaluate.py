"""Evaluation: one split, every row once, from a live state or from a run directory.

``evaluate_run(workdir, split, checkpoint)`` needs nothing but the run directory
(config.json, vocab.json, checkpoints/) and the data the config points to: it rebuilds the
task and an abstract model from the config, restores the parameters onto however many
devices this machine has, and evaluates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from lrm import tasks
from lrm.data.arrays import ArrayDataset
from lrm.train import sharding
from lrm.train.checkpoint import Checkpoints
from lrm.train.rundir import config_to_dict, load_config, write_json
from lrm.train.step import Steps


def build_task(config: Mapping[str, Any], vocab: dict | None = None) -> tasks.Task:
  """The config's task, set up (data loaded or generated); ``vocab`` is a saved vocab.json.

  ``config`` is a plain dict (``rundir.config_to_dict``): specs must be real mappings.
  """
  task = tasks.build({"name": config["task"], **config["data"]})
  if vocab is not None and hasattr(task, "load_vocab"):
    task.load_vocab(vocab)  # data-derived vocabularies are restored, not rebuilt
  task.setup()
  if vocab is not None and not hasattr(task, "load_vocab"):
    if json.loads(json.dumps(task.vocab())) != vocab:
      raise ValueError(
        "the task's vocabulary differs from the run's vocab.json (data or code changed); "
        "evaluate with the data and code version the run was trained with"
      )
  return task


def build_model(task: tasks.Task, config: Mapping[str, Any]) -> nnx.Module:
  """The model of a (plain dict) config, initialised from its seed."""
  seed = int(config["seed"])
  return task.build_model(config["model"], nnx.Rngs(params=seed, dropout=seed + 1, random=seed + 2))


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
) -> dict[str, float]:
  """Metrics of ``model_state`` on ``dataset`` (the full split; each process reads its shard)."""
  batches, used, total = eval_batches(dataset, batch_size, max_batches)
  if used < total:
    note(
      f"evaluating {split} on {used} of {total} batches (train.max_eval_batches={max_batches}); "
      f"set it to 0 to use the whole split"
    )
  data_sh = sharding.batch_sharding(steps.mesh)
  acc = None
  for batch in batches:
    if acc is None:
      acc = steps.zero_eval_acc(model_state, batch)
    acc = steps.eval_step(model_state, sharding.put_batch(batch, data_sh), acc)
  sums = {k: (float(t), float(c)) for k, (t, c) in jax.device_get(acc).items()}
  return steps.task.summarize(sums)


def evaluate_run(workdir: Path | str, split: str = "test", checkpoint: str = "best") -> dict:
  """Evaluate a saved checkpoint of a run; writes ``eval_<split>_<checkpoint>.json``."""
  workdir = Path(workdir)
  if split not in tasks.SPLITS:
    raise ValueError(f"unknown --split '{split}'; choose one of {', '.join(tasks.SPLITS)}")
  config = load_config(workdir)
  plain = config_to_dict(config)
  vocab_path = workdir / "vocab.json"
  vocab = json.loads(vocab_path.read_text()) if vocab_path.exists() else None
  task = build_task(plain, vocab)
  ckpts = Checkpoints(
    workdir / "checkpoints",
    keep=config.train.keep_checkpoints,
    metric=task.main_metric,
    mode=task.main_mode,
  )
  try:
    step = ckpts.resolve(checkpoint)
    sharding.check_batch_size("train.eval_batch_size", config.train.eval_batch_size)
    mesh = sharding.make_mesh()
    model = nnx.eval_shape(lambda: build_model(task, plain))
    steps = Steps(task, model, None, None, dtype=config.train.dtype, grad_accum=1, mesh=mesh)
    restored = ckpts.restore(step, model=steps.abstract(steps.model_shape))
  finally:
    ckpts.close()
  metrics = evaluate(
    steps,
    restored["model"],
    task.dataset(split),
    batch_size=config.train.eval_batch_size,
    split=split,
  )
  out = {"split": split, "checkpoint": checkpoint, "step": step, "metrics": metrics}
  if jax.process_index() == 0:
    write_json(workdir / f"eval_{split}_{checkpoint}.json", out)
  return out


def load_run(
  workdir: Path | str, checkpoint: str = "best", *, with_task: bool = False
) -> nnx.Module | tuple[nnx.Module, tasks.Task]:
  """The trained model of a run directory as a live ``nnx.Module`` (for analysis).

  Restores ``checkpoint`` (best | latest | <step>) onto this machine's devices; with
  ``with_task`` also returns the set-up task (for its data).
  """
  workdir = Path(workdir)
  plain = config_to_dict(load_config(workdir))
  vocab_path = workdir / "vocab.json"
  vocab = json.loads(vocab_path.read_text()) if vocab_path.exists() else None
  task = build_task(plain, vocab)
  ckpts = Checkpoints(
    workdir / "checkpoints",
    keep=plain["train"]["keep_checkpoints"],
    metric=task.main_metric,
    mode=task.main_mode,
  )
  try:
    step = ckpts.resolve(checkpoint)
    model = nnx.eval_shape(lambda: build_model(task, plain))
    steps = Steps(task, model, None, None, dtype="float32", grad_accum=1, mesh=sharding.make_mesh())
    restored = ckpts.restore(step, model=steps.abstract(steps.model_shape))
  finally:
    ckpts.close()
  live = nnx.merge(steps.graph_eval, restored["model"]["params"], restored["model"]["rest"])
  return (live, task) if with_task else live
