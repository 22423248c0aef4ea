"""Statistics of a study, over seeds: sample sd, 95% t-intervals, paired t-tests, Holm.

No JAX. Seeds are the unit of replication: a cell's test metric is one number per seed, and
a comparison of two mixers pairs their runs by seed (same data order, same initial draw of
every shared part), so the paired t-test on the per-seed differences is the right test.
Several pre-registered comparisons are corrected together with Holm-Bonferroni (Holm 1979),
which controls the family-wise error rate without assuming independence.

  summarize([0.81, 0.84, 0.80])            # Summary(n=3, mean=0.8167, sd=0.0208, lo, hi)
  paired([0.9, 0.8, 0.85], [0.7, 0.75, 0.7])   # Paired(..., p=0.046...)
  holm([0.01, 0.04, 0.03])                 # adjusted p-values, in the input order

For the pre-registered decision between two mixers (a better, b better, equivalent or
inconclusive at a margin delta): ``tost`` (paired equivalence test, Schuirmann 1987) with
``correct_tost`` (Holm over the family), ``simultaneous`` (Bonferroni t-intervals that cover
every difference of the family at once), ``decide`` and ``decision_line``. ``solved`` counts
the seeds that reach a threshold, for bimodal outcomes ("2 of 3 seeds solved").

t quantiles and tail probabilities come from scipy.stats (declared in pyproject).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
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


def _adjusted(p: float, p_adj: float) -> float:
  """The p a decision reads: the family-corrected one once set (not nan), else the raw one."""
  return p if math.isnan(p_adj) else p_adj


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
    p = _adjusted(self.p, self.p_adj)
    return bool(p < ALPHA)

  def verdict(self, a: str, b: str, higher_is_better: bool = True) -> str:
    """One line: which is better, with the difference, interval and adjusted p; or "no
    significant difference" when the corrected test does not reject at 5%."""
    p = _adjusted(self.p, self.p_adj)
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


# ---------------------------------------------------------------------------------------
# Equivalence (TOST), simultaneous intervals and the pre-registered decision.

A_BETTER = "a better"
B_BETTER = "b better"
EQUIVALENT = "equivalent"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (A_BETTER, B_BETTER, EQUIVALENT, INCONCLUSIVE)


def _check_delta(delta: float, what: str) -> None:
  if not (math.isfinite(delta) and delta > 0):
    raise ValueError(
      f"{what}: the equivalence margin delta must be a finite number > 0, got {delta!r}"
    )


@dataclass(frozen=True)
class Equivalence:
  """A paired equivalence test (TOST) of the mean of d = a - b against the margin ±delta.

  p_lower tests H0: mean d <= -delta, p_upper tests H0: mean d >= +delta; p = max of the
  two. (lo, hi) is the (1 - 2 alpha) t-interval of the mean difference: it lies inside
  (-delta, +delta) exactly when both one-sided tests reject at alpha. ``p_adj`` is nan until
  ``correct_tost`` sets it."""

  name: str
  n: int
  diff: Summary
  delta: float
  p_lower: float
  p_upper: float
  p: float
  lo: float
  hi: float
  alpha: float = ALPHA
  p_adj: float = float("nan")

  @property
  def equivalent(self) -> bool:
    """Equivalent within ±delta: the (Holm-adjusted, once corrected) p is below alpha."""
    p = _adjusted(self.p, self.p_adj)
    return bool(p < self.alpha)

  def to_dict(self) -> dict[str, Any]:
    return {**asdict(self), "diff": self.diff.to_dict(), "equivalent": self.equivalent}


def tost(
  a: Sequence[float], b: Sequence[float], delta: float, alpha: float = ALPHA, name: str = ""
) -> Equivalence:
  """Paired two one-sided t-tests (Schuirmann 1987) of d = a - b (element i = seed i)
  against the margin ±delta: equivalent at alpha iff both H0: mean d <= -delta and H0:
  mean d >= +delta are rejected at alpha. n < 2 gives nan p-values (not equivalent); equal
  differences (sd 0) are decided exactly: equivalent iff |mean d| < delta."""
  _check_delta(delta, f"tost '{name}'")
  if not 0 < alpha < 0.5:
    raise ValueError(f"tost '{name}': alpha must lie in (0, 0.5), got {alpha!r}")
  if len(a) != len(b):
    raise ValueError(f"equivalence test '{name}': {len(a)} values against {len(b)}")
  d = np.asarray(a, float) - np.asarray(b, float)
  s = summarize(d)
  nan = float("nan")
  if s.n < 2:
    return Equivalence(name, s.n, s, delta, nan, nan, nan, nan, nan, alpha)
  if s.sd == 0.0:
    p_lower = 0.0 if s.mean > -delta else 1.0
    p_upper = 0.0 if s.mean < delta else 1.0
    return Equivalence(
      name, s.n, s, delta, p_lower, p_upper, max(p_lower, p_upper), s.mean, s.mean, alpha
    )
  se = s.sd / math.sqrt(s.n)
  df = s.n - 1
  p_lower = float(_st.t.sf((s.mean + delta) / se, df))
  p_upper = float(_st.t.cdf((s.mean - delta) / se, df))
  half = t_quantile(1 - alpha, df) * se
  return Equivalence(
    name,
    s.n,
    s,
    delta,
    p_lower,
    p_upper,
    max(p_lower, p_upper),
    s.mean - half,
    s.mean + half,
    alpha,
  )


def correct_tost(tests: Sequence[Equivalence]) -> list[Equivalence]:
  """The equivalence tests with ``p_adj`` set by Holm over the whole family. Each TOST is
  one test of one hypothesis (not equivalent) whose p is the max of its two one-sided p's (an
  intersection-union test), so Holm on those p's controls the family-wise error rate."""
  adj = holm([t.p for t in tests])
  return [replace(t, p_adj=p) for t, p in zip(tests, adj, strict=True)]


@dataclass(frozen=True)
class Interval:
  """One of a family of m simultaneous intervals of a mean paired difference a - b:
  together the m intervals cover all m true differences with probability >= ``level``
  (each alone is a t-interval at ``each_level`` = 1 - (1 - level) / m). nan for n < 2."""

  name: str
  n: int
  mean: float
  lo: float
  hi: float
  level: float  # the family's (simultaneous) coverage
  m: int  # the comparisons in the family (those with n >= 2)

  @property
  def each_level(self) -> float:
    return 1 - (1 - self.level) / max(self.m, 1)

  def to_dict(self) -> dict[str, Any]:
    return asdict(self)

  def text(self, digits: int = 4) -> str:
    """``+0.0123 [+0.0051, +0.0195]`` (or ``+0.0123 (n=1)`` without an interval)."""
    if math.isnan(self.lo):
      return f"{self.mean:+.{digits}f} (n={self.n})"
    return f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def simultaneous(comparisons: Sequence[Paired], level: float = 0.95) -> list[Interval]:
  """Bonferroni simultaneous t-intervals of the mean differences of a family of paired
  comparisons: each at 1 - (1 - level) / m, m = the comparisons with n >= 2, so all m cover
  their true differences at once with probability >= ``level`` (no independence assumed).

  Why Bonferroni: Holm's step-down test has no matching set of intervals in general (its
  confidence set is not a product of intervals with a useful form), while Bonferroni
  intervals are the standard simultaneous companion of a Holm-corrected family and agree with
  Holm's first step: an interval that excludes 0 is a comparison that Holm rejects (Holm may
  reject a few more)."""
  if not 0 < level < 1:
    raise ValueError(f"simultaneous: level must lie in (0, 1), got {level!r}")
  m = sum(1 for c in comparisons if c.diff.n >= 2)
  each = 1 - (1 - level) / max(m, 1)
  out = []
  for c in comparisons:
    d = c.diff
    if d.n < 2:
      out.append(Interval(c.name, d.n, d.mean, float("nan"), float("nan"), level, m))
      continue
    half = t_quantile(0.5 + each / 2, d.n - 1) * d.sd / math.sqrt(d.n)
    out.append(Interval(c.name, d.n, d.mean, d.mean - half, d.mean + half, level, m))
  return out


def _check_same(paired: Paired, equivalence: Equivalence, interval: Interval) -> None:
  """The three results must describe one comparison (same seeds, same mean difference)."""
  ns = {paired.n, equivalence.n, interval.n}
  means = [paired.diff.mean, equivalence.diff.mean, interval.mean]
  same_mean = all(math.isnan(x) for x in means) or all(
    math.isclose(x, means[0], rel_tol=1e-9, abs_tol=1e-12) for x in means
  )
  if len(ns) != 1 or not same_mean:
    raise ValueError(
      f"decide '{paired.name}': the paired test, TOST and interval describe different data "
      f"(n = {sorted(ns)}, mean differences = {means})"
    )


def decide(
  paired: Paired,
  equivalence: Equivalence,
  interval: Interval,
  delta: float,
  higher_is_better: bool = True,
) -> str:
  """The pre-registered three-valued rule of one comparison a - b at margin delta:

  ``A_BETTER`` if the simultaneous interval lies entirely beyond delta in a's favour (a is
  better by more than delta), ``B_BETTER`` if it lies entirely beyond delta in b's favour,
  ``EQUIVALENT`` if the (Holm-corrected) TOST at margin delta says equivalent, else
  ``INCONCLUSIVE``. With ``higher_is_better=False`` (bits per byte, loss) a's favour is a
  negative difference. The paired test only checks that all three describe one comparison
  (an interval beyond delta > 0 excludes 0, so its Holm test rejects as well)."""
  _check_delta(delta, f"decide '{paired.name}'")
  if not math.isclose(equivalence.delta, delta):
    raise ValueError(
      f"decide '{paired.name}': the TOST was run at margin {equivalence.delta}, not {delta}"
    )
  _check_same(paired, equivalence, interval)
  sign = 1.0 if higher_is_better else -1.0
  lo, hi = sorted((sign * interval.lo, sign * interval.hi))  # a's favour is positive
  if lo > delta:  # False for nan
    return A_BETTER
  if hi < -delta:
    return B_BETTER
  if equivalence.equivalent:
    return EQUIVALENT
  return INCONCLUSIVE


def decision_line(
  paired: Paired,
  equivalence: Equivalence,
  interval: Interval,
  delta: float,
  a: str = "a",
  b: str = "b",
  higher_is_better: bool = True,
) -> str:
  """One sentence: the decision of ``decide`` with the difference, the simultaneous
  interval, the TOST p and the margin, e.g. ``conv is better than local by more than 0.01:
  conv - local = +0.0400, 95% simultaneous interval [+0.0300, +0.0500] (m = 3), TOST p =
  1 (Holm-adjusted), margin ±0.01, n = 3 seeds (higher is better)``."""
  outcome = decide(paired, equivalence, interval, delta, higher_is_better)
  head = {
    A_BETTER: f"{a} is better than {b} by more than {delta:g}",
    B_BETTER: f"{b} is better than {a} by more than {delta:g}",
    EQUIVALENT: f"{a} and {b} are equivalent within ±{delta:g}",
    INCONCLUSIVE: f"inconclusive between {a} and {b}",
  }[outcome]
  corrected = not math.isnan(equivalence.p_adj)
  p = _adjusted(equivalence.p, equivalence.p_adj)
  ptxt = f"TOST p = {p:.3g}" + (" (Holm-adjusted)" if corrected else "")
  ci = (
    f"{interval.level:.0%} simultaneous interval [{interval.lo:+.4f}, {interval.hi:+.4f}] "
    f"(m = {interval.m})"
  )
  direction = "higher" if higher_is_better else "lower"
  return (
    f"{head}: {a} - {b} = {interval.mean:+.4f}, {ci}, {ptxt}, margin ±{delta:g}, "
    f"n = {interval.n} seeds ({direction} is better)"
  )


def solved(values: Sequence[float], threshold: float) -> tuple[int, int]:
  """(seeds at or above ``threshold``, seeds): "2 of 3 seeds solved" for a bimodal metric
  (nan counts as not solved)."""
  x = np.asarray(values, dtype=float)
  return int(np.sum(x >= threshold)), int(x.size)
