"""Statistics of a study, over seeds: sample sd, 95% t-intervals, paired t-tests, Holm.

No JAX. Seeds are the unit of replication: a cell's test metric is one number per seed, and
a comparison of two mixers pairs their runs by seed (same data order, same initial draw of
every shared part), so the paired t-test on the per-seed differences is the right test.
Several pre-registered comparisons are corrected together with Holm-Bonferroni (Holm 1979),
which controls the family-wise error rate without assuming independence.

  summarize([0.81, 0.84, 0.80])            # Summary(n=3, mean=0.8167, sd=0.0208, lo, hi)
  paired([0.9, 0.8, 0.85], [0.7, 0.75, 0.7])   # Paired(..., p=0.046...)
  holm([0.01, 0.04, 0.03])                 # adjusted p-values, in the input order

t quantiles and tail probabilities come from scipy.stats (declared in pyproject).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

ALPHA = 0.05


def t_quantile(q: float, df: int) -> float:
  """The q-quantile of Student's t with ``df`` degrees of freedom (t_{0.975, 2} = 4.3027)."""
  return float(_st.t.ppf(q, df))


@dataclass(frozen=True)
class Summary:
  """Mean, sample sd (ddof=1) and the 95% t-interval of the mean of n values."""

  n: int
  mean: float
  sd: float  # nan for n < 2
  lo: float  # 95% t-interval of the mean; nan for n < 2
  hi: float

  def to_dict(self) -> dict[str, Any]:
    return asdict(self)

  def text(self, digits: int = 3) -> str:
    """``0.817 [0.765, 0.868]`` (or ``0.817 (n=1)`` without an interval)."""
    if self.n < 2:
      return f"{self.mean:.{digits}f} (n={self.n})"
    return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
  """``Summary`` of ``values``: sample sd with ddof=1, t-interval with n-1 df."""
  x = np.asarray(values, dtype=float)
  n = int(x.size)
  if n == 0:
    nan = float("nan")
    return Summary(0, nan, nan, nan, nan)
  mean = float(x.mean())
  if n < 2:
    nan = float("nan")
    return Summary(n, mean, nan, nan, nan)
  sd = float(x.std(ddof=1))
  half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
  return Summary(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
  """A paired comparison a - b over seeds: the mean difference, its 95% t-interval, the
  two-sided paired t-test (t, df, p) and, once corrected, the Holm-adjusted p."""

  name: str
  n: int
  diff: Summary
  t: float
  p: float
  p_adj: float = float("nan")

  @property
  def significant(self) -> bool:
    p = self.p if math.isnan(self.p_adj) else self.p_adj
    return bool(p < ALPHA)

  def verdict(self, a: str, b: str, higher_is_better: bool = True) -> str:
    """One line: which is better, with the difference, interval and adjusted p; or "no
    significant difference" when the corrected test does not reject at 5%."""
    p = self.p if math.isnan(self.p_adj) else self.p_adj
    ptxt = f"Holm-adjusted p = {p:.3g}" if not math.isnan(self.p_adj) else f"p = {p:.3g}"
    d = self.diff
    ci = f"{a} - {b} = {d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}], n = {self.n} seeds, {ptxt}"
    if not self.significant:
      return f"no significant difference between {a} and {b} ({ci})"
    better = a if (d.mean > 0) == higher_is_better else b
    return f"{better} is better ({ci})"

  def to_dict(self) -> dict[str, Any]:
    return {**asdict(self), "diff": self.diff.to_dict(), "significant": self.significant}


def paired(a: Sequence[float], b: Sequence[float], name: str = "") -> Paired:
  """Paired t-test of ``a - b`` (equal-length sequences, element i = seed i)."""
  if len(a) != len(b):
    raise ValueError(f"paired comparison '{name}': {len(a)} values against {len(b)}")
  d = np.asarray(a, float) - np.asarray(b, float)
  s = summarize(d)
  if s.n < 2:
    return Paired(name, s.n, s, float("nan"), float("nan"))
  if s.sd == 0.0:  # identical differences: p is 0 unless they are all zero
    t = 0.0 if s.mean == 0 else math.copysign(math.inf, s.mean)
    return Paired(name, s.n, s, t, 1.0 if s.mean == 0 else 0.0)
  t = s.mean / (s.sd / math.sqrt(s.n))
  p = float(2 * _st.t.sf(abs(t), s.n - 1))
  return Paired(name, s.n, s, float(t), p)


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values, in the input order (nan values are left out of the
  family and stay nan). Reject hypothesis i at level alpha iff adjusted p_i < alpha."""
  idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
  m = len(idx)
  out = [float("nan")] * len(pvalues)
  running = 0.0
  for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
    running = max(running, min(1.0, (m - rank) * pvalues[i]))
    out[i] = running
  return out


def correct(comparisons: Sequence[Paired]) -> list[Paired]:
  """The comparisons with ``p_adj`` set by Holm over the whole family."""
  adj = holm([c.p for c in comparisons])
  return [Paired(c.name, c.n, c.diff, c.t, c.p, a) for c, a in zip(comparisons, adj, strict=True)]
