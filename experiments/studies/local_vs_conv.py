"""The flagship study: local attention against convolutions of the same receptive field.

  python scripts/study.py --study=experiments/studies/local_vs_conv.py \\
      --out=results/local_vs_conv --shard=0/2 &     # small: 358 cells, ~3.4 h on 2 cores
  python scripts/study.py --study=experiments/studies/local_vs_conv.py \
      --out=results/local_vs_conv --shard=1/2       # (two processes share the cores)
  python scripts/study.py --study=experiments/studies/local_vs_conv.py --out=runs/lvc_full \\
      --scale=full                                  # GPU/TPU (README: "The flagship study")

Pre-registered before any cell of this grid was run (issue 13). The questions, verbatim:

Q1 Inside its window, does local attention beat a convolution of the same receptive field,
   and which kind: static, gated, dynamic (GLU), involution? At equal parameters, equal
   training FLOPs, equal training seconds.
Q2 Is local attention useful only in combination? Compare stacks that add reach to each
   local mixer (local+local+global vs conv+conv+global vs gated_conv+gated_conv+global;
   BigBird; hyena's global static kernel) on a task that needs reach.
Q3 What does each cost to train and to serve? Accuracy or bits per byte against training
   FLOPs, training seconds and decode cost (ms per token and cache bytes at a stated
   context), and dollars at a stated price.

Design. Every windowed mixer gets the per-layer field of local attention of radius w
(conv kernel w+1 causal); models are sized to the cost of local attention (the reference)
at three widths (``sizes``) under equal non-embedding parameters, and at the middle width
under equal algorithmic training FLOPs (``lrm.analysis.counting``; recall_inside and lm).
Learning rates: three per arm AND SIZE, swept at the first rule, seed 0, chosen on the
VALIDATION metric (``lrm.study.sweep``; ``sweep_every_size``), then used for that size's
other seeds and rules. Seeds 0, 1, 2. Equal training seconds is read off the curves (metric
against measured training seconds, compilation and evaluation excluded); it is not a
matched budget.

Tasks: ``recall_inside`` (MQAR, w = 16, 12 key-value pairs and 12 queries in 64 tokens,
every answer within w of its query, so about four pairs share each window: Q1),
``recall_any`` (w = 4, 6 pairs, answers at any distance up to the 64-token sequence: Q2),
``lm`` (bytes of the Python standard library, test split of 5% of 4 MB = 200 KB: Q3 and a
sanity check on a real distribution). Recall test sets: 400 sequences, 4,800 queries
(inside) and 2,400 (any). Steps (small): recall_inside 300, recall_any 400, lm 1,000.

This is design v2. Changes from v1 (run once, results in git history at 838e666), decided
from its sanity checks before any v2 cell ran: v1's inside-window task (w = 4, 6 pairs over 64
tokens: about one pair per window) was solved by every mixer (0.976-0.995), the ungated
conv included, so it could not separate kernels; a learning rate chosen at the middle
width left full attention at 0.47 on recall_any at the largest (seeds 1.0, 0.20, 0.21),
hence a rate per size (and, added after v2's first 26 sweep cells chose 1e-2, the top
rate, for most convolutions, 3e-2 for recall_inside); the LM chose the largest rate for
every mixer and stayed undertrained at 400 steps, hence rates up to 3e-2 and 1,000 steps;
gated_conv alone left recall_any (not in any comparison) to pay for the per-size sweep.

Design v3 follow-up (recall_any_long), added after v2 finished and before any of its cells
ran: at 400 steps every stack with a global layer was still learning when training stopped
(training loss falling steeply at the last step) and split by seed (local+local+global 0.34,
0.20, 0.63 at width 64; gated_conv+gated_conv+global 0.86, 0.19, 0.25), so Q2's five
comparisons had intervals of +-0.5 to +-1.1 and could not answer. The follow-up trains the Q2
arms 4x longer (1,600 steps) at width 64 only, with its own sweep of three rates shifted one
step down (3e-4, 1e-3, 3e-3: at 400 steps 1e-2 left every stack at chance, and longer
training favours smaller rates), seeds 0, 1, 2, equal non-embedding parameters. Its five
comparisons join the family below and are answered first under Q2; the 400-step ones stay
in the report.

Design v3 follow-up (lm_long), added while recall_any_long ran and before any of its cells
ran: at 1,000 steps full attention had the worst bits per byte at every width, impossible at
convergence, so the LM ranking measured learning speed. The follow-up trains the four LM
arms 3x longer (3,000 steps) at width 48 (equal non-embedding parameters), with their own
sweep of the same three rates, seeds 0, 1, 2, and asks Q3's two comparisons there too.

Pre-registered comparisons (``comparisons``; a - b of the test metric, paired by seed):
  Q1 (recall_inside; equal non-embedding params at size l, and equal FLOPs at size m):
     local vs conv, local vs gated_conv, local vs dynamic_conv, local vs involution
  Q2 (recall_any_long, then recall_any; equal non-embedding params at size l):
     local+local+global vs conv+conv+global, vs gated_conv+gated_conv+global, vs bigbird,
     vs hyena, and vs local alone
  Q3 (lm; bits per byte, lower is better; equal FLOPs at size m; lm_long: equal
     non-embedding parameters at size m):
     local vs gated_conv, local vs global
Correction: Holm-Bonferroni over all 22 comparisons together (family-wise 5%; 15 before the
follow-ups, and 15 at full scale, which has none).

Decision rules: "a beats b" iff the Holm-adjusted paired t-test rejects at 5% and the mean
difference favours a; otherwise the report says "no significant difference", whatever the
means. Q1 is answered per convolution kind; a kind that local attention does not beat at both
budgets is reported as matching it. Q2: local attention is "useful only in combination" if
local+local+global beats local alone on recall_any and at least one conv+global stack does
not beat local+local+global. Q3 is descriptive (a cost table and curves; no test).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from lrm.study.verdicts import means, select, size_rank, wins

Q1_CONVS = ["conv", "gated_conv", "dynamic_conv", "involution"]
Q2_STACKS = ["conv+conv+global", "gated_conv+gated_conv+global", "bigbird", "hyena", "local"]
INSIDE_PAIRS = 12  # recall_inside: key-value pairs (and queries) per 64-token sequence
RULES = ["params_non_embedding", "flops"]


def comparisons(follow_up: bool = True) -> list[dict[str, Any]]:
  """The pre-registered comparisons, in the order the report answers them (``follow_up``:
  with those of design v3's follow-ups, small scale only)."""
  q1 = [
    dict(question="Q1", task="recall_inside", a="local", b=conv, rule=rule, size=size)
    for rule, size in (("params_non_embedding", "l"), ("flops", "m"))
    for conv in Q1_CONVS
  ]
  q2 = [
    dict(question="Q2", task=task, a="local+local+global", b=b, rule=RULES[0], size="l")
    for task in (["recall_any_long"] if follow_up else []) + ["recall_any"]
    for b in Q2_STACKS
  ]
  q3 = [
    dict(question="Q3", task=task, a="local", b=b, rule=rule, size="m")
    for task, rule in ([("lm_long", RULES[0])] if follow_up else []) + [("lm", "flops")]
    for b in ("gated_conv", "global")
  ]
  return q1 + q2 + q3


# ---- decision rules and checks (pre-registered with the questions; lrm.study.verdicts) ----
ATTENTION_SOLVES = 0.99  # full attention on recall
CHANCE_MARGIN = 0.05  # "at chance": at most this above guessing among the context's values
CONV_FAILS = 0.5  # the ungated conv stays below this accuracy at every width


def decide(question: str, rows: Sequence[Mapping[str, Any]], higher: bool) -> str:
  """The decision rule of Q1 or Q2 (module docstring) over the question's comparisons."""
  if question not in ("Q1", "Q2"):
    return ""  # Q3 is descriptive
  won = [(r, wins(r, higher)) for r in rows]
  if any(w is None for _, w in won):
    return "Decision: pending (not every comparison has two or more paired seeds)."
  if question == "Q1":
    kinds: dict[str, list[bool]] = defaultdict(list)
    for r, w in won:
      kinds[r["b"]].append(bool(w))
    beaten = [k for k, ws in kinds.items() if all(ws)]
    matched = [k for k in kinds if k not in beaten]
    return (
      f"Decision: local attention beats {', '.join(beaten) or 'no convolution'} at every "
      f"tested budget; it does not beat (matches) {', '.join(matched) or 'none'}."
    )
  alone = [w for r, w in won if r["b"] == "local"]
  convs = [w for r, w in won if "conv" in r["b"] and "+" in r["b"]]
  only = bool(alone and alone[0]) and not all(convs)
  return (
    "Decision: local attention is "
    + ("" if only else "not shown to be ")
    + "useful only in combination (rule: local+local+global beats local alone, and not "
    "every conv+global stack is beaten by it)."
  )


def _bucket_beyond(test: Mapping[str, float]) -> str | None:
  """The farthest distance bucket (``acc_d>N``) of a recall cell."""
  far = [k for k in test if k.startswith("acc_d>")]
  return far[0] if far else None


def checks(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool | None, str]]:
  """This study's sanity checks: (check, passed (None: not run yet), evidence)."""
  out: list[tuple[str, bool | None, str]] = []
  recall = sorted({r["task"] for r in records if r["task"].startswith("recall")})
  # 1. full attention solves recall (every size)
  full = [r for t in recall for r in select(records, task=t, mixer="global")]
  groups = means(full, ("task", "size"))
  ok = all(v >= ATTENTION_SOLVES for v in groups.values()) if groups else None

  def seeds(t: str, s: str) -> str:  # why a mean falls short: its cells, seed by seed
    cells = sorted((r["seed"], r["value"]) for r in full if (r["task"], r["size"]) == (t, s))
    return " (" + ", ".join(f"seed {i}: {v:.3f}" for i, v in cells) + ")"

  ev = ", ".join(
    f"{t} {s}: {v:.3f}" + (seeds(t, s) if v < ATTENTION_SOLVES else "")
    for (t, s), v in sorted(groups.items())
  )
  out.append((f"full attention >= {ATTENTION_SOLVES} on recall", ok, ev or "no cells"))
  # 2. windowed single mixers at chance beyond their reach (recall at any distance): no
  # better than guessing among the values in the context (1 / pairs), plus a margin
  fg: dict[str, list] = defaultdict(list)
  for r in [r for r in records if r["task"].startswith("recall_any")]:
    bucket = _bucket_beyond(r.get("test") or {})
    if r.get("window") is not None and "+" not in r["mixer"] and bucket:
      level = max(r.get("chance") or 0.0, r.get("chance_context") or 0.0)
      fg[r["mixer"]].append((r["test"][bucket], level, bucket))
  ok = all(v <= c + CHANCE_MARGIN for vs in fg.values() for v, c, _ in vs) if fg else None
  ev = ", ".join(
    f"{m} {vs[0][2]}: {sum(v for v, _, _ in vs) / len(vs):.3f} (guess {vs[0][1]:.3f})"
    for m, vs in sorted(fg.items())
  )
  out.append(("windowed mixers at chance beyond their reach", ok, ev or "no cells"))
  # 3. Zoology: ungated conv fails at every width, gated improves with width, attention high
  conv, gated, local = (
    means(select(records, task="recall_inside", mixer=m), ("size",))
    for m in ("conv", "gated_conv", "local")
  )
  if conv and gated and local:
    order = sorted(gated, key=lambda k: size_rank(records, k[0]))
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
  out.append(
    (f"conv < {CONV_FAILS} at every width; gated_conv rises with width; local >= 0.9", ok, ev)
  )
  # 4. the LM is trained long enough that full attention is not the worst
  for task in ("lm", "lm_long"):
    lm = means(select(records, task=task, rule="params_non_embedding"), ("mixer",))
    if "global" in {k[0] for k in lm} and len(lm) > 1:
      worst = max(lm, key=lm.get)[0]
      ok, ev = worst != "global", f"worst bits per byte: {worst} ({lm[(worst,)]:.3f})"
    elif task == "lm_long":
      continue  # full scale has no follow-up
    else:
      ok, ev = None, "no cells"
    out.append((f"{task}: full attention is not the worst (else: undertrained)", ok, ev))
  return out


def notes(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """A line under a task's heading in REPORT.md: what its table cannot say by itself."""
  out = {}
  for task, steps in (("lm", "1,000"), ("lm_long", "3,000")):
    lm = means(select(records, task=task, rule="params_non_embedding"), ("mixer", "size"))
    sizes = {s for _, s in lm}
    worst = [s for s in sizes if max((v, m) for (m, z), v in lm.items() if z == s)[1] == "global"]
    if worst:
      out[task] = (
        f"**Undertrained**: full attention has the worst bits per byte at {len(worst)} of "
        f"{len(sizes)} widths, impossible at convergence (it sees every byte the windowed "
        f"mixers see); at {steps} steps the ranking measures learning speed."
      )
  return out


def schedule(n: int) -> dict[str, int]:
  """``n`` steps with one validation and checkpoint, at the end (budget; cells are short)."""
  return {
    "train.steps": n,
    "train.eval_every": n,
    "train.checkpoint_every": n,
    "train.log_every": n // 4,
  }


def get_study(scale: str = "small") -> dict[str, Any]:
  small = scale == "small"
  size = "size=small" if small else "size=full"

  def steps(n: int) -> dict[str, Any]:
    return schedule(n) if small else {}

  recall_data = {"data.num_train": 8000, "data.num_val": 300, "data.num_test": 400}
  recall = dict(config="experiments/recall.py", block=4 if small else 32)  # BigBird, 64 tokens
  w_inside, w_any = (16, 4) if small else (32, 16)
  q2_mixers = ["local", "global", "local+local+global", *Q2_STACKS[:-1]]
  lm_mixers = ["local", "gated_conv", "global", "hyena"]
  study = dict(
    name="local_vs_conv",
    question=__doc__.split("Pre-registered before")[1].split("Design.")[0].split("\n", 1)[1],
    seeds=[0, 1, 2],
    rules=RULES,
    rule_sizes={"flops": ["m"]},  # equal FLOPs at the middle size only (budget)
    sizes={"s": 32, "m": 48, "l": 64} if small else {"s": 128, "m": 256, "l": 512},
    lrs=[1e-3, 3e-3, 1e-2] if small else [3e-4, 1e-3, 3e-3],
    sweep_every_size=True,  # a rate per size: v1's middle-size rate failed at the largest
    heads=4,
    comparisons=comparisons(follow_up=small),
    decide=decide,
    checks=checks,
    notes=notes,
    limits=[
      "The small scale ran as two processes sharing the 2 cores (`--shard=0/2`, `1/2`): each"
      " cell's training seconds include contention with whichever cell ran beside it.",
      "recall_inside holds 12 pairs per 64 tokens at w = 16 (about four per window); how the"
      " convolutions fare at other densities and widths is not measured here.",
      "The check 'analytic FLOPs within 15% of XLA' compares conventions wherever an FFT"
      " runs (hyena, and conv and gated_conv at w = 16, whose 17 taps exceed the direct"
      " path's 16, so `impl=auto` picks the FFT): lrm"
      " counts a real FFT of n points as 2.5 n log2 n (the textbook half of a complex FFT),"
      " while XLA's cost model charges 8 n log2 n for a forward real FFT and 8 (n/2+1) log2 n"
      " for an inverse (measured: 81,920 FLOPs for rfft of 1,024 points), so their ratios"
      " sit below 1 by the FFT's share of the work; every other mixer is within 4%.",
      "Decode costs come from the decode benchmark's model (2 blocks, D = 256), not from the"
      " study's trained models.",
      "The two follow-ups (recall_any_long, lm_long) were designed after v2's results were"
      " seen, though before any of their own cells ran; each runs at one width, so it adds a"
      " point per mixer, not a curve.",
      "Most follow-up arms chose the top rate of their sweep ('edge' in the sweep table):"
      " 3e-3 on recall_any_long, where the next rate up, 1e-2, left every global stack at"
      " chance after 400 steps (recall_any's sweep); 3e-2 for gated_conv and hyena on"
      " lm_long, as at widths 32 and 48 on lm.",
    ],
    price_per_hour=0.10,  # dollars per machine-hour (lrm.analysis.cost's default VM)
    decode_context=1024,  # decode cost read from results/bench/decode_cpu.jsonl at this context
    tasks={
      "recall_inside": dict(
        **recall,
        arg=f"{size},distance=inside,window={{window}}",
        overrides={
          **steps(300),
          **(recall_data if small else {}),
          "data.num_pairs": INSIDE_PAIRS if small else 32,
        },
        mixers=[*Q1_CONVS, "local", "global"],
        # the convolutions chose the top of 1e-3..1e-2 in the first sweep cells: one more
        lrs=[1e-3, 3e-3, 1e-2, 3e-2] if small else [3e-4, 1e-3, 3e-3, 1e-2],
        windows=[w_inside],
        reference=dict(mixer="local", window=w_inside),
      ),
      "recall_any": dict(
        **recall,
        arg=f"{size},distance=any,window={{window}}",
        # at 200 steps full attention reached only 0.81 at width 48 (undertrained)
        overrides={**steps(400), **recall_data} if small else {},
        mixers=q2_mixers,
        windows=[w_any],
        reference=dict(mixer="local", window=w_any),
        rules=RULES[:1],  # Q2 is asked at equal non-embedding parameters (budget)
      ),
      "lm": dict(
        config="experiments/lm.py",
        arg=f"{size},window={{window}}",
        overrides={**steps(1000), "data.corpus_bytes": 4_000_000} if small else {},
        lrs=[3e-3, 1e-2, 3e-2] if small else [1e-3, 3e-3, 1e-2],  # v1: all chose its largest
        mixers=lm_mixers,
        windows=[8] if small else [128],
        reference=dict(mixer="local", window=8 if small else 128),
        block=16 if small else 64,
      ),
    },
    # effective kernels of every family: both recall tasks, middle size, every seed
    content=dict(tasks=["recall_inside", "recall_any"], radius=16 if small else 32),
  )
  if small:  # design v3's follow-ups (module docstring): Q2's arms 4x longer, the LM 3x
    tasks = study["tasks"]
    tasks["recall_any_long"] = longer(tasks, "recall_any", 1600, {"l": 64}, [3e-4, 1e-3, 3e-3])
    tasks["lm_long"] = longer(tasks, "lm", 3000, {"m": 48}, [3e-3, 1e-2, 3e-2])
  return study


def longer(
  tasks: Mapping[str, Any], name: str, steps: int, sizes: dict[str, int], lrs: list[float]
) -> dict[str, Any]:
  """Task ``name`` trained for ``steps`` at ``sizes`` only, with its own sweep of ``lrs``, at
  equal non-embedding parameters (one width: a point per mixer, not a curve)."""
  task = tasks[name]
  overrides = {**task["overrides"], **schedule(steps)}
  return {**task, "overrides": overrides, "sizes": sizes, "lrs": lrs, "rules": RULES[:1],
          "follow_up": name}  # fmt: skip
