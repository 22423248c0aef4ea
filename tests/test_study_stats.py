"""lrm.study.stats for the v4 design: TOST, Holm over equivalence tests, Bonferroni
simultaneous intervals, the pre-registered decision and the solved-seed count.

Behaviour is checked against scipy (one-sample t-tests), known dualities and a seeded
simulation, not against hard-coded outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from lrm.study import stats


def _draw(rng: np.random.Generator, n: int, mean: float, sd: float) -> tuple[list, list]:
  b = rng.normal(0.5, 0.1, n)
  return list(b + rng.normal(mean, sd, n)), list(b)


def test_tost_matches_scipy_one_sided_tests():
  rng = np.random.default_rng(0)
  for _ in range(20):
    n = int(rng.integers(2, 20))
    delta = float(rng.uniform(0.01, 0.2))
    a, b = _draw(rng, n, float(rng.normal(0, 0.1)), float(rng.uniform(0.01, 0.2)))
    e = stats.tost(a, b, delta, name="x")
    d = np.asarray(a) - np.asarray(b)
    p_lower = st.ttest_1samp(d + delta, 0.0, alternative="greater").pvalue
    p_upper = st.ttest_1samp(d - delta, 0.0, alternative="less").pvalue
    assert e.p_lower == pytest.approx(p_lower, rel=1e-9, abs=1e-15)
    assert e.p_upper == pytest.approx(p_upper, rel=1e-9, abs=1e-15)
    assert e.p == max(e.p_lower, e.p_upper)
    assert (e.name, e.n, e.delta) == ("x", n, delta)
    assert e.diff == stats.summarize(d)
    assert math.isnan(e.p_adj)


def test_tost_interval_is_the_one_minus_two_alpha_t_interval():
  rng = np.random.default_rng(1)
  for alpha in (0.05, 0.1):
    a, b = _draw(rng, 8, 0.02, 0.05)
    e = stats.tost(a, b, 0.1, alpha=alpha)
    s = stats.summarize(np.asarray(a) - np.asarray(b), level=1 - 2 * alpha)
    assert (e.lo, e.hi) == pytest.approx((s.lo, s.hi), rel=1e-12)


def test_tost_outcomes():
  rng = np.random.default_rng(2)
  inside = stats.tost(*_draw(rng, 50, 0.001, 0.01), delta=0.05)
  assert inside.equivalent and inside.p < 1e-6
  spread = stats.tost(*_draw(rng, 5, 0.0, 10.0), delta=0.1)
  assert not spread.equivalent
  outside = stats.tost(*_draw(rng, 30, 0.2, 0.01), delta=0.1)
  assert not outside.equivalent and outside.p_upper > 0.99 and outside.p_lower < 1e-6
  assert outside.lo > 0.1  # the whole interval lies beyond the margin


def test_tost_ci_inside_margin_iff_rejected():
  """The duality: TOST rejects at alpha exactly when the (1 - 2 alpha) CI lies in ±delta."""
  rng = np.random.default_rng(3)
  seen = set()
  for _ in range(200):
    n = int(rng.integers(3, 15))
    delta = 0.1
    a, b = _draw(rng, n, float(rng.uniform(-0.15, 0.15)), float(rng.uniform(0.01, 0.15)))
    alpha = float(rng.choice([0.05, 0.1]))
    e = stats.tost(a, b, delta, alpha=alpha)
    inside = -delta < e.lo and e.hi < delta
    assert inside == e.equivalent
    seen.add(inside)
  assert seen == {True, False}  # both sides of the duality were exercised


def test_tost_edge_cases():
  nan_case = stats.tost([1.0], [0.5], 0.1)
  assert nan_case.n == 1 and math.isnan(nan_case.p) and not nan_case.equivalent
  assert not stats.tost([], [], 0.1).equivalent
  # equal differences: exact
  assert stats.tost([1.0, 1.0, 1.0], [0.95, 0.95, 0.95], 0.1).equivalent
  exact_out = stats.tost([1.0, 1.0, 1.0], [0.8, 0.8, 0.8], 0.1)
  assert not exact_out.equivalent and exact_out.p == 1.0
  assert exact_out.lo == exact_out.hi == pytest.approx(0.2)
  for bad in (0.0, -0.1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="delta"):
      stats.tost([1.0, 2.0], [1.0, 2.0], bad)
  with pytest.raises(ValueError, match="2 values against 3"):
    stats.tost([1.0, 2.0], [1.0, 2.0, 3.0], 0.1)
  d = stats.tost([0.8, 0.82, 0.79], [0.8, 0.81, 0.8], 0.05, name="q").to_dict()
  assert d["name"] == "q" and isinstance(d["diff"], dict) and isinstance(d["equivalent"], bool)


def test_correct_tost():
  rng = np.random.default_rng(4)
  one = stats.tost(*_draw(rng, 10, 0.0, 0.05), delta=0.1)
  (corrected,) = stats.correct_tost([one])
  assert corrected.p_adj == pytest.approx(one.p)
  assert corrected.equivalent == one.equivalent
  family = [stats.tost(*_draw(rng, 10, m, 0.05), delta=0.1) for m in (0.0, 0.05, 0.08, 0.3)]
  out = stats.correct_tost(family)
  assert [t.p_adj for t in out] == pytest.approx(stats.holm([t.p for t in family]))
  assert all(t.p_adj >= t.p for t in out)
  assert [t.name for t in out] == [t.name for t in family]
  # equivalence then uses the adjusted p: a p just below alpha alone does not survive a family
  edge = stats.Equivalence("e", 5, stats.summarize([0] * 5), 0.1, 0.04, 0.04, 0.04, -0.05, 0.05)
  assert edge.equivalent
  assert not stats.correct_tost([edge, edge])[0].equivalent


def test_simultaneous_m1_is_the_ordinary_interval_and_widens_with_m():
  rng = np.random.default_rng(5)
  c = stats.paired(*_draw(rng, 10, 0.05, 0.1), name="c")
  (iv,) = stats.simultaneous([c])
  assert (iv.lo, iv.hi) == pytest.approx((c.diff.lo, c.diff.hi), rel=1e-12)
  assert (iv.name, iv.n, iv.m, iv.level) == ("c", 10, 1, 0.95)
  assert iv.mean == c.diff.mean
  widths = [stats.simultaneous([c] * m)[0] for m in (1, 2, 5, 10)]
  w = [x.hi - x.lo for x in widths]
  assert all(x < y for x, y in zip(w, w[1:], strict=False))
  assert widths[2].each_level == pytest.approx(0.99)
  # comparisons without an interval (n < 2) are left out of m
  short = stats.paired([1.0], [0.0], name="short")
  out = stats.simultaneous([c, short])
  assert out[0].m == 1 and (out[0].lo, out[0].hi) == pytest.approx((iv.lo, iv.hi))
  assert math.isnan(out[1].lo) and math.isnan(out[1].hi)


def test_simultaneous_coverage_by_simulation():
  rng = np.random.default_rng(6)
  draws, m, n = 2000, 5, 10
  true = np.array([-0.2, -0.05, 0.0, 0.1, 0.3])
  d = rng.normal(true[None, :, None], 0.1, (draws, m, n))
  covered = 0
  for k in range(draws):
    comps = [stats.paired(d[k, j], np.zeros(n), name=str(j)) for j in range(m)]
    ivs = stats.simultaneous(comps)
    covered += all(iv.lo <= t <= iv.hi for iv, t in zip(ivs, true, strict=True))
  rate = covered / draws
  slack = 3 * math.sqrt(0.95 * 0.05 / draws)
  assert rate >= 0.95 - slack
  assert rate <= 0.99  # Bonferroni is conservative, but not trivially wide


def _decide(a, b, delta, higher_is_better=True):
  p = stats.paired(a, b, "q")
  (e,) = stats.correct_tost([stats.tost(a, b, delta, name="q")])
  (iv,) = stats.simultaneous([p])
  return stats.decide(p, e, iv, delta, higher_is_better), (p, e, iv)


def test_decide_four_outcomes_and_their_mirror():
  rng = np.random.default_rng(7)
  delta = 0.1
  cases = {
    stats.A_BETTER: _draw(rng, 10, 0.5, 0.05),
    stats.B_BETTER: _draw(rng, 10, -0.5, 0.05),
    stats.EQUIVALENT: _draw(rng, 30, 0.0, 0.02),
    stats.INCONCLUSIVE: _draw(rng, 4, 0.0, 1.0),
  }
  mirror = {
    stats.A_BETTER: stats.B_BETTER,
    stats.B_BETTER: stats.A_BETTER,
    stats.EQUIVALENT: stats.EQUIVALENT,
    stats.INCONCLUSIVE: stats.INCONCLUSIVE,
  }
  for expected, (a, b) in cases.items():
    assert _decide(a, b, delta)[0] == expected
    assert _decide(a, b, delta, higher_is_better=False)[0] == mirror[expected]
  assert set(stats.OUTCOMES) == {"a better", "b better", "equivalent", "inconclusive"}


def test_decide_better_needs_the_whole_interval_beyond_the_margin():
  rng = np.random.default_rng(8)
  # clearly positive (significant) but not clearly beyond delta: neither better nor equivalent
  a, b = _draw(rng, 10, 0.1, 0.05)
  outcome, (p, _, iv) = _decide(a, b, 0.1)
  assert p.p < 0.05 and iv.lo < 0.1 < iv.hi
  assert outcome == stats.INCONCLUSIVE
  # n = 1: no interval, no test
  assert _decide([1.0], [0.0], 0.1)[0] == stats.INCONCLUSIVE


def test_decide_rejects_mismatched_inputs():
  rng = np.random.default_rng(9)
  a, b = _draw(rng, 10, 0.0, 0.02)
  _, (p, e, iv) = _decide(a, b, 0.1)
  with pytest.raises(ValueError, match="margin"):
    stats.decide(p, e, iv, 0.2)
  with pytest.raises(ValueError, match="delta"):
    stats.decide(p, e, iv, 0.0)
  other = stats.paired(*_draw(rng, 10, 0.3, 0.02), "q")
  with pytest.raises(ValueError, match="different data"):
    stats.decide(other, e, iv, 0.1)


def test_decision_line():
  rng = np.random.default_rng(10)
  a, b = _draw(rng, 10, 0.5, 0.05)
  _, (p, e, iv) = _decide(a, b, 0.1)
  line = stats.decision_line(p, e, iv, 0.1, a="conv", b="local")
  assert line.startswith("conv is better than local by more than 0.1")
  assert f"{iv.mean:+.4f}" in line and f"[{iv.lo:+.4f}, {iv.hi:+.4f}]" in line
  assert "TOST p" in line and "Holm-adjusted" in line and "±0.1" in line
  assert "n = 10 seeds" in line
  line = stats.decision_line(p, e, iv, 0.1, a="conv", b="local", higher_is_better=False)
  assert line.startswith("local is better than conv") and "lower is better" in line
  a, b = _draw(rng, 30, 0.0, 0.02)
  _, (p, e, iv) = _decide(a, b, 0.1)
  assert stats.decision_line(p, e, iv, 0.1, "x", "y").startswith("x and y are equivalent")


def test_solved():
  assert stats.solved([0.99, 0.2, 1.0], 0.99) == (2, 3)
  assert stats.solved([0.1, float("nan")], 0.5) == (0, 2)
  assert stats.solved([], 0.5) == (0, 0)
