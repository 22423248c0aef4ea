"""The one trainer: any task, any mixer, one CPU to a TPU pod.

  run(config, workdir, restart=False) -> results dict   # = prepare(...) then train(...)

``prepare`` builds the ``lrm.run.Run`` (task, model, optimizer: every check that can fail on
bad input, such as an unknown task/mixer/option, missing data or a batch size that does not
split over the devices) and checks that the workdir does not hold a different run, before
anything is written;
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

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from lrm.run import Run
from lrm.train import console, rundir, sharding, trace, tracking
from lrm.train.checkpoint import Checkpoints
from lrm.train.evaluate import evaluate
from lrm.train.extend import plan_workdir, warmup_warning
from lrm.train.finish import finish
from lrm.train.guard import Interrupted, Preemption, WorkdirLock, remove_unfinished_saves
from lrm.train.monitor import Monitor
from lrm.train.step import Steps
from lrm.train.timing import Throughput


class Diverged(RuntimeError):
  """The training loss became NaN or infinite."""


@dataclass
class Prepared:
  """A checked run and what to do with its workdir."""

  run: Run
  resume: bool  # the workdir holds this run (same config, or the one --extend continues)
  restart: bool  # wipe the previous run's files before writing
  extend_from: int = 0  # > 0: --extend continues a run of that many steps (lrm.train.extend)


def prepare(
  config: Any, workdir: Path | str, *, restart: bool = False, extend: bool = False
) -> Prepared:
  """Check the config, data and workdir; raise a one-line error before touching anything."""
  run = Run.from_config(config, workdir)
  tc = run.plain["train"]
  trace.check(tc.get("profile_steps", ()), int(tc["steps"]))
  tracking.check_wandb(run.plain)
  plan = plan_workdir(run.workdir, run.plain, restart=restart, extend=extend)
  warning = warmup_warning(run.plain)
  if warning and is_lead():
    _warn(warning)
  return Prepared(run, plan.resume, restart, plan.extend_from)


def run(
  config: Any, workdir: Path | str, *, restart: bool = False, extend: bool = False
) -> dict[str, Any] | None:
  """Train (or resume, or extend) a run; returns results, or None if stopped by SIGTERM."""
  return train(prepare(config, workdir, restart=restart, extend=extend))


def _warn(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def is_lead() -> bool:
  """Process 0 writes files and prints summaries."""
  return jax.process_index() == 0


def _every(step: int, period: int) -> bool:
  return period > 0 and step % period == 0


def train(p: Prepared, preempt: Preemption | None = None) -> dict[str, Any] | None:
  """Train under the workdir's lock; ``preempt`` (installed by the caller before ``prepare``
  so that a SIGTERM during set-up is caught too) defaults to a fresh handler."""
  if preempt is None:
    with Preemption() as own:
      return train(p, own)
  lock = WorkdirLock(p.run.workdir) if is_lead() else None
  if lock is not None:
    lock.acquire()
  try:
    if lock is None:
      return _train(p, preempt)
    with console.log_to(p.run.workdir / "train.log", fresh=p.restart):
      return _train(p, preempt)
  finally:
    if lock is not None:
      lock.release()


def _resume(p: Prepared, ckpts: Checkpoints, steps: Steps, batch: Any) -> tuple[int, dict, dict]:
  """``(step, state, meta)``: the newest intact checkpoint (damaged newer ones set aside), or
  a fresh state at step 0."""
  r = p.run
  latest = ckpts.latest_step() if p.resume else None
  if latest is None:
    return 0, steps.init_state(r.build_model, batch), {}
  shapes = steps.abstract_state(r.build_model, batch)
  start, restored = ckpts.restore_intact(
    latest, _warn, model=shapes["model"], train=shapes["train"]
  )
  if start != latest and is_lead():
    for s in [s for s in ckpts.all_steps() if s > start]:
      _warn(f"moved damaged checkpoint step {s} to {ckpts.set_aside(s)}")
  return start, {"model": restored["model"], "train": restored["train"]}, restored["meta"]


def _train(p: Prepared, preempt: Preemption) -> dict[str, Any] | None:
  r = p.run
  wd, total, procs, lead = r.workdir, int(r.config.train.steps), jax.process_count(), is_lead()
  if preempt.is_set():
    raise Interrupted("stopped by SIGTERM before training started; rerun the same command")
  if p.restart and lead:
    rundir.wipe(wd)
  if procs > 1:
    multihost_utils.sync_global_devices("lrm_workdir_ready")
  wd.mkdir(parents=True, exist_ok=True)
  if lead:  # interrupted saves never hold a committed step; only this writer may remove them
    remove_unfinished_saves(wd)
  ckpts = r.checkpoints()
  if p.resume and not p.extend_from and (ckpts.latest_step() or 0) >= total:
    done = rundir.read_json_or_none(wd / "results.json", note=_warn)
    if isinstance(done, dict) and "final" in done:
      ckpts.close()
      if lead:
        print(f"{wd} holds a finished run; results.json is up to date", flush=True)
      return done
  try:
    return _train_session(p, preempt, ckpts)
  except BaseException:
    # let a failed background save finish failing before its unfinished files are removed
    # (otherwise orbax's thread may create them after the removal) and the lock is released
    try:
      ckpts.close()
    except Exception:  # noqa: BLE001 - the error being raised is the one to report
      pass
    if lead:
      remove_unfinished_saves(wd)
    raise


def _train_session(p: Prepared, preempt: Preemption, ckpts: Checkpoints) -> dict[str, Any] | None:
  """This session's steps, evaluations and saves, from the newest intact checkpoint."""
  r = p.run
  cfg, tc, task, wd, steps = r.config, r.config.train, r.task, r.workdir, r.steps
  total, procs, lead = int(tc.steps), jax.process_count(), is_lead()
  data_sh = sharding.batch_sharding(r.mesh)
  console.start_log()  # this session writes to the run: train.log gets its lines
  train_ds, pid = task.dataset("train"), jax.process_index()  # global batches, this host's rows
  first = sharding.host_rows(train_ds.train_batches(tc.batch_size, seed=cfg.seed), pid, procs)
  start, state, meta = _resume(p, ckpts, steps, next(first))
  batches = train_ds.train_batches(tc.batch_size, seed=cfg.seed, start_step=start)
  batches = sharding.host_rows(batches, pid, procs)
  batch = next(batches)
  # Totals carried over from earlier sessions of this run (zero when starting).
  meta = {"elapsed_s": 0.0, "train_time_s": 0.0, "tokens": 0, **meta}
  meta = tracking.session_meta(meta, r.plain, p.extend_from)  # wandb id, extensions
  if lead:
    if not start or p.extend_from:
      rundir.write_json(wd / "config.json", r.plain)
    if not start or rundir.read_json_or_none(wd / "vocab.json", note=_warn) is None:
      rundir.write_json(wd / "vocab.json", task.vocab())
  monitor = Monitor.open(r, start, active=lead, extend_from=p.extend_from, meta=meta)
  profiler = trace.StepTrace(tc.get("profile_steps", ()), total, wd, monitor.info)
  wall0, clock, window_start = time.perf_counter(), Throughput(), start

  def totals(step: int) -> dict[str, Any]:
    """The checkpoint's meta: this session's time and tokens added to earlier sessions'."""
    return {
      **meta,
      "step": step,
      "config_hash": rundir.config_hash(r.plain),
      "elapsed_s": meta["elapsed_s"] + time.perf_counter() - wall0,
      "train_time_s": meta["train_time_s"] + clock.total_time,
      "tokens": meta["tokens"] + clock.total_tokens,
    }

  def check_finite(step: int) -> None:
    if int(jax.device_get(state["train"]["acc"]["nonfinite"])):
      ckpts.wait()
      last = ckpts.latest_step()
      kept = f"last good checkpoint: step {last}" if last is not None else "no checkpoint yet"
      raise Diverged(
        f"the training loss became NaN/inf between steps {window_start} and {step}; stopped "
        f"without saving ({kept} in {wd / 'checkpoints'}); lower --config.optim.lr or raise "
        f"--config.optim.warmup_steps, then rerun with --restart"
      )

  def log_train(step: int) -> None:
    acc = jax.device_get(state["train"]["acc"])
    n = max(int(acc["steps"]), 1)
    sums = {k: (float(t), float(c)) for k, (t, c) in acc["sums"].items()}
    metrics = {"loss": float(acc["loss"]) / n, "grad_norm": float(acc["grad_norm"]) / n}
    metrics.update(task.summarize(sums))
    metrics["lr"] = float(acc["lr"])
    tokens_per_s, step_s = clock.flush()
    speed = {"tokens_per_s": tokens_per_s, "step_s": step_s} if step_s == step_s else {}
    monitor.log(step, "train", {**metrics, **speed})
    monitor.progress(step, {**metrics, **speed}, clock.mean_step_s())

  def validate(step: int) -> dict[str, float]:
    t0 = time.perf_counter()
    metrics = evaluate(
      steps,
      state["model"],
      task.dataset("validation"),
      batch_size=tc.eval_batch_size,
      max_batches=tc.max_eval_batches,
      note=monitor.message,
    )
    monitor.log(step, "validation", metrics)
    monitor.validation(step, metrics, time.perf_counter() - t0)
    return metrics

  step, val, stop = start, None, False
  while step < total:
    profiler.before(step + 1)
    state = steps.train_step(state, sharding.put_batch(batch, data_sh))
    clock.add(task.num_tokens(batch) * procs)
    step += 1
    if step == start + 1:  # leave compilation out of the throughput
      jax.block_until_ready(state)
      clock.restart()
    profiler.after(step, state)
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
    if save:  # every evaluation is saved with its metrics: orbax tracks the best
      with clock.paused():
        val = validate(step) if evaluate_now else None
        meta_now = totals(step)
        ckpts.save(step, model=state["model"], train=state["train"], meta=meta_now, metrics=val)
      stop = stop or (procs == 1 and preempt.requested(step))  # arrived during the save
    if stop:
      break
  # a SIGTERM during the last step's save: the step is saved, stop before testing
  profiler.stop()
  if stop or (procs == 1 and preempt.requested(step)):
    ckpts.close()
    monitor.close()
    if lead:
      print(f"preempted: saved step {step} in {wd}; rerun the same command to resume")
    return None
  ckpts.wait()
  return finish(r, state, ckpts, totals(step), monitor, val, step, preempt)
