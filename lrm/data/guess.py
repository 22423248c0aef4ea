"""What a model scores on a recall task without the binding mechanism: "guess in reach".

A causal model at position ``i`` sees the inputs ``i - r .. i`` (its reach ``r``; the whole
past ``0 .. i`` for global attention). A predictor that has learnt only "output a value that
is near" guesses uniformly among the *distinct value ids* present there; it is right with
probability ``1 / |S|`` when the answer is one of those ``|S|`` values, else never. With no
value in reach it guesses among all ``num_values`` values (chance). ``guess_in_reach`` is
the mean of that probability over the asked positions of a split, computed from the data;
a mixer whose accuracy sits on this line has learnt to emit a nearby value, not to bind keys
to values. Chance (``1 / num_values``) is below it; 1.0 is above.

For a windowed mixer the reach is the sum of its layers' reaches: causal local attention of
radius ``w`` reaches ``w`` back (positions ``i-w .. i``), a causal conv of kernel ``w+1`` the
same; two such layers reach ``2w``. Worked example (values are ids 4..7; asked at position 6,
answer 6)::

  position  0 1 2 3 4 5 6
  inputs    1 4 3 6 1 4 3      reach 2: values {4}    -> 0 (6 is not in reach)
                               reach 3: values {6, 4} -> 1/2
                               past:    values {4, 6} -> 1/2
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

_CELLS = 20_000_000  # rows x (L+1) x values counted at once (bounds memory, ~80 MB int32)


def guess_in_reach(
  inputs: np.ndarray,
  targets: np.ndarray,
  weights: np.ndarray,
  values: tuple[int, int],
  reach: int | None = None,
) -> float:
  """Mean accuracy of the uniform guess among the values in reach, over ``weights > 0``.

  ``values = (first, last)`` is the inclusive id range of the value tokens; ``reach`` None is
  the whole past. NaN when nothing is asked.
  """
  lo, hi = int(values[0]), int(values[1])
  num = hi - lo + 1
  n, length = inputs.shape
  asked = np.asarray(weights) > 0
  total, count = 0.0, int(asked.sum())
  if count == 0:
    return float("nan")
  chunk = max(1, _CELLS // ((length + 1) * num))
  ids = np.arange(lo, hi + 1)
  for s in range(0, n, chunk):
    x = np.asarray(inputs[s : s + chunk])
    rows, pos = np.nonzero(asked[s : s + chunk])
    if len(rows) == 0:
      continue
    # counts[b, i, v]: how many times value v occurs in x[b, :i]
    onehot = x[:, :, None] == ids[None, None, :]  # [c, L, num]
    counts = np.zeros((len(x), length + 1, num), np.int32)
    np.cumsum(onehot, axis=1, out=counts[:, 1:])
    start = np.zeros_like(pos) if reach is None else np.maximum(pos - int(reach), 0)
    present = (counts[rows, pos + 1] - counts[rows, start]) > 0  # [T, num]
    size = present.sum(axis=1)
    answer = np.asarray(targets[s : s + chunk])[rows, pos].astype(np.int64) - lo
    ok = (answer >= 0) & (answer < num)
    hit = np.zeros(len(rows), bool)
    hit[ok] = present[np.nonzero(ok)[0], answer[ok]]
    total += float(np.where(size > 0, hit / np.maximum(size, 1), 1.0 / num).sum())
  return total / count


def guess_levels(
  arrays: Mapping[str, np.ndarray], values: tuple[int, int], reaches: Iterable[int] = ()
) -> dict[str, float]:
  """``{"context_guess": ..., "guess_w<r>": ...}`` of a split's arrays (``inputs, targets,
  weights``): the whole past, then each reach ``r``."""
  args = (arrays["inputs"], arrays["targets"], arrays["weights"], values)
  out = {"context_guess": guess_in_reach(*args)}
  for r in reaches:
    out[f"guess_w{int(r)}"] = guess_in_reach(*args, reach=int(r))
  return out
