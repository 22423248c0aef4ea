"""The jitted training and evaluation steps, as pure functions of a state pytree, and the
evaluator that sums the evaluation step over a split.

The state is ``{"model": {"params", "rest"}, "train": {"opt", "step", "acc"}}`` (the same
items a checkpoint holds). The model's structure (an ``nnx.GraphDef``, one per train/eval
mode) is closed over, so each step is one ``jax.jit`` call on arrays, with the old state's
buffers donated: the cheapest way to drive an NNX model (split once, merge inside jit, as
Flax's NNX performance guide recommends).

* Gradient accumulation: the batch of ``B`` rows is cut into ``A = grad_accum`` micro-batches
  of ``B/A`` rows (rows ``a, a+A, a+2A, ...``, so every device keeps working on each). Each
  micro-batch's gradient is weighted by its loss count ``sums["loss"][1]`` (rows or tokens;
  1 if the task reports no "loss" sum), which makes the result equal to the full batch's
  gradient whenever the task's loss is ``total / count``.
* bfloat16: parameters stay float32; the loss function casts them (hence the activations)
  to bfloat16 for the forward pass, so gradients and optimizer updates are float32.
* ``model.remat``: each block is rematerialised (``lrm/model.py``); ``compiler_options``
  keeps that effective on CPU.
* Metrics stay on the devices: each step adds its loss, gradient norm and the task's metric
  sums to ``acc``, read once per logging window (no host sync per step).
* Evaluation (``evaluate``): the metrics of one split, every row once, for a model state. The
  trainer calls it on its live state; ``lrm.run.Run.evaluate`` restores a saved checkpoint of
  a run directory (on however many devices this machine has) and calls it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lrm import mixers
from lrm.data.arrays import ArrayDataset
from lrm.tasks.base import Task
from lrm.train import runtime

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
State = dict[str, Any]


def compiler_options(platform: str | None = None) -> dict[str, str] | None:
  """XLA options of the training step for ``platform`` (None: ``lrm.mixers.target()``'s).
  On CPU, XLA expands optimisation barriers before it merges common subexpressions, which
  folds a rematerialised block (``model.remat``) back into the forward pass and saves
  nothing; this keeps them (a no-op without remat). GPU and TPU keep them by themselves."""
  if (platform or mixers.target().platform) != "cpu":
    return None
  return {"xla_disable_hlo_passes": "cse_barrier_expander"}


def cast_floats(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


class Steps:
  """The jitted steps for one model/task/optimizer, and the initial state.

  ``model`` is abstract (``nnx.eval_shape``): only its structure is used here; the real
  parameters are made by ``init_state`` inside one jitted call (one compilation instead of
  one per initializer, and born replicated, which also holds across processes).

  ``target``: the platform the steps are traced for (``lrm.mixers.Target``; default the
  current one, ``lrm.mixers.target()``: this machine, or the ``for_platform`` block the steps
  are built in). Every traced step enters it, so the mixers choose that platform's kernels
  whenever and wherever the step is traced: ``train_step.trace(...).lower(
  lowering_platforms=(...))`` on a CPU host gives the program a TPU or GPU would run
  (``scripts/export_step.py``).
  """

  def __init__(
    self,
    task: Task,
    model: nnx.Module,
    tx: optax.GradientTransformation | None,
    schedule: Callable[[jax.Array], jax.Array] | None,
    *,
    dtype: str,
    grad_accum: int,
    mesh: Mesh,
    target: mixers.Target | None = None,
  ):
    if dtype not in DTYPES:
      raise ValueError(f"unknown train.dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    self.target = mixers.target() if target is None else target
    self.task, self.tx, self.schedule = task, tx, schedule
    self.dtype, self.accum, self.mesh = DTYPES[dtype], grad_accum, mesh
    model.eval()
    self.graph_eval, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    self.graph_train, params, rest = nnx.split(model, nnx.Param, ...)
    self.model_shape = {"params": params, "rest": rest}  # ShapeDtypeStruct leaves
    repl = runtime.replicated(mesh)
    self.repl = repl
    self.train_step = jax.jit(
      self._train_step,
      donate_argnums=0,
      out_shardings=repl,
      compiler_options=compiler_options(self.target.platform),
    )
    self.eval_step = jax.jit(self._eval_step, donate_argnums=2, out_shardings=repl)
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    self._zeros = jax.jit(zeros, donate_argnums=0, out_shardings=repl)

  # ---- state ---------------------------------------------------------------------------------
  def init_state(self, build: Callable[[], nnx.Module], batch: Mapping[str, Any]) -> State:
    """Replicated initial state from ``build()`` (the model constructor, traced once);
    ``batch`` (host arrays) fixes the structure of the metric sums."""
    m = self.model_shape
    sums = jax.eval_shape(lambda p, r, b: self._loss(p, r, b)[1][0], m["params"], m["rest"], batch)

    def init() -> State:
      _, params, rest = nnx.split(build(), nnx.Param, ...)
      acc = {
        "loss": jnp.zeros(()),
        "grad_norm": jnp.zeros(()),
        "lr": jnp.zeros(()),
        "steps": jnp.zeros((), jnp.int32),
        "nonfinite": jnp.zeros((), jnp.int32),
        "sums": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums),
      }
      return {
        "model": {"params": params, "rest": rest},
        "train": {"opt": self.tx.init(params), "step": jnp.zeros((), jnp.int32), "acc": acc},
      }

    return jax.jit(init, out_shardings=self.repl)()

  def abstract_state(self, build: Callable[[], nnx.Module], batch: Mapping[str, Any]) -> State:
    """``init_state``'s shapes, dtypes and shardings without computing it (for restores)."""
    return self.abstract(jax.eval_shape(lambda: self.init_state(build, batch)))

  def abstract(self, tree: Any) -> Any:
    """Shape/dtype/replicated sharding of every leaf, for restoring onto this mesh."""
    return runtime.abstract_replicated(tree, self.mesh)

  # ---- training ------------------------------------------------------------------------------
  def _loss(self, params: Any, rest: Any, batch: Mapping[str, jax.Array]) -> tuple:
    # copy=True: fresh Variables at this trace level; ``rest`` (dropout RNG counts) is not
    # differentiated, so jax.grad passes its Variables in as made outside, and advancing a
    # count then raised "Cannot mutate RngCount from a different trace level".
    model = nnx.merge(self.graph_train, cast_floats(params, self.dtype), rest, copy=True)
    with mixers.for_platform(self.target):  # kernels of the platform these steps are for
      loss, sums = self.task.loss(model, batch)
    _, _, rest = nnx.split(model, nnx.Param, ...)  # dropout RNG counts advanced
    return loss.astype(jnp.float32), (sums, rest)

  def _grads(self, params: Any, rest: Any, batch: Mapping[str, jax.Array]) -> tuple:
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    if self.accum == 1:
      (loss, (sums, rest)), grads = grad_fn(params, rest, batch)
      return loss, grads, sums, rest

    A = self.accum
    split = NamedSharding(self.mesh, P(None, runtime.AXIS))

    def micro(x: jax.Array) -> jax.Array:
      x = x.reshape(x.shape[0] // A, A, *x.shape[1:]).swapaxes(0, 1)  # [A, B/A, ...]
      return jax.lax.with_sharding_constraint(x, split)

    def body(carry: tuple, mb: Mapping[str, jax.Array]) -> tuple:
      g_sum, loss_sum, w_sum, rest = carry
      (loss, (sums, rest)), g = grad_fn(params, rest, mb)
      w = sums["loss"][1].astype(jnp.float32) if "loss" in sums else jnp.ones(())
      g_sum = jax.tree.map(lambda a, b: a + w * b, g_sum, g)
      return (g_sum, loss_sum + w * loss, w_sum + w, rest), sums

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (zeros, jnp.zeros(()), jnp.zeros(()), rest)
    (g_sum, loss_sum, w_sum, rest), sums = jax.lax.scan(body, init, jax.tree.map(micro, batch))
    w_sum = jnp.maximum(w_sum, 1e-12)
    grads = jax.tree.map(lambda g: g / w_sum, g_sum)
    return loss_sum / w_sum, grads, jax.tree.map(lambda s: s.sum(0), sums), rest

  def gradients(self, model_state: State, batch: Mapping[str, jax.Array]) -> tuple:
    """``(loss, grads, sums)`` of one batch without updating anything (for checks)."""
    loss, grads, sums, _ = jax.jit(self._grads)(model_state["params"], model_state["rest"], batch)
    return loss, grads, sums

  def _train_step(self, state: State, batch: Mapping[str, jax.Array]) -> State:
    params, rest = state["model"]["params"], state["model"]["rest"]
    tr = state["train"]
    loss, grads, sums, rest = self._grads(params, rest, batch)
    updates, opt = self.tx.update(grads, tr["opt"], params)
    params = optax.apply_updates(params, updates)
    acc = tr["acc"]
    acc = {
      "loss": acc["loss"] + loss,
      "grad_norm": acc["grad_norm"] + optax.tree.norm(grads),
      "lr": self.schedule(tr["step"]),  # the rate this update used
      "steps": acc["steps"] + 1,
      "nonfinite": acc["nonfinite"] + (~jnp.isfinite(loss)).astype(jnp.int32),
      "sums": jax.tree.map(jnp.add, acc["sums"], sums),
    }
    return {
      "model": {"params": params, "rest": rest},
      "train": {"opt": opt, "step": tr["step"] + 1, "acc": acc},
    }

  def reset_acc(self, state: State) -> State:
    """Start a new logging window (zeros placed like the rest of the state)."""
    state["train"]["acc"] = self._zeros(state["train"]["acc"])
    return state

  # ---- evaluation ----------------------------------------------------------------------------
  def _eval_sums(self, model_state: State, batch: Mapping[str, jax.Array]) -> Any:
    params = cast_floats(model_state["params"], self.dtype)
    model = nnx.merge(self.graph_eval, params, model_state["rest"])
    with mixers.for_platform(self.target):
      return self.task.loss(model, batch)[1]

  def _eval_step(self, model_state: State, batch: Mapping[str, jax.Array], acc: Any) -> Any:
    return jax.tree.map(jnp.add, acc, self._eval_sums(model_state, batch))

  def zero_eval_acc(self, model_state: State, batch: Mapping[str, Any]) -> Any:
    shapes = jax.eval_shape(self._eval_sums, model_state, batch)
    return runtime.replicate(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), self.mesh)


# ---- evaluation of a split ---------------------------------------------------------------------
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
  data_sh = runtime.batch_sharding(steps.mesh)
  acc = None
  for batch in batches:
    if stop is not None and stop():
      return None
    if acc is None:
      acc = steps.zero_eval_acc(model_state, batch)
    acc = steps.eval_step(model_state, runtime.put_batch(batch, data_sh), acc)
  sums = {k: (float(t), float(c)) for k, (t, c) in jax.device_get(acc).items()}
  return steps.task.summarize(sums)
