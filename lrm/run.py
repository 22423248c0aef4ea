"""One run: the task, model, optimizer, jitted steps and checkpoints of a config, built once.

  run = Run.from_config(config, workdir)     # training: validated, nothing written yet
  run = Run.from_workdir(workdir)            # evaluation and analysis: config.json + vocab.json
  run.evaluate("test", "best")               # {"split", "checkpoint", "step", "metrics"}
  model = run.load_model("best")             # a live nnx.Module (receptive field, kernels)
  run = Run.from_workdir(workdir, data=False) # generation: no data loaded, vocab.json trusted
  run.costs()                                # parameters and FLOPs, with explicit names

The trainer (``lrm/train/loop.py``), ``scripts/evaluate.py``, the study and the analysis
tools all go through this class, so a model is built the same way everywhere.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx
from jax.sharding import Mesh

from lrm import config as lrm_config
from lrm import mixers, tasks
from lrm.analysis import counting
from lrm.train import rundir, runtime
from lrm.train.checkpoint import Checkpoints
from lrm.train.optim import make_optimizer
from lrm.train.step import DTYPES, Steps, evaluate

SECTIONS = ("task", "data", "model", "train", "optim", "seed")
# Keys of vocab.json that say where the data was found (a data cache, a folder, a tokenizer
# file): recorded for information, never compared, so a run directory read on another
# machine, at another path or with another $LRM_DATA_CACHE still matches its data.
LOCATION_KEYS = frozenset({"path", "root", "source"})


def vocab_content(vocab: Any) -> Any:
  """``vocab`` as JSON data without its location keys (at any depth): what is compared."""
  if isinstance(vocab, Mapping):
    return {k: vocab_content(v) for k, v in vocab.items() if k not in LOCATION_KEYS}
  if isinstance(vocab, list | tuple):
    return [vocab_content(v) for v in vocab]
  return vocab


def build_task(
  config: Mapping[str, Any], vocab: dict | None = None, *, data: bool = True
) -> tasks.Task:
  """The config's task, set up (data loaded or generated); ``vocab`` is a saved vocab.json,
  compared with the task's by content (``vocab_content``). ``data=False`` loads no data and
  trusts ``vocab`` (for tasks whose model needs no data to be built, such as ``lm``)."""
  task = tasks.build({"name": config["task"], **config["data"]})
  if vocab is not None and hasattr(task, "load_vocab"):
    task.load_vocab(vocab)  # data-derived vocabularies are restored, not rebuilt
  if not data:
    return task
  task.setup()
  if vocab is not None and not hasattr(task, "load_vocab"):
    saved, now = vocab_content(vocab), vocab_content(json.loads(json.dumps(task.vocab())))
    if now != saved:
      diff = "; ".join(rundir.config_diff(saved, now)[:3])
      raise ValueError(
        f"the task's vocabulary differs from the run's vocab.json ({diff}): the data or the "
        f"code changed; evaluate with the data and code version the run was trained with"
      )
  return task


def _warn(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


class Run:
  """A config (plain JSON-able dict, with a ConfigDict view), its task and abstract model."""

  def __init__(
    self,
    config: Any,
    workdir: Path | str | None = None,
    *,
    vocab: dict | None = None,
    data: bool = True,
  ) -> None:
    self.plain: dict[str, Any] = rundir.config_to_dict(config)
    missing = [s for s in SECTIONS if s not in self.plain]
    if missing:
      raise ValueError(
        f"the config has no {', '.join(repr(s) for s in missing)} entry; build it on "
        f"lrm.config.base_config()"
      )
    lrm_config.validate(self.plain)
    # the run-level mixer options, written into the specs (config.json records them): random
    # patterns follow the run's seed; rotary positions reach every attention mixer
    model = self.plain["model"]
    model["mixer"] = mixers.with_run_options(
      model["mixer"], seed=int(self.plain["seed"]), rotary=model.get("positions") == "rotary"
    )
    self.config = ml_collections.ConfigDict(self.plain)
    self.workdir = None if workdir is None else Path(workdir)
    self.task = build_task(self.plain, vocab, data=data)
    self.model = nnx.eval_shape(self.build_model)  # checks every mixer spec, computes nothing

  @classmethod
  def from_config(cls, config: Any, workdir: Path | str) -> Run:
    """A run to train: every check that can fail on bad input happens here, before writing."""
    plain = rundir.config_to_dict(config)
    tc = plain.get("train", {})
    if "steps" in tc and tc["steps"] < 1:
      raise ValueError(f"train.steps={tc['steps']} must be at least 1")
    if tc.get("dtype", "float32") not in DTYPES:
      raise ValueError(f"unknown train.dtype '{tc['dtype']}'; choose one of {', '.join(DTYPES)}")
    run = cls(plain, workdir)
    run.check_data()
    run.optimizer  # noqa: B018  validates the schedule and learning rate
    runtime.check_batch_size("train.batch_size", run.config.train.batch_size, tc["grad_accum"])
    runtime.check_batch_size("train.eval_batch_size", run.config.train.eval_batch_size)
    return run

  @classmethod
  def from_workdir(cls, workdir: Path | str, *, data: bool = True) -> Run:
    """The run saved in ``workdir`` (its config.json and vocab.json), for evaluation;
    ``data=False`` (generation) loads no data (see ``build_task``)."""
    workdir = Path(workdir)
    config = rundir.load_config(workdir)
    # a vocab.json that does not parse is rebuilt from the task (and said so)
    vocab = rundir.read_json_or_none(workdir / "vocab.json", note=_warn)
    return cls(config, workdir, vocab=vocab, data=data)

  def check_data(self) -> None:
    """Every split has rows with at least one real token (a DataError naming it otherwise)."""
    where = self.plain["data"].get("path") or "data generated offline"
    for split in tasks.SPLITS:
      ds = self.task.dataset(split)
      if len(ds) == 0 or self.task.num_tokens(ds.arrays) == 0:
        raise tasks.DataError(
          f"the {split} split of task '{self.plain['task']}' is empty (no rows or only "
          f"padding) in {where}; check --config.data.path and the task's split options"
        )

  # ---- what the run is made of -----------------------------------------------------------------
  def build_model(self) -> nnx.Module:
    """The model, initialised from the config's seed (params, dropout and random streams)."""
    seed = int(self.plain["seed"])
    rngs = nnx.Rngs(params=seed, dropout=seed + 1, random=seed + 2)
    return self.task.build_model(self.plain["model"], rngs)

  @functools.cached_property
  def optimizer(self) -> tuple[Any, Any]:
    """``(optax transform, learning-rate schedule)`` of the ``optim`` section."""
    return make_optimizer(self.plain["optim"], int(self.plain["train"]["steps"]))

  @functools.cached_property
  def mesh(self) -> Mesh:
    return runtime.make_mesh()

  @functools.cached_property
  def steps(self) -> Steps:
    """The jitted train and eval steps (compiled on first use), for the current target
    (``lrm.mixers.target()``: this machine unless built inside ``for_platform``)."""
    return self.make_steps()

  def make_steps(self, target: mixers.Target | None = None) -> Steps:
    """Fresh jitted steps traced for ``target`` (None: the current one); ``scripts/
    export_step.py`` lowers them for a platform this machine does not have."""
    tx, schedule = self.optimizer
    tc = self.config.train
    return Steps(
      self.task,
      self.model,
      tx,
      schedule,
      dtype=tc.dtype,
      grad_accum=tc.grad_accum,
      mesh=self.mesh,
      target=target,
    )

  def checkpoints(self, writer: bool = False) -> Checkpoints:
    """The run's checkpoint manager (close it when done); ``writer``: this process writes the
    run (it sets damaged steps aside)."""
    if self.workdir is None:
      raise ValueError("this run has no workdir, so it has no checkpoints")
    return Checkpoints(
      self.workdir / "checkpoints",
      keep=self.config.train.keep_checkpoints,
      metric=self.task.main_metric,
      mode=self.task.main_mode,
      writer=writer,
    )

  # ---- restoring and evaluating ----------------------------------------------------------------
  def restore(self, checkpoint: str = "best") -> tuple[int, dict[str, Any]]:
    """``(step, model state)`` of ``checkpoint`` (best | latest | <step>) on this machine; a
    damaged step is reported in one line and the newest intact one is used instead."""
    ckpts = self.checkpoints()
    try:
      step = ckpts.resolve(checkpoint)
      abstract = self.steps.abstract(self.steps.model_shape)
      step, restored = ckpts.restore_intact(
        step, _warn, rundir.run_id(self.workdir), model=abstract
      )
    finally:
      ckpts.close()
    return step, restored["model"]

  def load_model(self, checkpoint: str = "best") -> nnx.Module:
    """The trained model as a live ``nnx.Module`` in eval mode (for analysis)."""
    return self.load_model_at(checkpoint)[1]

  def load_model_at(self, checkpoint: str = "best") -> tuple[int, nnx.Module]:
    """``(step, model)``: ``load_model`` and the step it restored."""
    step, state = self.restore(checkpoint)
    return step, nnx.merge(self.steps.graph_eval, state["params"], state["rest"])

  def evaluate(self, split: str = "test", checkpoint: str = "best") -> dict[str, Any]:
    """Metrics of a saved checkpoint: ``{"split", "checkpoint", "step", "metrics"}``."""
    if split not in tasks.SPLITS:
      raise ValueError(f"unknown --split '{split}'; choose one of {', '.join(tasks.SPLITS)}")
    runtime.check_batch_size("train.eval_batch_size", self.config.train.eval_batch_size)
    step, state = self.restore(checkpoint)
    metrics = evaluate(
      self.steps,
      state,
      self.task.dataset(split),
      batch_size=self.config.train.eval_batch_size,
      split=split,
    )
    return {"split": split, "checkpoint": checkpoint, "step": step, "metrics": metrics}

  def impls(self) -> list[str]:
    """The implementation each layer's mixer runs on the current target (this machine unless
    inside ``lrm.mixers.for_platform``) at the task's length and the training dtype
    (``impl="auto"`` resolved: ``Mixer.choose_impl``)."""
    dtype, length = DTYPES[self.plain["train"].get("dtype", "float32")], self.task.seq_len
    return [mixers.impl_of(m, dtype, length) for m in self.model.encoder.mixer_list()]

  # ---- cost ----------------------------------------------------------------------------------
  def costs(self) -> dict[str, float | int]:
    """Parameters and analytic FLOPs at the task's length, one vocabulary for every report.

    ``encoder_forward_flops_per_token``: the blocks (mixers + MLPs), no embedding or head;
    ``forward_flops_per_token``: the whole model (encoder + head) per input token;
    ``train_flops_per_token``: forward + backward, 3x the forward (Kaplan et al. 2020).
    A multiply-add is 2 FLOPs; embedding lookups cost none.
    """
    return counting.model_costs(self.model, self.task.seq_len)
