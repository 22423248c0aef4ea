"""What protects a run directory: one writer at a time, exit codes, one-line I/O failures.

* ``WorkdirLock``: an exclusive ``fcntl.flock`` on ``<workdir>/.lock``, held for the life of
  the writing process. The operating system releases it when the process ends, however it
  ends (SIGKILL included), so a stale lock cannot exist; a second writer gets one line naming
  the holder's PID and host.
* Exit codes of the scripts (documented in the README): 0 done (or preempted after a save),
  2 bad input or a refused workdir, 3 diverged, 4 I/O failure (disk full, read-only,
  permission denied, damaged checkpoints with nothing intact to fall back on).
* ``io_failure(e)``: the one-line description of an exception that is really a failed read or
  write (an ``OSError`` with a storage errno, or orbax/tensorstore's wrapped form of one).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

EXIT_OK, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO = 0, 2, 3, 4
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


class WorkdirBusy(RuntimeError):
  """Another process holds the workdir's lock."""


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


def remove_unfinished_saves(workdir: Path | str) -> None:
  """Delete interrupted orbax saves (``*.orbax-checkpoint-tmp``), e.g. after a full disk."""
  import shutil

  for p in (Path(workdir) / "checkpoints").glob("*.orbax-checkpoint-tmp*"):
    shutil.rmtree(p, ignore_errors=True)


def hard_exit(code: int) -> None:
  """Exit now, without the interpreter's shutdown (where a failed background checkpoint
  write would print its tracebacks); every file the run keeps is already closed or atomic."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


class Preemption:
  """SIGTERM -> save and stop. Multi-process runs use JAX's preemption sync point instead,
  so every process stops at the same step (and JAX's own SIGTERM handler stays in place).

  Installed before the run is prepared, so a SIGTERM at any moment is caught: during set-up
  the run stops before training, in the loop it saves and stops, during the final evaluation
  it stops before results.json (a rerun evaluates again). One that nothing acted on is
  delivered again to the previous handler on exit, so it is never swallowed."""

  def __init__(self) -> None:
    self.flag, self.acted, self.old = False, False, None

  def is_set(self) -> bool:
    """A SIGTERM arrived (single process; multi-process runs stop at the sync point)."""
    return self.flag

  def __enter__(self) -> Preemption:
    if jax.process_count() == 1:
      try:
        self.old = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread: cannot install handlers
        self.old = None
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    self.flag = True

  def __exit__(self, *exc: Any) -> None:
    if self.old is not None:
      signal.signal(signal.SIGTERM, self.old)
      if self.flag and not self.acted:
        signal.raise_signal(signal.SIGTERM)

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      self.acted = multihost_utils.reached_preemption_sync_point(step)
    else:
      self.acted = self.flag
    return self.acted


class Interrupted(RuntimeError):
  """A SIGTERM stopped the run where nothing could be saved (set-up, final evaluation)."""
