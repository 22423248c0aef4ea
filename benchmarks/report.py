"""Tables, ratios, growth per doubling of L and plots from benchmark JSONL records.

Records come from ``benchmarks/runner.py`` (older ones from the harness's former home in
``lrm/analysis/`` read the same). One group is one (kind, mode, dtype, batch, dim, heads,
window, malloc) setting, so runs with ``--malloc=both`` give two groups. This module reports
numbers only: what they should be, and whether they are, is written in
``results/bench/README.md``.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence

from benchmarks import cells

MiB = 2**20
GROUP_KEYS = ("kind", "mode", "dtype", "batch", "dim", "heads", "window", "malloc", "process")


def load(paths: Iterable[str]) -> list[dict]:
  """Records of one or more JSONL files (blank lines ignored)."""
  out = []
  for path in paths:
    with open(path) as f:
      out += [json.loads(line) for line in f if line.strip()]
  return out


def _group_key(r: dict) -> tuple:
  # A training step's heads are its experiment's (none for a conv model), not a setting.
  return tuple(None if k == "heads" and r["kind"] == "train" else r.get(k) for k in GROUP_KEYS)


def groups(records: Sequence[dict]) -> dict[tuple, list[dict]]:
  out: dict[tuple, list[dict]] = defaultdict(list)
  for r in records:
    if r.get("kind") in ("mixer", "train"):
      out[_group_key(r)].append(r)
  return dict(out)


def _title(key: tuple, recs: Sequence[dict]) -> str:
  g = dict(zip(GROUP_KEYS, key, strict=True))
  what = "training step (fwd+bwd+AdamW)" if g["kind"] == "train" else g["mode"]
  heads = {r.get("heads") for r in recs} - {None}
  heads_text = f"{heads.pop()} heads, " if len(heads) == 1 else ""
  shared = ", all lengths in one process (alternating rounds)" if g["process"] == "shared" else ""
  return (
    f"{what}, {g['dtype']}, width {g['dim']}, {heads_text}window radius "
    f"{g['window']}, batch {g['batch']}, malloc {g['malloc']}{shared}"
  )


def _by_cell(recs: Sequence[dict]) -> dict[tuple[str, int], dict]:
  return {(r["mixer"], r["length"]): r for r in recs}


def _ok(r: dict | None) -> bool:
  return r is not None and r.get("status") == "ok"


def _fmt(r: dict | None, field: str, scale: float = 1.0, digits: int = 1) -> str:
  if r is None:
    return ""
  if not _ok(r):
    return r.get("status", "?").upper()
  value = r.get(field)
  return "" if value is None else f"{value / scale:.{digits}f}"


def _labels(recs: Sequence[dict]) -> list[str]:
  return list(dict.fromkeys(r["mixer"] for r in recs))


def _lengths(recs: Sequence[dict]) -> list[int]:
  return sorted({r["length"] for r in recs})


def _grid(recs: Sequence[dict], field: str, scale: float, digits: int) -> list[str]:
  lengths = _lengths(recs)
  cells_ = _by_cell(recs)
  rows = ["| mixer | impl | " + " | ".join(str(L) for L in lengths) + " |"]
  rows.append("|---|---|" + "---:|" * len(lengths))
  for label in _labels(recs):
    impl = next((r.get("impl", "") for r in recs if r["mixer"] == label and "impl" in r), "")
    vals = [_fmt(cells_.get((label, L)), field, scale, digits) for L in lengths]
    rows.append(f"| {label} | {impl} | " + " | ".join(vals) + " |")
  return rows


def markdown(records: Sequence[dict], *, brief: bool = False) -> str:
  """Markdown tables per group: time, XLA memory, peak RSS, % of matmul peak.

  ``brief`` keeps only time and XLA memory (the README table).
  """
  out = []
  for key, recs in groups(records).items():
    out.append(f"### {_title(key, recs)}\n")
    peak = next((r.get("peak_gflops") for r in recs if r.get("peak_gflops")), None)
    if peak:
      out.append(
        f"Matmul peak measured in the same run: {peak:.1f} GFLOP/s "
        f"({recs[0].get('peak_matmul', '')}).\n"
      )
    if recs[0]["kind"] == "train":
      out += _train_table(recs) + [""]
      continue
    tables = [
      ("median time (ms)", "median_ms", 1.0, 1),
      ("XLA buffers (MiB: temp + arguments + outputs)", "xla_total_bytes", MiB, 1),
    ]
    if not brief:
      tables += [
        ("peak process RSS (MiB)", "peak_rss_bytes", MiB, 0),
        ("% of matmul peak (analytic useful FLOPs)", "frac_peak", 0.01, 1),
      ]
    for name, field, scale, digits in tables:
      out += [f"**{name}**\n"] + _grid(recs, field, scale, digits) + [""]
  return "\n".join(out)


def _train_table(recs: Sequence[dict]) -> list[str]:
  L = recs[0]["length"]
  rows = [
    f"Length {L}, batch {recs[0]['batch']}, depth {recs[0].get('depth')}.\n",
    "| mixer | impl | params | step (ms) | tokens/s | % peak | XLA MiB | RSS MiB |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in recs:
    if not _ok(r):
      rows.append(f"| {r['mixer']} | | | {r.get('status', '?').upper()} | | | | |")
      continue
    frac = r.get("frac_peak")
    rows.append(
      f"| {r['mixer']} | {r.get('impl', '')} | {r['num_params'] / 1e6:.2f}M | {r['median_ms']:.0f} "
      f"| {r['tokens_per_s']:.0f} | {'' if frac is None else f'{100 * frac:.1f}'} "
      f"| {r.get('xla_total_bytes', 0) / MiB:.0f} | {r['peak_rss_bytes'] / MiB:.0f} |"
    )
  return rows


def ratios(records: Sequence[dict], reference: Sequence[str] = ()) -> list[str]:
  """``a vs b`` speed and memory ratios per length, for the pairs ``cells.pairs`` derives."""
  out = []
  for key, recs in groups(records).items():
    if key[0] != "mixer":
      continue
    by_cell = _by_cell(recs)
    specs = {r["mixer"]: r.get("spec", {}) for r in recs}
    for fast, slow in cells.pairs(specs, reference):
      parts = []
      for L in _lengths(recs):
        a, b = by_cell.get((fast, L)), by_cell.get((slow, L))
        if _ok(a) and _ok(b):
          speed = b["median_ms"] / a["median_ms"]
          mem = b.get("xla_total_bytes", 0) / max(a.get("xla_total_bytes", 0), 1)
          parts.append(f"L={L}: {speed:.1f}x faster, {mem:.1f}x less XLA memory")
        elif _ok(a) and b is not None:
          parts.append(f"L={L}: {slow} {b['status'].upper()}")
      if parts:
        out.append(f"{fast} vs {slow} ({_setting(key)}): " + "; ".join(parts))
  return out


def growth(records: Sequence[dict]) -> list[str]:
  """Per label, the time ratio of each doubling of L (x2.00 = linear, x4.00 = quadratic)."""
  out = []
  for key, recs in groups(records).items():
    if key[0] != "mixer":
      continue
    by_cell, lengths = _by_cell(recs), _lengths(recs)
    for label in _labels(recs):
      parts = []
      for short, long in zip(lengths, lengths[1:], strict=False):
        a, b = by_cell.get((label, short)), by_cell.get((label, long))
        if long != 2 * short or a is None or b is None:
          continue
        if _ok(a) and _ok(b):
          parts.append(f"x{b['median_ms'] / a['median_ms']:.2f} ({short}->{long})")
        elif _ok(a):
          parts.append(f"{b['status']} at {long}")
      if parts:
        out.append(f"{label} ({_setting(key)}): " + ", ".join(parts))
  return out


def _setting(key: tuple) -> str:
  g = dict(zip(GROUP_KEYS, key, strict=True))
  shared = ", one process" if g["process"] == "shared" else ""
  return f"{g['mode']}, malloc {g['malloc']}{shared}"


def _superlinear(ok: Sequence[dict]) -> bool:
  """Whether the implementation's analytic FLOPs grow faster than L^1.5 (dense kernels)."""
  pts = [(r["length"], r["flops_impl_fwd"]) for r in ok if r.get("flops_impl_fwd")]
  if len(pts) < 2 or pts[0][0] == pts[-1][0]:
    return False
  (l1, f1), (l2, f2) = pts[0], pts[-1]
  return math.log(f2 / f1) / math.log(l2 / l1) > 1.5


def plot(records: Sequence[dict], path: str) -> None:
  """Log-log time and XLA memory against length (mixers), or tokens/s bars (training)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  gs = groups(records)
  fig, axes = plt.subplots(max(len(gs), 1), 2, figsize=(14, 4.5 * max(len(gs), 1)), squeeze=False)
  for (key, recs), (ax_t, ax_m) in zip(gs.items(), axes, strict=False):
    if key[0] == "train":
      ok = [r for r in recs if _ok(r)]
      ax_t.barh([r["mixer"] for r in ok], [r["tokens_per_s"] for r in ok])
      ax_t.set_xlabel("training tokens/s")
      ax_m.barh([r["mixer"] for r in ok], [r.get("xla_total_bytes", 0) / MiB for r in ok])
      ax_m.set_xlabel("XLA buffers (MiB)")
    else:
      for i, label in enumerate(_labels(recs)):
        ok = sorted((r for r in recs if r["mixer"] == label and _ok(r)), key=lambda r: r["length"])
        if not ok:
          continue
        # Ten distinct colours, then a new marker for each further ten (never two shades of
        # one hue for two mixers); dashed = a quadratic (dense) kernel.
        style = dict(
          ls="--" if _superlinear(ok) else "-",
          marker="os^Dv"[(i // 10) % 5],
          color=plt.cm.tab10(i % 10),
        )
        xs = [r["length"] for r in ok]
        ax_t.plot(xs, [r["median_ms"] for r in ok], label=label, **style)
        ax_m.plot(xs, [r.get("xla_total_bytes", 0) / MiB for r in ok], label=label, **style)
      for ax, name in ((ax_t, "median time (ms)"), (ax_m, "XLA buffers (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(_lengths(recs), [str(L) for L in _lengths(recs)])
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
      ax_m.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="dashed: dense\n(quadratic) kernel",
        title_fontsize=7,
      )
    ax_t.set_title(_title(key, recs), fontsize=8, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def text(
  records: Sequence[dict],
  *,
  brief: bool = False,
  with_ratios: bool = True,
  with_growth: bool = True,
  reference: Sequence[str] = (),
) -> str:
  """The report: ``markdown`` tables, then the ratio and growth lists (when non-empty)."""
  out = markdown(records, brief=brief)
  sections = []
  if with_ratios:
    sections.append(("Ratios", ratios(records, reference)))
  if with_growth:
    sections.append(("Time per doubling of L", growth(records)))
  for title, lines in sections:
    if lines:
      out += f"\n**{title}**\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
  return out


def write_report(
  records: Sequence[dict], jsonl_path: str, reference: Sequence[str] = ()
) -> tuple[str, str]:
  """Write ``<stem>.md`` (``text``: what ``benchmarks/table.py --full --ratios --growth``
  prints) and ``<stem>.png`` next to the JSONL."""
  stem = os.path.splitext(jsonl_path)[0]
  md, png = stem + ".md", stem + ".png"
  with open(md, "w") as f:
    f.write(text(records, reference=reference))
  plot(records, png)
  return md, png
