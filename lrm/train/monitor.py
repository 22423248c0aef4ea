"""What a run reports: metrics.jsonl, TensorBoard events, progress lines and curve plots.

Console (``lrm.train.console``): a start line, one progress line per ``train.log_every``
steps (on a terminal a tqdm bar instead), one validation line per evaluation, the results at
the end; metrics in the task's order (loss first, then the main metric, then the rest, e.g.
recall's distance buckets from near to far). Time left counts the training steps, the
validations still due and the final test evaluations; tokens per second leave out the first
step (compilation), evaluation and saving.

Only process 0 writes (``active=False`` elsewhere). On resume, records after the resumed
step are dropped from metrics.jsonl and TensorBoard is told to purge them (``purge_step``),
so a run that was killed and resumed leaves the same record as one that never stopped.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lrm.describe import mixer_summary
from lrm.train import console, plots, timing, tracking
from lrm.train.extend import extension_note
from lrm.train.timing import Schedule


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  s = int(seconds)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fmt(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


HIDDEN = ("tokens_per_s", "lr", "step_s", "grad_norm")  # shown elsewhere, or last


def _shown(metrics: dict[str, Any], best: str | None = None) -> str:
  """``loss 0.69 | accuracy 0.51 | ... | grad_norm 1.2``: the task's order, loss first."""
  keys = [k for k in metrics if k not in HIDDEN]
  keys = sorted(keys, key=lambda k: k != "loss") + [k for k in ("grad_norm",) if k in metrics]
  return " | ".join(f"{k} {_fmt(metrics[k])}" + (" (best)" if k == best else "") for k in keys)


class Monitor:
  """Process 0's reporter. On a terminal, progress is a tqdm bar whose postfix holds the
  latest metrics; otherwise (logs, CI, tests) one plain line per logging step. Validation
  metrics get their own line at each evaluation (above the bar on a terminal)."""

  def __init__(
    self,
    workdir: Path,
    *,
    total_steps: int,
    start_step: int,
    active: bool = True,
    schedule: Schedule | None = None,
    main: tuple[str, str] = ("loss", "min"),
  ):
    self.workdir, self.total, self.active = workdir, total_steps, active
    self.start, self.schedule, self.main = start_step, schedule or Schedule(), main
    self.path = workdir / "metrics.jsonl"
    self.writer = self.bar = self.wandb = None
    self.eval_s: list[float] = []
    self._notes: set[str] = set()
    self.best: float | None = None  # every process tracks it (validation runs on all)
    if not active:
      return
    if console.terminal().isatty():
      from tqdm import tqdm

      self.bar = tqdm(
        total=total_steps,
        initial=start_step,
        unit="step",
        dynamic_ncols=True,
        file=console.terminal(),
        bar_format="{l_bar}{bar:20}| {n_fmt}/{total_fmt} {elapsed}{postfix}",
      )
    self._truncate(start_step)
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it

    self.writer = SummaryWriter(
      str(workdir / "tensorboard"), purge_step=start_step + 1 if start_step else None
    )
    seen = [r.get(main[0]) for r in self.records() if r.get("split") == "validation"]
    self.best = self._better(seen)

  def _better(self, values: list[Any]) -> float | None:
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
      return None
    return max(values) if self.main[1] == "max" else min(values)

  @classmethod
  def open(cls, run: Any, start: int, *, active: bool, extend_from: int, meta: dict) -> Monitor:
    """The monitor of a ``lrm.run.Run`` resumed at ``start``, its start line printed."""
    monitor = cls(
      run.workdir,
      total_steps=int(run.plain["train"]["steps"]),
      start_step=start,
      active=active,
      schedule=timing.eval_schedule(run),
      main=(run.task.main_metric, run.task.main_mode),
    )
    monitor.start_run(
      run.plain,
      params=run.costs()["params"],
      devices=jax.device_count(),
      extend_note=extension_note(run.plain, extend_from) if extend_from else "",
      wandb_id=meta.get("wandb_id", ""),
    )
    return monitor

  def start_run(
    self, config: dict[str, Any], *, params: int, devices: int, extend_note: str, wandb_id: str
  ) -> None:
    """The start line; the config to TensorBoard (and wandb) when the run starts or changes."""
    resumed = self.start > 0
    self.info(
      f"{'resuming at' if resumed else 'starting'} step {self.start}/{self.total}: task "
      f"{config['task']}, mixer {mixer_summary(config['model']['mixer'])}, {params:,} "
      f"parameters, {devices} device{'s' * (devices > 1)}, workdir {self.workdir} "
      f"(train.log, metrics.jsonl, tensorboard/)"
    )
    if extend_note:
      self.info(extend_note)
    if not self.active:
      return
    if not resumed or extend_note:
      tracking.tensorboard_config(self.writer, config, self.main[0])
    project = config["train"].get("wandb_project", "")
    if project:
      self.wandb = tracking.wandb_run(project, self.workdir, config, wandb_id)

  def _truncate(self, start_step: int) -> None:
    """Keep only records up to ``start_step`` (the step this run resumes from); a line that
    is not a JSON record (cut short by a kill, or damaged) is dropped with a warning."""
    if not self.path.exists():
      return
    keep = []
    for n, line in enumerate(self.path.read_text(errors="replace").splitlines(), start=1):
      try:
        rec = json.loads(line)
        step, split = int(rec["step"]), rec["split"]
      except (ValueError, TypeError, KeyError):
        if line.strip():
          self.warn(f"warning: {self.path}:{n} is not a metrics record; dropped")
        continue
      if step <= start_step and split != "test":  # test is logged by the end
        keep.append(line)
    self.path.write_text("".join(f"{line}\n" for line in keep))

  def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
    """One record to metrics.jsonl, TensorBoard (``<split>/<name>``) and wandb."""
    if not self.active:
      return
    rec = {"step": int(step), "split": split, **{k: _jsonable(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(rec) + "\n")
    scalars = {
      f"{split}/{k}": v
      for k, v in metrics.items()
      if isinstance(v, int | float) and math.isfinite(v)
    }
    for tag, v in scalars.items():
      self.writer.add_scalar(tag, v, step)
    self.writer.flush()
    if self.wandb is not None:
      self.wandb.log(scalars, step=int(step))

  def time_left(self, step: int, sec_per_step: float) -> float:
    return timing.time_left(self.schedule, step, self.total, sec_per_step, self.eval_s)

  def progress(self, step: int, metrics: dict[str, float], sec_per_step: float) -> None:
    """``step 120/1000 | loss 0.69 | accuracy 0.51 | 12.3k tok/s | 0:01:02 left``."""
    if not self.active:
      return
    tps = metrics.get("tokens_per_s", float("nan"))
    speed = f" | {tps / 1e3:.1f}k tok/s" if math.isfinite(tps) else ""
    left = f" | {_fmt_time(self.time_left(step, sec_per_step))} left"
    line = f"step {step}/{self.total} | {_shown(metrics)}{speed}{left}"
    if self.bar is not None:  # tqdm draws the step; the log gets the plain line
      self.bar.update(step - self.bar.n)
      self.bar.set_postfix_str(f"{left[3:]}{speed} | {_shown(metrics)}", refresh=True)
      console.log_only(line)
      return
    print(line, flush=True)

  def validation(self, step: int, metrics: dict[str, float], seconds: float) -> None:
    """``step 100/1000 | validation | loss 0.61 | accuracy 0.66 (best) | ...``: "(best)"
    marks a main metric better than at every earlier evaluation of this run."""
    self.eval_s.append(seconds)
    value = metrics.get(self.main[0])
    best = self._better([self.best, value]) if self.best is not None else value
    improved = value is not None and value == best and value != self.best
    marked = self.main[0] if improved else None
    self.best = best
    self.info(f"step {step}/{self.total} | validation | {_shown(metrics, marked)}")

  def info(self, text: str) -> None:
    """A line for stdout (and train.log)."""
    self._print(text, err=False)

  def warn(self, text: str) -> None:
    """A line for stderr (and train.log)."""
    self._print(text, err=True)

  def note_once(self, text: str) -> None:
    """A warning printed the first time only (e.g. the same note at every evaluation)."""
    if text not in self._notes:
      self._notes.add(text)
      self.warn(text)

  message = note_once  # the evaluator's ``note``

  def _print(self, text: str, *, err: bool) -> None:
    if not self.active:
      return
    if self.bar is not None:
      self.bar.write(text, file=console.terminal(err))
      console.log_only(text)
    else:
      print(text, file=sys.stderr if err else sys.stdout, flush=True)

  def records(self) -> list[dict[str, Any]]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line]

  def plot(self, config: dict[str, Any], step: int, levels: dict | None = None) -> Path | None:
    """Draw the learning curves into plots/curves.png (``lrm.train.plots``)."""
    if not self.active:
      return None
    title = (
      f"{config['task']} · mixer {mixer_summary(config['model']['mixer'])} · {step} steps · "
      f"run {self.workdir.name}"
    )
    out = self.workdir / "plots" / "curves.png"
    return plots.curves(self.records(), out, title=title, main_metric=self.main[0], levels=levels)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None
    if self.writer is not None:
      self.writer.close()
      self.writer = None
    if self.wandb is not None:
      self.wandb.finish()
      self.wandb = None


def summary(results: dict[str, Any], workdir: Path | str) -> str:
  """The closing lines of a run (printed by scripts/train.py)."""
  m, fin, best = results["main_metric"], results["final"], results["best"]
  return (
    f"final test {m}: {fin['test'][m]:.4f} (validation {fin['validation'][m]:.4f}, "
    f"step {fin['step']})\n"
    f"best validation {m}: {best['validation'][m]:.4f} at step {best['step']} "
    f"(test {best['test'][m]:.4f})\n"
    f"{results['params']:,} parameters, {results['tokens_per_s']:,.0f} tokens/s, "
    f"{results['wall_time_s']:.0f}s; results in {Path(workdir) / 'results.json'}"
    + "".join(
      f"\nextended from {a} to {b} steps (learning-rate schedule rebuilt for {b} steps)"
      for a, b in results.get("extended", [])
    )
  )


def _jsonable(v: Any) -> Any:
  if isinstance(v, np.generic):
    return v.item()
  return v
