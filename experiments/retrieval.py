"""LRA Retrieval (AAN): byte-level document matching with a dual encoder (``lrm.tasks.retrieval``).

  python scripts/train.py --config=experiments/retrieval.py:mixer=local,size=small \
      --workdir=runs/retr_s
  python scripts/train.py --config=experiments/retrieval.py:mixer=conv,size=full \
      --config.data.path=/data/lra_release --workdir=runs/retr_conv   # new_aan_pairs.*.tsv

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full),
``window`` (local radius w; conv kernel 2w+1), ``data`` (``""`` = the offline synthetic
stand-in; otherwise the folder holding the official TSV files, or the lra_release tree).

``full`` = the LRA config (``matching/configs/base_match_config.py``): 4000 bytes per
document, 4 layers, width 128, 4 heads, MLP 512, batch 32, 5000 steps, Adam(0.9, 0.98) with
weight decay 0.1 and ``0.05 * linear_warmup * rsqrt_decay`` with 8000 warm-up steps. As
published, the warm-up is longer than the run, so the learning rate peaks at step 5000 at
5/8 of 0.05/sqrt(8000). Difference: mean pooling instead of CLS; the head uses features
``[u, v, u*v, u-v]`` (LRA's NLI-style interaction) from one shared encoder.
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, lra_bytes_recipe, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(arg, mixer="local", size="small", window=0, data="", rotary=True)
  small = is_small(v.size)
  c = base_config()
  c.task = "retrieval"
  c.data = ml_collections.ConfigDict(dict(path=v.data, max_len=256 if small else 4000, seed=0))
  lra_bytes_recipe(c, v, full_dim=128, full_steps=5000, full_eval_every=500)
  return c
