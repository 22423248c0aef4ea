"""Where offline (generated) data lives when a config leaves ``data.path`` empty.

Generated data is written once, atomically (temporary folder + rename), under
``$LRM_DATA_CACHE`` (default ``~/.cache/lrm``) in a folder named by the task and a hash of
the generator's arguments, then read back through the task's ordinary loader.
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


def cache_root() -> Path:
  return Path(os.environ.get("LRM_DATA_CACHE", Path.home() / ".cache" / "lrm"))


def generated(task: str, params: dict[str, Any], write: Callable[[Path], None]) -> Path:
  """Return the folder holding ``task``'s data generated with ``params``, writing it once.

  ``write(folder)`` must fill ``folder`` in the task's official on-disk format.
  """
  key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  out = cache_root() / "generated" / f"{task}-{key}"
  if (out / "_DONE").exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{task}-", dir=out.parent))
  try:
    write(tmp)
    (tmp / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True))
    (tmp / "_DONE").write_text("ok\n")
    try:
      tmp.rename(out)
    except OSError:  # another process finished first: keep theirs
      if not (out / "_DONE").exists():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out
