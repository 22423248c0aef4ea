"""The run directory: what a run writes, the rule that protects it, and how a run stops.

Layout of ``<workdir>/``::

  lrm_run.json         the mark of an lrm run (lrm version, config hash), its first file
  config.json          the resolved config (all overrides applied); its hash names the run
  vocab.json           the task's vocabulary (token ids), so a checkpoint reloads with the same ids
  checkpoints/<step>/  orbax checkpoints (see lrm/train/checkpoint.py)
  metrics.jsonl        one JSON record per log/eval event: {"step", "split", metrics...}
  tensorboard/         TensorBoard event files (same numbers as metrics.jsonl)
  plots/curves.png     learning curves, drawn at the end
  results.json         best and final metrics, cost (params, FLOPs/token), speed, versions
  train.log            the console output of every attempt (appended on resume; --restart
                       starts it afresh when the trainer opens it, so wipe() leaves it)
  profile/             a profiler trace, when ``train.profile_steps`` asks for one
  wandb/               Weights & Biases files, when ``train.wandb_project`` names a project
  damaged/<step>/      checkpoints that failed to restore, set aside (never deleted silently)
  .lock                held by the one process that writes this directory
  eval_<split>_<checkpoint>.json   written by scripts/evaluate.py

Rule: rerunning with the same config resumes. A different config is refused with the list
of differing keys, unless ``restart`` is set, which deletes the files above (and nothing
else in the folder; never ``damaged/``) and starts over. ``restart`` deletes only in a folder
marked as an lrm run (``lrm_run.json``, or a run written before the mark existed: a
config.json of lrm's shape beside checkpoints or metrics), never through a symbolic link, and
refuses with one line otherwise. An empty or ``.`` workdir, the current folder, the home
folder, ``/`` and the repository root are refused as workdirs (``check_workdir_path``).

What protects it:

* ``WorkdirLock``: an exclusive ``fcntl.flock`` on ``<workdir>/.lock``, held for the life of
  the writing process. The operating system releases it when the process ends, however it
  ends (SIGKILL included), so a stale lock cannot exist; a second writer gets one line naming
  the holder's PID and host.
* ``Preemption``: SIGTERM -> save and stop (``Interrupted`` where nothing could be saved).
* Exit codes of the scripts (documented in the README): 0 done (or preempted after a save),
  2 bad input or a refused workdir, 3 diverged, 4 I/O failure (disk full, read-only,
  permission denied, damaged checkpoints with nothing intact to fall back on).
* ``io_failure(e)``: the one-line description of an exception that is really a failed read or
  write (an ``OSError`` with a storage errno, or orbax/tensorstore's wrapped form of one).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

RUN_FILES = ("config.json", "vocab.json", "metrics.jsonl", "results.json")
RUN_DIRS = ("checkpoints", "tensorboard", "plots", "profile", "wandb")  # restart deletes these
KEPT_DIRS = ("damaged",)  # set-aside checkpoints: never deleted by lrm
MARKER = "lrm_run.json"
CONFIG_SECTIONS = ("seed", "task", "data", "model", "optim", "train")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "datasets", "numpy")

EXIT_OK, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO = 0, 2, 3, 4
EXIT_CTRL_C = 130  # stopped by Ctrl-C (after a save when one was due: rerun to resume)
IO_ERRNOS = {
  errno.ENOSPC: "no space left on device",
  errno.EDQUOT: "disk quota exceeded",
  errno.EROFS: "read-only file system",
  errno.EACCES: "permission denied",
  errno.EPERM: "operation not permitted",
  errno.EFBIG: "file too large",
  errno.EIO: "input/output error",
}
# How tensorstore (under orbax) words the same failures inside a ValueError.
IO_MARKERS = {
  "No space left on device": "no space left on device",
  "Disk quota exceeded": "disk quota exceeded",
  "Read-only file system": "read-only file system",
  "Permission denied": "permission denied",
  "File too large": "file too large",
}


# ---- the run's files and the rule ----------------------------------------------------------------
class ConfigConflict(ValueError):
  """The workdir holds a run with a different config."""


def config_to_dict(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """Plain JSON-able dict (tuples become lists), so saved and new configs compare equal."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return json.loads(json.dumps(config, sort_keys=True))


def config_hash(config: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix: d}
  out: dict[str, Any] = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return {k.rstrip("."): v for k, v in out.items()}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """``["train.lr: 0.001 -> 0.002", ...]`` for every leaf that differs."""
  a, b = _flatten(old), _flatten(new)
  return [
    f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}"
    for k in sorted(a.keys() | b.keys())
    if a.get(k, "<unset>") != b.get(k, "<unset>")
  ]


def keys_added_at_default(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Keys that a config saved by an older lrm lacks and that the new config leaves at lrm's
  default (``lrm.config.base_config`` and the task's constructor defaults): an option added
  later keeps the old behaviour at its default, so it must not make the run look different.
  Mixer options are never in this list: a mixer's defaults may change what it computes."""
  from lrm.config import base_config, task_options

  defaults = _flatten({**base_config().to_dict(), "data": task_options(str(new.get("task", "")))})
  defaults = _flatten(json.loads(json.dumps(defaults)))  # tuples -> lists, as saved
  a, b = _flatten(old), _flatten(new)
  return sorted(
    k
    for k in b.keys() - a.keys()
    if not k.startswith("model.mixer") and k in defaults and defaults[k] == b[k]
  )


def holds_a_run(workdir: Path) -> bool:
  """Whether ``workdir`` holds anything a run wrote (checkpoints, metrics or results)."""
  ckpts = workdir / "checkpoints"
  return any((workdir / n).exists() for n in ("metrics.jsonl", "results.json")) or (
    ckpts.is_dir() and any(ckpts.iterdir())
  )


def check_workdir(workdir: Path, config: dict[str, Any], *, restart: bool) -> bool:
  """Decide how to use ``workdir``; True when it holds this run already (resume).

  Raises ``ConfigConflict`` (nothing touched) when the saved config differs, does not parse,
  or is missing next to a previous run's files, unless ``restart``.
  """
  saved = workdir / "config.json"
  if restart:
    return False
  if not saved.exists():
    if holds_a_run(workdir):
      raise ConfigConflict(
        f"{workdir} holds checkpoints or metrics but no config.json, so it cannot tell which "
        f"run they belong to; restore {saved}, or add --restart to delete that run and start over"
      )
    return False
  try:
    old = json.loads(saved.read_text())
    if not isinstance(old, dict):
      raise ValueError("not a JSON object")
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigConflict(
      f"{saved} does not parse ({' '.join(str(e).split())}); restore it, or add --restart to "
      f"delete that run and start over"
    ) from None
  old = with_run_options(old)
  diff = config_diff(old, config)
  added = keys_added_at_default(old, config)
  if added:
    print(
      f"note: {saved} predates the keys {', '.join(added)}; they are at their defaults, "
      f"which keep the old behaviour, so the run resumes",
      file=sys.stderr,
      flush=True,
    )
    diff = [d for d in diff if d.split(":", 1)[0] not in added]
  if diff:
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    raise ConfigConflict(
      f"{workdir} holds a run with a different config ({shown}); use another --workdir, "
      f"or add --restart to delete that run and start over"
    )
  return True


def read_json_or_none(path: Path, note: Any = print) -> Any:
  """A derived JSON file, or None (with a note naming it) if it is missing or does not parse:
  such files are rebuilt from the checkpoints and the task, never trusted when damaged."""
  if not path.exists():
    return None
  if path.is_dir():  # not lrm's file: never rebuilt over (``check_layout`` refuses it too)
    raise ConfigConflict(f"{path} is a folder, where lrm keeps a JSON file; move it away")
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    note(f"warning: {path} does not parse ({' '.join(str(e).split())[:80]}); rebuilt instead")
    return None


def check_workdir_path(workdir: str | Path) -> Path:
  """``workdir`` as a Path, or a one-line ``ConfigConflict`` when it cannot be a run's own
  folder: empty or ``.`` (e.g. an unset shell variable), the current folder, the home folder,
  ``/``, the repository root, a file, a dangling symbolic link or a symlink loop."""
  text = str(workdir).strip()
  fix = "give the run a folder of its own, e.g. --workdir=runs/<name>"
  if not text or text in (".", "./"):
    raise ConfigConflict(f"--workdir is empty or '.' (the current folder); {fix}")
  path = Path(text).expanduser()
  try:
    resolved = path.resolve(strict=False)
    exists = path.exists()
  except (OSError, RuntimeError):
    raise ConfigConflict(f"--workdir={text} is a symbolic link loop; {fix}") from None
  repo = Path(__file__).resolve().parents[2]
  named = {
    Path.cwd().resolve(): "the current folder",
    Path.home().resolve(): "the home folder",
    Path("/"): "the root folder",
  }
  if (repo / "pyproject.toml").exists():
    named.setdefault(repo, "the repository root")
  if resolved in named:
    raise ConfigConflict(f"--workdir={text} is {named[resolved]}; {fix}")
  if path.is_symlink() and not exists:
    raise ConfigConflict(f"--workdir={text} is a symbolic link to nothing; {fix}")
  if exists and not path.is_dir():
    raise ConfigConflict(f"--workdir={text} is a file, not a folder; {fix}")
  for parent in path.parents:  # a folder under a file cannot be made
    if parent.exists() and not parent.is_dir():
      raise ConfigConflict(f"--workdir={text} lies under the file {parent}; {fix}")
  if exists:
    check_layout(path)
  return path


def check_layout(workdir: Path) -> None:
  """A one-line ``ConfigConflict`` if a name the run writes holds the other kind of entry (a
  file ``plots`` or ``tensorboard``, a folder ``vocab.json``): writing there would fail
  half-way, after other files were written, so it is refused before anything is."""
  fix = "move it away, or use another --workdir"
  for name in (*RUN_DIRS, *KEPT_DIRS):
    p = workdir / name
    if p.exists() and not p.is_dir():
      raise ConfigConflict(f"{p} is a file, but lrm writes its {name}/ folder there; {fix}")
  for name in (*RUN_FILES, MARKER, "train.log", ".lock"):
    if (workdir / name).is_dir():
      raise ConfigConflict(f"{workdir / name} is a folder, but lrm writes a file there; {fix}")


def is_lrm_run(workdir: Path) -> bool:
  """Whether lrm marked ``workdir`` as its run (``lrm_run.json``), or it is a run written
  before the mark existed: a config.json with lrm's sections beside checkpoints or metrics."""
  if (workdir / MARKER).is_file():
    return True
  try:
    saved = json.loads((workdir / "config.json").read_text())
  except (OSError, ValueError, UnicodeDecodeError):
    return False
  if not isinstance(saved, dict) or not all(k in saved for k in CONFIG_SECTIONS):
    return False
  return (workdir / "checkpoints").is_dir() or (workdir / "metrics.jsonl").is_file()


def written_by_a_run(workdir: Path) -> list[Path]:
  """What ``wipe`` would delete in ``workdir``: a run's files and folders that exist."""
  names = [*RUN_FILES, *RUN_DIRS, MARKER]
  found = [workdir / n for n in names if (workdir / n).exists() or (workdir / n).is_symlink()]
  return found + sorted(workdir.glob("eval_*.json"))


def check_restart(workdir: Path) -> None:
  """Raise a one-line ``ConfigConflict`` unless ``--restart`` may delete in ``workdir``."""
  if not workdir.is_dir():
    return
  found = written_by_a_run(workdir)
  if not found:
    return
  links = [p.name for p in found if p.is_symlink()]
  if links:
    raise ConfigConflict(
      f"--restart: {workdir}/{links[0]} is a symbolic link, and lrm does not delete through "
      f"links it did not create; remove the link yourself, or use another --workdir"
    )
  if not is_lrm_run(workdir):
    names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
    raise ConfigConflict(
      f"--restart: {workdir} is not an lrm run (no {MARKER}), and lrm deletes only inside "
      f"its own runs; it holds {names}; use another --workdir"
    )


def mark(workdir: Path, config: dict[str, Any]) -> None:
  """Mark ``workdir`` as an lrm run (``lrm_run.json``: lrm version, config hash and a random
  run id that every checkpoint of the run records), the first file the run writes."""
  if run_id(workdir) is not None:
    return
  import uuid

  from lrm import __version__

  ident = {"lrm": __version__, "config_hash": config_hash(config), "run_id": uuid.uuid4().hex}
  write_json(workdir / MARKER, ident)


def run_id(workdir: Path | None) -> str | None:
  """The run id in ``workdir``'s mark (None: no readable mark, e.g. a run made before it)."""
  if workdir is None:
    return None
  try:
    ident = json.loads((Path(workdir) / MARKER).read_text())
  except (OSError, ValueError, UnicodeDecodeError):
    return None
  return ident.get("run_id") if isinstance(ident, dict) else None


def wipe(workdir: Path) -> None:
  """Delete a previous run's files (only those listed above) for ``--restart``; never
  ``damaged/``. ``check_restart`` has said the folder is an lrm run with no links among them."""
  for name in (*RUN_FILES, MARKER):
    (workdir / name).unlink(missing_ok=True)
  for p in workdir.glob("eval_*.json"):
    p.unlink()
  for name in RUN_DIRS:
    shutil.rmtree(workdir / name, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
  """Atomic write: a temporary file beside ``path``, then a rename, so a reader (or a kill
  at any moment) sees the old file or the new one, never half of either."""
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
  """Atomic write of ``obj`` as indented JSON (``write_text``)."""
  write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def with_run_options(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config with the run-level mixer options written in (``lrm.mixers.
  with_run_options``). A config.json written before they were explicit (rotary positions were
  injected by the encoder) describes the same run once they are: compare it after this."""
  from lrm import mixers

  model = saved.get("model")
  if not isinstance(model, dict) or "mixer" not in model or "seed" not in saved:
    return saved
  out = json.loads(json.dumps(saved))
  try:
    out["model"]["mixer"] = mixers.with_run_options(
      model["mixer"], seed=int(saved["seed"]), rotary=model.get("positions") == "rotary"
    )
  except (TypeError, ValueError, AttributeError):
    return saved  # malformed: the comparison names the difference
  return out


RESULT_KEYS = {  # results.json: the keys the closing lines and the studies read
  "main_metric": str,
  "final": dict,
  "best": dict,
  "params": int,
  "tokens_per_s": (int, float),
  "wall_time_s": (int, float),
  "config_hash": str,
}


def valid_results(results: Any, config_hash_now: str | None = None) -> bool:
  """Whether ``results`` (a parsed results.json) has every key lrm reads, of the right type,
  with final and best test metrics, and (given ``config_hash_now``) was written for this
  config. One that does not is rebuilt from the checkpoints, never trusted."""
  if not isinstance(results, dict):
    return False
  for key, kind in RESULT_KEYS.items():
    if not isinstance(results.get(key), kind) or isinstance(results.get(key), bool):
      return False
  for part in ("final", "best"):
    for split in ("validation", "test"):
      if not isinstance(results[part].get(split), dict):
        return False
      if results["main_metric"] not in results[part][split]:
        return False
    if "step" not in results[part]:
      return False
  return config_hash_now is None or results["config_hash"] == config_hash_now


def read_json(path: Path) -> Any:
  return json.loads(Path(path).read_text())


def load_config(workdir: Path) -> ml_collections.ConfigDict:
  path = workdir / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found; --workdir must be a run directory made by train.py")
  try:
    saved = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} does not parse ({' '.join(str(e).split())}); restore it") from None
  if not isinstance(saved, dict):
    raise ValueError(f"{path} holds a {type(saved).__name__}, not a config; restore it")
  from lrm.config import validate

  validate(saved, source=path)  # a value lrm cannot run: named with the file, not a flag
  return ml_collections.ConfigDict(saved)


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


# ---- one writer at a time ------------------------------------------------------------------------
class WorkdirBusy(RuntimeError):
  """Another process holds the workdir's lock."""


class WorkdirLock:
  """``with WorkdirLock(workdir):`` -- exclusive for the process's lifetime (see above)."""

  def __init__(self, workdir: Path | str) -> None:
    self.path = Path(workdir) / ".lock"
    self.fd: int | None = None

  def acquire(self) -> WorkdirLock:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors="replace").split()
      os.close(fd)
      who = f"PID {holder[0]} on host {holder[1]}" if len(holder) >= 2 else "another process"
      raise WorkdirBusy(
        f"{self.path.parent} is being written by {who}; wait for it to finish (or stop it), "
        f"or use another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    self.fd = fd
    return self

  def release(self) -> None:
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc: object) -> None:
    self.release()


def remove_unfinished_saves(workdir: Path | str, tries: int = 5) -> None:
  """Delete interrupted orbax saves (``*.orbax-checkpoint-tmp``), e.g. after a full disk. A
  removal that races a file still being closed is tried again (``tries`` times, 0.1 s apart)."""
  for attempt in range(tries):
    if attempt:
      time.sleep(0.1)
    left = list((Path(workdir) / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
    if not left:
      return
    for p in left:
      shutil.rmtree(p, ignore_errors=True)


# ---- stopping: SIGTERM ---------------------------------------------------------------------------
class Preemption:
  """SIGTERM, or a first Ctrl-C (SIGINT) -> save and stop; a second Ctrl-C stops at once
  (one line, exit 130; an unfinished save is removed by the rerun). Multi-process
  runs use JAX's preemption sync point instead, so every process stops at the same step (and
  JAX's own SIGTERM handler stays in place).

  Installed before the run is prepared, so a SIGTERM at any moment is caught: during set-up
  the run stops before training, in the loop it saves and stops, during the final evaluation
  it stops before results.json (a rerun evaluates again). One that nothing acted on is
  delivered again to the previous handler on exit, so it is never swallowed."""

  def __init__(self) -> None:
    self.flag, self.acted, self.old, self.old_int = False, False, None, None
    self.signum = signal.SIGTERM  # the signal that asked to stop

  def is_set(self) -> bool:
    """A SIGTERM arrived (single process; multi-process runs stop at the sync point)."""
    return self.flag

  def __enter__(self) -> Preemption:
    if jax.process_count() == 1:
      try:
        self.old = signal.signal(signal.SIGTERM, self._handle)
        self.old_int = signal.signal(signal.SIGINT, self._handle)
      except ValueError:  # not the main thread: cannot install handlers
        self.old = None
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    if signum == signal.SIGINT:
      if self.flag:  # a second Ctrl-C: the user does not want to wait for the save
        print("stopped by Ctrl-C; rerun the same command to resume", file=sys.stderr)
        hard_exit(EXIT_CTRL_C)  # an unfinished save is set aside by the rerun
      print(
        "Ctrl-C: saving at the next step, then stopping (Ctrl-C again to stop at once)",
        file=sys.stderr,
        flush=True,
      )
    self.flag, self.signum = True, signum

  @property
  def by_ctrl_c(self) -> bool:
    return self.flag and self.signum == signal.SIGINT

  def __exit__(self, *exc: Any) -> None:
    if self.old is not None:
      signal.signal(signal.SIGTERM, self.old)
      signal.signal(signal.SIGINT, self.old_int)
      if self.flag and not self.acted and self.signum == signal.SIGTERM:
        signal.raise_signal(signal.SIGTERM)

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      self.acted = multihost_utils.reached_preemption_sync_point(step)
    else:
      self.acted = self.flag
    return self.acted


class Interrupted(RuntimeError):
  """A SIGTERM stopped the run where nothing could be saved (set-up, final evaluation)."""


# ---- failures: one line each, exit codes ---------------------------------------------------------
class IOFailure(RuntimeError):
  """A read or write of the run directory failed (exit code 4); the message is one line."""


def io_failure(e: BaseException) -> str | None:
  """``"<path>: <cause>"`` if ``e`` (or its cause chain) is a storage failure, else None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in IO_ERRNOS:
      where = f"{e.filename}: " if e.filename else ""
      return f"{where}{IO_ERRNOS[e.errno]}"
    text = str(e)
    for marker, cause in IO_MARKERS.items():
      if marker in text:
        path = text.split('local file "', 1)[1].split('"', 1)[0] if 'local file "' in text else ""
        return f"{path}: {cause}" if path else cause
    e = e.__cause__ or e.__context__
  return None


def _orphaned_storage_read(record: logging.LogRecord, exc: BaseException | None) -> bool:
  """asyncio's "Task exception was never retrieved" for a tensorstore read: orbax abandons the
  other reads of a checkpoint once one fails, and the restore fallback has already reported
  that step as damaged in one line (the record appears whenever the task is collected)."""
  return (
    exc is not None
    and "exception was never retrieved" in record.getMessage()
    and "tensorstore" in str(exc)
  )


class _ReportedElsewhere(logging.Filter):
  """Orbax's background threads log every failed write as an ERROR with a traceback; the
  scripts report the same failure once, in one line, so those records are dropped."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if any(m in record.getMessage() for m in IO_MARKERS):
      return False
    exc = record.exc_info[1] if record.exc_info else None
    if _orphaned_storage_read(record, exc):
      return False
    return exc is None or io_failure(exc) is None


def quiet_storage_noise() -> None:
  """Drop library log records and shutdown noise that repeat a failure already reported."""
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_ReportedElsewhere())
  default = sys.unraisablehook

  def hook(unraisable: sys.UnraisableHookArgs) -> None:
    # tensorstore callbacks that fire after a failed read/write find asyncio's loop closed
    if "Event loop is closed" not in str(unraisable.exc_value):
      default(unraisable)

  sys.unraisablehook = hook


def hard_exit(code: int) -> None:
  """Exit now, without the interpreter's shutdown (where a failed background checkpoint
  write would print its tracebacks); every file the run keeps is already closed or atomic."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
