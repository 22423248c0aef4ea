"""Checkpoints of a run: ``<workdir>/checkpoints/<step>/`` written by orbax.

A checkpoint holds three items:

  model   {"params", "rest"}: the model's parameters and its other variables (dropout RNG
          keys and counts, fixed tables); enough to evaluate.
  train   {"opt", "step", "acc"}: optimizer state, the number of updates done (which is also
          the data position: batches are a pure function of (seed, step)) and the running
          sums of the current logging window.
  meta    JSON: step, config hash, the run's id (its mark), best-so-far validation
          metrics, elapsed time.

Every step is sealed as orbax commits it: ``<step>/lrm_manifest.json`` lists the SHA-256 of
each file orbax wrote but its step bookkeeping (``_CHECKPOINT_METADATA``, written after the
seal with the commit time); orbax keeps no content checksums of its own. The seal is written by
orbax's post-finalization callback into the temporary folder just before orbax renames it, so
a committed step carries its seal (if orbax ever renames first, ``wait`` seals the step
after the commit); nothing in a step is rewritten after the commit (tested). A restore
verifies the seal first, so a step whose bytes changed is damaged, as one that fails to read;
a step with no seal (saved by an lrm before seals) restores unverified. A step whose array
shapes differ from this config's is not damaged but another config's: ``restore`` says so
(``ConfigConflict``) and moves nothing.

Kept: the newest ``keep`` checkpoints (so the one to resume from is never deleted) and the
best one by the task's main validation metric. Only checkpoints saved right after an
evaluation carry metrics; the others are kept only while they are among the newest. Saves
are atomic (orbax writes ``<step>.orbax-checkpoint-tmp`` and renames it when complete), so
a half-written checkpoint left by a kill is ignored and overwritten later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers as cm

from lrm.train.rundir import ConfigConflict, IOFailure, write_json

CHECKPOINT_CHOICES = "best, latest or a step number"
MANIFEST = "lrm_manifest.json"  # inside a step: {"sha256": {relative path: hex digest}}
# not sealed: orbax's step bookkeeping, whose commit timestamp orbax writes after the callback
UNSEALED = {MANIFEST, "_CHECKPOINT_METADATA", "commit_success.txt"}


class Damaged(ValueError):
  """A step's files are not the ones that were saved (a digest differs, a file is missing)."""


def _digest(path: Path) -> str:
  h = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def seal(step_dir: Path) -> None:
  """Write ``step_dir``'s manifest: the SHA-256 of every file in it (atomically)."""
  files = sorted(
    p for p in step_dir.rglob("*") if p.is_file() and str(p.relative_to(step_dir)) not in UNSEALED
  )
  digests = {str(p.relative_to(step_dir)): _digest(p) for p in files}
  write_json(step_dir / MANIFEST, {"sha256": digests})


def verify(step_dir: Path) -> bool:
  """Check ``step_dir`` against its manifest; ``False`` when it has none (unverified).
  Raises ``Damaged`` naming the first file that is missing or whose digest differs."""
  path = step_dir / MANIFEST
  if not path.exists():
    return False
  try:
    digests = json.loads(path.read_text())["sha256"]
    assert isinstance(digests, dict) and digests
  except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as e:
    raise Damaged(f"its manifest {MANIFEST} is unreadable ({type(e).__name__})") from None
  for name, want in sorted(digests.items()):
    file = step_dir / name
    if not file.is_file():
      raise Damaged(f"file {name} is missing")
    if _digest(file) != want:
      raise Damaged(f"file {name} changed since it was saved (SHA-256 differs)")
  return True


def _shapes(tree: Any) -> list[tuple[tuple[int, ...], str]]:
  """The sorted (shape, dtype) of a tree's arrays (stored metadata or abstract arrays); a
  typed PRNG key counts as its raw data (``uint32[..., 2]``), as orbax stores it."""

  def raw(x: Any) -> Any:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.eval_shape(jax.random.key_data, x)
    return x

  def is_array(x: Any) -> bool:  # an nnx Variable has a shape too, but wraps its array
    return not isinstance(x, nnx.Variable) and hasattr(x, "shape") and hasattr(x, "dtype")

  leaves = jax.tree.leaves(tree, is_leaf=is_array)
  return sorted((tuple(raw(x).shape), str(raw(x).dtype)) for x in leaves if hasattr(x, "shape"))


def _readable_metrics(step_dir: Path, metric: str) -> bool:
  """Whether ``<step>/metrics/metrics`` is absent (a periodic save) or a JSON object whose
  main metric is a finite number (what orbax's best-step tracking reads)."""
  path = step_dir / "metrics" / "metrics"
  if not path.exists():
    return True
  try:
    value = json.loads(path.read_text())[metric]
    return isinstance(value, (int, float)) and math.isfinite(value)
  except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError):
    return False


def _note(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


class _QuietMissingMetrics(logging.Filter):
  """Periodic (non-evaluation) checkpoints carry no metrics on purpose; orbax warns about
  each one ("Requested `tracked_metric`; did not provide metrics"), which is only noise."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietMissingMetrics())


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, reading no metrics of the steps in ``unreadable`` (their metrics file is
  damaged; orbax would fail at start for every step): they are no candidates for best."""

  def __init__(self, *args: Any, unreadable: set[int], **kwargs: Any) -> None:
    self.unreadable = unreadable
    super().__init__(*args, **kwargs)

  def _get_metrics(self, step: int) -> Any:
    return None if step in self.unreadable else super()._get_metrics(step)


class Checkpoints:
  """A thin layer over ``ocp.CheckpointManager`` with the policies above.

  ``writer``: this process writes the run (training's lead process). A step whose metrics file
  is damaged is then set aside at once, before orbax reads it; a reader (evaluation) leaves
  it in place, says so, and never picks it as the best step."""

  def __init__(
    self,
    directory: Path | str,
    *,
    keep: int,
    metric: str,
    mode: str,
    writer: bool = False,
    note: Callable[[str], None] = _note,
  ):
    if mode not in ("max", "min"):
      raise ValueError(f"main_mode must be 'max' or 'min', got '{mode}'")
    self.metric = metric
    self.writer = writer
    self._unsealed: set[int] = set()  # steps saved by this process that may lack a seal
    self._saving: int | None = None  # the step of the save in flight
    directory = Path(directory).absolute()
    unreadable: set[int] = set()
    steps = [p for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    for p in sorted(steps, key=lambda p: int(p.name)):
      if p.is_dir() and not _readable_metrics(p, metric):
        if writer:
          note(
            f"checkpoint step {p.name} in {directory} is damaged (its file metrics/metrics "
            f"is not a JSON object with a number '{metric}'); moved to {_move_aside(p)}"
          )
        else:
          unreadable.add(int(p.name))
          note(
            f"checkpoint step {p.name} in {directory} has a damaged metrics/metrics file; it "
            f"is never taken as the best step (training sets it aside at its next start)"
          )

    def value(metrics: dict) -> float:
      return float(metrics[metric])

    self.manager = _Manager(
      directory,
      unreadable=unreadable,
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
        async_options=ocp.AsyncOptions(post_finalization_callback=self._seal_committing),
        create=True,
      ),
    )

  def save(self, step: int, *, model: Any, train: Any, meta: dict, metrics: dict | None) -> None:
    """Start an asynchronous save (arrays are copied off the devices before it returns); the
    previous save is committed and sealed first."""
    self.wait()
    self._unsealed.add(step)
    self._saving = step
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

  def step_dir(self, step: int) -> Path:
    return Path(self.manager.directory) / str(step)

  def restore(self, step: int, **abstract: Any) -> dict[str, Any]:
    """Restore the named items (``model=``/``train=`` abstract trees) plus ``meta``, after
    verifying the step's seal (``Damaged``). Arrays of other shapes than ``abstract``'s raise
    ``ConfigConflict``: the step was saved by a model of another config."""
    verify(self.step_dir(step))
    for item, tree in abstract.items():  # before any read: orbax leaves failed reads behind
      self._check_shapes(step, item, tree)
    args = {k: ocp.args.StandardRestore(v) for k, v in abstract.items()}
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **args))
    return {k: out[k] for k in ("meta", *abstract)}

  def _check_shapes(self, step: int, item: str, tree: Any) -> None:
    """Raise ``ConfigConflict`` if ``item`` of ``step`` stores arrays of other shapes."""
    try:
      absl = logging.getLogger("absl")
      level, absl.level = absl.level, logging.ERROR  # "no _CHECKPOINT_METADATA" is noise here
      try:
        stored = ocp.StandardCheckpointer().metadata(self.step_dir(step) / item).item_metadata
      finally:
        absl.level = level
      stored = _shapes(stored.tree if hasattr(stored, "tree") else stored)
    except Exception:  # unreadable metadata: damage, which the caller reports
      return
    want = _shapes(tree)
    if stored and stored != want:
      only_stored, only_here = Counter(stored) - Counter(want), Counter(want) - Counter(stored)
      shown = "; ".join(
        f"{what} {', '.join(f'{d}{list(shape)}' for shape, d in sorted(c)[:3])}"
        for what, c in (("only stored:", only_stored), ("only in this config:", only_here))
        if c
      )
      shown = f" ({len(stored)} arrays stored, {len(want)} in this config; {shown})"
      raise ConfigConflict(
        f"checkpoint step {step} in {self.manager.directory} holds a model of another config"
        f"{shown}: this workdir holds a run of another config; use another --workdir, or "
        f"--restart to train from scratch"
      )

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
      except ConfigConflict:
        raise
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
    dest = _move_aside(self.step_dir(step))
    self.manager.reload()
    return dest

  def _seal_committing(self) -> None:
    """Orbax's post-finalization callback (its background thread): seal the save in flight
    inside its temporary folder, which orbax renames to ``<step>`` next."""
    if jax.process_index() != 0 or self._saving is None:
      return
    tmp = list(Path(self.manager.directory).glob(f"{self._saving}.orbax-checkpoint-tmp*"))
    if len(tmp) == 1 and tmp[0].is_dir():
      try:
        seal(tmp[0])
      except OSError:  # e.g. a full disk: the save itself reports it; wait() tries again
        pass

  def wait(self) -> None:
    """Wait for the pending save to commit; seal any step saved here that lacks a seal."""
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      for step in sorted(self._unsealed):
        d = self.step_dir(step)
        if d.is_dir() and not (d / MANIFEST).exists():  # (the keep policy may have deleted it)
          seal(d)
    self._unsealed.clear()

  def close(self) -> None:
    """Commit the pending save, then stop orbax's threads even if that commit failed (a full
    disk): a thread left running could still write a temporary folder after its removal."""
    try:
      self.wait()
    finally:
      self.manager.close()


def _move_aside(src: Path) -> Path:
  """``<workdir>/checkpoints/<step>`` -> ``<workdir>/damaged/<step>[.n]`` (never overwritten)."""
  dest = src.parent.parent / "damaged" / src.name
  n = 1
  while dest.exists():
    dest, n = dest.with_name(f"{src.name}.{n}"), n + 1
  dest.parent.mkdir(exist_ok=True)
  src.rename(dest)
  return dest
