"""Tables, ratios, target checks and plots from benchmark JSONL records.

Records come from ``lrm/analysis/bench_runner.py``; one group is one (kind, mode, dtype,
batch, dim, heads, window, malloc) setting, so runs with ``--malloc=both`` give two groups.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence

MiB = 2**20
GROUP_KEYS = ("kind", "mode", "dtype", "batch", "dim", "heads", "window", "malloc")
# (fast, slow) pairs whose ratios are printed when both appear in a group.
PAIRS = (
  ("local", "dpa_local"),
  ("local", "local:impl=dense"),
  ("bigbird", "bigbird:impl=dense"),
  ("bigbird", "dpa_full"),
  ("global", "dpa_full"),
  ("conv", "local"),
  ("conv", "xla_conv"),
)


def load(paths: Iterable[str]) -> list[dict]:
  """Records of one or more JSONL files (blank lines ignored)."""
  out = []
  for path in paths:
    with open(path) as f:
      out += [json.loads(line) for line in f if line.strip()]
  return out


def groups(records: Sequence[dict]) -> dict[tuple, list[dict]]:
  out: dict[tuple, list[dict]] = defaultdict(list)
  for r in records:
    if r.get("kind") in ("mixer", "train"):
      out[tuple(r.get(k) for k in GROUP_KEYS)].append(r)
  return dict(out)


def _title(key: tuple) -> str:
  g = dict(zip(GROUP_KEYS, key, strict=True))
  what = "training step (fwd+bwd+AdamW)" if g["kind"] == "train" else g["mode"]
  return (
    f"{what}, {g['dtype']}, width {g['dim']}, {g['heads']} heads, window radius "
    f"{g['window']}, batch {g['batch']}, malloc {g['malloc']}"
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


def _grid(recs: Sequence[dict], field: str, scale: float, digits: int) -> list[str]:
  lengths = sorted({r["length"] for r in recs})
  labels = list(dict.fromkeys(r["mixer"] for r in recs))
  cells = _by_cell(recs)
  rows = ["| mixer | impl | " + " | ".join(str(L) for L in lengths) + " |"]
  rows.append("|---|---|" + "---:|" * len(lengths))
  for label in labels:
    impl = next((r.get("impl", "") for r in recs if r["mixer"] == label and "impl" in r), "")
    vals = [_fmt(cells.get((label, L)), field, scale, digits) for L in lengths]
    rows.append(f"| {label} | {impl} | " + " | ".join(vals) + " |")
  return rows


def markdown(records: Sequence[dict], *, brief: bool = False) -> str:
  """Markdown tables per group: time, XLA memory, peak RSS, % of matmul peak.

  ``brief`` keeps only time and XLA memory (the README table).
  """
  out = []
  for key, recs in groups(records).items():
    out.append(f"### {_title(key)}\n")
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


def ratios(records: Sequence[dict]) -> list[str]:
  """``fast vs slow`` speed and memory ratios per length, for the pairs in ``PAIRS``."""
  out = []
  for key, recs in groups(records).items():
    if key[0] != "mixer":
      continue
    cells = _by_cell(recs)
    labels = {r["mixer"] for r in recs}
    for fast, slow in PAIRS:
      if fast not in labels or slow not in labels:
        continue
      parts = []
      for L in sorted({r["length"] for r in recs}):
        a, b = cells.get((fast, L)), cells.get((slow, L))
        if _ok(a) and _ok(b):
          speed = b["median_ms"] / a["median_ms"]
          mem = b.get("xla_total_bytes", 0) / max(a.get("xla_total_bytes", 0), 1)
          parts.append(f"L={L}: {speed:.1f}x faster, {mem:.1f}x less XLA memory")
        elif _ok(a) and b is not None:
          parts.append(f"L={L}: {slow} {b['status'].upper()}")
      if parts:
        out.append(f"{fast} vs {slow} ({key[1]}, malloc {key[-1]}): " + "; ".join(parts))
  return out


def _quadratic(r: dict) -> bool:
  spec = r.get("spec", {})
  return spec.get("name") in ("global", "dpa_full", "dpa_local") or spec.get("impl") == "dense"


def targets(recs: Sequence[dict]) -> list[tuple[str, bool | None, str]]:
  """The issue's targets on one group of fwd+bwd records: (target, met or None, numbers)."""
  cells = _by_cell(recs)
  lengths = sorted({r["length"] for r in recs})
  labels = list(dict.fromkeys(r["mixer"] for r in recs))
  out = []

  details, met = [], True
  for label in labels:
    rs = [cells[(label, L)] for L in lengths if L >= 4096 and (label, L) in cells]
    if not rs or _quadratic(rs[0]):
      continue
    growth = []
    for a, b in zip(rs, rs[1:], strict=False):
      if b["length"] != 2 * a["length"]:
        continue
      if not (_ok(a) and _ok(b)):
        met = False
        growth.append(f"{b['status'] if _ok(a) else a['status']} at {b['length']}")
        continue
      g = b["median_ms"] / a["median_ms"]
      met &= g <= 2.2
      growth.append(f"x{g:.2f}")
    if growth:
      details.append(f"{label} " + ",".join(growth))
  out.append(
    (
      "doubling L (>=4K) multiplies time by <=2.2 for every sub-quadratic mixer",
      met if details else None,
      "; ".join(details) or "needs lengths 4K, 8K, ...",
    )
  )

  def compare(fast: str, slow: str, min_len: int, need_mem: bool) -> tuple[bool | None, str]:
    met, parts = None, []
    for L in lengths:
      a, b = cells.get((fast, L)), cells.get((slow, L))
      if L < min_len or a is None or b is None:
        continue
      if not _ok(a):
        met = False
        parts.append(f"L={L}: {fast} {a['status']}")
      elif not _ok(b):
        met = met is not False
        parts.append(f"L={L}: {slow} {b['status']}")
      else:
        speed = b["median_ms"] / a["median_ms"]
        mem = b.get("xla_total_bytes", 0) / max(a.get("xla_total_bytes", 0), 1)
        ok = speed >= 10 and mem >= 10 if need_mem else speed > 1
        met = ok and met is not False
        parts.append(f"L={L}: x{speed:.1f} speed" + (f", x{mem:.1f} memory" if need_mem else ""))
    return met, "; ".join(parts) or f"needs {fast} and {slow}"

  met, text = compare("local", "dpa_local", 8192, True)
  out.append(("local >=10x faster and >=10x less XLA memory than dpa_local at L>=8K", met, text))
  met, text = compare("conv", "local", 0, False)
  out.append(("conv (K=2w+1) faster than local at every L", met, text))

  met, parts = None, []
  for label in ("local", "bigbird"):
    for L in lengths:
      r = cells.get((label, L))
      if L < 4096 or r is None:
        continue
      frac = r.get("frac_peak") if _ok(r) else None
      met = (frac is not None and frac >= 0.30) and met is not False
      parts.append(f"{label} L={L}: " + (f"{100 * frac:.0f}%" if frac is not None else r["status"]))
  out.append(
    (
      "local and bigbird reach >=30% of the matmul peak at L>=4K",
      met,
      "; ".join(parts) or "needs local/bigbird at L>=4K",
    )
  )
  return out


def targets_text(records: Sequence[dict]) -> str:
  lines = []
  for key, recs in groups(records).items():
    if key[0] != "mixer" or key[1] != "fwdbwd":
      continue
    lines.append(f"Targets ({_title(key)}):")
    for name, met, text in targets(recs):
      verdict = {True: "MET", False: "NOT MET", None: "n/a"}[met]
      lines.append(f"  [{verdict}] {name}: {text}")
  return "\n".join(lines)


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
      for i, label in enumerate(dict.fromkeys(r["mixer"] for r in recs)):
        ok = sorted((r for r in recs if r["mixer"] == label and _ok(r)), key=lambda r: r["length"])
        if not ok:
          continue
        # Dashed = quadratic (dense) kernels; tab20 keeps up to 20 mixers apart.
        style = dict(ls="--" if _quadratic(ok[0]) else "-", marker="o", color=plt.cm.tab20(i % 20))
        xs = [r["length"] for r in ok]
        ax_t.plot(xs, [r["median_ms"] for r in ok], label=label, **style)
        ax_m.plot(xs, [r.get("xla_total_bytes", 0) / MiB for r in ok], label=label, **style)
      for ax, name in ((ax_t, "median time (ms)"), (ax_m, "XLA buffers (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(
          sorted({r["length"] for r in recs}), [str(L) for L in sorted({r["length"] for r in recs})]
        )
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
      ax_m.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax_t.set_title(_title(key), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_report(records: Sequence[dict], jsonl_path: str) -> tuple[str, str]:
  """Write ``<stem>.md`` (tables, ratios, targets) and ``<stem>.png`` next to the JSONL."""
  stem = os.path.splitext(jsonl_path)[0]
  md, png = stem + ".md", stem + ".png"
  text = markdown(records)
  extra = ratios(records)
  if extra:
    text += "\n**Ratios**\n\n" + "\n".join(f"- {line}" for line in extra) + "\n"
  tgt = targets_text(records)
  if tgt:
    text += "\n```\n" + tgt + "\n```\n"
  with open(md, "w") as f:
    f.write(text)
  plot(records, png)
  return md, png
