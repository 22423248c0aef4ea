"""LRA Text: byte-level IMDB sentiment (``lrm.tasks.text``).

  python scripts/train.py --config=experiments/text.py:mixer=local,size=small --workdir=runs/text_s
  python scripts/train.py --config=experiments/text.py:mixer=conv,size=full,data=imdb \
      --workdir=runs/text_conv                      # LRA sizes, real IMDB (hub, online once)
  python scripts/train.py --config=experiments/text.py:mixer=bigbird,size=full,max_len=4096 \
      --config.data.path=imdb --workdir=runs/text_bb_4k   # the paper's 4K (S4 uses 4096 too)

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full),
``window`` (local radius w; conv kernel 2w+1), ``data`` (``""`` = the offline synthetic
stand-in, ``imdb``, or a local folder with ``text``/``label``), ``max_len`` (0 = the size's
default: 256 small, 1000 full as in the LRA code).

``full`` = the LRA config (``text_classification/configs/base_tc_config.py``): 4 layers, width
256, 4 heads, MLP 1024, batch 32, 20k steps, Adam(0.9, 0.98) with weight decay 0.1 and
``0.05 * linear_warmup * rsqrt_decay`` with 8000 warm-up steps, i.e. peak 0.05/sqrt(8000).
Differences: mean pooling instead of a CLS token (the first token of a local model only sees
its window); validation is IMDB's test split, as in LRA.
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, lra_bytes_recipe, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(arg, mixer="local", size="small", window=0, data="", max_len=0, rotary=True)
  small = is_small(v.size)
  c = base_config()
  c.task = "text"
  c.data = ml_collections.ConfigDict(
    dict(path=v.data, max_len=v.max_len or (256 if small else 1000), holdout=0, seed=0)
  )
  lra_bytes_recipe(c, v, full_dim=256, full_steps=20_000, full_eval_every=1000)
  return c
