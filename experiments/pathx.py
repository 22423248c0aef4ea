"""LRA Path-X (``lrm.tasks.pathfinder``, task ``pathx``): Pathfinder at 128x128 = 16384 tokens.

  python scripts/train.py --config=experiments/pathx.py:mixer=conv,size=small --workdir=runs/px_s
  python scripts/train.py --config=experiments/pathx.py:mixer=local,size=full --workdir=runs/px_l
  python scripts/train.py --config=experiments/pathx.py:mixer=bigbird,size=full \
      --config.data.path=/data/lra_release --workdir=runs/px_bb   # the released pathfinder128

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full), ``window``
(local radius w, default 128 = one image row either way; the conv preset has kernel 2w+1),
``difficulty`` (as for Pathfinder). With ``data.path`` empty the images are generated offline
(``size=full``: 160k/20k/20k 128x128 images, expect a long one-off generation, about 3.3 GB of
pixels in memory); ``scripts/prepare_data.py --task=pathx --out=DIR`` writes the same files.
Dense ``global`` attention at this length needs L^2 = 268M scores per head and example: use it
on an accelerator only.

``full`` = LRA's Path-X setting (Tay et al. 2021, "Long Range Arena", ICLR; google-research/
long-range-arena ``lra_benchmarks/image/configs/pathfinder128/base_pathfinder128_config.py``):
1 layer, width 32, 2 heads, MLP 32, mean pooling, dropout 0.1, learned positions, batch 64,
200 epochs of 2500 steps (500k steps), Adam(0.9, 0.98) lr 1e-3 with cosine decay and one epoch
of warm-up, no weight decay, gradient clipping at 1.0. Differences: no separate attention
dropout; qkv width = model width (LRA: 16).

``small`` = minutes on a CPU: 400/50/50 generated images, width 16, 1 layer, batch 4, 60 steps
(it checks that the pipeline runs at 16k tokens, not that the model learns Path-X).
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, parse_arg, set_mixer
from lrm.mixers import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(
    arg, mixer="local", size="small", window=128, difficulty="curv_contour_length_14", rotary=True
  )
  small = is_small(v.size)
  c = base_config()
  c.task = "pathx"
  c.data = ml_collections.ConfigDict(dict(path="", seed=0, difficulty=v.difficulty))
  if small:
    c.data.update(dict(num_train=400, num_val=50, num_test=50))
  else:
    c.data.update(dict(num_train=160_000, num_val=20_000, num_test=20_000))
  c.model.dim, c.model.depth = (16, 1) if small else (32, 1)
  c.model.mlp_ratio = 1  # LRA: MLP 32 at width 32
  set_mixer(c.model, presets.spec(v.mixer, window=v.window, heads=2, block=64, rotary=v.rotary))
  c.model.pool = "mean"
  c.model.positions = "learned"
  c.model.dropout = 0.0 if small else 0.1
  if small:
    c.train.update(dict(steps=60, batch_size=4, eval_every=30, checkpoint_every=30))
    c.optim.update(dict(lr=1e-3, warmup_steps=10, weight_decay=0.0))
  else:
    epoch = 160_000 // 64
    c.train.update(dict(steps=200 * epoch, batch_size=64, eval_every=epoch, checkpoint_every=epoch))
    c.optim.update(dict(lr=1e-3, warmup_steps=epoch, weight_decay=0.0, clip_norm=1.0))
  c.optim.schedule = "cosine"
  c.optim.b1, c.optim.b2 = 0.9, 0.98
  c.train.eval_batch_size = 8 if small else 64
  return c
