"""Locality vs content-based recall: MQAR (``recall``) and selective copying.

A model whose reach is below the query-to-answer distance must fail ``recall`` (chance is
``1 / num_pairs`` once it has learnt to answer with a value of the context), however well it
fits the data; attention that can look back that far solves it. As in zoology's MQAR
sweeps, layer 0 is a short causal conv (kernel 3: it writes each key into the value after
it) and layer 1 is the mixer under test (``short_conv=false`` stacks two of it instead;
pure attention stacks then need many more steps). ``distance`` places every answer inside
the tested layer's window (``inside``: d <= w), beyond what either causal local attention
(radius w) or the causal conv of the same field (kernel w+1) can reach even with the short
conv (``beyond``: d > w + 2), or anywhere (``any``); ``acc_d<=w``, ``acc_d{w+1}-{w+2}``,
``acc_d>{w+2}`` break accuracy
down by distance (``distance`` applies to ``recall`` only).

  python scripts/train.py --config=experiments/recall.py:mixer=local,size=small --workdir=runs/rl
  python scripts/train.py --config=experiments/recall.py:mixer=local,distance=beyond \
      --workdir=runs/rl_beyond                       # local attention at chance
  python scripts/train.py --config=experiments/recall.py:mixer=global,distance=beyond \
      --workdir=runs/rg_beyond                       # global attention solves it
  python scripts/train.py --config=experiments/recall.py:mixer=conv,distance=inside \
      --workdir=runs/rc_inside
  python scripts/train.py --config=experiments/recall.py:task=selective_copy,mixer=global \
      --workdir=runs/sc

Variants: ``mixer`` (any ``lrm.mixers.presets`` name; ``a+b+c`` stacks the three after the
short conv), ``size`` (small | full),
``window`` (local radius w; causal conv kernel w+1), ``distance`` (inside | beyond | any),
``task`` (recall | selective_copy), ``short_conv`` (true | false), ``rotary`` (attention
presets use rotary positions; false: the learned absolute ones only). ``full`` follows
zoology's MQAR sweep point (seq_len 256, 16 pairs, vocab 8192, d_model 128, 2 layers,
batch 256, lr 1e-3, weight decay 0.1, 32 epochs of 100k examples) and for selective copying
the Mamba paper's setup (seq_len 4096, 16 tokens, 16 symbols, 2 layers, d_model 64,
batch 64, constant lr 1e-4; 400k steps there, 50k here).
"""

from __future__ import annotations

import ml_collections

from lrm.config import base_config, is_small, parse_arg, set_mixer
from lrm.mixers import presets

DISTANCES = ("inside", "beyond", "any")
TASKS = ("recall", "selective_copy")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(
    arg,
    mixer="local",
    size="small",
    window=8,
    distance="any",
    task="recall",
    short_conv=True,
    rotary=True,
  )
  small = is_small(v.size)
  if v.distance not in DISTANCES:
    raise ValueError(f"unknown distance '{v.distance}'; use one of {', '.join(DISTANCES)}")
  if v.task not in TASKS:
    raise ValueError(f"unknown task '{v.task}'; use one of {', '.join(TASKS)}")
  c = base_config()
  c.task = v.task
  w = v.window
  # farthest reach back: the tested layer reaches w (causal local attention of radius w, or
  # a causal conv of kernel w+1), the short conv 2 more; without it two tested layers: 2w
  reach = w + 2 if v.short_conv else 2 * w
  if v.task == "recall":
    seq_len = 64 if small else 256
    c.data = ml_collections.ConfigDict(
      dict(
        path="",
        num_pairs=6 if small else 16,
        vocab_size=64 if small else 8192,
        seq_len=seq_len,
        min_distance=reach + 1 if v.distance == "beyond" else 1,
        max_distance=w if v.distance == "inside" else 0,
        distance_buckets=(w, reach),
        num_train=20_000 if small else 100_000,
        num_val=500 if small else 1_000,
        num_test=500 if small else 1_000,
      )
    )
  else:
    seq_len = 64 if small else 4096
    c.data = ml_collections.ConfigDict(
      dict(
        path="",
        num_tokens=4 if small else 16,
        vocab_size=10 if small else 18,  # 16 content symbols + blank + marker in full
        seq_len=seq_len,
        distance_buckets=(w, reach),
        num_train=20_000 if small else 100_000,
        num_val=500 if small else 1_000,
        num_test=500 if small else 1_000,
      )
    )
  c.model.dim = 64 if small or v.task == "selective_copy" else 128
  reach = dict(window=w, heads=4 if small else 8, block=8, causal=True, rotary=v.rotary)
  tested = presets.spec_list(v.mixer, **reach)
  # a hybrid ``a+b+c`` puts each of its parts once after the short conv
  set_mixer(c.model, [dict(name="conv", kernel_size=3), *tested] if v.short_conv else tested)
  # without the short conv a single tested mixer is stacked twice (see the docstring)
  c.model.depth = len(tested) + 1 if v.short_conv else max(len(tested), 2)
  c.model.positions = "learned"
  c.model.dropout = 0.0
  if small:
    # recall is solved by ~200 steps; selective copying was at 77% after 400 (still rising)
    c.train.steps = 600 if v.task == "recall" else 1500
    c.train.batch_size = 64
    c.train.eval_every = 100
    c.train.checkpoint_every = 200
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.1
  elif v.task == "recall":
    c.train.batch_size = 256
    c.train.steps = 32 * c.data.num_train // c.train.batch_size  # 32 epochs
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.1
  else:
    c.train.batch_size = 64
    c.train.steps = 50_000
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
    c.optim.lr = 1e-4
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.0
  c.train.eval_batch_size = 100
  return c
