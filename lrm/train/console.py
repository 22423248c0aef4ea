"""The console of a run: one place for what a researcher sees, and ``<workdir>/train.log``.

Streams: progress and results go to stdout, warnings and errors to stderr (so
``train.py ... 2>/dev/null`` shows the run, and ``>/dev/null`` only what went wrong). Both are
teed into ``train.log`` in the workdir:

  with capture():                      # scripts/train.py, before the run is prepared
    ...                                # lines are kept in memory (the workdir is not ours yet)
    with log_to(workdir / "train.log"):  # the trainer, once it holds the workdir's lock
      start_log()                      # when it writes to the run: earlier and later lines
      ...                              # go to the file (a finished run rerun writes none)

A tqdm bar is drawn on the terminal only (``terminal()``); the log gets the plain line of the
same step instead (``log_only``). ``quiet_libraries`` silences HuggingFace datasets' progress
bars and info logs unless ``--verbose``.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


class _Log:
  """Lines written while capturing: held in memory until a file is attached."""

  def __init__(self) -> None:
    self.pending: list[str] = []
    self.file: TextIO | None = None
    self.failed = False  # the file could not be written (disk full): the log stops there
    self.lock = threading.Lock()

  def write(self, text: str) -> None:
    with self.lock:
      if self.failed:
        return
      if self.file is None:
        self.pending.append(text)
        return
      try:
        self.file.write(text)
        self.file.flush()
      except OSError:  # a full disk must not turn a message into a traceback: stop logging
        self._give_up()

  def attach(self, path: Path, fresh: bool) -> None:
    with self.lock:
      try:
        self.file = path.open("w" if fresh else "a", encoding="utf-8")
        self.file.write("".join(self.pending))
        self.file.flush()
      except OSError:
        self._give_up()
      self.pending = []

  def _give_up(self) -> None:
    self.failed = True
    if self.file is not None:
      with contextlib.suppress(OSError):
        self.file.close()
      self.file = None

  def detach(self) -> None:
    with self.lock:
      if self.file is not None:
        with contextlib.suppress(OSError):
          self.file.close()
        self.file = None


class _Tee(io.TextIOBase):
  """A text stream that writes to ``stream`` and to the log."""

  def __init__(self, stream: TextIO, log: _Log) -> None:
    self.stream, self.log = stream, log

  def write(self, text: str) -> int:
    self.stream.write(text)
    self.log.write(text)
    return len(text)

  def flush(self) -> None:
    self.stream.flush()

  def isatty(self) -> bool:
    return self.stream.isatty()

  def fileno(self) -> int:
    return self.stream.fileno()

  @property
  def encoding(self) -> str:  # type: ignore[override]
    return getattr(self.stream, "encoding", "utf-8")


_active: _Log | None = None
_streams: tuple[TextIO, TextIO] | None = None
_armed: tuple[Path, bool] | None = None  # the file ``start_log`` opens


@contextlib.contextmanager
def capture() -> Iterator[None]:
  """Tee stdout and stderr into a log (see the module docstring); nested calls share one."""
  global _active, _streams
  if _active is not None:
    yield
    return
  log, saved = _Log(), (sys.stdout, sys.stderr)
  _active, _streams = log, saved
  sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)
  try:
    yield
  finally:
    sys.stdout, sys.stderr = saved
    _active, _streams = None, None
    log.detach()


@contextlib.contextmanager
def log_to(path: Path, *, fresh: bool = False) -> Iterator[None]:
  """Inside the block, ``start_log()`` writes the captured lines (earlier ones first) to
  ``path`` (appended unless ``fresh``) and every later one.

  Inside a ``capture()`` an opened file stays attached until that capture ends, so the final
  line (an error printed by the script) lands in it too; otherwise this starts a capture
  of its own for the duration of the block.
  """
  global _armed
  with contextlib.ExitStack() as stack:
    if _active is None:
      stack.enter_context(capture())
    _armed = (path, fresh)
    try:
      yield
    finally:
      _armed = None


def start_log() -> None:
  """Open the file of the enclosing ``log_to`` (once)."""
  if _active is not None and _armed is not None and _active.file is None:
    _active.attach(*_armed)


def terminal(err: bool = False) -> TextIO:
  """The real stdout (or stderr), bypassing the log: for tqdm's redrawn bar."""
  if _streams is not None:
    return _streams[1 if err else 0]
  return sys.stderr if err else sys.stdout


def log_only(text: str) -> None:
  """A line for train.log that the terminal shows differently (as a bar)."""
  if _active is not None:
    _active.write(text + "\n")


def quiet_libraries(*, verbose: bool) -> None:
  """Silence HuggingFace datasets' progress bars ("Generating train split") and info logs."""
  if verbose:
    return
  import datasets

  datasets.disable_progress_bars()
  datasets.logging.set_verbosity_error()
