"""The one trainer: any task, any mixer, one CPU to a TPU pod.

  run(config, workdir, restart=False) -> results dict   # = prepare(...) then train(...)

``prepare`` does every check that can fail on bad input (unknown task/mixer/option, missing
data, batch size vs devices, a workdir holding a different run) before anything is written;
``train`` then resumes from the newest checkpoint if the workdir holds this run, trains,
evaluates on validation every ``train.eval_every`` steps (saving a checkpoint with the
metrics each time), and at the end evaluates the final and the best checkpoints on test and
writes results.json.

Resuming is exact: batches are a pure function of (seed, step), and a checkpoint holds the
parameters, optimizer state, step, dropout RNG state and the running metric sums, so a run
killed at any moment and restarted ends with the same parameters and metrics as one that
never stopped. SIGTERM (preemption) saves a checkpoint and returns; a non-finite loss raises
``Diverged`` without saving, so the last good checkpoint stays the newest.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.experimental import multihost_utils

from lrm.tasks.base import Task
from lrm.train import rundir, sharding
from lrm.train.checkpoint import Checkpoints
from lrm.train.evaluate import build_model, build_task, evaluate
from lrm.train.monitor import Monitor, Throughput
from lrm.train.optim import make_optimizer
from lrm.train.step import DTYPES, Steps


class Diverged(RuntimeError):
  """The training loss became NaN or infinite."""


@dataclass
class Prepared:
  """Everything ``train`` needs, built and checked by ``prepare``."""

  config: ml_collections.ConfigDict
  config_dict: dict[str, Any]
  workdir: Path
  task: Task
  model: nnx.Module
  resume: bool  # the workdir holds this run (same config)
  restart: bool  # wipe the previous run's files before writing


def prepare(config: Any, workdir: Path | str, *, restart: bool = False) -> Prepared:
  """Check the config, data and workdir; raise a one-line error before touching anything."""
  workdir = Path(workdir)
  cfg_dict = rundir.config_to_dict(config)
  cfg = ml_collections.ConfigDict(cfg_dict)
  for section in ("task", "data", "model", "train", "optim", "seed"):
    if section not in cfg:
      raise ValueError(f"the config has no '{section}' entry; build it on lrm.config.base_config()")
  tc = cfg.train
  if tc.steps < 1:
    raise ValueError(f"train.steps={tc.steps} must be at least 1")
  if tc.dtype not in DTYPES:
    raise ValueError(f"unknown train.dtype '{tc.dtype}'; choose one of {', '.join(DTYPES)}")
  make_optimizer(cfg.optim, tc.steps)  # validates the schedule and lr
  sharding.check_batch_size("train.batch_size", tc.batch_size, tc.grad_accum)
  sharding.check_batch_size("train.eval_batch_size", tc.eval_batch_size)
  resume = rundir.check_workdir(workdir, cfg_dict, restart=restart)
  task = build_task(cfg_dict)
  model = nnx.eval_shape(lambda: build_model(task, cfg_dict))  # checks the mixers, no compute
  return Prepared(cfg, cfg_dict, workdir, task, model, resume, restart)


def run(config: Any, workdir: Path | str, *, restart: bool = False) -> dict[str, Any] | None:
  """Train (or resume) a run; returns results, or None if stopped by SIGTERM."""
  return train(prepare(config, workdir, restart=restart))


class Preemption:
  """SIGTERM -> save and stop. Multi-process runs use JAX's preemption sync point instead,
  so every process stops at the same step (and JAX's own SIGTERM handler stays in place).

  A SIGTERM that the loop did not act on (it came after the last step's check) is delivered
  again to the previous handler on exit, so it is never swallowed: the caller stops too."""

  def __init__(self) -> None:
    self.flag, self.acted, self.old = False, False, None

  def __enter__(self) -> Preemption:
    if jax.process_count() == 1:
      try:
        self.old = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread: cannot install handlers
        self.old = None
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    self.flag = True

  def __exit__(self, *exc: Any) -> None:
    if self.old is not None:
      signal.signal(signal.SIGTERM, self.old)
      if self.flag and not self.acted:
        signal.raise_signal(signal.SIGTERM)

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      self.acted = multihost_utils.reached_preemption_sync_point(step)
    else:
      self.acted = self.flag
    return self.acted


def is_lead() -> bool:
  """Process 0 writes files and prints summaries."""
  return jax.process_index() == 0


def _every(step: int, period: int) -> bool:
  return period > 0 and step % period == 0


def train(p: Prepared) -> dict[str, Any] | None:
  cfg, tc, task, wd = p.config, p.config.train, p.task, p.workdir
  total, procs, lead = int(tc.steps), jax.process_count(), is_lead()
  mesh = sharding.make_mesh()
  data_sh = sharding.batch_sharding(mesh)
  tx, schedule = make_optimizer(cfg.optim, total)
  steps = Steps(task, p.model, tx, schedule, dtype=tc.dtype, grad_accum=tc.grad_accum, mesh=mesh)
  if p.restart and lead:
    rundir.wipe(wd)
  if procs > 1:
    multihost_utils.sync_global_devices("lrm_workdir_ready")
  wd.mkdir(parents=True, exist_ok=True)
  ckpts = Checkpoints(
    wd / "checkpoints", keep=tc.keep_checkpoints, metric=task.main_metric, mode=task.main_mode
  )
  start = (ckpts.latest_step() or 0) if p.resume else 0
  if start >= total and (wd / "results.json").exists():
    ckpts.close()
    if lead:
      print(f"{wd} holds a finished run; results.json is up to date", flush=True)
    return rundir.read_json(wd / "results.json")
  train_ds = task.dataset("train").shard(jax.process_index(), procs)
  batches = train_ds.train_batches(tc.batch_size // procs, seed=cfg.seed, start_step=start)
  batch = next(batches)
  build = lambda: build_model(task, p.config_dict)  # noqa: E731
  # Totals carried over from earlier sessions of this run (zero when starting).
  meta: dict[str, Any] = {"best": None, "elapsed_s": 0.0, "train_time_s": 0.0, "tokens": 0}
  if start:
    shapes = steps.abstract_state(build, batch)
    r = ckpts.restore(start, model=shapes["model"], train=shapes["train"])
    state, meta = {"model": r["model"], "train": r["train"]}, r["meta"]
  else:
    state = steps.init_state(build, batch)
  if not start and lead:
    rundir.write_json(wd / "config.json", p.config_dict)
    rundir.write_json(wd / "vocab.json", task.vocab())
  monitor = Monitor(wd, total_steps=total, start_step=start, active=lead)
  n_params = sum(x.size for x in jax.tree.leaves(state["model"]["params"]))
  monitor.message(
    f"{'resuming at' if start else 'starting'} step {start}/{total}: task {cfg.task}, "
    f"{n_params:,} parameters, {jax.device_count()} devices, workdir {wd}"
  )
  wall0, clock, window_start = time.perf_counter(), Throughput(), start

  def totals(step: int) -> dict[str, Any]:
    """The checkpoint's meta: this session's time and tokens added to earlier sessions'."""
    return {
      **meta,
      "step": step,
      "config_hash": rundir.config_hash(p.config_dict),
      "elapsed_s": meta["elapsed_s"] + time.perf_counter() - wall0,
      "train_time_s": meta["train_time_s"] + clock.total_time,
      "tokens": meta["tokens"] + clock.total_tokens,
    }

  def check_finite(step: int) -> None:
    if int(jax.device_get(state["train"]["acc"]["nonfinite"])):
      ckpts.wait()
      raise Diverged(
        f"the training loss became NaN/inf between steps {window_start} and {step}; stopped "
        f"without saving (last good checkpoint: step {ckpts.latest_step()} in "
        f"{wd / 'checkpoints'}); lower --config.optim.lr or raise --config.optim.warmup_steps, "
        f"then rerun with --restart"
      )

  def log_train(step: int) -> None:
    acc = jax.device_get(state["train"]["acc"])
    n = max(int(acc["steps"]), 1)
    sums = {k: (float(t), float(c)) for k, (t, c) in acc["sums"].items()}
    metrics = {"loss": float(acc["loss"]) / n, "grad_norm": float(acc["grad_norm"]) / n}
    metrics.update(task.summarize(sums))
    metrics["lr"] = float(acc["lr"])
    tokens_per_s, step_s = clock.flush()
    monitor.log(step, "train", {**metrics, "tokens_per_s": tokens_per_s, "step_s": step_s})
    monitor.progress(step, {**metrics, "tokens_per_s": tokens_per_s}, step_s)

  def validate(step: int) -> dict[str, float]:
    metrics = evaluate(
      steps,
      state["model"],
      task.dataset("validation"),
      batch_size=tc.eval_batch_size,
      max_batches=tc.max_eval_batches,
      note=monitor.message,
    )
    monitor.log(step, "validation", metrics)
    best, sign = meta["best"], 1 if task.main_mode == "max" else -1
    # Ties go to the later step, as in orbax's BestN policy, so both agree on "best".
    if best is None or sign * metrics[task.main_metric] >= sign * best["metrics"][task.main_metric]:
      meta["best"] = {"step": step, "metrics": metrics}
    return metrics

  step, val, stop = start, None, False
  with Preemption() as preempt:
    while step < total:
      state = steps.train_step(state, sharding.put_batch(batch, data_sh))
      clock.add(task.num_tokens(batch) * procs)
      step += 1
      if step == start + 1:  # leave compilation out of the throughput
        jax.block_until_ready(state)
        clock.restart()
      if step < total:
        batch = next(batches)  # built on the host while the devices run the step
      log = _every(step, tc.log_every) or step == total
      evaluate_now = _every(step, tc.eval_every) or step == total
      stop = preempt.requested(step)
      save = evaluate_now or stop or _every(step, tc.checkpoint_every)
      if not (log or save):
        continue
      check_finite(step)  # before anything is logged, evaluated or saved
      if log:
        log_train(step)
        state = steps.reset_acc(state)
        window_start = step
      if save:  # every evaluation is saved with its metrics: "best" is always restorable
        with clock.paused():
          val = validate(step) if evaluate_now else None
          meta_now = totals(step)
          ckpts.save(step, model=state["model"], train=state["train"], meta=meta_now, metrics=val)
      if stop:
        break
    # a SIGTERM during the last step's save: the step is saved, stop before testing
    if stop or (procs == 1 and preempt.requested(step)):
      ckpts.close()
      monitor.close()
      if lead:
        print(f"preempted: saved step {step} in {wd}; rerun the same command to resume")
      return None
  ckpts.wait()
  return finish(p, steps, state, ckpts, totals(step), monitor, val, step)


def finish(
  p: Prepared,
  steps: Steps,
  state: dict,
  ckpts: Checkpoints,
  meta: dict,
  monitor: Monitor,
  final_val: dict | None,
  step: int,
) -> dict[str, Any]:
  """Test metrics of the final and best checkpoints, results.json and the plots."""
  task, tc, wd = p.task, p.config.train, p.workdir

  def test(model_state: Any, split: str = "test") -> dict[str, float]:
    return evaluate(
      steps, model_state, task.dataset(split), batch_size=tc.eval_batch_size, note=monitor.message
    )

  if final_val is None:  # resumed a run whose training had finished
    final_val = test(state["model"], "validation")
  final = {"step": step, "validation": final_val, "test": test(state["model"])}
  best = meta["best"] or {"step": step, "metrics": final_val}
  if best["step"] == step:
    best_test = final["test"]
  else:
    r = ckpts.restore(best["step"], model=steps.abstract(steps.model_shape))
    best_test = test(r["model"])
  ckpts.close()
  monitor.log(step, "test", final["test"])
  params = state["model"]["params"]
  results = {
    "task": p.config.task,
    "main_metric": task.main_metric,
    "final": final,
    "best": {"step": best["step"], "validation": best["metrics"], "test": best_test},
    "params": int(sum(x.size for x in jax.tree.leaves(params))),
    "flops_per_token": _flops_per_token(p.model, task.seq_len),
    "seq_len": task.seq_len,
    "tokens_per_s": meta.get("tokens", 0) / max(meta.get("train_time_s", 0.0), 1e-9),
    "wall_time_s": meta.get("elapsed_s", 0.0),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "config_hash": rundir.config_hash(p.config_dict),
    "versions": rundir.versions(),
  }
  if jax.process_index() == 0:
    rundir.write_json(wd / "results.json", results)
    monitor.plot(task.main_metric)
  monitor.close()
  return results


def _flops_per_token(model: nnx.Module, seq_len: int) -> float | None:
  """Analytic forward FLOPs per token of the encoder at the task's length (None if a mixer
  does not report them)."""
  try:
    return model.encoder.flops(seq_len) / seq_len
  except (NotImplementedError, AttributeError):
    return None


def summary(results: dict[str, Any], workdir: Path | str) -> str:
  """The lines printed at the end of a run."""
  m, fin, best = results["main_metric"], results["final"], results["best"]
  return (
    f"final test {m}: {fin['test'][m]:.4f} (validation {fin['validation'][m]:.4f}, "
    f"step {fin['step']})\n"
    f"best validation {m}: {best['validation'][m]:.4f} at step {best['step']} "
    f"(test {best['test'][m]:.4f})\n"
    f"{results['params']:,} parameters, {results['tokens_per_s']:,.0f} tokens/s, "
    f"{results['wall_time_s']:.0f}s; results in {Path(workdir) / 'results.json'}"
  )
