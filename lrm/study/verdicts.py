"""The study's answers and its sanity checklist, from summary records alone (no JAX).

A record is one finished cell of ``lrm.study.report.records`` (``summary.json``). Only
cells at their arm's chosen learning rate (``in_study``) enter a comparison or a check.
What a decision rule or a check says about particular mixers and tasks belongs to the study
file (its ``decide`` and ``checks`` functions, which use the helpers here); this module names
none.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lrm.study import plots, stats

Record = Mapping[str, Any]

FLOPS_TOLERANCE = 0.15  # the checklist: analytic within 15% of XLA's count


def select(records: Sequence[Record], **where: Any) -> list[Record]:
  """The in-study records matching every ``field=value``."""
  return [r for r in records if r.get("in_study") and all(r.get(k) == v for k, v in where.items())]


def by_seed(records: Sequence[Record], field: str = "value") -> dict[int, float]:
  return {int(r["seed"]): float(r[field]) for r in records if r.get(field) is not None}


def compare(records: Sequence[Record], specs: Sequence[Mapping[str, Any]]) -> list[dict]:
  """Each pre-registered comparison (``a - b`` of the test metric, paired by seed), Holm-
  corrected over the whole family; a comparison without paired seeds is ``pending``."""
  tests, rows = [], []
  for spec in specs:
    where = {k: spec[k] for k in ("task", "rule", "size")}
    a, b = (by_seed(select(records, mixer=spec[m], **where)) for m in ("a", "b"))
    seeds = sorted(set(a) & set(b))
    name = f"{spec['question']} {spec['task']}: {spec['a']} vs {spec['b']}"
    rows.append({**spec, "name": name, "seeds": seeds})
    tests.append(stats.paired([a[s] for s in seeds], [b[s] for s in seeds], name))
  for row, test in zip(rows, stats.correct(tests), strict=True):
    row["test"] = test
  return rows


def verdict_line(row: Mapping[str, Any], higher_is_better: bool) -> str:
  test: stats.Paired = row["test"]
  where = f"({row['rule'].replace('_', ' ')}, size {row['size']})"
  if test.n < 2:
    return f"- {row['a']} vs {row['b']} {where}: pending ({test.n} paired seeds)"
  return f"- {where} " + test.verdict(row["a"], row["b"], higher_is_better)


def wins(row: Mapping[str, Any], higher_is_better: bool) -> bool | None:
  """Whether ``a`` significantly beats ``b`` (None: not tested yet)."""
  t: stats.Paired = row["test"]
  if t.n < 2:
    return None
  return t.significant and (t.diff.mean > 0) == higher_is_better


def conclusion(
  study: Mapping[str, Any], question: str, rows: Sequence[Mapping[str, Any]], higher: bool
) -> str:
  """The study's pre-registered decision rule for ``question`` (its ``decide`` function,
  given the question's compared rows) applied to them; "" when it has none."""
  decide = study.get("decide")
  return decide(question, rows, higher) if decide else ""


def mean_of(records: Sequence[Record], field: str = "value") -> float:
  vals = [float(r[field]) for r in records if r.get(field) is not None]
  return sum(vals) / len(vals) if vals else math.nan


def sanity(
  study: Mapping[str, Any], records: Sequence[Record]
) -> list[tuple[str, bool | None, str]]:
  """The checklist: (check, passed (None: not run yet), evidence). The study's own checks
  (its ``checks(records)``, which may name mixers and tasks) come first, then those every
  study gets: measured receptive fields and the FLOP count."""
  checks = list(study["checks"](records)) if study.get("checks") else []
  # measured receptive field = analytic in every cell
  fields = [r for r in records if r.get("rf_measured") is not None]
  bad = [r["key"] for r in fields if r["rf_measured"] != r["rf_analytic"]]
  checks.append(
    (
      "measured receptive field = analytic in every cell",
      (not bad) if fields else None,
      f"{len(fields) - len(bad)}/{len(fields)} cells of the first seed (every architecture) agree"
      + (f"; not: {bad[:3]}" if bad else ""),
    )
  )
  # analytic FLOPs within 15% of XLA's count
  xs = [r for r in records if r.get("xla_ratio") is not None]
  off = [r for r in xs if abs(r["xla_ratio"] - 1) > FLOPS_TOLERANCE]
  ev = f"{len(xs) - len(off)}/{len(xs)} cells within; ratios " + (
    f"{min(r['xla_ratio'] for r in xs):.3f}-{max(r['xla_ratio'] for r in xs):.3f}" if xs else "-"
  )
  checks.append(
    (
      f"analytic FLOPs within {FLOPS_TOLERANCE:.0%} of XLA",
      (not off) if xs else None,
      ev + (f"; outside: {sorted({r['name'] for r in off})}" if off else ""),
    )
  )
  return checks


def means(records: Sequence[Record], keys: tuple[str, ...]) -> dict[tuple, float]:
  groups: dict[tuple, list] = defaultdict(list)
  for r in records:
    groups[tuple(r[k] for k in keys)].append(r)
  return {k: mean_of(v) for k, v in groups.items()}


def size_rank(records: Sequence[Record], size: str) -> float:
  widths = [r.get("size_width") for r in records if r.get("size") == size]
  return float(widths[0]) if widths and widths[0] is not None else 0.0


def decisions(
  records: Sequence[Record],
  specs: Sequence[Mapping[str, Any]],
  label: Callable[[str], str] | None = None,
) -> list[dict]:
  """The pre-registered comparisons with a margin (each spec's ``delta``), decided family by
  family (a family is a ``question``): a - b of the test metric paired by seed, Holm-corrected
  paired t-tests and TOSTs and Bonferroni simultaneous 95% intervals within the family, and
  the three-valued ``stats.decide``. Each row: the spec, ``name``, ``seeds``, ``higher``
  (higher is better), ``diffs`` (per seed), ``paired``, ``tost``, ``interval``, ``outcome``
  (None while fewer than 2 seeds pair), ``line`` (``stats.decision_line`` or pending) and
  ``validation`` ({arm: mean validation over the paired seeds}, for rules that choose an arm
  on validation). ``label`` names the arms in ``name`` and ``line`` (default: their presets).
  """
  rows: list[dict] = []
  for spec in specs:
    where = {k: spec[k] for k in ("task", "rule", "size")}
    a, b = (select(records, mixer=spec[m], **where) for m in ("a", "b"))
    ta, tb = by_seed(a), by_seed(b)
    seeds = sorted(set(ta) & set(tb))
    va, vb = by_seed(a, "validation_value"), by_seed(b, "validation_value")
    metric = next((r["metric"] for r in [*a, *b] if r.get("metric")), "")
    higher = not plots.lower_is_better(metric)
    show = label or str
    name = f"{show(spec['a'])} vs {show(spec['b'])}"
    x, y = [ta[s] for s in seeds], [tb[s] for s in seeds]
    rows.append(
      {
        **spec,
        "name": name,
        "seeds": seeds,
        "metric": metric,
        "higher": higher,
        "diffs": [u - v for u, v in zip(x, y, strict=True)],
        "a_values": x,
        "b_values": y,
        "paired": stats.paired(x, y, name),
        "tost": stats.tost(x, y, float(spec["delta"]), name=name),
        "validation": {
          spec[m]: mean_of([{"v": v[s]} for s in seeds if s in v], "v")
          for m, v in (("a", va), ("b", vb))
        },
      }
    )
  for family in dict.fromkeys(r["question"] for r in rows):
    mine = [r for r in rows if r["question"] == family]
    paired = stats.correct([r["paired"] for r in mine])
    tosts = stats.correct_tost([r["tost"] for r in mine])
    intervals = stats.simultaneous(paired)
    for r, p, e, i in zip(mine, paired, tosts, intervals, strict=True):
      r.update(paired=p, tost=e, interval=i)
      if p.n < 2:
        r["outcome"] = None
        r["line"] = f"{r['name']}: pending ({p.n} paired seeds)"
        continue
      args = (p, e, i, float(r["delta"]))
      r["outcome"] = stats.decide(*args, higher_is_better=r["higher"])
      show = label or str
      r["line"] = stats.decision_line(
        *args, show(r["a"]), show(r["b"]), higher_is_better=r["higher"]
      )
  return rows


def best_on_validation(rows: Sequence[Mapping[str, Any]], higher: bool) -> Mapping[str, Any] | None:
  """Of comparisons that share ``a``, the one whose ``b`` has the best mean validation metric
  over its paired seeds (the strongest rival, chosen without looking at test); None if a
  rival has no validation value yet."""
  vals = [(r["validation"].get(r["b"]), r) for r in rows]
  if not vals or any(v is None or v != v for v, _ in vals):
    return None
  pick = max if higher else min
  return pick(vals, key=lambda vr: vr[0])[1]
