"""What a run reports: metrics.jsonl, TensorBoard events, progress lines and curve plots.

Only process 0 writes (``active=False`` elsewhere). On resume, records after the resumed
step are dropped from metrics.jsonl and TensorBoard is told to purge them (``purge_step``),
so a run that was killed and resumed leaves the same record as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  s = int(seconds)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fmt(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


class Monitor:
  """Process 0's reporter. On a terminal, progress is a tqdm bar whose postfix holds the
  latest metrics; otherwise (logs, CI, tests) one plain line per logging step."""

  def __init__(self, workdir: Path, *, total_steps: int, start_step: int, active: bool = True):
    self.workdir, self.total, self.active = workdir, total_steps, active
    self.path = workdir / "metrics.jsonl"
    self.writer = self.bar = None
    if not active:
      return
    if sys.stdout.isatty():
      from tqdm import tqdm

      self.bar = tqdm(
        total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stdout
      )
    self._truncate(start_step)
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it

    self.writer = SummaryWriter(
      str(workdir / "tensorboard"), purge_step=start_step + 1 if start_step else None
    )

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
          print(f"warning: {self.path}:{n} is not a metrics record; dropped", file=sys.stderr)
        continue
      if step <= start_step and split != "test":  # test is logged by the end
        keep.append(line)
    self.path.write_text("".join(f"{line}\n" for line in keep))

  def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
    """One record to metrics.jsonl and TensorBoard (``<split>/<name>``)."""
    if not self.active:
      return
    rec = {"step": int(step), "split": split, **{k: _jsonable(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(rec) + "\n")
    for k, v in metrics.items():
      if isinstance(v, int | float) and math.isfinite(v):
        self.writer.add_scalar(f"{split}/{k}", v, step)
    self.writer.flush()

  def progress(self, step: int, metrics: dict[str, float], sec_per_step: float) -> None:
    """``step 120/1000 | loss 0.69 | accuracy 0.51 | 12.3k tok/s | 0:01:02 left``."""
    if not self.active:
      return
    shown = " | ".join(
      f"{k} {_fmt(v)}" for k, v in metrics.items() if k not in ("tokens_per_s", "lr", "step_s")
    )
    tps = metrics.get("tokens_per_s", float("nan"))
    if self.bar is not None:  # tqdm shows the step, rate and time left itself
      self.bar.update(step - self.bar.n)
      self.bar.set_postfix_str(f"{shown} | {tps / 1e3:.1f}k tok/s", refresh=True)
      return
    left = _fmt_time((self.total - step) * sec_per_step)
    print(f"step {step}/{self.total} | {shown} | {tps / 1e3:.1f}k tok/s | {left} left", flush=True)

  def message(self, text: str) -> None:
    if not self.active:
      return
    if self.bar is not None:
      self.bar.write(text, file=sys.stderr)
    else:
      print(text, file=sys.stderr, flush=True)

  def records(self) -> list[dict[str, Any]]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line]

  def plot(self, main_metric: str) -> Path | None:
    """Draw training loss and validation metrics against step into plots/curves.png."""
    if not self.active:
      return None
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    recs = self.records()
    panels = [("train", "loss"), ("validation", "loss"), ("validation", main_metric)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    for ax, (split, key) in zip(axes, panels, strict=True):
      pts = [(r["step"], r[key]) for r in recs if r["split"] == split and key in r]
      if pts:
        x, y = np.array(pts, dtype=float).T
        ax.plot(x, y, marker="." if len(x) < 30 else None)
      ax.set_title(f"{split} {key}")
      ax.set_xlabel("step")
      ax.grid(alpha=0.3)
    fig.tight_layout()
    out = self.workdir / "plots" / "curves.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None
    if self.writer is not None:
      self.writer.close()


def _jsonable(v: Any) -> Any:
  if isinstance(v, np.generic):
    return v.item()
  return v


class Throughput:
  """Tokens per second of training only: time spent evaluating or saving is paused out.

  Windows end at each log (where the host waits for the devices anyway); totals add up the
  windows for results.json.
  """

  def __init__(self) -> None:
    self.total_time, self.total_tokens = 0.0, 0
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
    """Close the window: ``(tokens per second, seconds per step)``."""
    dt = max(time.perf_counter() - self.start - self.paused_s, 1e-9)
    self.total_time += dt
    self.total_tokens += self.tokens
    rate, per_step = self.tokens / dt, dt / max(self.steps, 1)
    self.restart()
    return rate, per_step
