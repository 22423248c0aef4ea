"""Markdown tables and the plot of ``benchmarks/decode.py``'s JSON lines (numbers only).

  python benchmarks/decode.py --out=results/bench/decode_cpu.jsonl --rebuild

Tables: ms per decode step (one token for every sequence of the batch) and its growth from
the shortest to the longest context, tokens/s, dollars per 1M generated tokens at the price
the records were measured with, cache MiB per sequence, prefill ms. What the numbers should
be, and whether they are, is written in ``results/bench/README.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from lrm.analysis import cost

MiB = 2**20


def _ok(records: Sequence[dict]) -> list[dict]:
  return [r for r in records if r.get("status") == "ok"]


def _num(x: float) -> str:
  """Three significant digits without an exponent: 0.599, 12.3, 1,729."""
  return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _ctx(n: int) -> str:
  return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _table(
  records: Sequence[dict], rows: list[tuple], cell: Callable[[dict], str], growth: bool = False
) -> list[str]:
  """Rows ``(mixer, batch)`` x contexts; batch None: one row per mixer (the records given
  hold one per mixer and context)."""
  contexts = sorted({r["context"] for r in records if "context" in r})
  by = {(r["mixer"], r.get("batch"), r["context"]): r for r in records if "context" in r}
  by |= {(r["mixer"], None, r["context"]): r for r in records if "context" in r}
  head = "| mixer | " + ("batch | " if rows and rows[0][1] is not None else "")
  head += " | ".join(_ctx(c) for c in contexts) + " |"
  head += f" {_ctx(contexts[-1])} / {_ctx(contexts[0])} |" if growth else ""
  lines = [head, "|---|" + "---|" * (head.count("|") - 2)]
  for mixer, batch in rows:
    cells = []
    for c in contexts:
      r = by.get((mixer, batch, c))
      cells.append("" if r is None else cell(r) if r.get("status") == "ok" else r["status"])
    line = f"| {mixer} | " + (f"{batch} | " if batch is not None else "") + " | ".join(cells)
    if growth:
      lo, hi = by.get((mixer, batch, contexts[0])), by.get((mixer, batch, contexts[-1]))
      ratio = (
        f"{hi['ms_per_step'] / lo['ms_per_step']:.2f}x"
        if lo and hi and lo.get("status") == hi.get("status") == "ok"
        else ""
      )
      line += f" | {ratio}"
    lines.append(line + " |")
  return lines


def markdown(records: Sequence[dict]) -> str:
  ok = _ok(records)
  if not ok:
    return "No decode measurements.\n"
  first = ok[0]
  info = first.get("machine", {})
  price = cost.Price(first["price_per_hour"], first["price_machine"])
  loads = [v[0] for r in ok for v in r.get("load", [])]
  mixers = list(dict.fromkeys(r["mixer"] for r in ok))
  batches = sorted({r["batch"] for r in ok})
  pairs = [(m, b) for b in batches for m in mixers]
  longest = max(r["context"] for r in ok)
  cells = [r for r in records if "context" in r]  # failed cells too (shown by status)
  lines = [
    f"Machine: {info.get('cpu_model', '?')}, {info.get('cpu_affinity', '?')} cores, "
    f"{info.get('backend', '?')}, jax {info.get('jax', '?')}, glibc malloc "
    f"{first.get('malloc', 'default')}. 1-minute load average while "
    f"the cells ran: {min(loads):.2f}-{max(loads):.2f}.",
    "",
    f"Model: byte LM (vocabulary {first['vocab']}, tied output, learned positions, MLP ratio "
    f"4), {first['depth']} blocks of one causal preset, width {first['dim']}, {first['heads']} "
    f"heads, window radius {first['window']} (causal conv kernel {first['window'] + 1}), "
    f"block {first['block']}, {first['dtype']}.",
    "One decode step: embedding, every block's cached step, logits and the greedy next token "
    "for each sequence of the batch, jitted, cache donated, at positions cycling over "
    "context .. context + span - 1 (span = min(1024, context / 8)) with a cache of context + "
    "span tokens filled with random values (a step's cost does not depend on them; it may "
    "depend on the position: hyena adds each finished block by an FFT). Mean time per step "
    f"over {first['repeats']} alternating rounds (over the contexts) of samples of "
    "consecutive steps, each after an untimed step; the samples cover the whole span where "
    "that is cheap (< 8 s).",
    "",
    "### ms per decode step (each sequence of the batch gets one token)",
    "",
    *_table(cells, pairs, lambda r: _num(r["ms_per_step"]), growth=True),
    "",
    "### Generated tokens per second (batch / step time)",
    "",
    *_table(ok, pairs, lambda r: f"{r['tokens_per_s']:,.0f}"),
    "",
    f"### Dollars per 1M generated tokens at {price.statement()}",
    "",
    "Price x step time / batch x 1M, at each context length (the cache holding that many tokens).",
    "",
    *_table(ok, pairs, lambda r: cost.fmt_dollars(r["usd_per_million_tokens"])),
    "",
    f"### Cache MiB per sequence (all {first['depth']} blocks; `Encoder.cache_bytes(1, ctx)`)",
    "",
    *_table(
      [r for r in ok if r["batch"] == batches[0]],
      [(m, None) for m in mixers],
      lambda r: _num(r["cache_bytes_per_sequence"] / MiB),
    ),
    "",
  ]
  pre = [r for r in ok if "prefill_status" in r]
  if pre:
    lines += [
      "### Prefill ms at batch 1 (a real prompt of that many tokens, jitted, after a "
      "compiling call)",
      "",
      *_table(
        pre,
        [(m, None) for m in mixers],
        lambda r: _num(r["prefill_ms"]) if r["prefill_status"] == "ok" else "skipped",
      ),
      "",
    ]
    skipped = {r["prefill_reason"] for r in pre if r["prefill_status"] != "ok"}
    if skipped:
      lines += [f"Prefill skipped where: {'; '.join(sorted(skipped))} (time budget).", ""]
  lines += [
    f"- {r['mixer']}"
    + (f" batch {r['batch']} context {r['context']}" if "context" in r else "")
    + f": {r['status']} ({r.get('reason', '')})"
    for r in records
    if r.get("status") != "ok"
  ]
  lines.append(f"\nLongest context: {_ctx(longest)} tokens.")
  return "\n".join(lines) + "\n"


def plot(records: Sequence[dict], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ok = _ok(records)
  mixers = list(dict.fromkeys(r["mixer"] for r in ok))
  batches = sorted({r["batch"] for r in ok})
  colors = plt.get_cmap("tab10")
  markers = "osv^D<>pX*hP"
  fig, axes = plt.subplots(1, len(batches) + 1, figsize=(5.2 * (len(batches) + 1), 5.2))
  panels = [(f"time per decode step, batch {b}", "ms per step", "ms_per_step", b) for b in batches]
  panels.append(("cache per sequence", "MiB", "cache_bytes_per_sequence", batches[0]))
  for ax, (title, ylabel, field, b) in zip(axes, panels, strict=True):
    scale = MiB if field.startswith("cache") else 1.0
    for i, m in enumerate(mixers):
      rs = sorted((r for r in ok if (r["mixer"], r["batch"]) == (m, b)), key=lambda r: r["context"])
      ax.plot(
        [r["context"] for r in rs],
        [r[field] / scale for r in rs],
        marker=markers[i % len(markers)],
        color=colors(i % 10),
        linestyle="-" if i < 10 else "--",
        label=m,
      )
    ax.set_xscale("log", base=2)
    ticks = sorted({r["context"] for r in ok})
    ax.set_xticks(ticks, [_ctx(c) for c in ticks])
    ys = [r[field] for r in ok if r["batch"] == b and r.get(field)]
    if ys and max(ys) / min(ys) > 10:  # log only where values span a decade or more
      ax.set_yscale("log")
    else:  # a narrow range on a log axis makes flat lines look like trends
      ax.set_ylim(0, 1.1 * max(ys or [1.0]) / scale)
    ax.set_title(title)
    ax.set_xlabel("context length (tokens in the cache)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=min(len(mixers), 6), fontsize=10)
  first = ok[0]
  fig.suptitle(
    f"Decoding cost per causal mixer: byte LM, {first['depth']} blocks, width {first['dim']}, "
    f"window {first['window']}, float32, {first.get('machine', {}).get('backend', '?')}"
  )
  fig.tight_layout(rect=(0, 0.1 if len(mixers) > 6 else 0.06, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(records: Sequence[dict], jsonl_path: str) -> str:
  """``<stem>.md`` (the markdown, returned) and ``<stem>.png`` next to the JSONL."""
  stem = os.path.splitext(jsonl_path)[0]
  md = markdown(records)
  Path(stem + ".md").write_text(md)
  if _ok(records):
    plot(records, stem + ".png")
  return md
