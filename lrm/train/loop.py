"""The one trainer: any task, any mixer, one CPU to a TPU pod.

  run(config, workdir, restart=False, extend=False) -> results dict  # prepare(...), train(...)

The file reads top to bottom. ``prepare`` builds the ``lrm.run.Run`` (task, model, optimizer:
every check that can fail on bad input, such as an unknown task/mixer/option, missing data
or a batch size that does not split over the devices) and decides what the workdir holds (a
new run, this run to resume, or a run to ``--extend``) before anything is written. ``train``
takes the workdir's lock and runs ``_train``, the loop: set-up; resume from the newest
intact checkpoint if the workdir holds this run; the steps, with an evaluation on validation
every ``train.eval_every`` steps (saving a checkpoint with the metrics each time) and the
other save points; ``finish``: the final and the best checkpoints evaluated on test,
results.json and the plots. The loop's helpers and the workdir plan come after it.

Resuming is exact: batches are a pure function of (seed, step), and a checkpoint holds the
parameters, optimizer state, step, dropout RNG state and the running metric sums, so a run
killed at any moment and restarted ends with the same parameters and metrics as one that
never stopped. SIGTERM (preemption) saves a checkpoint and returns; a non-finite loss raises
``Diverged`` without saving, so the last good checkpoint stays the newest.

``--extend`` continues a finished or stopped run to a larger ``train.steps``; every other key
must be unchanged. The run resumes from its newest checkpoint (parameters, optimizer state,
data position), and the learning-rate schedule is rebuilt for the new length: warm-up is not
repeated, and a decaying schedule (cosine) now ends at the new last step, so at the resume
step the learning rate rises from where the old schedule had brought it to the value the
longer schedule has there (printed when the run starts and recorded in results.json under
``extended``). The result is not the run a fresh ``train.steps`` would give; it is the
common "train this finished run for longer" with a cosine restart.

``train_time_s`` in results.json is the time spent in training steps only: compilation (each
session's first step) and evaluation are left out; ``wall_time_s`` is everything, summed over
sessions.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from lrm.run import Run
from lrm.train import console, report, rundir, runtime
from lrm.train.checkpoint import Checkpoints
from lrm.train.optim import learning_rate
from lrm.train.report import Monitor, StepTrace, Throughput
from lrm.train.rundir import Interrupted, Preemption, WorkdirLock, remove_unfinished_saves
from lrm.train.step import Steps, evaluate


class Diverged(RuntimeError):
  """The training loss became NaN or infinite."""


@dataclass
class Prepared:
  """A checked run and what to do with its workdir."""

  run: Run
  resume: bool  # the workdir holds this run (same config, or the one --extend continues)
  restart: bool  # wipe the previous run's files before writing
  extend_from: int = 0  # > 0: --extend continues a run of that many steps


# ---- set-up: a checked run and its workdir plan, before anything is written ----------------------
def run(
  config: Any, workdir: Path | str, *, restart: bool = False, extend: bool = False
) -> dict[str, Any] | None:
  """Train (or resume, or extend) a run; returns results, or None if stopped by SIGTERM."""
  return train(prepare(config, workdir, restart=restart, extend=extend))


def prepare(
  config: Any, workdir: Path | str, *, restart: bool = False, extend: bool = False
) -> Prepared:
  """Check the config, data and workdir; raise a one-line error before touching anything."""
  workdir = rundir.check_workdir_path(workdir)
  if restart:
    rundir.check_restart(workdir)
  run = Run.from_config(config, workdir)
  tc = run.plain["train"]
  report.check_profile_steps(tc.get("profile_steps", ()), int(tc["steps"]))
  report.check_wandb(run.plain)
  plan = plan_workdir(run.workdir, run.plain, restart=restart, extend=extend)
  warning = warmup_warning(run.plain)
  if warning and is_lead():
    _warn(warning)
  return Prepared(run, plan.resume, restart, plan.extend_from)


def train(p: Prepared, preempt: Preemption | None = None) -> dict[str, Any] | None:
  """Train under the workdir's lock, the console teed into train.log. ``preempt`` is
  installed by the caller before ``prepare`` (so that a SIGTERM during set-up is caught too);
  without one, a handler is installed here for the duration of the run."""
  with contextlib.ExitStack() as held:
    if preempt is None:
      preempt = held.enter_context(Preemption())
    if is_lead():  # process 0 is the one writer: it holds the lock and writes train.log
      held.enter_context(WorkdirLock(p.run.workdir))
      held.enter_context(console.log_to(p.run.workdir / "train.log", fresh=p.restart))
    return _train(p, preempt)


# ---- the loop ------------------------------------------------------------------------------------
def _train(p: Prepared, preempt: Preemption) -> dict[str, Any] | None:
  """Set-up, resume, the steps with their evaluation and save points, finish."""
  r = p.run
  wd, total, procs, lead = r.workdir, int(r.config.train.steps), jax.process_count(), is_lead()
  # ---- set-up: the workdir is ours (locked); a finished run only reports its results
  if preempt.is_set():
    raise Interrupted("stopped by SIGTERM before training started; rerun the same command")
  if lead:  # the one writer: a restart wipes the old run; the mark is the run's first file
    if p.restart:
      rundir.wipe(wd)
    wd.mkdir(parents=True, exist_ok=True)
    rundir.mark(wd, r.plain)
  if procs > 1:
    multihost_utils.sync_global_devices("lrm_workdir_ready")
  wd.mkdir(parents=True, exist_ok=True)
  if lead:  # interrupted saves never hold a committed step; only this writer may remove them
    remove_unfinished_saves(wd)
  ckpts = r.checkpoints(writer=lead)
  if p.resume and not p.extend_from and (ckpts.latest_step() or 0) >= total:
    done = rundir.read_json_or_none(wd / "results.json", note=_warn)
    if rundir.valid_results(done, rundir.config_hash(r.plain)):
      ckpts.close()
      if lead:
        print(f"{wd} holds a finished run; results.json is up to date", flush=True)
      return done
  try:
    cfg, tc, task, steps = r.config, r.config.train, r.task, r.steps
    data_sh = runtime.batch_sharding(r.mesh)
    console.start_log()  # this session writes to the run: train.log gets its lines
    # ---- resume: the newest intact checkpoint (or step 0) and the batches from there on
    train_ds, pid = task.dataset("train"), jax.process_index()  # global batches, this host's rows
    first = runtime.host_rows(train_ds.train_batches(tc.batch_size, seed=cfg.seed), pid, procs)
    start, state, meta = _resume(p, ckpts, steps, next(first))
    batches = train_ds.train_batches(tc.batch_size, seed=cfg.seed, start_step=start)
    batches = runtime.host_rows(batches, pid, procs)
    batch = next(batches)
    # Totals carried over from earlier sessions of this run (zero when starting).
    meta = {"elapsed_s": 0.0, "train_time_s": 0.0, "tokens": 0, **meta}
    meta = report.session_meta(meta, r.plain, p.extend_from)  # wandb id, extensions
    if lead:
      if not start or p.extend_from:
        rundir.write_json(wd / "config.json", r.plain)
      if not start or rundir.read_json_or_none(wd / "vocab.json", note=_warn) is None:
        rundir.write_json(wd / "vocab.json", task.vocab())
    note = extension_note(r.plain, p.extend_from) if p.extend_from else ""
    monitor = Monitor.open(r, start, active=lead, extend_note=note, meta=meta)
    profiler = StepTrace(tc.get("profile_steps", ()), total, wd, monitor.info)
    wall0, clock, window_start = time.perf_counter(), Throughput(), start
    # ---- the steps, with their evaluation and save points
    step, val, stop = start, None, False
    while step < total:
      profiler.before(step + 1)
      state = steps.train_step(state, runtime.put_batch(batch, data_sh))
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
      _check_finite(state, ckpts, wd, since=window_start, step=step)  # before log, eval, save
      if log:
        _log_train(step, state, r, clock, monitor)
        state = steps.reset_acc(state)
        window_start = step
      if save:  # every evaluation is saved with its metrics: orbax tracks the best
        with clock.paused():
          val = _validate(step, state, r, monitor) if evaluate_now else None
          meta_now = _totals(meta, r, step, wall0, clock)
          ckpts.save(step, model=state["model"], train=state["train"], meta=meta_now, metrics=val)
        stop = stop or (procs == 1 and preempt.requested(step))  # arrived during the save
      if stop:
        break
    # ---- finish (a SIGTERM during the last step's save: the step is saved, stop before testing)
    profiler.stop()
    if stop or (procs == 1 and preempt.requested(step)):
      ckpts.close()
      monitor.close()
      if lead:
        print(f"preempted: saved step {step} in {wd}; rerun the same command to resume")
      return None
    ckpts.wait()
    meta_now = _totals(meta, r, step, wall0, clock)
    return finish(r, state, ckpts, meta_now, monitor, val, step, preempt)
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


def finish(
  r: Run,
  state: dict,
  ckpts: Checkpoints,
  meta: dict,
  monitor: Monitor,
  final_val: dict | None,
  step: int,
  preempt: Preemption,
) -> dict[str, Any]:
  """Test metrics of the final and best checkpoints, results.json and the plots, once
  training reached its last step (or a resumed run finds it already there). A SIGTERM here
  stops before results.json is written (raising ``Interrupted``); a rerun evaluates again
  from the saved checkpoints."""
  task, wd, steps = r.task, r.workdir, r.steps
  if final_val is None:  # resumed a run whose training had finished
    final_val = _test(r, state["model"], "validation", ckpts, monitor, preempt, step)
  final_test = _test(r, state["model"], "test", ckpts, monitor, preempt, step)
  final = {"step": step, "validation": final_val, "test": final_test}
  best_step, best_model = _best_intact(ckpts, steps, r.workdir, step)
  best = {"step": step, "metrics": final_val}
  if best_model is not None:
    best = {"step": best_step, "metrics": ckpts.metrics(best_step)}
    best_test = _test(r, best_model, "test", ckpts, monitor, preempt, step)
  else:
    best_test = final["test"]
  ckpts.close()
  monitor.log(step, "test", final["test"])
  results = {
    "task": r.config.task,
    "main_metric": task.main_metric,
    "final": final,
    "best": {"step": best["step"], "validation": best["metrics"], "test": best_test},
    **r.costs(),
    "impl": r.impls(),  # the kernel each layer ran (impl="auto" resolved)
    "tokens_per_s": meta.get("tokens", 0) / max(meta.get("train_time_s", 0.0), 1e-9),
    "train_time_s": meta.get("train_time_s", 0.0),
    "wall_time_s": meta.get("elapsed_s", 0.0),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "config_hash": rundir.config_hash(r.plain),
    "versions": rundir.versions(),
    **({"extended": meta["extended"]} if meta.get("extended") else {}),
  }
  if jax.process_index() == 0:
    rundir.write_json(wd / "results.json", results)
    monitor.plot(r.plain, step, task.reference_levels())
  monitor.close()
  return results


# ---- the loop's helpers --------------------------------------------------------------------------
def is_lead() -> bool:
  """Process 0 writes files and prints summaries."""
  return jax.process_index() == 0


def _warn(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def _every(step: int, period: int) -> bool:
  return period > 0 and step % period == 0


def _resume(p: Prepared, ckpts: Checkpoints, steps: Steps, batch: Any) -> tuple[int, dict, dict]:
  """``(step, state, meta)``: the newest intact checkpoint (damaged newer ones set aside), or
  a fresh state at step 0."""
  r = p.run
  latest = ckpts.latest_step() if p.resume else None
  if latest is None:
    return 0, steps.init_state(r.build_model, batch), {}
  shapes = steps.abstract_state(r.build_model, batch)
  start, restored = ckpts.restore_intact(
    latest, _warn, rundir.run_id(r.workdir), model=shapes["model"], train=shapes["train"]
  )
  if start != latest and is_lead():
    for s in [s for s in ckpts.all_steps() if s > start]:
      _warn(f"moved damaged checkpoint step {s} to {ckpts.set_aside(s)}")
  return start, {"model": restored["model"], "train": restored["train"]}, restored["meta"]


def _check_finite(state: dict, ckpts: Checkpoints, wd: Path, *, since: int, step: int) -> None:
  """Raise ``Diverged`` (saving nothing) if a loss of steps ``since+1..step`` was NaN/inf."""
  if int(jax.device_get(state["train"]["acc"]["nonfinite"])):
    ckpts.wait()
    last = ckpts.latest_step()
    kept = f"last good checkpoint: step {last}" if last is not None else "no checkpoint yet"
    raise Diverged(
      f"the training loss became NaN/inf between steps {since} and {step}; stopped "
      f"without saving ({kept} in {wd / 'checkpoints'}); lower --config.optim.lr or raise "
      f"--config.optim.warmup_steps, then rerun with --restart"
    )


def _log_train(step: int, state: dict, r: Run, clock: Throughput, monitor: Monitor) -> None:
  """The training metrics of the window that ends at ``step``: a record and a progress line."""
  acc = jax.device_get(state["train"]["acc"])
  n = max(int(acc["steps"]), 1)
  sums = {k: (float(t), float(c)) for k, (t, c) in acc["sums"].items()}
  metrics = {"loss": float(acc["loss"]) / n, "grad_norm": float(acc["grad_norm"]) / n}
  metrics.update(r.task.summarize(sums))
  metrics["lr"] = float(acc["lr"])
  tokens_per_s, step_s = clock.flush()
  speed = {"tokens_per_s": tokens_per_s, "step_s": step_s} if step_s == step_s else {}
  monitor.log(step, "train", {**metrics, **speed})
  monitor.progress(step, {**metrics, **speed}, clock.mean_step_s())


def _validate(step: int, state: dict, r: Run, monitor: Monitor) -> dict[str, float]:
  """The validation metrics of the live state: a record and a validation line."""
  t0, tc = time.perf_counter(), r.config.train
  metrics = evaluate(
    r.steps,
    state["model"],
    r.task.dataset("validation"),
    batch_size=tc.eval_batch_size,
    max_batches=tc.max_eval_batches,
    note=monitor.message,
  )
  monitor.log(step, "validation", metrics)
  monitor.validation(step, metrics, time.perf_counter() - t0)
  return metrics


def _test(
  r: Run,
  model_state: Any,
  split: str,
  ckpts: Checkpoints,
  monitor: Monitor,
  preempt: Preemption,
  step: int,
) -> dict[str, float]:
  """``finish``'s evaluation of a whole split; a SIGTERM during it closes the run's files and
  raises ``Interrupted``."""
  out = evaluate(
    r.steps,
    model_state,
    r.task.dataset(split),
    batch_size=r.config.train.eval_batch_size,
    note=monitor.message,
    stop=preempt.is_set,
  )
  if out is None:
    ckpts.close()
    monitor.close()
    raise Interrupted(
      f"stopped by SIGTERM during the final evaluation; training is saved at step {step} in "
      f"{r.workdir}; rerun the same command to evaluate and write results.json"
    )
  return out


def _best_intact(ckpts: Checkpoints, steps: Steps, wd: Path, final: int) -> tuple[int, Any]:
  """``(best step, its model state)``, or ``(final, None)`` when the final step is the best.
  A best step that does not restore (damaged, or another run's) is set aside, said in one
  line, and the best of the remaining steps is used: the same fallback as resuming."""
  run_id = rundir.run_id(wd)
  while (best := ckpts.best_step()) is not None and best != final:
    tried: list[str] = []
    got, restored = ckpts.restore_intact(
      best, tried.append, run_id, model=steps.abstract(steps.model_shape)
    )
    if got == best:
      return best, restored["model"]
    _warn(f"{tried[0]}; it is set aside, the best of the other steps is used")
    if not is_lead():  # only the writer moves files; the others report the final step
      break
    _warn(f"moved checkpoint step {best} to {ckpts.set_aside(best)}")
  return final, None


def _totals(meta: dict, r: Run, step: int, wall0: float, clock: Throughput) -> dict[str, Any]:
  """The checkpoint's meta: this session's time and tokens added to earlier sessions'."""
  return {
    **meta,
    "step": step,
    "config_hash": rundir.config_hash(r.plain),
    "run_id": rundir.run_id(r.workdir),
    "elapsed_s": meta["elapsed_s"] + time.perf_counter() - wall0,
    "train_time_s": meta["train_time_s"] + clock.total_time,
    "tokens": meta["tokens"] + clock.total_tokens,
  }


# ---- new run, resume or --extend (see the module docstring); the warm-up warning -----------------
@dataclass
class Plan:
  resume: bool  # the workdir holds this run (or the run to extend)
  extend_from: int = 0  # > 0: the saved run's train.steps, which this one extends


def _saved(workdir: Path) -> dict[str, Any] | None:
  try:
    old = json.loads((workdir / "config.json").read_text())
  except (OSError, ValueError, UnicodeDecodeError):
    return None
  return rundir.with_run_options(old) if isinstance(old, dict) else None


def _steps_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
  diff = rundir.config_diff(old, new)
  return len(diff) == 1 and diff[0].startswith("train.steps:")


def plan_workdir(workdir: Path, config: dict[str, Any], *, restart: bool, extend: bool) -> Plan:
  """Check ``workdir`` against ``config``; raise ``rundir.ConfigConflict`` (nothing touched)."""
  old = None if restart else _saved(workdir)
  if extend and not restart:
    if old is None:
      raise rundir.ConfigConflict(
        f"--extend: {workdir} holds no run to extend (no readable config.json); drop --extend "
        f"to start a new run there"
      )
    if rundir.config_diff(old, config) and not _steps_only(old, config):
      others = [d for d in rundir.config_diff(old, config) if not d.startswith("train.steps:")]
      raise rundir.ConfigConflict(
        f"--extend changes only train.steps, but the config also differs in: "
        f"{'; '.join(others[:4])}; give the run's own config, or use another --workdir"
      )
    before, after = int(old["train"]["steps"]), int(config["train"]["steps"])
    if after < before:
      raise rundir.ConfigConflict(
        f"--extend: --config.train.steps={after} is not larger than the run's {before}; "
        f"give a larger value, e.g. --config.train.steps={2 * before}"
      )
    return Plan(True, before if after > before else 0)
  try:
    return Plan(rundir.check_workdir(workdir, config, restart=restart))
  except rundir.ConfigConflict as e:
    if old is not None and _steps_only(old, config):
      raise rundir.ConfigConflict(
        f"{e}; to continue this run to train.steps={config['train']['steps']}, add --extend"
      ) from None
    raise


def lr_jump(optim: dict[str, Any], before: int, after: int) -> tuple[float, float]:
  """Learning rate at step ``before`` under the old and the rebuilt schedule."""
  old, new = learning_rate(optim, before), learning_rate(optim, after)
  return float(old(before)), float(new(before))


def extension_note(config: dict[str, Any], before: int) -> str:
  after = int(config["train"]["steps"])
  lr_old, lr_new = lr_jump(config["optim"], before, after)
  return (
    f"extending the run from {before} to {after} steps: the learning-rate schedule is rebuilt "
    f"for {after} steps, so at step {before} the lr goes from {lr_old:.3g} to {lr_new:.3g} "
    f"({config['optim']['schedule']}, no new warm-up)"
  )


def warmup_warning(config: dict[str, Any]) -> str | None:
  steps, warmup = int(config["train"]["steps"]), int(config["optim"]["warmup_steps"])
  if steps >= warmup:
    return None
  return (
    f"warning: train.steps={steps} is shorter than optim.warmup_steps={warmup}: the learning "
    f"rate never reaches optim.lr={config['optim']['lr']:g} (it stops at "
    f"{config['optim']['lr'] * steps / warmup:.3g}); lower --config.optim.warmup_steps"
  )


def workdir_state(workdir: Path, config: dict[str, Any]) -> str:
  """One line for ``--dry_run``: what training in ``workdir`` would do (reads only)."""
  if not (workdir / "config.json").exists() and not rundir.holds_a_run(workdir):
    return f"workdir {workdir}: empty, a new run would start there"
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
  at = f" (newest checkpoint: step {max(steps)})" if steps else ""
  try:
    rundir.check_workdir(workdir, config, restart=False)
  except rundir.ConfigConflict as e:
    return f"workdir {workdir}: would be refused{at}: {e}"
  done = (workdir / "results.json").exists() and steps and max(steps) >= config["train"]["steps"]
  return f"workdir {workdir}: holds this run{at}; " + (
    "it is finished (add --extend with a larger --config.train.steps to continue it)"
    if done
    else "training would resume there"
  )
