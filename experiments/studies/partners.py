"""Local attention's 2024 partners on MQAR at the quickstart's size: RG-LRU, a selective SSM,
linear attention and the stacks built from them (Griffin, Based, Samba), next to local
attention, a gated convolution and full attention.

  python scripts/study.py --study=experiments/studies/partners.py --out=results/partners --list
  python scripts/study.py --study=experiments/studies/partners.py --out=results/partners \
      --shard=0/2 &
  python scripts/study.py --study=experiments/studies/partners.py --out=results/partners \
      --shard=1/2
  python scripts/study.py --study=experiments/studies/partners.py --out=results/partners \
      --report_only

Question. On MQAR at the quickstart's size (16 key-value pairs in 128 tokens, width 64, 600
steps), how do the mixers that 2024's hybrids pair with local attention do: the gated linear
recurrence ``rglru`` (Griffin's), the selective state-space layer ``ssm`` (Mamba-2's SSD
form; Samba's is Mamba), ``linear_attention`` (Based's), and the named stacks ``griffin``
(rglru+rglru+local), ``based`` (gated_conv+linear_attention+local+gated_conv+gated_conv)
and ``samba`` (ssm+local), next to ``local`` (window 8), ``gated_conv`` and ``global``? Each
is reported with its test accuracy over three seeds, its parameter count and the size of its
decoding state.

Protocol.
- Config: ``experiments/quickstart.py`` (task ``recall``, a short causal conv, then the tested
  layers; width 64, MLP 256, 4 heads, learned absolute positions, batch 64, 600 steps,
  warmup 100, weight decay 0.1; 20,000 / 500 / 500 generated examples), with
  ``window={window}`` = 8 as the quickstart. The study machinery puts the tested preset in
  place of the config's last layer (``lrm.study.grid.model_section``): a stack's parts each
  follow the conv once, as ``quickstart.py:mixer=griffin`` builds them. ``mixer=`` is not
  filled for a study (``grid.base_config`` formats ``{window}`` only) and is left out of the
  ``arg``: the config's own single attention layer is the one replaced.
- Size: the quickstart's, for every model; no parameter matching. The machinery always sizes a
  cell to its task's reference under a budget rule and has no "none" rule, so each mixer is
  its own study task (``mqar-<mixer>``) with itself as the reference: the target is the
  model's own parameter count and ``lrm.analysis.budget.match`` returns width 64 and MLP 256
  unchanged (checked in every cell: achieved = target). Matching everything to ``global``
  instead would shrink the stacks (width 40 for griffin, 32 for based), which is not the
  quickstart's size. Parameter counts therefore differ and are reported per mixer (100k to
  290k; the stacks have 3 to 6 layers against 2).
- Learning rate: {1e-3, 3e-3} at seed 0, extended upward once by x10/3 (to 1e-2) while the
  best is the highest tried (``lr_extend``), chosen on VALIDATION accuracy
  (``lrm.study.sweep``); seeds 0, 1, 2 at the chosen rate (seed 0's sweep cell is reused).
- Reported (``section``): per mixer, test accuracy (the best-validation checkpoint's) as the
  mean, sample sd and 95% t-interval over the 3 seeds, accuracy per answer distance, the
  chosen rate and whether it is interior to the rates tried, the parameter count and the
  decoding state in bytes per sequence at the quickstart's length (128): the sum over the
  model's layers (the conv included) of each mixer's ``cache_bytes(1, 128)``, fp32, from the
  architecture built abstractly from the cell's config.json (``nnx.eval_shape``: nothing
  allocated, nothing restored). This is the one part of the report that imports JAX; the rest
  reads the cells' JSON.
- Held constant: data (same generated examples, same batch order per seed), width, MLP,
  heads, window 8, positions, schedule, optimiser, the per-seed initial draw of the shared
  parts. Not held constant: depth (a stack has one layer per part), parameters, FLOPs and
  state size, and the learning rate (tuned per mixer).
- Attention layers (``local``, ``global`` and the stacks' local layers) use rotary positions
  on top of the learned absolute ones: the study presets' default (``lrm.mixers.presets``),
  which a study cannot switch off. The quickstart's own runs used no rotary (with rotary it
  measured 0.9996 for global attention).

Cells: 9 arms; 18 sweep cells, up to 9 extension cells (1e-2), then 18 cells of seeds 1 and
2: 36 to 45 cells. The two-layer models take about 100 s a cell on 2 free cores (the
quickstart); the 3- to 6-layer stacks an estimated 3-4x that (griffin trained at 1.5 s a step
in a 20-step smoke run on the busy 2-core machine). About 1,700 core-pair seconds per pass over
the 9 arms, 4 or 5 passes: roughly 2 to 2.5 hours as two ``--shard`` processes on 2 cores (an
estimate, not a measurement).

Limits: one task at one small size and one length (a fixed-size state may suffice for 16
pairs but not for more); 600 steps, so a ranking may reflect learning speed; three seeds;
a learning-rate grid of two rates plus one extension (a rate chosen at the lowest edge is not
extended downward: ``section`` says so); models differ in depth and parameters; the state
size is analytic (fp32 cache shapes), not a measured decode.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrm.study import extend, stats, sweep, tables
from lrm.study.tables import fmt
from lrm.study.verdicts import select

CONFIG = "experiments/quickstart.py"
BASELINES = ["local", "gated_conv", "global"]
PARTNERS = ["rglru", "ssm", "linear_attention", "griffin", "based", "samba"]
MIXERS = [*BASELINES, *PARTNERS]
WINDOW = 8  # the quickstart's
SEEDS = [0, 1, 2]
SOLVES = 0.9  # full attention on the quickstart's MQAR (measured: 1.000)
HEAD = ("mixer", "layers", "n", "test acc", "sd", "95% CI")  # then the distance buckets
TAIL = ("lr", "lr position", "params", "state (bytes)")
FILE = "partners.json"  # the section's table, machine-readable


def task_key(mixer: str) -> str:
  """The study task of one mixer: each is its own size reference (no matching)."""
  return f"mqar-{mixer}"


def state_bytes(config: Mapping[str, Any], length: int | None = None) -> int:
  """Decoding state of the model of ``config`` (a run's config.json) in bytes per sequence:
  every layer's ``cache_bytes(1, length)`` summed (default: the task's ``seq_len``)."""
  from lrm.run import Run  # JAX: here only, so that --list and the rest stay light

  run = Run(dict(config), data=False)  # an abstract model: shapes only
  return int(run.model.encoder.cache_bytes(1, length or run.task.seq_len))


def lr_position(arm: Mapping[str, Any] | None) -> tuple[float | None, str]:
  """(chosen rate, where it lies among the rates tried) of an ``lr_sweep.json`` record."""
  if not arm or arm.get("chosen") is None:
    return None, "pending"
  where = {"high": "highest tried (edge)", "both": "highest tried (edge)"}  # both: one rate
  where["low"] = "lowest tried (edge)"
  return float(arm["chosen"]), where.get(extend.edge(arm), "interior")


def table(rows: Sequence[Mapping[str, Any]], out: Path) -> list[dict]:
  """One record per mixer: test accuracy over seeds, per-distance accuracy, chosen rate,
  parameters, layers and decoding state (``state_bytes`` of the first cell's config)."""
  arms = {a["task"]: a for a in sweep.load(out)}
  got = []
  for mixer in MIXERS:
    task = task_key(mixer)
    mine = [r for r in rows if r["task"] == task]
    runs = [r for r in select(mine, task=task) if r["value"] is not None]
    s = stats.summarize([r["value"] for r in sorted(runs, key=lambda r: r["seed"])])
    buckets = sorted({k for r in runs for k in r["test"] if k.startswith("acc_d")}, key=_dist)
    lr, where = lr_position(arms.get(task))
    rec: dict[str, Any] = dict(
      mixer=mixer,
      name=mine[0]["name"] if mine else mixer,
      seeds=sorted(int(r["seed"]) for r in runs),
      test_accuracy={k: None if v != v else v for k, v in s.to_dict().items()},  # NaN: null
      by_distance={k: tables.mean([r["test"] for r in runs], k) for k in buckets},
      lr=lr,
      lr_position=where,
      params=mine[0]["params"] if mine else None,
      layers=None,
      state_bytes=None,
    )
    if mine:  # every cell of a task has the same architecture: read the first
      wd = out / mine[0]["workdir"]
      info = json.loads((wd / "cell.json").read_text())
      rec["layers"] = [spec["name"] for spec in info["model"]["mixer"]]
      rec["state_bytes"] = state_bytes(json.loads((wd / "config.json").read_text()))
    got.append(rec)
  return got


def section(rows: Sequence[Mapping[str, Any]], out: Path | str) -> list[str]:
  """REPORT.md's "Partners" section (and ``partners.json``): the table of ``table``."""
  out = Path(out)
  recs = table(rows, out)
  (out / FILE).write_text(json.dumps(recs, indent=1) + "\n")
  buckets = list(dict.fromkeys(k for r in recs for k in r["by_distance"]))
  lines = [
    "## Partners of local attention on MQAR (quickstart size)",
    "",
    "Every model at the quickstart's width 64 and MLP 256 (no parameter matching; a stack has",
    "one layer per part after the conv). Test accuracy of the best-validation checkpoint at",
    "each mixer's chosen learning rate: mean, sample sd (ddof = 1) and 95% t-interval over the",
    "seeds; accuracy per answer distance (tokens from the key to its query), mean over seeds.",
    "lr: chosen on validation at seed 0 (edge: the best rate may lie outside the rates tried).",
    "State: bytes per sequence of the decoding cache at 128 tokens (fp32, every layer).",
    "",
    _row([*HEAD, *buckets, *TAIL]),
    _row(["---"] * (len(HEAD) + len(buckets) + len(TAIL))),
  ]
  for r in recs:
    s = stats.Summary(**{k: math.nan if v is None else v for k, v in r["test_accuracy"].items()})
    acc = [str(s.n), f"{s.mean:.3f}" if s.n else "pending", fmt(s.sd)]
    acc += [f"[{s.lo:.3f}, {s.hi:.3f}]" if s.n > 1 else "-"]
    acc += [fmt(r["by_distance"].get(k)) for k in buckets]
    lr = ["-" if r["lr"] is None else f"{r['lr']:g}", r["lr_position"]]
    size = ["-" if r["params"] is None else f"{int(r['params']):,}"]
    size += ["-" if r["state_bytes"] is None else f"{r['state_bytes']:,}"]
    lines.append(_row([r["name"], " + ".join(r["layers"] or []) or "-", *acc, *lr, *size]))
  return [*lines, "", f"The same table as JSON: `{FILE}`.", ""]


def checks(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool | None, str]]:
  """The measurement's checks: every cell finished, full attention solves the quickstart's
  MQAR, every model at the quickstart's size, every chosen rate inside the rates tried."""
  if not records:
    return [("every mixer has its three seeds at its chosen rate", None, "no cells")]
  out: list[tuple[str, bool | None, str]] = []
  done = {m: {int(r["seed"]) for r in select(records, task=task_key(m))} for m in MIXERS}
  short = {m: sorted(set(SEEDS) - s) for m, s in done.items() if set(SEEDS) - s}
  n = sum(len(s & set(SEEDS)) for s in done.values())
  ev = f"{n}/{len(MIXERS) * len(SEEDS)} cells" + (f"; missing seeds: {short}" if short else "")
  out.append(("every mixer has its three seeds at its chosen rate", not short, ev))
  glob = [r["value"] for r in select(records, task=task_key("global")) if r["value"] is not None]
  mean = sum(glob) / len(glob) if glob else None
  ev = "no cells" if mean is None else f"{mean:.3f} over {len(glob)} seeds"
  solved = None if mean is None else mean >= SOLVES
  out.append((f"full attention >= {SOLVES} test accuracy", solved, ev))
  off = sorted({r["name"] for r in records if r["achieved"] != r["target"]})
  ev = f"not: {off}" if off else f"{len(records)} cells"
  out.append(("every model at the quickstart's size (achieved = its own target)", not off, ev))
  edge = []
  for m in MIXERS:
    task = task_key(m)
    tried = {r["lr"] for r in records if r["task"] == task and r["seed"] == SEEDS[0]}
    chosen = {r["lr"] for r in select(records, task=task, seed=SEEDS[0])}
    if chosen and tried and next(iter(chosen)) in (min(tried), max(tried)):
      edge.append(f"{m} {next(iter(chosen)):g}")
  swept = any(select(records, seed=SEEDS[0]))
  ev = f"at an edge: {', '.join(edge)}" if edge else "all interior"
  out.append(("every chosen rate is inside the rates tried", (not edge) if swept else None, ev))
  return out


def get_study(scale: str = "small") -> dict[str, Any]:
  if scale != "small":
    raise ValueError("partners has one scale, the quickstart's (--scale=small)")
  tasks = {
    task_key(m): dict(
      config=CONFIG,
      arg="window={window}",
      mixers=[m],
      windows=[WINDOW],
      reference=dict(mixer=m, window=WINDOW),  # itself: the quickstart's size, unmatched
    )
    for m in MIXERS
  }
  return dict(
    name="partners",
    question=__doc__.split("Question. ")[1].split("\n\n")[0],
    seeds=SEEDS,
    rules=["params"],  # the identity here: each task's reference is its own mixer
    lrs=[1e-3, 3e-3],
    lr_extend=dict(factor=10 / 3, rounds=1),
    heads=4,
    tasks=tasks,
    checks=checks,
    sections=section,  # REPORT.md's per-mixer table, after the summary
    notes=lambda rows: {
      t: "One mixer at the quickstart's size (its own size reference: no matching)." for t in tasks
    },
    limits=[
      "One task (MQAR, 16 pairs, 128 tokens) at the quickstart's size and 600 steps: a"
      " fixed-size state may suffice here and not with more pairs or longer sequences.",
      "No parameter matching: models differ in depth (2 to 6 layers) and parameters (both"
      " reported); attention layers use rotary positions (the presets' default), the"
      " quickstart's own runs none.",
      "Learning rate from {1e-3, 3e-3} (+1e-2 once), chosen at seed 0; a rate at the lowest"
      " edge is not extended downward.",
      "The decoding state is analytic (fp32 cache shapes at 128 tokens), not a measured decode.",
    ],
  )


def _dist(name: str) -> int:
  """Sort key of a distance bucket: ``acc_d<=8`` < ``acc_d9-32`` < ``acc_d>32``."""
  tail = name[len("acc_d") :].lstrip("<=>")
  return int(tail.split("-")[0]) + (1 if name.startswith("acc_d>") else 0)


def _row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"
