"""MAD's synthetic suite (Poli et al. 2024, arXiv 2403.17844): six tasks, each at its baseline
setting and MAD's difficulty settings (``configs/tasks/*.yml`` of the mad-lab repository).

  python scripts/train.py --config=experiments/mad.py:task=in_context_recall,mixer=global \
      --workdir=runs/mad_icr
  python scripts/train.py \
      --config=experiments/mad.py:task=fuzzy_recall,difficulty=vocab64,mixer=hyena \
      --workdir=runs/mad_fuzzy_v64
  python scripts/train.py --config=experiments/mad.py:task=compression,mixer=conv+global,size=full \
      --workdir=runs/mad_comp                          # MAD's budget: GPU/TPU

Variants: ``task`` (``in_context_recall``, ``noisy_recall``, ``fuzzy_recall``, ``selective_copy``,
``compression``, ``memorization``: the registered tasks ``mad_<task>``), ``difficulty``
(``baseline`` or one change of MAD's, named ``<axis><value>``: ``vocab64``, ``length512``,
``examples800``, ``noise0.6``, ``tokens32``; ``settings(task)`` lists them), ``mixer`` (any
``lrm.mixers.presets`` name; ``a+b`` stacks the parts, one block each), ``size`` (small | full),
``window`` (local radius w / causal conv kernel w+1; 0: 32 as MAD's sliding window at full,
16 at small), ``loss`` (``all``: next-token loss on every position, MAD's objective for the
recall family; ``targets``: the asked positions only; empty: ``all`` at full, ``targets`` at
small).

Model, as MAD's benchmark model: two blocks (mixer, then MLP, pre-norm), no position table
(attention presets use rotary positions), an untied output layer. ``full`` is MAD's budget:
width 128, 16 attention heads, batch 128, 200 epochs (20,000 steps at 12,800 examples),
AdamW (b2 = 0.999), cosine decay to 1e-6 without warm-up, lr 5e-4, weight decay 0 (MAD's
defaults; its study grid sweeps lr and weight decay: ``experiments/studies/mad.py``).
``small`` keeps the task data (MAD's settings) and shrinks the training: width 64, 4 heads,
batch 32, 400 steps, lr 3e-3 with 40 warm-up steps, 256 validation and test examples.
Accuracy is per answer (MAD's torchmetrics accuracy is macro-averaged over classes).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from lrm.config import base_config, parse_arg, set_mixer
from lrm.mixers import presets

# task -> (registered name, baseline data options, {axis: (option, values)}) from MAD's ymls
TASKS: dict[str, tuple[str, dict[str, Any], dict[str, tuple[str, list]]]] = {}
_RECALL_AXES = {
  "vocab": ("vocab_size", [32, 64, 128]),
  "length": ("seq_len", [256, 512, 1024]),
  "examples": ("num_train", [6400, 3200, 1600, 800]),
}
TASKS["in_context_recall"] = (
  "mad_in_context_recall",
  dict(vocab_size=16, seq_len=128, num_train=12_800),
  _RECALL_AXES,
)
TASKS["noisy_recall"] = (
  "mad_noisy_recall",
  dict(vocab_size=32, noise_vocab_size=16, frac_noise=0.2, seq_len=128, num_train=12_800),
  {
    **_RECALL_AXES,
    "vocab": ("vocab_size", [48, 80, 144]),  # 16 of them noise
    "noise": ("frac_noise", [0.4, 0.6, 0.8]),
  },
)
TASKS["fuzzy_recall"] = (
  "mad_fuzzy_recall",
  dict(vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3, num_train=12_800),
  _RECALL_AXES,
)
TASKS["selective_copy"] = (
  "mad_selective_copy",
  dict(vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train=12_800),
  {
    "vocab": ("vocab_size", [32, 64, 128]),
    "length": ("seq_len", [512, 1024]),
    "examples": ("num_train", [6400, 3200, 1600, 800]),
    "tokens": ("num_tokens_to_copy", [32, 64, 96]),
  },
)
TASKS["compression"] = (
  "mad_compression",
  dict(vocab_size=16, seq_len=32, num_train=12_800),
  {
    "vocab": ("vocab_size", [32, 64, 128]),
    "length": ("seq_len", [64, 128, 256]),
    "examples": ("num_train", [6400, 3200, 1600, 800]),
  },
)
TASKS["memorization"] = (
  "mad_memorization",
  dict(vocab_size=256, seq_len=32, num_train=256),
  {"vocab": ("vocab_size", [512, 1024, 2048, 4096, 8192])},
)
RECALL_FAMILY = ("in_context_recall", "noisy_recall", "fuzzy_recall")
MAD_EPOCHS, MAD_BATCH = 200, 128


def settings(task: str) -> list[str]:
  """``baseline`` and every difficulty setting of ``task``, in MAD's order."""
  axes = TASKS[task][2]
  return ["baseline", *(f"{axis}{v:g}" for axis, (_, values) in axes.items() for v in values)]


def data_options(task: str, difficulty: str) -> dict[str, Any]:
  """The data options of ``task`` at ``difficulty`` (MAD's baseline with one change)."""
  if task not in TASKS:
    raise ValueError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
  _, base, axes = TASKS[task]
  if difficulty == "baseline":
    return dict(base)
  for axis, (option, values) in axes.items():
    for v in values:
      if difficulty == f"{axis}{v:g}":
        return {**base, option: v}
  raise ValueError(
    f"unknown difficulty '{difficulty}' for task '{task}'; use one of {', '.join(settings(task))}"
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  v = parse_arg(
    arg,
    mixer="global",
    task="in_context_recall",
    difficulty="baseline",
    size="small",
    window=0,
    loss="",
  )
  if v.size not in ("small", "full"):
    raise ValueError(f"unknown size '{v.size}'; use small or full")
  small = v.size == "small"
  loss = v.loss or ("targets" if small else "all")
  if loss not in ("targets", "all"):
    raise ValueError(f"unknown loss '{v.loss}'; use targets or all")
  c = base_config()
  name, _, _ = TASKS.get(v.task, ("", None, None))
  data = data_options(v.task, v.difficulty)
  c.task = name
  w = v.window or (16 if small else 32)
  data.update(path="", distance_buckets=(w, 2 * w))  # reach of one / two windowed layers
  data.update(num_val=256 if small else 1280, num_test=256 if small else 1280)
  if v.task in RECALL_FAMILY:
    data["loss_positions"] = loss
  c.data = ml_collections.ConfigDict(data)
  heads = 4 if small else 16
  tested = presets.spec_list(v.mixer, window=w, heads=heads, block=16, causal=True)
  set_mixer(c.model, tested if len(tested) > 1 else tested[0])
  c.model.depth = max(2, len(tested))
  c.model.dim = 64 if small else 128
  c.model.positions = "none"
  c.model.tie_embedding = False
  c.model.dropout = 0.0
  c.optim.update(dict(weight_decay=0.0, clip_norm=0.0, b2=0.999, schedule="cosine"))
  if small:
    c.train.update(dict(steps=400, batch_size=32, eval_every=100, checkpoint_every=200))
    c.optim.update(dict(lr=3e-3, warmup_steps=40, end_lr_ratio=0.01))
  else:
    steps = MAD_EPOCHS * data["num_train"] // MAD_BATCH
    every = max(steps // 20, 1)
    c.train.update(
      dict(steps=steps, batch_size=MAD_BATCH, eval_every=every, checkpoint_every=every)
    )
    c.optim.update(dict(lr=5e-4, warmup_steps=0, end_lr_ratio=1e-6 / 5e-4))
  c.train.eval_batch_size = 128
  c.train.log_every = 20
  return c
