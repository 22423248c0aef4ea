"""LRA Image: CIFAR-10 as 1024 grayscale pixel tokens (``lrm.tasks.image``).

  python scripts/train.py --config=experiments/image.py:mixer=local,size=small --workdir=runs/img_s
  python scripts/train.py --config=experiments/image.py:mixer=conv,size=full,data=cifar10 \
      --workdir=runs/img_conv                       # LRA sizes, real CIFAR-10 (hub, online once)

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full),
``window`` (local radius w, default 32 = one image row either way; conv kernel 2w+1),
``data`` (``""`` = the offline synthetic gratings, ``cifar10``, or a local save_to_disk
folder with ``img``/``label``).

``full`` = the LRA CIFAR-10 Transformer config (``image/configs/cifar10/``): 1 layer, width
128, 8 heads (the published file says fewer; LRA issues #16/#33 report 8 is needed), MLP 128,
dropout 0.3, learned positions, batch 256, 35k steps (200 epochs of 175), Adam(0.9, 0.98), lr
5e-4 cosine with 175 warm-up steps, no weight decay. Differences: mean pooling instead of
CLS; no separate attention dropout (LRA: 0.2); qkv width = model width (LRA: 64).
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, parse_arg, set_mixer
from lrm.mixers import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(arg, mixer="local", size="small", window=32, data="", rotary=True)
  small = is_small(v.size)
  c = base_config()
  c.task = "image"
  c.data = ml_collections.ConfigDict(dict(path=v.data, seed=0))
  if small:
    c.data.update(dict(num_train=4000, num_val=400, num_test=400))
  c.model.dim, c.model.depth = (64, 2) if small else (128, 1)
  c.model.mlp_ratio, c.model.mlp_dim = 4, 0 if small else 128
  set_mixer(
    c.model,
    presets.spec(
      v.mixer, window=v.window, heads=2 if small else 8, block=16 if small else 64, rotary=v.rotary
    ),
  )
  c.model.pool = "mean"
  c.model.positions = "learned"
  c.model.dropout = 0.0 if small else 0.3
  if small:
    c.train.update(dict(steps=400, batch_size=32, eval_every=100, checkpoint_every=200))
    c.optim.update(dict(lr=1e-3, warmup_steps=50, weight_decay=0.05))
  else:
    c.train.update(dict(steps=35_000, batch_size=256, eval_every=175, checkpoint_every=1750))
    c.optim.update(dict(lr=5e-4, warmup_steps=175, weight_decay=0.0))
  c.optim.schedule = "cosine"
  c.optim.b2 = 0.98
  c.train.eval_batch_size = 100
  return c
