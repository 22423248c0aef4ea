"""LRA ListOps (``lrm.tasks.listops``): the value 0-9 of a nested MIN/MAX/MED/SM expression.

  python scripts/train.py --config=experiments/listops.py:mixer=local,size=small --workdir=runs/lo_s
  python scripts/train.py --config=experiments/listops.py:mixer=conv,size=full --workdir=runs/lo_c
  python scripts/train.py --config=experiments/listops.py:mixer=bigbird,size=full \
      --config.data.path=/data/lra_release/listops-1000 --workdir=runs/lo_bb   # released files

Variants: ``mixer`` (an ``lrm.mixers.presets`` name; ``a+b+c`` is a hybrid stack),
``rotary`` (attention presets use rotary positions; false: the learned absolute ones
only), ``size`` (small | full), ``window``
(local radius w; the conv preset has kernel 2w+1). With ``data.path`` empty the data are
generated offline by LRA's rules (``size=full``: LRA's 96k/2k/2k, lengths 500-2000, about a
minute to generate once); ``scripts/prepare_data.py --task=listops --out=DIR`` writes the same
TSVs to a folder.

``full`` = LRA's ListOps setting (Tay et al. 2021, "Long Range Arena", ICLR; google-research/
long-range-arena ``lra_benchmarks/listops/configs/base_listops_config.py``): 4 layers, width
512, 8 heads, MLP 1024, dropout 0.1, sinusoidal positions, max_len 2000, batch 32, 5000 steps,
eval every 50, Adam(0.9, 0.98), weight decay 0.1, ``0.05 * linear_warmup * rsqrt_decay`` with
1000 warm-up steps, i.e. a peak of 0.05 / sqrt(1000) = 1.58e-3 (our rsqrt schedule's ``lr`` is
the peak), no gradient clipping, validation on 20 batches of 32 (LRA's ``num_eval_steps``; the
test split is evaluated whole). Differences: mean pooling instead of LRA's CLS token (our
``cls`` pool reads token 0 with no extra token, which a windowed mixer would only see through
depth x window tokens); LRA's ``base_listops_config.py`` in the repository reads 6 layers and
MLP 2048.

``small`` = a few CPU minutes: 2000/200/200 expressions of 64-256 tokens, width 64, 2 layers.
"""

from __future__ import annotations

import math

import ml_collections

from lrm.config import base_config, is_small, parse_arg, set_mixer
from lrm.mixers import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(arg, mixer="local", size="small", window=0, rotary=True)
  small = is_small(v.size)
  c = base_config()
  c.task = "listops"
  c.data = ml_collections.ConfigDict(dict(path="", seed=0, max_depth=10, max_args=10))
  if small:
    c.data.update(dict(max_len=256, min_len=64, num_train=2000, num_val=200, num_test=200))
  else:
    c.data.update(dict(max_len=2000, min_len=500, num_train=96_000, num_val=2000, num_test=2000))
  window = v.window or (16 if small else 64)
  c.model.dim, c.model.depth = (64, 2) if small else (512, 4)
  c.model.mlp_ratio = 2  # LRA: MLP 1024 at width 512
  set_mixer(
    c.model,
    presets.spec(
      v.mixer, window=window, heads=2 if small else 8, block=16 if small else 64, rotary=v.rotary
    ),
  )
  c.model.pool = "mean"
  c.model.positions = "learned" if small else "sinusoidal"
  c.model.dropout = 0.0 if small else 0.1
  if small:
    c.train.update(dict(steps=500, batch_size=32, eval_every=100, checkpoint_every=250))
    c.optim.update(dict(lr=1e-3, schedule="cosine", warmup_steps=50, weight_decay=0.05))
  else:
    c.train.update(dict(steps=5000, batch_size=32, eval_every=50, checkpoint_every=500))
    c.train.max_eval_batches = 20  # LRA's num_eval_steps: 20 batches of 32 per evaluation
    c.optim.update(
      dict(lr=0.05 / math.sqrt(1000), schedule="rsqrt", warmup_steps=1000, weight_decay=0.1)
    )
    c.optim.clip_norm = 0.0  # LRA clipped nothing
  c.optim.b1, c.optim.b2 = 0.9, 0.98
  c.train.eval_batch_size = 100 if small else 32
  return c
