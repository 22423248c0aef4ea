"""Timing of a run: tokens per second of training, and the time-left estimate.

Throughput leaves out the first step (its time is compilation), evaluation and saving. Time
left counts the training steps still to run at the mean step time so far, the validations
still due and the final test evaluations (final and best checkpoints), each at the fastest
validation measured so far (the first one includes compiling the eval step) or, before the
first, at an estimate from the step time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lrm.train.evaluate import eval_batches


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
