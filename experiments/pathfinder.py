"""LRA Pathfinder (``lrm.tasks.pathfinder``): are the two dots joined by a dashed curve?

32x32 images read as 1024 pixel tokens, 2 classes.

  python scripts/train.py --config=experiments/pathfinder.py:mixer=local,size=small \
      --workdir=runs/pf_s
  python scripts/train.py --config=experiments/pathfinder.py:mixer=conv,size=full \
      --workdir=runs/pf_conv
  python scripts/train.py --config=experiments/pathfinder.py:mixer=local,size=full \
      --config.data.path=/data/lra_release --workdir=runs/pf_local   # the released images

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full), ``window``
(local radius w, default 32 = one image row either way; the conv preset has kernel 2w+1),
``difficulty`` (curv_contour_length_14 = LRA's "hard", curv_contour_length_9, curv_baseline).
With ``data.path`` empty the images are generated offline (``size=full``: LRA's 160k/20k/20k,
several minutes once); ``scripts/prepare_data.py --task=pathfinder --out=DIR`` writes the same
files in the release layout.

``full`` = LRA's Pathfinder-32 setting (Tay et al. 2021, "Long Range Arena", ICLR;
google-research/long-range-arena
``lra_benchmarks/image/configs/pathfinder32/base_pathfinder32_config.py``): 4 layers, width 32,
4 heads, MLP 32, mean pooling, dropout 0.2, sinusoidal positions, batch 512, 62,400 steps (200
epochs of 312), Adam(0.9, 0.98) lr 1e-3 with cosine decay and 312 warm-up steps, no weight
decay, no clipping. Differences: no separate attention dropout; qkv width = model width (LRA:
16). The repository's ``pathfinder32/transformer_base.py`` reads 1 layer, width 128, MLP 128
instead.

``small`` = a few CPU minutes: 2000/200/200 generated images, width 32, 2 layers, 300 steps.
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, parse_arg, set_mixer
from lrm.mixers import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(
    arg, mixer="local", size="small", window=32, difficulty="curv_contour_length_14", rotary=True
  )
  small = is_small(v.size)
  c = base_config()
  c.task = "pathfinder"
  c.data = ml_collections.ConfigDict(dict(path="", seed=0, difficulty=v.difficulty))
  if small:
    c.data.update(dict(num_train=2000, num_val=200, num_test=200))
  else:
    c.data.update(dict(num_train=160_000, num_val=20_000, num_test=20_000))
  c.model.dim, c.model.depth = 32, 2 if small else 4
  c.model.mlp_ratio = 1  # LRA: MLP 32 at width 32
  set_mixer(
    c.model,
    presets.spec(
      v.mixer, window=v.window, heads=2 if small else 4, block=32 if small else 64, rotary=v.rotary
    ),
  )
  c.model.pool = "mean"
  c.model.positions = "learned" if small else "sinusoidal"
  c.model.dropout = 0.0 if small else 0.2
  if small:
    c.train.update(dict(steps=300, batch_size=32, eval_every=100, checkpoint_every=150))
    c.optim.update(dict(lr=1e-3, warmup_steps=30, weight_decay=0.0))
  else:
    c.train.update(dict(steps=62_400, batch_size=512, eval_every=312, checkpoint_every=3120))
    c.optim.update(dict(lr=1e-3, warmup_steps=312, weight_decay=0.0, clip_norm=0.0))
  c.optim.schedule = "cosine"
  c.optim.b1, c.optim.b2 = 0.9, 0.98
  c.train.eval_batch_size = 100 if small else 512
  return c
