"""The flagship study: local attention against convolutions of the same receptive field.

  python scripts/study.py --study=experiments/studies/local_vs_conv.py \\
      --out=results/local_vs_conv                   # small: 228 cells, ~1.5 h, 2 cores
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
Learning rates: three per arm, swept at the middle size, first rule, seed 0, chosen on the
VALIDATION metric (``lrm.study.sweep``), then used for every size and seed. Seeds 0, 1, 2.
Equal training seconds is read off the curves (metric against measured training seconds,
compilation and evaluation excluded); it is not a matched budget.

Tasks: ``recall_inside`` (MQAR with every answer within w of its query: Q1), ``recall_any``
(answers at any distance up to the 64-token sequence: Q2), ``lm`` (bytes of the Python
standard library, test split of 5% of 4 MB = 200 KB: Q3 and a sanity check on a real
distribution). Recall test sets: 400 sequences x 6 queries = 2,400 queries. Steps (small):
recall_inside 200, recall_any 400, lm 400.

Pre-registered comparisons (``comparisons``; a - b of the test metric, paired by seed):
  Q1 (recall_inside; equal non-embedding params at size l, and equal FLOPs at size m):
     local vs conv, local vs gated_conv, local vs dynamic_conv, local vs involution
  Q2 (recall_any; equal non-embedding params at size l):
     local+local+global vs conv+conv+global, vs gated_conv+gated_conv+global, vs bigbird,
     vs hyena, and vs local alone
  Q3 (lm; bits per byte, lower is better; equal FLOPs at size m):
     local vs gated_conv, local vs global
Correction: Holm-Bonferroni over all 15 comparisons together (family-wise 5%).

Decision rules: "a beats b" iff the Holm-adjusted paired t-test rejects at 5% and the mean
difference favours a; otherwise the report says "no significant difference", whatever the
means. Q1 is answered per convolution kind; a kind that local attention does not beat at both
budgets is reported as matching it. Q2: local attention is "useful only in combination" if
local+local+global beats local alone on recall_any and at least one conv+global stack does
not beat local+local+global. Q3 is descriptive (a cost table and curves; no test).
"""

from __future__ import annotations

from typing import Any

Q1_CONVS = ["conv", "gated_conv", "dynamic_conv", "involution"]
Q2_STACKS = ["conv+conv+global", "gated_conv+gated_conv+global", "bigbird", "hyena", "local"]
RULES = ["params_non_embedding", "flops"]


def comparisons() -> list[dict[str, Any]]:
  """The pre-registered comparisons, in the order the report answers them."""
  q1 = [
    dict(question="Q1", task="recall_inside", a="local", b=conv, rule=rule, size=size)
    for rule, size in (("params_non_embedding", "l"), ("flops", "m"))
    for conv in Q1_CONVS
  ]
  q2 = [
    dict(question="Q2", task="recall_any", a="local+local+global", b=b, rule=RULES[0], size="l")
    for b in Q2_STACKS
  ]
  q3 = [
    dict(question="Q3", task="lm", a="local", b=b, rule="flops", size="m")
    for b in ("gated_conv", "global")
  ]
  return q1 + q2 + q3


def get_study(scale: str = "small") -> dict[str, Any]:
  small = scale == "small"
  size = "size=small" if small else "size=full"

  def steps(n: int) -> dict[str, Any]:
    if not small:
      return {}
    return {  # one validation and checkpoint, at the end (budget; cells are short)
      "train.steps": n,
      "train.eval_every": n,
      "train.checkpoint_every": n,
      "train.log_every": n // 4,
    }

  recall_data = {"data.num_train": 8000, "data.num_val": 300, "data.num_test": 400}
  recall = dict(
    config="experiments/recall.py",
    windows=[4] if small else [16],
    reference=dict(mixer="local", window=4 if small else 16),
    block=4 if small else 32,  # BigBird at 64 tokens: 8 of 16 blocks per query
  )
  return dict(
    name="local_vs_conv",
    question=__doc__.split("Pre-registered before")[1].split("Design.")[0].split("\n", 1)[1],
    seeds=[0, 1, 2],
    rules=RULES,
    rule_sizes={"flops": ["m"]},  # equal FLOPs at the middle size only (budget)
    sizes={"s": 32, "m": 48, "l": 64} if small else {"s": 128, "m": 256, "l": 512},
    lrs=[1e-3, 3e-3, 1e-2] if small else [3e-4, 1e-3, 3e-3],
    heads=4,
    comparisons=comparisons(),
    price_per_hour=0.10,  # dollars per machine-hour (lrm.analysis.cost's default VM)
    decode_context=1024,  # decode cost read from results/bench/decode_cpu.jsonl at this context
    tasks={
      "recall_inside": dict(
        **recall,
        arg=f"{size},distance=inside,window={{window}}",
        overrides={**steps(200), **recall_data} if small else {},
        mixers=[*Q1_CONVS, "local", "global"],
      ),
      "recall_any": dict(
        **recall,
        arg=f"{size},distance=any,window={{window}}",
        # at 200 steps full attention reached only 0.81 at width 48 (undertrained)
        overrides={**steps(400), **recall_data} if small else {},
        mixers=["local", "gated_conv", "global", "local+local+global", *Q2_STACKS[:-1]],
        rules=RULES[:1],  # Q2 is asked at equal non-embedding parameters (budget)
      ),
      "lm": dict(
        config="experiments/lm.py",
        arg=f"{size},window={{window}}",
        overrides={**steps(400), "data.corpus_bytes": 4_000_000} if small else {},
        mixers=["local", "gated_conv", "global", "hyena"],
        windows=[8] if small else [128],
        reference=dict(mixer="local", window=8 if small else 128),
        block=16 if small else 64,
      ),
    },
    # effective kernels of every family: both recall tasks, middle size, every seed
    content=dict(tasks=["recall_inside", "recall_any"], radius=6),
  )
