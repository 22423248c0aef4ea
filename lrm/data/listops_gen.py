"""ListOps generator (Nangia & Bowman 2018, as configured by LRA) writing the official TSVs.

The rules follow ``lra_benchmarks/data/listops.py``:

* a node at depth ``d < max_depth`` (the root has depth 1) is an operator with probability
  ``VALUE_P = 0.25``, else a digit 0-9; nodes at ``max_depth`` are always digits;
* an operator picks one of MIN, MAX, MED, SM (sum mod 10) and 2..max_args children;
* MED is ``int(np.median(args))``: for an even count the floor of the mean of the two middle
  values (a quirk of the original that we keep, since the released labels depend on it);
* a tree's length counts operators, digits and closing brackets (the paren-free tokens the
  model sees); a tree is kept if ``min_len < length < max_len`` (both strict, as in LRA).

The written expression uses the original's binary-tuple bracketing,
``( ( ( [MIN 9 ) 9 ) ] )`` for MIN(9, 9): every argument closes one ``( ... )`` pair.

Differences from the original, on purpose: the original drew from the unseeded global
``random`` module and collected trees in a ``set``, so its split order depended on hash
randomisation; here one ``np.random.default_rng(seed)`` stream gives the trees, duplicates
are dropped in order of generation (as the set did, across splits), and the first
``num_train`` unique trees are train, the next ``num_val`` validation, the rest test. For
speed a tree's shape is drawn first and abandoned as soon as it reaches ``max_len`` tokens
(it would be rejected anyway); digits and operators are drawn only for kept shapes. Both
change which random numbers are used, not the distribution of the kept trees.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25  # probability that a node above max_depth is an operator
SPLIT_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = ("Source", "Target")


def _uniforms(rng: np.random.Generator, block: int = 1 << 16) -> Iterator[float]:
  """Uniform floats in [0, 1) from ``rng``, drawn in blocks (per-call numpy draws are slow)."""
  while True:
    yield from rng.random(block).tolist()


def max_tree_length(max_depth: int, max_args: int) -> int:
  """Largest possible length: every node above ``max_depth`` an operator with max_args."""
  n = 1  # a digit at max_depth
  for _ in range(max_depth - 1):
    n = 2 + max_args * n
  return n


def _shape(
  u: Iterator[float], max_depth: int, max_args: int, max_len: int
) -> tuple[list[int], int] | None:
  """A random tree shape as (pre-order arities, length): arity 0 is a digit, k an operator
  with k children. None once the length reaches ``max_len``. This loop is the main cost."""
  arities: list[int] = []
  pending = [1]  # children still to draw at each open level; the depth is len(pending)
  length = 0
  while pending:
    if not pending[-1]:
      pending.pop()
      continue
    pending[-1] -= 1
    if len(pending) >= max_depth or next(u) > VALUE_P:
      arities.append(0)
      length += 1
    else:
      k = 2 + int(next(u) * (max_args - 1))  # 2..max_args, like random.randint(2, max_args)
      arities.append(k)
      pending.append(k)
      length += 2  # the operator and its closing bracket
    if length >= max_len:
      return None
  return arities, length


def _render(arities: list[int], u: Iterator[float]) -> tuple[str, int]:
  """Draw each node's digit/operator and return (LRA source string, value).

  The string uses the original's bracketing: ``( ( ( [MIN 9 ) 9 ) ] )`` for MIN(9, 9).
  """
  parts: list[str] = []
  open_ops: list[tuple[str, int, list[int]]] = []  # (operator, children left, child values)
  for k in arities:
    if k:
      op = OPERATORS[int(next(u) * len(OPERATORS))]
      parts.append("( " * (k + 1) + op)
      open_ops.append((op, k, []))
      continue
    v = int(next(u) * 10)
    parts.append(str(v))
    while open_ops:  # the finished node is one more argument of the innermost operator
      op, left, args = open_ops[-1]
      args.append(v)
      parts.append(")")
      if left > 1:
        open_ops[-1] = (op, left - 1, args)
        break
      open_ops.pop()
      parts.append(END + " )")
      v = apply(op, args)
  return " ".join(parts), v


def apply(op: str, args: list[int]) -> int:
  """MIN, MAX, MED (``int(np.median)``, i.e. floored for an even count), SM (sum mod 10)."""
  if op == "[MIN":
    return min(args)
  if op == "[MAX":
    return max(args)
  if op == "[SM":
    return sum(args) % 10
  if op != "[MED":
    raise ValueError(f"unknown ListOps operator {op!r}")
  s, n = sorted(args), len(args)
  return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def check_options(min_len: int, max_len: int, max_depth: int, max_args: int) -> None:
  """Raise ``ValueError`` unless some tree can satisfy ``min_len < length < max_len``."""
  if max_depth < 2 or max_args < 2:
    raise ValueError(f"max_depth ({max_depth}) and max_args ({max_args}) must be at least 2")
  if min_len < 0 or max_len - min_len < 2:
    raise ValueError(
      f"need 0 <= min_len < length < max_len for some length, got min_len={min_len}, "
      f"max_len={max_len}; widen the range"
    )
  top = max_tree_length(max_depth, max_args)
  if min_len + 1 > top or max_len - 1 < 4:
    raise ValueError(
      f"no ListOps tree with max_depth={max_depth}, max_args={max_args} has a length in "
      f"({min_len}, {max_len}) (possible: 4..{top}); change min_len/max_len"
    )


def generate(
  n: int,
  *,
  seed: int,
  min_len: int = 500,
  max_len: int = 2000,
  max_depth: int = 10,
  max_args: int = 10,
) -> list[tuple[str, int]]:
  """``n`` unique ``(source, value)`` pairs with paren-free length in ``(min_len, max_len)``."""
  check_options(min_len, max_len, max_depth, max_args)
  u = _uniforms(np.random.default_rng(seed))
  seen: set[str] = set()
  out: list[tuple[str, int]] = []
  tries, max_tries = 0, 10_000 + 2_000 * n
  while len(out) < n:
    tries += 1
    if tries > max_tries:
      raise ValueError(
        f"ListOps generation gave only {len(out)} of {n} trees in {max_tries} tries; the "
        f"length range ({min_len}, {max_len}) is too rare for max_depth={max_depth}, "
        f"max_args={max_args}"
      )
    shape = _shape(u, max_depth, max_args, max_len)
    if shape is None or shape[1] <= min_len:
      continue
    row = _render(shape[0], u)
    if row[0] not in seen:
      seen.add(row[0])
      out.append(row)
  return out


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
  """Header ``Source<TAB>Target`` and one row per example, written like the original
  (Python's ``csv.writer`` with a tab delimiter, hence ``\\r\\n`` line ends)."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, delimiter="\t")
    w.writerow(HEADER)
    w.writerows(rows)


def write_splits(
  out: Path, *, seed: int, num_train: int, num_val: int, num_test: int, **options: int
) -> list[Path]:
  """Write ``basic_{train,val,test}.tsv`` into ``out``; return the three paths. ``options``
  are ``generate``'s (``min_len``, ``max_len``, ``max_depth``, ``max_args``)."""
  rows = generate(num_train + num_val + num_test, seed=seed, **options)
  bounds = {"train": (0, num_train), "validation": (num_train, num_train + num_val)}
  bounds["test"] = (num_train + num_val, len(rows))
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for split, name in SPLIT_FILES.items():
    lo, hi = bounds[split]
    write_tsv(out / name, rows[lo:hi])
    paths.append(out / name)
  return paths
