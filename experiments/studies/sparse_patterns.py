"""Is local attention useful only in combination? Local vs local+global vs local+random vs
BigBird vs full attention on the LRA tasks.

  python scripts/study.py --study=experiments/studies/sparse_patterns.py --out=results/sparse
  python scripts/study.py --study=experiments/studies/sparse_patterns.py --out=runs/sp_full \
      --scale=full                                   # published LRA sizes: GPU/TPU

All patterns share the window radius w; ``local_global`` adds two global tokens,
``local_random`` adds three random key blocks per query block (BigBird without its global
blocks), ``bigbird`` has window, global and random blocks, ``global`` is full attention.
Models are matched in parameters (the attention variants differ little) and in training FLOPs.
"""

from __future__ import annotations

from typing import Any

PATTERNS = ["local", "local_global", "local_random", "bigbird", "global"]
LRA = {
  "listops": "experiments/listops.py",
  "text": "experiments/text.py",
  "retrieval": "experiments/retrieval.py",
  "image": "experiments/image.py",
  "pathfinder": "experiments/pathfinder.py",
}


def get_study(scale: str = "small") -> dict[str, Any]:
  small = scale == "small"
  overrides = (
    {"train.steps": 300, "train.eval_every": 150, "train.checkpoint_every": 150} if small else {}
  )
  return dict(
    name="sparse_patterns",
    question=(
      "Local attention sees only its window; global tokens and random blocks add long-range "
      "paths at linear cost. Which combination pays off on each Long Range Arena task, at "
      "equal parameters and equal training FLOPs?"
    ),
    seeds=[0, 1, 2] if small else [0, 1, 2],
    rules=["params", "flops"],
    heads=4 if small else 8,
    tasks={
      name: dict(
        config=path,
        arg="size=small" if small else "size=full",
        overrides=overrides,
        mixers=PATTERNS,
        windows=[8] if small else [64],
        reference=dict(mixer="local", window=8 if small else 64),
        block=16 if small else 64,
      )
      for name, path in LRA.items()
    },
  )
