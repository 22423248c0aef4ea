"""Checkpoints of a run: ``<workdir>/checkpoints/<step>/`` written by orbax.

A checkpoint holds three items:

  model   {"params", "rest"}: the model's parameters and its other variables (dropout RNG
          keys and counts, fixed tables); enough to evaluate.
  train   {"opt", "step", "acc"}: optimizer state, the number of updates done (which is also
          the data position: batches are a pure function of (seed, step)) and the running
          sums of the current logging window.
  meta    JSON: step, config hash, best-so-far validation metrics, elapsed time.

Kept: the newest ``keep`` checkpoints (so the one to resume from is never deleted) and the
best one by the task's main validation metric. Only checkpoints saved right after an
evaluation carry metrics; the others are kept only while they are among the newest. Saves
are atomic (orbax writes ``<step>.orbax-checkpoint-tmp`` and renames it when complete), so
a half-written checkpoint left by a kill is ignored and overwritten later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from lrm.train.rundir import IOFailure

CHECKPOINT_CHOICES = "best, latest or a step number"


class _QuietMissingMetrics(logging.Filter):
  """Periodic (non-evaluation) checkpoints carry no metrics on purpose; orbax warns about
  each one ("Requested `tracked_metric`; did not provide metrics"), which is only noise."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietMissingMetrics())


class Checkpoints:
  """A thin layer over ``ocp.CheckpointManager`` with the policies above."""

  def __init__(self, directory: Path | str, *, keep: int, metric: str, mode: str):
    if mode not in ("max", "min"):
      raise ValueError(f"main_mode must be 'max' or 'min', got '{mode}'")
    self.metric = metric

    def value(metrics: dict) -> float:
      return float(metrics[metric])

    self.manager = ocp.CheckpointManager(
      Path(directory).absolute(),
      options=ocp.CheckpointManagerOptions(
        best_fn=value,  # needed for metrics to be written and for best_step()
        best_mode=mode,
        preservation_policy=cm.AnyPreservationPolicy(
          [
            cm.LatestN(n=max(int(keep), 1)),
            cm.BestN(
              get_metric_fn=value,
              reverse=mode == "min",
              n=1,
              keep_checkpoints_without_metrics=False,
            ),
          ]
        ),
        enable_async_checkpointing=True,
        create=True,
      ),
    )

  def save(self, step: int, *, model: Any, train: Any, meta: dict, metrics: dict | None) -> None:
    """Start an asynchronous save (arrays are copied off the devices before it returns)."""
    self.manager.save(
      step,
      args=ocp.args.Composite(
        model=ocp.args.StandardSave(model),
        train=ocp.args.StandardSave(train),
        meta=ocp.args.JsonSave(meta),
      ),
      metrics=metrics,
      force=True,  # a re-save of the same step (e.g. SIGTERM after a periodic save) replaces it
    )

  def restore(self, step: int, **abstract: Any) -> dict[str, Any]:
    """Restore the named items (``model=``/``train=`` abstract trees) plus ``meta``."""
    args = {k: ocp.args.StandardRestore(v) for k, v in abstract.items()}
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **args))
    return {k: out[k] for k in ("meta", *abstract)}

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The best step among checkpoints with validation metrics (None if there is none)."""
    return self.manager.best_step()

  def metrics(self, step: int) -> dict[str, float] | None:
    """The validation metrics saved with ``step`` (None for a periodic checkpoint)."""
    return self.manager.metrics(step)

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def resolve(self, which: str) -> int:
    """``"best" | "latest" | "<step>"`` -> a saved step, or a one-line error."""
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoints in {self.manager.directory}; train first")
    if which == "latest":
      return self.latest_step()
    if which == "best":
      best = self.best_step()
      if best is None:
        raise ValueError(
          f"no checkpoint in {self.manager.directory} has validation metrics yet; "
          f"use --checkpoint=latest"
        )
      return best
    if not which.isdigit():
      raise ValueError(f"--checkpoint='{which}' is not {CHECKPOINT_CHOICES}")
    if int(which) not in steps:
      raise ValueError(f"no checkpoint at step {which}; saved steps: {steps}")
    return int(which)

  def restore_intact(
    self, step: int, note: Callable[[str], None], run_id: str | None = None, **abstract: Any
  ) -> tuple[int, dict[str, Any]]:
    """Restore ``step``, or on a read error the newest other step that reads; ``note`` says
    which step is damaged and why, in one line each. Raises ``IOFailure`` if none reads.

    ``run_id`` (the workdir's mark): a step whose meta names another run (copied or linked
    from another run directory) is treated as damaged; a step saved before run ids existed
    names none and is accepted."""
    candidates = [step] + sorted((s for s in self.all_steps() if s != step), reverse=True)
    for s in candidates:
      nxt = candidates[candidates.index(s) + 1 :]
      then = f"falling back to step {nxt[0]}" if nxt else "no older checkpoint to fall back to"
      try:
        out = self.restore(s, **abstract)
      except Exception as e:  # orbax/tensorstore raise ValueError, OSError, KeyError ...
        cause = " ".join(str(e).split())[:160] or type(e).__name__
        note(f"checkpoint step {s} in {self.manager.directory} is damaged ({cause}); {then}")
        continue
      theirs = out["meta"].get("run_id") if isinstance(out["meta"], dict) else None
      if run_id is not None and theirs is not None and theirs != run_id:
        note(
          f"checkpoint step {s} in {self.manager.directory} belongs to another run (run id "
          f"{theirs[:8]}, this run {run_id[:8]}); {then}"
        )
        continue
      return s, out
    raise IOFailure(
      f"no intact checkpoint in {self.manager.directory} (tried steps {candidates}); "
      f"restore the folder from a backup, or rerun with --restart to train from scratch"
    )

  def set_aside(self, step: int) -> Path:
    """Move a damaged step out of the way (to ``<workdir>/damaged/``) so it can be saved
    again; its files are kept for inspection, never deleted."""
    src = Path(self.manager.directory) / str(step)
    dest = src.parent.parent / "damaged" / str(step)
    n = 1
    while dest.exists():
      dest, n = dest.with_name(f"{step}.{n}"), n + 1
    dest.parent.mkdir(exist_ok=True)
    src.rename(dest)
    self.manager.reload()
    return dest

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()  # waits for pending saves
