"""The flagship study: does local attention beat a CNN of the same receptive field?

  python scripts/study.py --study=experiments/studies/local_vs_conv.py --out=runs/local_vs_conv
  python scripts/study.py --study=experiments/studies/local_vs_conv.py --out=runs/lvc_full \
      --scale=full                                   # published LRA sizes: GPU/TPU

Every mixer gets the same measured receptive field per layer as local attention of radius w:
a convolution of kernel 2w+1 (w+1 when causal), depthwise-separable or full; dynamic
convolution and involution over the same window; local attention; local attention with two
global tokens; BigBird (window, global and random blocks); full attention as the reference
with an unbounded field. Models are sized to equal parameters and to equal training FLOPs
per token (the budget of local attention at the task's default width), three seeds each.

Tasks: associative recall with answers at every distance (accuracy is broken down inside and
beyond the window), ListOps, byte-level LM on the Python standard library, and generated
Pathfinder. ``small`` (126 runs) finishes on a 2-core CPU in about 70 minutes; ``full`` uses the
published LRA sizes.
"""

from __future__ import annotations

from typing import Any

CONV_FAMILY = ["conv", "conv_full", "dynamic_conv", "involution"]
ATTENTION = ["local", "local_global", "bigbird", "global"]


def get_study(scale: str = "small") -> dict[str, Any]:
  small = scale == "small"
  size = "size=small" if small else "size=full"

  def steps(n_small: int) -> dict[str, Any]:
    if not small:
      return {}
    return {
      "train.steps": n_small,
      "train.eval_every": n_small // 2,
      "train.checkpoint_every": n_small // 2,
      "train.log_every": n_small // 4,
    }

  return dict(
    name="local_vs_conv",
    question=(
      "Local self-attention with radius w has the same receptive field per layer as a "
      "convolution of kernel 2w+1 (w+1 causal); attention computes a content-dependent "
      "kernel at each position where a convolution's is static, with dynamic convolution "
      "and involution in between. At equal parameters and at equal training FLOPs, on a "
      "task that needs content-based recall (inside and beyond the window), on ListOps, on "
      "byte-level language modelling and on Pathfinder: what does each mixer buy?"
    ),
    seeds=[0, 1, 2],
    rules=["params", "flops"],
    heads=4,
    tasks={
      "recall": dict(
        config="experiments/recall.py",
        arg=f"{size},distance=any,window={{window}}",
        overrides={**steps(300), "data.num_train": 8000} if small else {},
        mixers=CONV_FAMILY + ATTENTION,
        windows=[4, 8] if small else [16, 64],
        reference=dict(mixer="local", window=4 if small else 16),
        # BigBird block 4 at 64 tokens: 8 of 16 blocks per query (block 8 would cover all)
        block=4 if small else 32,
      ),
      "listops": dict(
        config="experiments/listops.py",
        arg=size,
        overrides=steps(300),
        mixers=["conv", "dynamic_conv", *ATTENTION],
        windows=[8] if small else [64],
        reference=dict(mixer="local", window=8 if small else 64),
        rules=["params"] if small else ["params", "flops"],
        block=16 if small else 64,
      ),
      "lm": dict(
        config="experiments/lm.py",
        arg=size,
        overrides={**steps(200), "data.corpus_bytes": 200_000} if small else {},
        mixers=["conv", "dynamic_conv", "local", "local_global", "global"],
        windows=[8] if small else [128],
        reference=dict(mixer="local", window=8 if small else 128),
        rules=["params"] if small else ["params", "flops"],
        block=16 if small else 64,
      ),
      "pathfinder": dict(
        config="experiments/pathfinder.py",
        arg=size,
        overrides=steps(200),
        # full attention at 1024 tokens is left to ``full`` (minutes per cell on 2 cores)
        mixers=["conv", "local", "bigbird"] if small else ["conv", "local", "bigbird", "global"],
        windows=[16] if small else [32],
        reference=dict(mixer="local", window=16 if small else 32),
        rules=["params"] if small else ["params", "flops"],
        block=32 if small else 64,
      ),
    },
    content=dict(task="recall", window=4 if small else 16, mixers=["conv", "local"]),
  )
