"""``train.profile_steps=(a, b)``: a ``jax.profiler`` trace of training steps a..b.

The trace goes to ``<workdir>/profile/plugins/profile/<time>/`` (``*.xplane.pb`` and a
Chrome-trace ``*.trace.json.gz``), the layout TensorBoard's profile plugin (``tensorboard
--logdir <workdir>/profile``) and Perfetto (ui.perfetto.dev, the ``.trace.json.gz``) read;
see https://docs.jax.dev/en/latest/profiling.html. Steps count from 1 as printed; a run
resumed after step a traces nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax


def check(steps: Sequence[int], total: int) -> tuple[int, int] | None:
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
    self.span = check(steps, total)
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
