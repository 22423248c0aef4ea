"""Causal byte-level language modelling (``lrm.tasks.lm``); metric: bits per byte.

  python scripts/train.py --config=experiments/lm.py:mixer=local,size=small --workdir=runs/lm_s
  python scripts/train.py --config=experiments/lm.py:mixer=local,size=full --workdir=runs/lm_stdlib
  python scripts/train.py --config=experiments/lm.py:mixer=conv,size=full,data=/data/enwik8 \
      --workdir=runs/lm_enwik8                      # one file: split 90/5/5 % by position

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack; every mixer
runs causally here),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full), ``window`` (local radius w; causal conv kernel w+1), ``data``
(``""`` = the Python standard library shipped with the interpreter; a text file; a folder of text
files; a save_to_disk folder or hub dataset with a ``text`` column).

``small``: 400 kB of the stdlib, 128-byte windows, a 2-layer width-64 model (CPU minutes).
``full``: a small GPT-scale byte model: 8 layers, width 512, 8 heads, 1024-byte windows,
batch 32, AdamW(0.9, 0.95) lr 6e-4 cosine, weight decay 0.1, dropout 0.1. On the whole
stdlib (about 8.4 MB of train text with Python 3.11) it runs 4000 steps (about 15 epochs;
more only overfits); on any other data (sized for enwik8's 90 MB) 20k steps.
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, parse_arg, set_mixer
from lrm.mixers import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(arg, mixer="local", size="small", window=0, data="", rotary=True)
  small = is_small(v.size)
  c = base_config()
  c.task = "lm"
  c.data = ml_collections.ConfigDict(
    dict(
      path=v.data,
      seq_len=128 if small else 1024,
      tokenizer="bytes",
      corpus_bytes=400_000 if small else 0,
    )
  )
  window = v.window or (16 if small else 128)
  c.model.dim, c.model.depth = (64, 2) if small else (512, 8)
  c.model.mlp_ratio = 4
  set_mixer(
    c.model,
    presets.spec(
      v.mixer,
      window=window,
      heads=2 if small else 8,
      block=16 if small else 64,
      causal=True,
      rotary=v.rotary,
    ),
  )
  c.model.tie_embedding = True
  c.model.positions = "learned"
  c.model.dropout = 0.0 if small else 0.1
  if small:
    c.train.update(dict(steps=400, batch_size=16, eval_every=100, checkpoint_every=200))
    c.optim.update(dict(lr=2e-3, warmup_steps=50, weight_decay=0.05))
  else:
    steps = 4000 if not v.data else 20_000
    c.train.update(dict(steps=steps, batch_size=32, eval_every=500, checkpoint_every=500))
    c.optim.update(dict(lr=6e-4, warmup_steps=500, weight_decay=0.1))
  c.optim.schedule = "cosine"
  c.optim.b2 = 0.95
  c.train.eval_batch_size = 32
  return c
