"""The study's answers and its sanity checklist, from summary records alone (no JAX).

A record is one finished cell of ``lrm.study.report.records`` (``summary.json``). Only
cells at their arm's chosen learning rate (``in_study``) enter a comparison or a check.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from lrm.study import stats

Record = Mapping[str, Any]

# Thresholds of the checklist (stated in REPORT.md next to each check).
ATTENTION_SOLVES = 0.99  # full attention on recall
CHANCE_MARGIN = 0.05  # "at chance": at most this above guessing among the context's values
CONV_FAILS = 0.5  # the ungated conv stays below this accuracy at every width
FLOPS_TOLERANCE = 0.15  # analytic within 15% of XLA's count


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


def _wins(row: Mapping[str, Any], higher_is_better: bool) -> bool | None:
  """Whether ``a`` significantly beats ``b`` (None: not tested yet)."""
  t: stats.Paired = row["test"]
  if t.n < 2:
    return None
  return t.significant and (t.diff.mean > 0) == higher_is_better


def conclusion(question: str, rows: Sequence[Mapping[str, Any]], higher: bool) -> str:
  """The pre-registered decision rule of Q1 or Q2 applied to its comparisons."""
  if question not in ("Q1", "Q2"):
    return ""  # Q3 is descriptive
  wins = [(r, _wins(r, higher)) for r in rows]
  if any(w is None for _, w in wins):
    return "Decision: pending (not every comparison has two or more paired seeds)."
  if question == "Q1":
    kinds: dict[str, list[bool]] = defaultdict(list)
    for r, w in wins:
      kinds[r["b"]].append(bool(w))
    beaten = [k for k, ws in kinds.items() if all(ws)]
    matched = [k for k in kinds if k not in beaten]
    return (
      f"Decision: local attention beats {', '.join(beaten) or 'no convolution'} at every "
      f"tested budget; it does not beat (matches) {', '.join(matched) or 'none'}."
    )
  if question == "Q2":
    alone = [w for r, w in wins if r["b"] == "local"]
    convs = [w for r, w in wins if "conv" in r["b"] and "+" in r["b"]]
    only = bool(alone and alone[0]) and not all(convs)
    return (
      "Decision: local attention is "
      + ("" if only else "not shown to be ")
      + "useful only in combination (rule: local+local+global beats local alone, and not "
      "every conv+global stack is beaten by it)."
    )
  return ""


def mean_of(records: Sequence[Record], field: str = "value") -> float:
  vals = [float(r[field]) for r in records if r.get(field) is not None]
  return sum(vals) / len(vals) if vals else math.nan


def _bucket_beyond(test: Mapping[str, float]) -> str | None:
  """The farthest distance bucket (``acc_d>N``) of a recall cell."""
  far = [k for k in test if re.fullmatch(r"acc_d>\d+", k)]
  return far[0] if far else None


def sanity(records: Sequence[Record]) -> list[tuple[str, bool | None, str]]:
  """The checklist: (check, passed (None: not run yet), evidence)."""
  checks: list[tuple[str, bool | None, str]] = []
  recall = sorted({r["task"] for r in records if r["task"].startswith("recall")})
  # 1. full attention solves recall (every size)
  rs = [r for t in recall for r in select(records, task=t, mixer="global")]
  groups = _means(rs, ("task", "size"))
  ok = all(v >= ATTENTION_SOLVES for v in groups.values()) if groups else None
  ev = ", ".join(f"{t} {s}: {v:.3f}" for (t, s), v in sorted(groups.items()))
  checks.append((f"full attention >= {ATTENTION_SOLVES} on recall", ok, ev or "no cells"))
  # 2. windowed single mixers at chance beyond their reach (recall at any distance): no
  # better than guessing among the values in the context (1 / pairs), plus a margin
  fg: dict[str, list] = defaultdict(list)
  for r in select(records, task="recall_any"):
    bucket = _bucket_beyond(r.get("test") or {})
    if r.get("window") is not None and "+" not in r["mixer"] and bucket:
      level = max(r.get("chance") or 0.0, r.get("chance_context") or 0.0)
      fg[r["mixer"]].append((r["test"][bucket], level, bucket))
  ok = all(v <= c + CHANCE_MARGIN for vs in fg.values() for v, c, _ in vs) if fg else None
  ev = ", ".join(
    f"{m} {vs[0][2]}: {sum(v for v, _, _ in vs) / len(vs):.3f} (guess {vs[0][1]:.3f})"
    for m, vs in sorted(fg.items())
  )
  checks.append(("windowed mixers at chance beyond their reach", ok, ev or "no cells"))
  # 3. Zoology: ungated conv fails at every width, gated improves with width, attention high
  conv = _means(select(records, task="recall_inside", mixer="conv"), ("size",))
  gated = _means(select(records, task="recall_inside", mixer="gated_conv"), ("size",))
  local = _means(select(records, task="recall_inside", mixer="local"), ("size",))
  if conv and gated and local:
    order = sorted(gated, key=lambda k: _size_rank(records, k[0]))
    ok = (
      all(v < CONV_FAILS for v in conv.values())
      and gated[order[-1]] > gated[order[0]]
      and all(v >= 0.9 for v in local.values())
    )
    ev = "; ".join(
      f"{name} " + ", ".join(f"{k[0]} {d[k]:.3f}" for k in order if k in d)
      for name, d in (("conv", conv), ("gated_conv", gated), ("local", local))
    )
  else:
    ok, ev = None, "no cells"
  checks.append(
    (f"conv < {CONV_FAILS} at every width; gated_conv rises with width; local >= 0.9", ok, ev)
  )
  # 4. measured receptive field = analytic in every cell
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
  # 5. analytic FLOPs within 15% of XLA's count
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
  # 6. the LM is trained long enough that full attention is not the worst
  lm = _means(select(records, task="lm", rule="params_non_embedding"), ("mixer",))
  if "global" in {k[0] for k in lm} and len(lm) > 1:
    worst = max(lm, key=lm.get)[0]
    ok, ev = worst != "global", f"worst bits per byte: {worst} ({lm[(worst,)]:.3f})"
  else:
    ok, ev = None, "no cells"
  checks.append(("lm: full attention is not the worst (else: undertrained)", ok, ev))
  return checks


def _means(records: Sequence[Record], keys: tuple[str, ...]) -> dict[tuple, float]:
  groups: dict[tuple, list] = defaultdict(list)
  for r in records:
    groups[tuple(r[k] for k in keys)].append(r)
  return {k: mean_of(v) for k, v in groups.items()}


def _size_rank(records: Sequence[Record], size: str) -> float:
  widths = [r.get("size_width") for r in records if r.get("size") == size]
  return float(widths[0]) if widths and widths[0] is not None else 0.0
