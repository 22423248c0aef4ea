"""The embedded default language-modelling corpus: Python's own standard library.

Real text nobody wrote for this project, present on every machine that runs lrm: the
``*.py`` files under ``sysconfig.get_paths()["stdlib"]``, minus tests, third-party
packages, demos and generated tables (see ``EXCLUDE_DIRS``). Each file is one document.

Splits are a pure function of the file's relative path: ``sha1(path) % 100`` gives bucket
0-89 train, 90-94 validation, 95-99 test, so adding or removing one file never moves
another. ``corpus_bytes`` caps the size (split budgets 90/5/5 % of it); files are taken in
the order of that same digest (a deterministic spread over the whole library, rather than
only the modules that sort first by name) until the budget is reached, the last file whole.

The corpus differs between Python versions (3.12 removed ``distutils``, 3.13 removed more
modules, files change), so ``info()`` records the Python version and the file and byte
counts per split, and they are saved with every run.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from pathlib import Path
from typing import Any

SPLIT_BUCKETS = {"train": (0, 90), "validation": (90, 95), "test": (95, 100)}
# tests and their data, third-party packages, GUI demos, generated tables and machine-specific
# files (``_sysconfigdata_*`` holds build paths, so it would differ between machines).
EXCLUDE_DIRS = frozenset(
  {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "turtledemo",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "encodings",
    "pydoc_data",
    "ensurepip",
    "lib-dynload",
  }
)
EXCLUDE_PREFIXES = ("_sysconfigdata", "config-")


def stdlib_root() -> Path:
  return Path(sysconfig.get_paths()["stdlib"])


def _digest(rel: str) -> int:
  return int(hashlib.sha1(rel.encode("utf-8")).hexdigest(), 16)


def split_of(rel: str) -> str:
  """The split of a relative path (``"json/decoder.py"``): a fixed hash bucket."""
  bucket = _digest(rel) % 100
  for split, (lo, hi) in SPLIT_BUCKETS.items():
    if lo <= bucket < hi:
      return split
  raise AssertionError(bucket)  # unreachable: the buckets cover 0..99


def _excluded(name: str) -> bool:
  return name in EXCLUDE_DIRS or name.startswith(EXCLUDE_PREFIXES)


def list_files(
  root: Path | None = None, suffixes: tuple[str, ...] = (".py",), exclude: bool = True
) -> list[str]:
  """Sorted relative POSIX paths of the corpus files under ``root`` (default: the stdlib).

  ``exclude`` drops ``EXCLUDE_DIRS`` / ``EXCLUDE_PREFIXES`` (meant for the stdlib); hidden
  files and folders are always skipped.
  """
  root = stdlib_root() if root is None else root
  out = []
  for here, dirs, names in os.walk(root):
    # prune in place so excluded trees (the large test suite) are never walked
    dirs[:] = [d for d in dirs if not d.startswith(".") and not (exclude and _excluded(d))]
    rel_dir = Path(here).relative_to(root)
    for name in names:
      if name.endswith(suffixes) and not name.startswith(".") and not (exclude and _excluded(name)):
        out.append((rel_dir / name).as_posix())
  return sorted(out)


def select(files: list[str], sizes: dict[str, int], corpus_bytes: int) -> dict[str, list[str]]:
  """Assign files to splits and apply the byte cap (0 = no cap), in digest order."""
  chosen: dict[str, list[str]] = {s: [] for s in SPLIT_BUCKETS}
  used = dict.fromkeys(SPLIT_BUCKETS, 0)
  for rel in sorted(files, key=_digest):
    s = split_of(rel)
    lo, hi = SPLIT_BUCKETS[s]
    budget = corpus_bytes * (hi - lo) // 100
    if corpus_bytes and used[s] >= budget:
      continue
    chosen[s].append(rel)
    used[s] += sizes[rel]
  return chosen


def load(
  corpus_bytes: int = 4_000_000, root: Path | None = None, suffixes: tuple[str, ...] = (".py",)
) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
  """``({split: [document bytes, ...]}, info)`` for the stdlib corpus, or for the files with
  one of ``suffixes`` under a user folder ``root`` (then nothing is excluded)."""
  stdlib = root is None
  root = stdlib_root() if stdlib else root
  files = list_files(root, suffixes, exclude=stdlib)
  if not files:
    raise FileNotFoundError(f"no {'/'.join(suffixes)} files found under {root}")
  sizes = {rel: (root / rel).stat().st_size for rel in files}
  chosen = select(files, sizes, corpus_bytes)
  docs = {s: [(root / rel).read_bytes() for rel in rels] for s, rels in chosen.items()}
  info = {
    "source": "python-stdlib" if stdlib else "files",
    "python": platform.python_version(),
    "root": str(root),
    "corpus_bytes_cap": corpus_bytes,
    "files_available": len(files),
    "bytes_available": sum(sizes.values()),
    "files": {s: len(v) for s, v in docs.items()},
    "bytes": {s: sum(map(len, v)) for s, v in docs.items()},
  }
  return docs, info
