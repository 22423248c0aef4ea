"""The MAD protocol (Poli et al. 2024, arXiv 2403.17844) as a study: six token mixers over
MAD's six synthetic tasks, each at its baseline and difficulty settings, scored as MAD does.

  python scripts/study.py --study=experiments/studies/mad.py --out=results/mad --shard=0/2 &
  python scripts/study.py --study=experiments/studies/mad.py --out=results/mad --shard=1/2
  python scripts/study.py --study=experiments/studies/mad.py --out=runs/mad_full --scale=full
  python scripts/study.py --study=experiments/studies/mad.py --out=results/mad --list

Question. MAD's authors found that these small synthetic tasks rank architectures as their
compute-optimal perplexity at scale does. How do lrm's mixers rank on them: static and
gated convolutions, local and full attention, Hyena, and a conv+attention hybrid?

Protocol (MAD's ``make_benchmark_mad_configs`` and ``compute_model_mad_scores``):
- Mixers: ``conv``, ``gated_conv``, ``local`` (window w), ``global``, ``hyena`` and the hybrid
  ``conv+global`` (a conv block, then a global attention block); every model has MAD's two
  blocks (mixer + MLP), sized to the non-embedding parameters of the two-block global
  attention model at the experiment's width (MAD: every model at width 128; lrm compares at
  equal cost).
- Tasks and settings: ``experiments/mad.py`` (MAD's ``configs/tasks/*.yml``): the baseline,
  then each difficulty axis changed alone.
- Grid: learning rate x weight decay; the rate is swept at seed 0 and extended upward while
  the best rate is the highest tried (``lr_extend``, ``lrm.study.extend``); each weight decay
  is its own study task (``<task>-<setting>-wd<wd>``), so both axes are swept.
- Score (``lrm.study.mad_score``): per (mixer, setting), the grid point with the best
  validation accuracy (MAD: the best test accuracy); per task, the mean over settings; the
  MAD score, the mean over tasks. Three seeds (MAD: one) give the intervals.

Scales.
- ``full``: MAD's budget: width 128, 16 heads, w = 32 (MAD's sliding window), batch 128, 200
  epochs, MAD's objective (next-token loss on every position for the recall family), every
  setting (66), lr {1e-4, 5e-4, 1e-3} extended by x2 up to twice, weight decay {0, 0.1}: 66 x
  2 x 6 = 792 arms, 3,960 cells before extensions (seeds=[0] gives MAD's own single-seed
  protocol, 2,376 cells). An accelerator job; not run here.
- ``small`` (about an hour on 2 CPU cores as two ``--shard`` processes): width 64, 4 heads,
  w = 16, batch 32; the loss on the asked positions only; sequences halved for the recall
  family (64 tokens) and selective copying (128 tokens, 8 to copy), compression and
  memorization at MAD's baseline length (32); 600 steps (compression 1,000, memorization
  1,200: it only learns by repetition); 256 validation and test examples; eight settings
  (``SMALL_SETTINGS``: every baseline, plus in-context recall's vocabulary axis and noisy
  recall's noise axis at their first values); lr {1e-3, 3e-3} extended once to 1e-2 (short
  training wants larger rates than MAD's 20,000 steps); weight decay 0.1 only. 48 arms, 192
  cells before extensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrm.study import grid, mad_score
from lrm.study.verdicts import means, select

EXPERIMENT = "experiments/mad.py"
MIXERS = ["conv", "gated_conv", "local", "global", "hyena", "conv+global"]
SMALL_SETTINGS = {
  "in_context_recall": ["baseline", "vocab32"],
  "noisy_recall": ["baseline", "noise0.4"],
  "fuzzy_recall": ["baseline"],
  "selective_copy": ["baseline"],
  "compression": ["baseline"],
  "memorization": ["baseline"],
}
SMALL_STEPS = {"compression": 1000, "memorization": 1200}  # others: 600
SMALL_LENGTH = {  # the small scale's sequences (MAD: 128, 128, 128, 256)
  "in_context_recall": {"data.seq_len": 64},
  "noisy_recall": {"data.seq_len": 64},
  "fuzzy_recall": {"data.seq_len": 64},
  "selective_copy": {"data.seq_len": 128, "data.num_tokens_to_copy": 8},
}
SOLVES = 0.9  # full attention on in-context recall at its baseline


def experiment() -> Any:
  """``experiments/mad.py`` as a module (its tasks and settings)."""
  return grid.load_module(Path(__file__).resolve().parents[1] / "mad.py")


def schedule(n: int) -> dict[str, int]:
  """``n`` steps, validated and checkpointed at the end only (cells are short)."""
  return {
    "train.steps": n,
    "train.eval_every": n,
    "train.checkpoint_every": n,
    "train.log_every": max(n // 4, 1),
  }


def checks(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool | None, str]]:
  """Sanity checks: full attention solves recall; every task is learnt by some mixer."""
  out: list[tuple[str, bool | None, str]] = []
  base = [k for k in {r["task"] for r in records} if k.startswith("in_context_recall-baseline")]
  glob = means([r for k in base for r in select(records, task=k, mixer="global")], ("task",))
  ok = all(v >= SOLVES for v in glob.values()) if glob else None
  ev = ", ".join(f"{k[0]}: {v:.3f}" for k, v in sorted(glob.items()))
  out.append((f"full attention >= {SOLVES} on in-context recall (baseline)", ok, ev or "no cells"))
  best: dict[str, tuple[float, float, str]] = {}
  for (task, name), v in means([r for r in records if r.get("in_study")], ("task", "name")).items():
    chance = next((r["chance"] for r in records if r["task"] == task), None) or 0.0
    if task not in best or v > best[task][0]:
      best[task] = (v, chance, name)
  ok = all(v > c + 0.05 for v, c, _ in best.values()) if best else None
  ev = "; ".join(f"{t}: {n} {v:.3f} (chance {c:.3f})" for t, (v, c, n) in sorted(best.items()))
  out.append(("every setting: the best mixer beats chance by 0.05", ok, ev or "no cells"))
  return out


def get_study(scale: str = "small") -> dict[str, Any]:
  small = scale == "small"
  exp = experiment()
  size = "small" if small else "full"
  window = 16 if small else 32
  wds = [0.1] if small else [0.0, 0.1]
  tasks: dict[str, dict[str, Any]] = {}
  for task in exp.TASKS:
    for setting in SMALL_SETTINGS[task] if small else exp.settings(task):
      for wd in wds:
        key = f"{task}-{setting}" + ("" if len(wds) == 1 else f"-wd{wd:g}")
        overrides: dict[str, Any] = {"optim.weight_decay": wd}
        if small:
          overrides.update(schedule(SMALL_STEPS.get(task, 600)))
          overrides.update(SMALL_LENGTH.get(task, {}))
        tasks[key] = dict(
          config=EXPERIMENT,
          arg=f"task={task},difficulty={setting},size={size},window={{window}}",
          overrides=overrides,
          mixers=MIXERS,
          windows=[window],
          reference=dict(mixer="global"),
          mad=dict(task=task, setting=setting, weight_decay=wd),
        )
  first = next(iter(tasks))
  study = dict(
    name="mad",
    question=__doc__.split("Question. ")[1].split("\n\n")[0],
    seeds=[0, 1, 2],
    rules=["params_non_embedding"],
    lrs=[1e-3, 3e-3] if small else [1e-4, 5e-4, 1e-3],
    lr_extend=dict(factor=10 / 3, rounds=1) if small else dict(factor=2.0, rounds=2),
    heads=4 if small else 16,
    block=16,
    tasks=tasks,
    content=dict(tasks=[first], radius=window),  # effective kernels on recall's baseline only
    checks=checks,
    limits=[
      "Small scale: sequences halved for the recall family and selective copying, 600-1,200"
      " steps instead of 200 epochs, eight of MAD's 66 settings, lr {1e-3, 3e-3} (+1e-2) and"
      " weight decay 0.1 only: a MAD score over fewer settings than MAD's.",
      "Models are matched in non-embedding parameters to two-block global attention; MAD"
      " gives every model width 128 instead.",
      "Accuracy is per answer; MAD's torchmetrics accuracy is macro-averaged over classes.",
    ],
  )
  study["sections"] = lambda rows, out: mad_score.section(study, rows, out)
  return study
