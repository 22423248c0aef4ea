"""The flagship study, design v4: where does a convolution match local attention inside the
window, and does local attention help in combination with other mixers?

  python scripts/study.py --study=experiments/studies/local_vs_conv.py \\
      --out=results/local_vs_conv --list                      # the cells, nothing run
  python scripts/study.py --study=experiments/studies/local_vs_conv.py \\
      --out=results/local_vs_conv --shard=0/2 &               # small: ~9 h on 2 cores,
  python scripts/study.py --study=experiments/studies/local_vs_conv.py \\
      --out=results/local_vs_conv --shard=1/2                 # resumable across sittings
  python scripts/study.py --study=experiments/studies/local_vs_conv.py --out=runs/lvc_full \\
      --scale=full                                            # GPU/TPU

Design v4 (issue 27), frozen in this file before any of its cells ran. Every cell records the
design's hash (``lrm.study.provenance.design_hash``: the data of ``get_study``, without its
prose and functions) and the git commit it ran at; REPORT.md prints both. A change to the grid
after a v4 cell has run is a new version (v5), and every version stays in the report. The
functions below ``get_study`` (decision text, checks, report sections) implement the rules
stated here and are not part of the hash.

Questions
---------
Q1 Inside its window, where does a convolution of the same receptive field match local
   attention, and which kind: static (``conv``), gated (``gated_conv``, H3/Hyena's short
   gated form), or dynamic (``dynamic_conv``, kernels predicted per position, Wu et al. 2019)?
   A phase diagram over the density of key-value pairs, the model width and the number of
   tested layers.
Q2 Does local attention help in combination? Depth-matched stacks (four mixer layers each)
   with and without local attention, on two tasks where one global layer is not enough.
Q3 What does each arm cost to train and to serve (measured in a separate pass, below)?
LM  On natural data at L >> w, every convolution kind beside local and global attention.

Tasks (small scale)
-------------------
Every windowed mixer has radius w = 16 (local attention sees i-16..i; a causal conv has kernel
17: the same per-layer field).

- ``q1-dense``, ``q1-dense-2``, ``q1-sparse``: MQAR (Arora et al. 2023) from
  ``experiments/recall.py`` with ``distance=inside``: every answer lies within w of its query;
  64 tokens, 31 keys and 31 values, a short causal conv (kernel 3) before the tested layers.
  Density: ``dense`` holds 15 key-value pairs and 15 queries per sequence (on average 4.6
  value tokens within the 18 tokens a one-layer model reaches, the answer included: measured
  on the generated data), ``sparse`` 4 (1.7 in reach). Depth: one tested layer (``q1-dense``,
  ``q1-sparse``) or two (``q1-dense-2``: ``local+local``, ``conv+conv``, ...). Widths 32, 64
  and 128 at depth 1 dense; 32 and 64 at depth 2 and sparse (cut: below). Arms ``local``,
  ``conv``, ``gated_conv``, ``dynamic_conv``; ``global`` joins q1-sparse as the easy control.
  600 steps of batch 64 (v3: 300), validation every 60 steps (learning curves); 20,000 /
  300 / 400 sequences.
- ``q2-lm``: bytes of the Python standard library (4 MB, split 90/5/5% by document), windows
  of L = 256 bytes (L / w = 16), width 64, four mixer layers, batch 8, 1,500 steps (3.1 M
  bytes seen), validation every 150 steps on the first 8 batches of 32 windows (65 KB of the
  217 KB split; the test split, 203 KB, is always whole). Metric bits per byte.
- ``q2-noisy``: MAD's noisy in-context recall (Poli et al. 2024; ``experiments/mad.py``,
  baseline difficulty: 128 tokens, 16 keys/values + 16 noise tokens, 20% noise), width 64,
  four mixer layers, batch 32, 400 steps (lrm's MAD study), validation every 40 steps. One
  global layer is not enough here: lrm's MAD study measured 2-layer global attention at 0.33
  and conv+global at 1.00 (results/mad).
- ``control-beyond``: MQAR with every answer beyond reach (``distance=beyond``: d > w + 2),
  ``local`` and ``conv`` at width 64: a measurement check (below), not a comparison.

Q2 arms (four mixer layers each, ``"a+b+c+d"`` as in ``lrm.mixers.presets``): global x4,
local x4, conv x4, gated_conv x4, hyena x4, bigbird x4 (block 16), local x3 + global
(Gemma-style 3:1, global last), gated_conv x3 + global, conv x3 + global, and Griffin's
pattern rglru+rglru+local+rglru (De et al. 2024). ``q2-lm`` adds dynamic_conv x4 and
involution x4 (the LM with every conv kind).

Budget: equal non-embedding parameters (``lrm.analysis.budget``) to the task's reference
(local at depth 1, local+local at depth 2, local x3 + global on Q2), at each width.

Learning rates: three per task, swept per (task, arm, width) at seeds 0 and 1 and chosen on
the MEAN validation metric (``lrm.study.sweep``); a rate chosen at either edge adds the next
rate beyond it (x or / 10/3, both directions, ``lr_extend``) and reruns, up to two added
rates per arm. Grids: Q1 {3e-3, 1e-2, 3e-2} (v3's 300-step sweep chose 1e-2 to 3e-2 for the
convs, 3e-3 to 1e-2 for attention); q2-lm {3e-3, 1e-2, 3e-2} (v3's lm_long chose 1e-2 and
3e-2 at batch 16); q2-noisy and control-beyond {1e-3, 3e-3, 1e-2} (lrm's MAD study chose
3e-3 for most arms). Never tuned on test.

Seeds: 0, 1, 2 for every arm (0 and 1 are the sweep's); the headline arms run seeds 3-9 too
(10 in all): the four Q1 arms of q1-dense at width 64, and local x3 + global, gated_conv x3 +
global and conv x3 + global on both Q2 tasks.

Pre-registered comparisons and decision rules
---------------------------------------------
A comparison is a - b of the test metric (best-validation checkpoint), paired by seed. Margin
delta = 0.02 accuracy (recall tasks) and 0.01 bits per byte (LM). Families (fixed here):
Q1 (21 comparisons), Q2 (14), LM (6). Within a family: simultaneous 95% intervals
(Bonferroni), Holm-corrected paired t-tests and two one-sided tests (TOST) at delta
(``lrm.study.stats``). Each comparison is three-valued (``stats.decide``): "a better by more
than delta" (the simultaneous interval lies beyond +delta), "b better by more than delta",
"equivalent within +-delta" (Holm-corrected TOST), else "inconclusive". No difference that
is not significant is read as equivalence. For recall tasks the report also gives, per arm,
how many seeds solved the task (test accuracy >= 0.9), since outcomes can be bimodal.

Q1 (family of 21): local vs conv, local vs gated_conv, local vs dynamic_conv, in each of the
seven grid cells (q1-dense at widths 32, 64, 128; q1-dense-2 at 32, 64; q1-sparse at 32,
64; at depth 2 the comparison is local+local vs conv+conv, etc.). The phase diagram marks
each cell and kind: "conv reaches local" (equivalent, or the conv better), "local better",
or inconclusive. Headline: q1-dense at width 64, 10 seeds.

Q2 (family of 14), on each task: headline, local x3 + global vs gated_conv x3 + global and
vs conv x3 + global; then local x3 + global vs local x4, vs global x4, vs bigbird x4, vs
hyena x4, and griffin vs local x3 + global. Rule (per task): let B be the conv hybrid
(gated_conv x3 + global or conv x3 + global) with the better mean VALIDATION metric over
their common seeds. "Local attention helps in combination" if local x3 + global is better
than B by more than delta; "no difference that matters" if equivalent within delta;
"convolution better" if B is better by more than delta; else "inconclusive". Precondition:
if global x4's mean test accuracy on q2-noisy reaches 0.99, that task cannot separate the
stacks (v3's flaw) and its Q2 answer is "not answerable on this task".

LM (family of 6): local x4 vs conv x4, gated_conv x4, dynamic_conv x4, involution x4,
hyena x4 and global x4 on q2-lm, same three-valued rule at 0.01 bits per byte.

Learning curves: an arm is "flat" if its seed-mean validation metric moved by at most delta
over its last three evaluations; a comparison whose losing arm is not flat is reported as
"learns slower within this budget", not "cannot learn".

Checks (of the measurement only)
--------------------------------
Measured receptive field = analytic in every architecture; analytic FLOPs against XLA's
count (lrm counts an FFT of n points as 2.5 n log2 n, XLA's cost model charges about 8 n
log2 n: both are reported); global attention >= 0.99 on q1-sparse (an easy control: the task
is learnable at this size and budget); on control-beyond, local and conv at most 0.05 above
the guess among the context's values at distances beyond their reach (the data hide the
answer from them).

Q3: costs, in a separate pass
-----------------------------
After the grid, one process alone on the machine (``scripts/study_costs.py``), compile
excluded, 5 repeats of 20 steps: training step time of every arm at its own width, window
and context; decode ms per token at batch 1 and 16 after a prompt of the task's length;
cache bytes per sequence; algorithmic FLOPs and XLA's count. Plots of quality against each
cost (Pareto fronts), and quality at equal training seconds read off the learning curves
(steps x the measured step time).

Budget and what was cut
-----------------------
Measured alone on this 2-core machine (80-step runs): MQAR width 32 0.031 s/step, 128 0.17
to 0.19; LM at L = 256, batch 8, four layers: 0.05 (involution) to 0.10 (global) s/step;
MAD noisy four layers 0.11 to 0.17. Estimated ~39,000 cell-seconds alone with one extension
rate per arm (~15,100 Q1, 16,500 LM, 7,000 MAD, 950 controls; 324 sweep cells and 124 more,
before extensions), ~9 h as two processes sharing the cores, over several sittings: the
frozen grid is a little over the ~8 h the issue asks for, and is run whole. Cut to fit, before
any v4 cell ran: involution from Q1 (it predicts its kernel from the query token alone, as
dynamic_conv does: Han et al. 2022's distinction between the two families is covered by
dynamic_conv); width 128 at depth 2 and in q1-sparse (each adds ~3,600 s); MAD tasks
inside the window (MAD's generators place pairs anywhere; an inside variant would be a new
task, not MAD's); ListOps and a second LM width (not run in v4: the LM's width is 64 only);
L = 512 for the LM (a global x4 step costs 0.69 s at batch 16 there).

Earlier designs (their reports stay in results/local_vs_conv/v3/ and git history)
-----------------------------------------------------------------------------------
v1 (w = 4, one key-value pair per window, one tested layer): every mixer solved inside the
window (0.976-0.995), the static conv included. v2 raised the density to about four pairs
per window at w = 16 and 300 steps: the convs fell to 0.33-0.39, about the guess among the
values in reach (0.30). v3 added 4x longer Q2 training and a 3x longer LM. Changes in v4:
a density x width x depth grid instead of one point (v1 and v2 were two points of it, chosen
after seeing results); 600 steps with learning curves; a rate sweep at two seeds, extended
in both directions until interior; depth-matched Q2 stacks (v3's hybrids had three tested
layers against BigBird's and hyena's one) on tasks where one global layer is not enough
(v3's recall_any was solved by one); every conv kind on the LM; three-valued decisions with
TOST instead of reading "no significant difference" as a tie; the guess-in-reach lines
instead of chance; 10 seeds for the headline comparisons.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrm.study import plots, stats, verdicts
from lrm.study.tables import fmt
from lrm.study.verdicts import select

VERSION = "v4"
W = 16  # window radius of every windowed mixer (small scale)
Q1_CONVS = ["conv", "gated_conv", "dynamic_conv"]
Q1_ARMS = ["local", *Q1_CONVS]
DENSE, SPARSE = 15, 4  # key-value pairs (and queries) per 64-token MQAR sequence
DELTA = {"accuracy": 0.02, "bits_per_byte": 0.01}  # the equivalence margins
SEEDS = [0, 1, 2]
HEADLINE_SEEDS = list(range(3, 10))  # the headline arms' seeds beyond SEEDS (10 in all)
SOLVED = 0.9  # a recall seed "solved" the task at this test accuracy
ATTENTION_SOLVES = 0.99  # the easy control, and Q2's precondition on q2-noisy
FLAT_EVALS = 3  # an arm is flat if its seed-mean moved <= delta over this many evaluations


def stack(*parts: str) -> str:
  """A hybrid preset name: ``stack("local", "local")`` -> ``"local+local"``."""
  return "+".join(parts)


LOCAL_HYBRID = stack("local", "local", "local", "global")
CONV_HYBRIDS = [stack(m, m, m, "global") for m in ("gated_conv", "conv")]
GRIFFIN = stack("rglru", "rglru", "local", "rglru")
Q2_ARMS = [
  *(stack(*[m] * 4) for m in ("global", "local", "conv", "gated_conv", "hyena", "bigbird")),
  LOCAL_HYBRID,
  *CONV_HYBRIDS,
  GRIFFIN,
]
LM_KINDS = ["conv", "gated_conv", "dynamic_conv", "involution", "hyena", "global"]


def widths(small: bool) -> tuple[list[int], int]:
  """(the Q1 widths, the Q2 width) of a scale."""
  return ([32, 64, 128], 64) if small else ([128, 256, 512], 256)


def q1_cells(small: bool = True) -> list[tuple[str, str, list[str]]]:
  """(task, size, [local arm, conv arms...]) of the seven Q1 grid cells."""
  q1w, _ = widths(small)
  deep = [stack(m, m) for m in Q1_ARMS]
  return [
    *(("q1-dense", f"width{d}", Q1_ARMS) for d in q1w),
    *(("q1-dense-2", f"width{d}", deep) for d in q1w[:2]),
    *(("q1-sparse", f"width{d}", Q1_ARMS) for d in q1w[:2]),
  ]


def comparisons(small: bool = True) -> list[dict[str, Any]]:
  """The pre-registered comparisons (module docstring), family by family, headline first."""
  rule = "params_non_embedding"
  q1w, q2w = widths(small)
  q2size = f"width{q2w}"
  q1 = [
    dict(question="Q1", task=task, a=arms[0], b=b, rule=rule, size=size, delta=DELTA["accuracy"],
         headline=(task, size) == ("q1-dense", f"width{q1w[1]}"))
    for task, size, arms in q1_cells(small)
    for b in arms[1:]
  ]  # fmt: skip
  q2 = []
  for task, metric in (("q2-lm", "bits_per_byte"), ("q2-noisy", "accuracy")):
    pairs = [(LOCAL_HYBRID, b, True) for b in CONV_HYBRIDS]
    pairs += [
      (LOCAL_HYBRID, stack(*[m] * 4), False) for m in ("local", "global", "bigbird", "hyena")
    ]
    pairs += [(GRIFFIN, LOCAL_HYBRID, False)]
    q2 += [
      dict(question="Q2", task=task, a=a, b=b, rule=rule, size=q2size, delta=DELTA[metric],
           headline=head)
      for a, b, head in pairs
    ]  # fmt: skip
  lm = [
    dict(question="LM", task="q2-lm", a=stack(*["local"] * 4), b=stack(*[m] * 4), rule=rule,
         size=q2size, delta=DELTA["bits_per_byte"], headline=False)
    for m in LM_KINDS
  ]  # fmt: skip
  return q1 + q2 + lm


def schedule(steps: int, every: int) -> dict[str, int]:
  """``steps`` with a validation (and its checkpoint) every ``every`` steps."""
  return {
    "train.steps": steps,
    "train.eval_every": every,
    "train.checkpoint_every": every,
    "train.log_every": every,
  }


def get_study(scale: str = "small") -> dict[str, Any]:
  small = scale == "small"
  size = "size=small" if small else "size=full"
  w = W if small else 32
  q1w, q2w = widths(small)
  named = {f"width{d}": d for d in q1w}
  two = dict(list(named.items())[:2])  # depth 2 and sparse: the two smaller widths
  q2_width = {f"width{q2w}": q2w}
  recall_data = (
    {"data.num_train": 20_000, "data.num_val": 300, "data.num_test": 400} if small else {}
  )
  q1_run = schedule(600, 60) if small else {}
  recall = dict(config="experiments/recall.py", block=4 if small else 32, windows=[w])

  def q1(pairs: int, arms: list[str], sizes: dict[str, int], **more: Any) -> dict[str, Any]:
    return dict(
      **recall,
      arg=f"{size},distance=inside,window={{window}}",
      overrides={**q1_run, **recall_data, "data.num_pairs": pairs if small else 4 * pairs, **more},
      mixers=arms,
      sizes=sizes,
      reference=dict(mixer=arms[0], window=w),
    )

  deep = [stack(m, m) for m in Q1_ARMS]
  tasks = {
    "q1-dense": q1(DENSE, Q1_ARMS, named),
    "q1-dense-2": q1(DENSE, deep, two, **{"data.distance_buckets": (w, w + 2, 2 * w + 2)}),
    "q1-sparse": q1(SPARSE, [*Q1_ARMS, "global"], two),
    "q2-lm": dict(
      config="experiments/lm.py",
      arg=f"{size},window={{window}}",
      overrides=(
        {
          **schedule(1500, 150),
          "data.seq_len": 256,
          "data.corpus_bytes": 4_000_000,
          "train.batch_size": 8,
          "train.max_eval_batches": 8,
        }
        if small
        else {"data.seq_len": 1024}
      ),
      mixers=[*Q2_ARMS, stack(*["dynamic_conv"] * 4), stack(*["involution"] * 4)],
      windows=[w if small else 64],
      sizes=q2_width,
      reference=dict(mixer=LOCAL_HYBRID, window=w if small else 64),
      block=16 if small else 64,
      lrs=[3e-3, 1e-2, 3e-2] if small else [3e-4, 1e-3, 3e-3],
    ),
    "q2-noisy": dict(
      config="experiments/mad.py",
      arg=f"task=noisy_recall,{size},window={{window}}",
      overrides=schedule(400, 40) if small else {},
      mixers=Q2_ARMS,
      windows=[w],
      sizes=q2_width,
      reference=dict(mixer=LOCAL_HYBRID, window=w),
      block=16,
      lrs=[1e-3, 3e-3, 1e-2] if small else [3e-4, 1e-3, 3e-3],
    ),
    "control-beyond": dict(
      **recall,
      arg=f"{size},distance=beyond,window={{window}}",
      overrides={**q1_run, **recall_data, "data.num_pairs": SPARSE if small else 16},
      mixers=["local", "conv"],
      sizes=q2_width,
      reference=dict(mixer="local", window=w),
      lrs=[1e-3, 3e-3, 1e-2] if small else [3e-4, 1e-3, 3e-3],
    ),
  }
  headline = dict(seeds=HEADLINE_SEEDS)
  tasks["q1-dense"]["more_seeds"] = [dict(**headline, mixers=Q1_ARMS, sizes=[f"width{q1w[1]}"])]
  for t in ("q2-lm", "q2-noisy"):
    tasks[t]["more_seeds"] = [dict(**headline, mixers=[LOCAL_HYBRID, *CONV_HYBRIDS])]
  return dict(
    name="local_vs_conv",
    version=VERSION,
    question=__doc__.split("Questions\n---------\n")[1].split("\nTasks (small scale)")[0],
    seeds=SEEDS,
    sweep_seeds=[0, 1],
    rules=["params_non_embedding"],
    lrs=[3e-3, 1e-2, 3e-2] if small else [1e-3, 3e-3, 1e-2],
    lr_extend=dict(factor=10 / 3, rounds=2, down=True),
    sweep_every_size=True,
    heads=4,
    comparisons=comparisons(small),
    margins=DELTA,
    solved=SOLVED,
    tasks=tasks,
    content=dict(tasks=["q1-dense"], radius=W if small else 32),
    price_per_hour=0.10,
    decide=decide,
    checks=checks,
    sections=sections,
    label=pretty,
  )


# ---- the rules above, applied (not part of the design hash) -------------------------------
Row = Mapping[str, Any]
GRID_ROWS = {
  "q1-dense": "dense, 1 layer",
  "q1-dense-2": "dense, 2 layers",
  "q1-sparse": "sparse, 1 layer",
}
WORDS = {
  stats.A_BETTER: "local better",
  stats.B_BETTER: "conv better",
  stats.EQUIVALENT: "conv reaches local (equivalent)",
  stats.INCONCLUSIVE: "inconclusive",
  None: "pending",
}


def kind(mixer: str) -> str:
  """The preset a stack repeats: ``conv+conv`` -> ``conv``."""
  return mixer.split("+")[0]


def pretty(mixer: str) -> str:
  """``local+local+local+global`` -> ``local x3 + global``; ``conv+conv`` -> ``conv x2``."""
  parts = mixer.split("+")
  out: list[tuple[str, int]] = []
  for p in parts:
    if out and out[-1][0] == p:
      out[-1] = (p, out[-1][1] + 1)
    else:
      out.append((p, 1))
  if mixer == GRIFFIN:
    return "griffin (rglru, rglru, local, rglru)"
  return " + ".join(p if n == 1 else f"{p} x{n}" for p, n in out)


def decide(question: str, rows: Sequence[Row], higher: bool) -> str:
  """The decision rule of one question on one task (module docstring), from the decided
  comparisons (``lrm.study.verdicts.decisions``)."""
  if not rows:
    return ""
  task = rows[0]["task"]
  if question == "Q1":
    cells = []
    for size in dict.fromkeys(r["size"] for r in rows):
      mine = [r for r in rows if r["size"] == size]
      cells.append(f"{size}: " + ", ".join(f"{kind(r['b'])} {WORDS[r['outcome']]}" for r in mine))
    return f"Decision ({GRID_ROWS.get(task, task)}): " + "; ".join(cells) + "."
  if question == "Q2":
    head = [r for r in rows if r.get("headline")]
    if task == "q2-noisy":
      g4 = [r for r in rows if r["b"] == stack(*["global"] * 4) and r["b_values"]]
      if g4 and sum(g4[0]["b_values"]) / len(g4[0]["b_values"]) >= ATTENTION_SOLVES:
        return (
          f"Decision: not answerable on this task: global x4 reaches {ATTENTION_SOLVES} (the "
          "precondition fails), so every stack with a global layer can tie."
        )
    best = verdicts.best_on_validation(head, higher)
    if best is None or best["outcome"] is None:
      return "Decision: pending (the headline arms have not all finished)."
    said = {
      stats.A_BETTER: "local attention helps in combination",
      stats.EQUIVALENT: "no difference that matters (equivalent within the margin)",
      stats.B_BETTER: "the convolution hybrid is better",
      stats.INCONCLUSIVE: "inconclusive",
    }[best["outcome"]]
    return (
      f"Decision ({task}): {said}. Rule: {pretty(LOCAL_HYBRID)} against the conv hybrid with "
      f"the better validation metric, here {pretty(best['b'])} (validation "
      f"{best['validation'][best['b']]:.4f})."
    )
  if question == "LM":
    return (
      "Decision (LM): "
      + "; ".join(
        f"{kind(r['b'])}: "
        + {stats.A_BETTER: "local better", stats.B_BETTER: f"{kind(r['b'])} better"}.get(
          r["outcome"], WORDS[r["outcome"]].replace("conv reaches local ", "")
        )
        for r in rows
      )
      + "."
    )
  return ""


def reach(task: str) -> int:
  """How far back a tested model reaches (the short conv's 2 plus w per tested layer)."""
  return (2 * W if task == "q1-dense-2" else W) + 2


def guess_line(records: Sequence[Row], task: str) -> float | None:
  """The guess among the values in reach (``lrm.data.guess``) of a Q1 task's test data."""
  for r in records:
    if r["task"] == task and (r.get("levels") or {}).get(f"guess_w{reach(task)}") is not None:
      return float(r["levels"][f"guess_w{reach(task)}"])
  return None


def checks(records: Sequence[Row]) -> list[tuple[str, bool | None, str]]:
  """The measurement checks (module docstring); the generic ones follow (verdicts.sanity)."""
  out: list[tuple[str, bool | None, str]] = []
  easy = verdicts.means(select(records, task="q1-sparse", mixer="global"), ("size",))
  ok = all(v >= ATTENTION_SOLVES for v in easy.values()) if easy else None
  ev = ", ".join(f"{k[0]}: {v:.3f}" for k, v in sorted(easy.items())) or "no cells"
  out.append((f"global attention >= {ATTENTION_SOLVES} on q1-sparse (easy control)", ok, ev))
  beyond = select(records, task="control-beyond")
  worst = []
  for m in ("local", "conv"):
    mine = [r for r in beyond if r["mixer"] == m and r.get("value") is not None]
    if mine:
      acc = sum(r["value"] for r in mine) / len(mine)
      level = max(float(mine[0].get("chance") or 0), float(mine[0].get("chance_context") or 0))
      worst.append((m, acc, level))
  ok = all(a <= g + 0.05 for _, a, g in worst) if worst else None
  ev = ", ".join(f"{m} {a:.3f} (context guess {g:.3f})" for m, a, g in worst) or "no cells"
  out.append(("control-beyond: local and conv <= context guess + 0.05 beyond reach", ok, ev))
  return out


def is_flat(curves: Sequence[tuple], delta: float) -> bool | None:
  """Whether the seed-mean validation curve moved by at most ``delta`` over its last
  ``FLAT_EVALS`` evaluations (None: too few evaluations)."""
  if not curves:
    return None
  steps, mean = plots.seed_mean(curves)
  if len(mean) < FLAT_EVALS:
    return None
  tail = mean[-FLAT_EVALS:]
  return bool(float(tail.max() - tail.min()) <= delta)


def arm_table(
  records: Sequence[Row], out: Path, task: str, size: str, arms: Sequence[str], delta: float
) -> list[str]:
  """One row per arm of a task at a width: seeds, mean, sd, seeds solved, flat or not."""
  curves = plots.learning_curves(records, out, task).get(("params_non_embedding", size), {})
  recall = not task.startswith("q2-lm")
  head = ["arm", "n", "test mean", "sd", *(["solved"] if recall else []), "flat", "lr"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for arm in arms:
    mine = sorted(select(records, task=task, mixer=arm, size=size), key=lambda r: r["seed"])
    vals = [float(r["value"]) for r in mine if r.get("value") is not None]
    if not vals:
      lines.append("| " + " | ".join([pretty(arm), "0", "pending", *[""] * (len(head) - 3)]) + " |")
      continue
    sm = stats.summarize(vals)
    k, n = stats.solved(vals, SOLVED)
    name = mine[0]["name"]
    flat = is_flat(curves.get(name, []), delta)
    flat_txt = "-" if flat is None else ("yes" if flat else "**no (still learning)**")
    solved = f"{k}/{n} | " if recall else ""
    lines.append(
      f"| {pretty(arm)} | {sm.n} | {sm.mean:.4f} | {fmt(sm.sd)} | {solved}{flat_txt} | "
      f"{mine[0]['lr']:g} |"
    )
  return lines


RELATED = """## Related work, and what each predicts here

- **Cordonnier et al. 2020** (ICLR, "On the relationship between self-attention and
  convolutional layers"): multi-head self-attention with relative positions can express any
  convolution. Predicts: local attention at least matches a static conv of its field when
  both are trained well (Q1's "conv better" outcome would contradict it at convergence).
- **Wu et al. 2019** (ICLR, "Pay less attention with lightweight and dynamic convolutions"):
  dynamic convolutions match self-attention on translation and language modelling. Predicts:
  dynamic_conv close to local on the LM (the LM family).
- **Han et al. 2022** (ICLR, "On the connection between local attention and dynamic depth-wise
  convolution"): local attention is a sparse, weight-shared dynamic depthwise convolution;
  dynamic depthwise convs match local attention on ImageNet. Their dynamic kernels are
  predicted from the centre position, not from query-key pairs: predicts no such match on a
  task that needs comparing a query with keys (Q1 dense).
- **Tay et al. 2021** (ICLR, "Long Range Arena"; ACL, "Are pre-trained convolutions better
  than pre-trained transformers?"): convolutions are competitive on many tasks but weak where
  two pieces of the input must be related (retrieval-like tasks). Predicts: "local better" in
  Q1 dense, parity in Q1 sparse.
- **ConvNeXt** (Liu et al. 2022) and **Smith et al. 2023** ("ConvNets match vision
  transformers at scale"): with modern training and enough scale, convs match attention on
  images. Predicts: gaps that shrink with width (Q1's width axis).
- **Zoology** (Arora et al. 2023): gated convolutions solve MQAR only when the model width
  grows with the number of key-value pairs; attention solves it at small width. Predicts:
  gated_conv reaches local at width 128 before 32, and at sparse before dense.
- **H3** (Fu et al. 2023) and **Hyena** (Poli et al. 2023): long gated convolutions close
  most of the gap to attention on language modelling. Predicts: hyena x4 near global x4 on
  the LM.
- **Based** (Arora et al. 2024): sliding-window attention with a small window plus linear
  attention recovers most of attention's recall at a fixed state; the window does the local
  precise work. Predicts: local attention helps in combination (Q2).
- **Griffin / RecurrentGemma** (De et al. 2024; Botev et al. 2024): gated linear recurrences
  (RG-LRU) with local attention (window 1,024 or 2,048) match Transformers at scale.
  Predicts: griffin near local x3 + global on the LM.
- **Gemma 2 / Gemma 3** (Gemma Team 2024, 2025): alternating local (window 4,096) and global
  layers 1:1, then 5:1 with window 1,024, at little quality cost. Predicts: local x3 + global
  close to global x4 on the LM (Q2's "vs global x4").
- **MAD** (Poli et al. 2024, "Mechanistic design and scaling of hybrid architectures"):
  small synthetic tasks rank architectures as their compute-optimal perplexity does; hybrids
  rank first. Predicts: the conv and local hybrids above the single-kind stacks on q2-noisy.
- **Okpekpe & Orvieto 2025** (arXiv 2508.19029, "Revisiting associative recall in modern
  recurrent models"): recurrent models solve recall only in a narrow band of learning rates,
  while Transformers are robust. Predicts: rglru-based arms whose chosen rate sits near an
  edge, and large differences between adjacent rates (the sweep table shows both).
"""

EARLIER = """## Earlier designs (v1-v3)

v3's full report (358 cells, design v2 plus v3's two follow-ups) is kept as it was in
[v3/REPORT.md](v3/REPORT.md), with its summary.json, lr_sweep.json and plots; v1's results
are in the git history (838e666). What each found, and why v4 differs (the module
docstring of the study file has the full list):

- **v1** (w = 4, 6 pairs per 64 tokens, about one pair per window, one tested layer, 300
  steps): every mixer solved recall inside the window (0.976-0.995), the static conv
  included.
- **v2** (w = 16, 12 pairs per 64 tokens, about four per window, widths 32-64, 300 steps):
  local attention 0.99-1.00, the convolutions 0.33-0.39, about the guess among the values in
  reach (0.30), which v2's plots did not draw.
- **v3** (v2's grid, plus Q2's stacks 4x longer and the LM 3x longer): every stack with a
  global layer reached 0.98-1.00 on recall at any distance, because one global layer already
  solves it; on the LM, local attention was the worst arm in 3 of 3 seeds at 3,000 steps.
- **v4** asks Q1 on a grid (density x width x depth) with learning curves, Q2 with
  depth-matched stacks on tasks one global layer cannot solve, decides with TOST at stated
  margins, and gives the headline comparisons 10 seeds.
"""


def sections(records: Sequence[Row], out: Path) -> list[str]:
  """REPORT.md after the answers: the Q1 phase diagram and tables, the Q2 and LM tables,
  forest plots of every family, related work and the earlier designs."""
  out = Path(out)
  decided = verdicts.decisions(records, comparisons(True), pretty)
  lines = ["## Q1: the phase diagram", ""]
  cells: dict[str, dict[tuple[str, str], dict]] = {}
  for r in (r for r in decided if r["question"] == "Q1"):
    cells.setdefault(kind(r["b"]), {})[(GRID_ROWS[r["task"]], r["size"])] = {
      "mean": r["paired"].diff.mean if r["outcome"] is not None else None,
      "outcome": r["outcome"],
    }
  labels = {stats.A_BETTER: "local better", stats.B_BETTER: "conv better",
            stats.EQUIVALENT: "equivalent"}  # fmt: skip
  cols = [f"width{d}" for d in widths(True)[0]]
  if plots.plot_decision_grid(
    {f"local - {k}": v for k, v in cells.items()}, out / "q1_phase.png",
    rows=list(GRID_ROWS.values()), cols=cols, delta=DELTA["accuracy"],
    title="Q1: local attention - convolution, test accuracy (decision at margin ±0.02, "
    "simultaneous over the 21 comparisons)", labels=labels,
  ):  # fmt: skip
    lines += ["![Q1 phase diagram](q1_phase.png)", ""]
  for task, size, arms in q1_cells(True):
    g = guess_line(records, task)
    lines += [
      f"**{GRID_ROWS[task]}, {size}** (guess among the values in reach, {reach(task)} tokens: "
      f"{fmt(g)}):",
      "",
      *arm_table(records, out, task, size, arms, DELTA["accuracy"]),
      "",
    ]
  for task, title in (("q2-lm", "Q2 and LM: the byte LM (bits per byte)"),
                      ("q2-noisy", "Q2: MAD noisy recall (accuracy)")):  # fmt: skip
    mixers = Q2_ARMS + (
      [stack(*[k] * 4) for k in ("dynamic_conv", "involution")] if task == "q2-lm" else []
    )
    delta = DELTA["bits_per_byte" if task == "q2-lm" else "accuracy"]
    lines += [f"## {title}", "", *arm_table(records, out, task, "width64", mixers, delta), ""]
  lines += ["## Paired differences", ""]
  for q in ("Q1", "Q2", "LM"):
    mine = [r for r in decided if r["question"] == q]
    forest = [
      {
        "name": f"{r['task']} {r['size']}: {pretty(r['a'])} - {pretty(r['b'])}",
        "mean": r["interval"].mean if r["outcome"] is not None else None,
        "lo": r["interval"].lo if r["outcome"] is not None else None,
        "hi": r["interval"].hi if r["outcome"] is not None else None,
        "diffs": r["diffs"],
        "verdict": WORDS[r["outcome"]] if q == "Q1" else (r["outcome"] or "pending"),
      }
      for r in mine
    ]
    deltas = {r["delta"] for r in mine}
    name = f"forest_{q.lower()}.png"
    metric = mine[0]["metric"] if mine else None
    if len(deltas) == 1 and plots.plot_forest(
      forest, out / name, delta=deltas.pop(), metric=metric or None,
      title=f"{q}: paired differences, 95% simultaneous intervals",
    ):  # fmt: skip
      lines += [f"![{q} paired differences]({name})", ""]
    elif mine:  # Q2 mixes bits per byte and accuracy: one plot per task
      for task in dict.fromkeys(r["task"] for r in mine):
        part = [f for f, r in zip(forest, mine, strict=True) if r["task"] == task]
        d = next(r["delta"] for r in mine if r["task"] == task)
        m = next(r["metric"] for r in mine if r["task"] == task) or None
        name = f"forest_{q.lower()}_{task}.png"
        title = f"{q} ({task}): paired differences, 95% simultaneous"
        if plots.plot_forest(part, out / name, delta=d, metric=m, title=title):
          lines += [f"![{q} {task} paired differences]({name})", ""]
  lines += [*q3_section(records, out), RELATED, EARLIER]
  return lines


COSTS_FILE = "costs.jsonl"  # benchmarks/study_costs.py's output in the study folder
PARETO = {
  "train_step_ms": "training step (ms, median)",
  "decode_ms_1": "decode step at batch 1 (ms)",
  "cache_bytes": "decoding state per sequence (bytes)",
  "train_flops_per_token": "training FLOPs per token (algorithmic)",
}


def read_costs(out: Path) -> dict[tuple, dict]:
  """``{(task, mixer, size): record}`` of ``benchmarks/study_costs.py`` ({} before it ran)."""
  path = Path(out) / COSTS_FILE
  got: dict[tuple, dict] = {}
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      r = json.loads(line)
    except ValueError:
      continue
    got[(r["task"], r["mixer"], r.get("size"))] = r
  return got


def q3_section(records: Sequence[Row], out: Path) -> list[str]:
  """Q3: each arm's measured costs beside its quality, Pareto plots per task, and the
  validation curves against training seconds (steps x the measured step time)."""
  costs = read_costs(out)
  lines = ["## Q3: costs", ""]
  if not costs:
    return [
      *lines,
      "Measured in a separate pass after the grid, one process alone on the machine "
      "(`python benchmarks/study_costs.py --out=results/local_vs_conv`); not run yet.",
      "",
    ]
  lines += [
    "From `benchmarks/study_costs.py` (costs.jsonl), one process alone on the machine, compile",
    "excluded: median of repeated timings on each arm's own model (width, window, context and",
    "batch as trained). Decode: ms per step (one new token per sequence) at the task's length.",
    "FLOPs per token: lrm's algorithmic count; XLA's count of the same forward beside it.",
    "",
  ]
  for task in dict.fromkeys(k[0] for k in costs):
    mine = {k: v for k, v in costs.items() if k[0] == task}
    head = ["arm", "size", "test mean", "train step ms", "train s (all steps)",
            "decode ms b1", "decode ms b16", "cache bytes", "train FLOPs/token",
            "forward FLOPs alg / XLA"]  # fmt: skip
    lines += [f"**{task}**:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    arms = []
    for (_, mixer, size), c in mine.items():
      vals = [r["value"] for r in select(records, task=task, mixer=mixer, size=size)]
      sm = stats.summarize(vals) if vals else None
      steps = next((r for r in records if r["task"] == task), {}).get("train_steps")
      step_ms = c["train_step_ms"]["median"]
      dec = {b: c["decode_ms"].get(b, {}) for b in ("1", "16")}
      dtxt = {b: f"{d['median']:.3f}" if d.get("status") == "ok" else d.get("status", "-")
              for b, d in dec.items()}  # fmt: skip
      xla, alg = c.get("xla_forward_flops"), c.get("analytic_forward_flops")
      lines.append(
        f"| {pretty(mixer)} | {size} | {fmt(sm.mean if sm else None, 4)} | {step_ms:.2f} | "
        f"{fmt(step_ms * steps / 1e3 if steps else None)} | {dtxt['1']} | {dtxt['16']} | "
        f"{c['cache_bytes']:,} | {fmt(c.get('train_flops_per_token'))} | "
        f"{fmt(alg)} / {fmt(xla)} |"
      )
      if sm is not None:
        arms.append({
          "name": pretty(mixer) + ("" if len({k[2] for k in mine}) == 1 else f" {size}"),
          "mean": sm.mean, "lo": sm.lo if sm.n > 1 else None, "hi": sm.hi if sm.n > 1 else None,
          "train_step_ms": step_ms, "cache_bytes": c["cache_bytes"],
          "decode_ms_1": dec["1"].get("median"),
          "train_flops_per_token": c.get("train_flops_per_token"),
        })  # fmt: skip
    lines.append("")
    metric = next((r["metric"] for r in records if r["task"] == task), "accuracy")
    name = f"q3_{task}.png"
    if plots.plot_pareto(arms, out / name, PARETO, metric, title=f"{task}: quality against cost"):
      lines += [f"![{task}: quality against cost]({name})", ""]
    curves = plots.learning_curves(records, out, task)
    timed = {
      key: {
        n: [(s * costs[(task, m, key[1])]["train_step_ms"]["median"] / 1e3, v) for s, v in cs]
        for n, cs in arms_.items()
        for m in [_mixer_of(records, task, n)]
        if (task, m, key[1]) in costs
      }
      for key, arms_ in curves.items()
    }
    timed = {k: v for k, v in timed.items() if v}
    if timed:
      fig = plots.learning_curve_figure(
        timed, task, metric, {}, xlabel="training seconds (steps x measured step time)"
      )
      name = f"q3_{task}_seconds.png"
      plots._save(fig, out / name)
      lines += [f"![{task}: validation against training seconds]({name})", ""]
  return lines


def _mixer_of(records: Sequence[Row], task: str, name: str) -> str | None:
  """The preset of an arm's display name (``local-w16`` -> ``local``) in a task."""
  return next((r["mixer"] for r in records if r["task"] == task and r["name"] == name), None)
