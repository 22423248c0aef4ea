"""Where offline (generated) data lives when a config leaves ``data.path`` empty.

Generated data is written once, atomically (temporary folder + rename), under
``$LRM_DATA_CACHE`` (default ``~/.cache/lrm``) in a folder named by the task and a hash of
the generator's arguments, then read back through the task's ordinary loader.

A ``$LRM_DATA_CACHE`` that is a file is bad input (``DataError``, exit code 2); a cache that
cannot be written (permission denied, read-only, full) is an I/O failure
(``lrm.train.rundir.IOFailure``, exit code 4); both are one line naming the variable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrm.data import DataError

ENV = "LRM_DATA_CACHE"
FIX = f"point {ENV} at a folder you can write (unset: ~/.cache/lrm)"


def cache_root() -> Path:
  """``$LRM_DATA_CACHE`` (default ``~/.cache/lrm``); a ``DataError`` if it, or a folder above
  it, is a file."""
  root = Path(os.environ.get(ENV, Path.home() / ".cache" / "lrm")).expanduser()
  for p in (root, *root.parents):
    try:
      is_file = p.exists() and not p.is_dir()
    except OSError as e:  # a folder above it that may not be read
      raise _unwritable(root, e) from None
    if is_file:
      what = "is a file" if p == root else f"lies under the file {p}"
      raise DataError(f"{ENV}={root} {what}, not a folder; {FIX}")
  return root


def _unwritable(root: Path, e: OSError) -> Exception:
  """The one-line error for a failed write under the cache (``IOFailure``: exit code 4)."""
  from lrm.train.rundir import IOFailure, io_failure

  cause = io_failure(e) or f"{e.filename or root}: {e.strerror or e}"
  return IOFailure(f"{ENV}={root} cannot be written ({cause}); {FIX}")


def generated(task: str, params: dict[str, Any], write: Callable[[Path], None]) -> Path:
  """Return the folder holding ``task``'s data generated with ``params``, writing it once.

  ``write(folder)`` must fill ``folder`` in the task's official on-disk format.
  """
  key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  root = cache_root()
  out = root / "generated" / f"{task}-{key}"
  try:
    if (out / "_DONE").exists():
      return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{task}-", dir=out.parent))
  except OSError as e:
    raise _unwritable(root, e) from None
  try:
    write(tmp)
    (tmp / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True))
    (tmp / "_DONE").write_text("ok\n")
    try:
      tmp.rename(out)
    except OSError:  # another process finished first: keep theirs
      if not (out / "_DONE").exists():
        raise
  except OSError as e:
    raise _unwritable(root, e) from None
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out
