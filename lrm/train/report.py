"""What a run reports: metrics.jsonl, TensorBoard and wandb, the console lines, its timing,
the curve plots and a profiler trace.

Console (``lrm.train.console``): a start line, one progress line per ``train.log_every``
steps (on a terminal a tqdm bar instead), one validation line per evaluation, the results at
the end; metrics in the task's order (loss first, then the main metric, then the rest, e.g.
recall's distance buckets from near to far).

Only process 0 writes (``active=False`` elsewhere). On resume, records after the resumed
step are dropped from metrics.jsonl and TensorBoard is told to purge them (``purge_step``),
so a run that was killed and resumed leaves the same record as one that never stopped.

Timing: throughput (tokens per second) leaves out the first step (its time is compilation),
evaluation and saving. Time left counts the training steps still to run at the mean step
time so far, the validations still due and the final test evaluations (final and best
checkpoints), each at the fastest validation measured so far (the first one includes
compiling the eval step) or, before the first, at an estimate from the step time.

``plots/curves.png``, drawn from metrics.jsonl at the end: two panels, the loss (training and
validation on one axis) and the task's main metric (validation, and training where the task
reports it), each with the reference levels the task knows (chance; majority class) as
dashed lines. A training point is the mean over the steps since the previous one
(``train.log_every``), a validation point the whole split at that step. The title names the
task, the mixer, the steps and the run directory.

Trackers. TensorBoard: the resolved config as a text summary (tag ``config``, one ``key =
value`` line per key) and as hyperparameters for the HParams dashboard, written into the
run's own event file (the session summaries of ``tensorboardX.summary.hparams``, as PyTorch
Lightning does), so the dashboard lists this run's ``validation/*`` and ``test/*`` scalars
next to its hyperparameters. Weights & Biases (``train.wandb_project``, needs ``pip install
'lrm[wandb]'``): one wandb run per run directory (files under ``<workdir>/wandb``), resumed
with the same id when the trainer resumes; ``WANDB_MODE=offline`` works without an account.

Profiler (``train.profile_steps=(a, b)``): a ``jax.profiler`` trace of training steps a..b
into ``<workdir>/profile/plugins/profile/<time>/`` (``*.xplane.pb`` and a Chrome-trace
``*.trace.json.gz``), the layout TensorBoard's profile plugin (``tensorboard --logdir
<workdir>/profile``) and Perfetto (ui.perfetto.dev, the ``.trace.json.gz``) read; see
https://docs.jax.dev/en/latest/profiling.html. Steps count from 1 as printed; a run resumed
after step a traces nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lrm.config_cli import flat, format_config
from lrm.describe import mixer_summary
from lrm.train import console, rundir
from lrm.train.step import eval_batches


# ---- the monitor: records and console lines ------------------------------------------------------
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
  def open(cls, run: Any, start: int, *, active: bool, extend_note: str, meta: dict) -> Monitor:
    """The monitor of a ``lrm.run.Run`` resumed at ``start``, its start line printed (and
    ``extend_note``, the line of an ``--extend``, after it)."""
    monitor = cls(
      run.workdir,
      total_steps=int(run.plain["train"]["steps"]),
      start_step=start,
      active=active,
      schedule=eval_schedule(run),
      main=(run.task.main_metric, run.task.main_mode),
    )
    monitor.start_run(
      run.plain,
      params=run.costs()["params"],
      devices=jax.device_count(),
      extend_note=extend_note,
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
      tensorboard_config(self.writer, config, self.main[0])
    project = config["train"].get("wandb_project", "")
    if project:
      self.wandb = wandb_run(project, self.workdir, config, wandb_id)

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
    rundir.write_text(self.path, "".join(f"{line}\n" for line in keep))  # atomic: a kill
    # during the rewrite leaves every record

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
    return time_left(self.schedule, step, self.total, sec_per_step, self.eval_s)

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
    """Draw the learning curves into plots/curves.png (see the module docstring)."""
    if not self.active:
      return None
    title = (
      f"{config['task']} · mixer {mixer_summary(config['model']['mixer'])} · {step} steps · "
      f"run {self.workdir.name}"
    )
    out = self.workdir / "plots" / "curves.png"
    return curves(self.records(), out, title=title, main_metric=self.main[0], levels=levels)

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


# ---- timing: throughput and time left ------------------------------------------------------------
@dataclass
class Schedule:
  """What the time-left estimate counts: training steps, validations and the final test."""

  eval_every: int = 0
  eval_cost: float = 0.0  # one validation, in training steps, until one is measured
  test_ratio: float = 1.0  # final test evaluations (final and best) / one validation


def eval_schedule(run: Any) -> Schedule:
  """The ``Schedule`` of a ``lrm.run.Run``: evaluation period and relative evaluation costs."""
  tc = run.config.train
  batches = {
    s: eval_batches(run.task.dataset(s), tc.eval_batch_size, tc.max_eval_batches * (s != "test"))[1]
    for s in ("validation", "test")
  }
  # an eval batch is a forward pass: about a third of a training step's work per example
  cost = batches["validation"] * tc.eval_batch_size / (3 * tc.batch_size)
  return Schedule(int(tc.eval_every), cost, batches["test"] / max(batches["validation"], 1))


def time_left(
  sch: Schedule, step: int, total: int, sec_per_step: float, eval_s: Sequence[float]
) -> float:
  """Seconds until the run ends: training, validations due after ``step``, final tests."""
  per_eval = min(eval_s) if eval_s else sch.eval_cost * sec_per_step
  evals = 0
  if sch.eval_every > 0:
    evals = total // sch.eval_every - step // sch.eval_every
    evals += int(total % sch.eval_every != 0 and step < total)
  return (total - step) * sec_per_step + (evals + 2 * sch.test_ratio) * per_eval


class Throughput:
  """Tokens per second of training only: time spent evaluating or saving is paused out.

  Windows end at each log (where the host waits for the devices anyway); totals add up the
  windows for results.json.
  """

  def __init__(self) -> None:
    self.total_time, self.total_tokens, self.total_steps = 0.0, 0, 0
    self.restart()

  def restart(self) -> None:
    """Open a new window now (e.g. after the first step, to leave compilation out)."""
    self.start, self.paused_s, self.tokens, self.steps = time.perf_counter(), 0.0, 0, 0

  def add(self, tokens: int) -> None:
    self.tokens += tokens
    self.steps += 1

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    t = time.perf_counter()
    try:
      yield
    finally:
      self.paused_s += time.perf_counter() - t

  def flush(self) -> tuple[float, float]:
    """Close the window: ``(tokens per second, seconds per step)``, NaN for a window without
    timed steps (only the first step, whose time is compilation)."""
    dt = max(time.perf_counter() - self.start - self.paused_s, 1e-9)
    self.total_time += dt
    self.total_tokens += self.tokens
    self.total_steps += self.steps
    nan = float("nan")
    rate, per_step = (self.tokens / dt, dt / self.steps) if self.steps else (nan, nan)
    self.restart()
    return rate, per_step

  def mean_step_s(self) -> float:
    """Seconds per training step over every window so far (steadier than one window)."""
    return self.total_time / self.total_steps if self.total_steps else float("nan")


# ---- plots/curves.png ----------------------------------------------------------------------------
LABELS = {  # y-axis labels with units
  "loss": "cross-entropy (nats per prediction)",
  "accuracy": "accuracy (fraction correct)",
  "bits_per_byte": "bits per byte (lower is better)",
  "bits_per_token": "bits per token (lower is better)",
  "perplexity": "perplexity (per token)",
  "exact": "exact match (fraction of examples)",
}
SPLIT_STYLE = {"train": dict(color="#1f77b4", alpha=0.8), "validation": dict(color="#d62728")}
LEVEL_COLORS = {"chance": "#7f7f7f", "majority": "#2ca02c"}


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
  pts = [(s, v) for s, v in pts if isinstance(v, int | float) and np.isfinite(v)]
  if not pts:
    return np.zeros(0), np.zeros(0)
  x, y = np.asarray(pts, dtype=float).T
  return x, y


def curves(
  records: list[dict[str, Any]],
  out: Path,
  *,
  title: str,
  main_metric: str,
  levels: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
  """Draw the two panels described above into ``out`` (a PNG); returns ``out``."""
  import matplotlib

  matplotlib.use("Agg")  # no display needed
  import matplotlib.pyplot as plt

  levels = levels or {}
  keys = ["loss"] if main_metric == "loss" else ["loss", main_metric]
  fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
  for ax, key in zip(axes[0], keys, strict=True):
    for split, style in SPLIT_STYLE.items():
      x, y = _series(records, split, key)
      if len(x):
        marker = "o" if split == "validation" or len(x) < 30 else None
        label = "train (mean since the previous point)" if split == "train" else split
        ax.plot(x, y, marker=marker, markersize=3.5, label=label, **style)
    for name, value in levels.get(key, {}).items():
      ax.axhline(
        value, ls="--", lw=1, color=LEVEL_COLORS.get(name, "k"), label=f"{name} {value:.3g}"
      )
    ax.set_xlabel("training step")
    ax.set_ylabel(LABELS.get(key, key))
    ax.set_title(key.replace("_", " "))
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


# ---- trackers: the config in TensorBoard, wandb --------------------------------------------------
METRIC_TAGS = ("validation/loss", "test/loss")


def hparams(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
  """Every config leaf as a TensorBoard hyperparameter (lists and tuples as text)."""
  out: dict[str, bool | int | float | str] = {}
  for k, v in flat(config).items():
    out[k] = v if isinstance(v, bool | int | float | str) else repr(v)
  return out


def tensorboard_config(writer: Any, config: dict[str, Any], main_metric: str = "") -> None:
  """Write the config text and hyperparameters into ``writer`` (a tensorboardX writer)."""
  from tensorboardX.summary import hparams as hparams_summaries

  text = "\n".join(f"    {line}" for line in format_config(config).splitlines())  # Markdown code
  writer.add_text("config", text, 0)
  tags = [*METRIC_TAGS]
  if main_metric and main_metric != "loss":
    tags = [f"validation/{main_metric}", f"test/{main_metric}", *tags]
  for event in hparams_summaries(hparams(config), {t: 0.0 for t in tags}):
    writer.file_writer.add_summary(event)
  writer.flush()


def session_meta(meta: dict[str, Any], config: dict[str, Any], extend_from: int) -> dict:
  """The checkpoint meta of this session: a wandb run id (kept for good once drawn) and, for
  ``--extend``, the ``[from, to]`` steps appended to the run's extensions."""
  meta = dict(meta)
  if config["train"].get("wandb_project"):
    meta.setdefault("wandb_id", uuid.uuid4().hex[:12])
  if extend_from:
    meta["extended"] = [*meta.get("extended", []), [extend_from, int(config["train"]["steps"])]]
  return meta


def check_wandb(config: dict[str, Any]) -> None:
  """Raise (before anything is written) if wandb logging is asked for but not installed."""
  project = config.get("train", {}).get("wandb_project", "")
  if not project:
    return
  try:
    import wandb  # noqa: F401
  except ImportError:
    raise ValueError(
      f"train.wandb_project='{project}' needs the wandb package: pip install 'lrm[wandb]' "
      f"(or leave train.wandb_project empty)"
    ) from None


def wandb_run(project: str, workdir: Path, config: dict[str, Any], run_id: str) -> Any:
  """A wandb run logging into ``<workdir>/wandb``; ``run_id`` resumes the same run."""
  import wandb

  (workdir / "wandb").mkdir(parents=True, exist_ok=True)
  return wandb.init(
    project=project,
    name=workdir.name,
    dir=str(workdir),
    config=config,
    id=run_id or None,
    resume="allow",
  )


# ---- profiler: a trace of chosen steps -----------------------------------------------------------
def check_profile_steps(steps: Sequence[int], total: int) -> tuple[int, int] | None:
  """``(a, b)`` or None for ``()``; a ValueError naming the fix otherwise."""
  if not steps:
    return None
  try:
    a, b = (int(s) for s in steps)
  except (TypeError, ValueError):
    a = b = -1
  if not 1 <= a <= b <= total:
    raise ValueError(
      f"train.profile_steps={tuple(steps)!r} must be two steps a,b with 1 <= a <= b <= "
      f"train.steps ({total}), e.g. --config.train.profile_steps=10,12"
    )
  return a, b


class StepTrace:
  """Starts the profiler before step a and stops it once step b has finished."""

  def __init__(self, steps: Sequence[int], total: int, workdir: Path, note: Callable) -> None:
    self.span = check_profile_steps(steps, total)
    self.out, self.note, self.running = workdir / "profile", note, False

  def before(self, step: int) -> None:
    """Called before running ``step`` (1-based)."""
    if self.span is not None and step == self.span[0]:
      jax.profiler.start_trace(str(self.out))
      self.running = True

  def after(self, step: int, state: Any) -> None:
    """Called after ``step``; ``state`` is waited for so the trace holds the whole step."""
    if self.running and step == self.span[1]:
      jax.block_until_ready(state)
      self.stop()
      self.note(f"profiled steps {self.span[0]}-{self.span[1]} into {self.out}")

  def stop(self) -> None:
    if self.running:
      jax.profiler.stop_trace()
      self.running = False
