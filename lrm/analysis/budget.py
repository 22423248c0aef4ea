"""Budget matching: size a model so that different mixers cost the same.

Given a target (parameter count, or training FLOPs per token at the task's length: the
costs ``params`` and ``train_flops_per_token`` of ``lrm.analysis.counting.model_costs``, the
names every run's results.json reports), the model width D is searched first (in steps that
keep D divisible by the mixers' head counts, over one spec or a hybrid list), then the MLP
hidden width is tuned to land on the target; ``achieved`` is reported next to the target so
a study can show how close every cell came. Models are built abstractly
(``nnx.eval_shape``), so matching allocates no parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flax import nnx

from lrm.analysis.counting import model_costs
from lrm.tasks.base import Task

# rule -> the cost it equalises (FLOPs: the algorithmic count, lrm/analysis/counting.py)
RULES = {
  "params": "params",
  "params_non_embedding": "params_non_embedding",
  "flops": "train_flops_per_token",
}


@dataclass
class Match:
  model: dict[str, Any]  # the sized model config section
  rule: str
  target: float
  achieved: float

  @property
  def error(self) -> float:
    return self.achieved / self.target - 1.0


def measure(task: Task, model_cfg: Mapping[str, Any], rule: str) -> float:
  """Parameter count, or analytic training FLOPs per token, of ``model_cfg`` on ``task``."""
  if rule not in RULES:
    raise ValueError(f"unknown budget rule '{rule}'; choose one of {', '.join(RULES)}")
  model = nnx.eval_shape(lambda: task.build_model(dict(model_cfg), nnx.Rngs(0)))
  return float(model_costs(model, task.seq_len)[RULES[rule]])


def _heads(model_cfg: Mapping[str, Any]) -> int:
  """Least common multiple of the head counts of every spec (one spec or a hybrid list)."""
  mixer = model_cfg["mixer"]
  specs = [mixer] if isinstance(mixer, Mapping) else list(mixer)
  out = 1
  for s in specs:
    out = math.lcm(out, int(s.get("num_heads", 1)))
  return out


def _search(f: Callable[[int], float], target: float, lo: int, hi: int, step: int) -> int:
  """Largest multiple of ``step`` in [lo, hi] with f <= target (f increasing), or lo."""
  lo_k, hi_k = max(1, lo // step), max(1, hi // step)
  while lo_k < hi_k:
    mid = (lo_k + hi_k + 1) // 2
    if f(mid * step) <= target:
      lo_k = mid
    else:
      hi_k = mid - 1
  return lo_k * step


def match(
  task: Task,
  model_cfg: Mapping[str, Any],
  *,
  rule: str,
  target: float,
  max_dim: int = 4096,
) -> Match:
  """Size ``model_cfg`` (its width, then its MLP width) to ``target`` under ``rule``."""
  base = dict(model_cfg)
  ratio = base.get("mlp_ratio", 4) or 4
  step = 2 * _heads(base)  # even head dims keep rotary and sinusoidal tables valid

  def with_dim(d: int) -> dict:
    return {**base, "dim": d, "mlp_dim": ratio * d}

  dim = _search(lambda d: measure(task, with_dim(d), rule), target, step, max_dim, step)
  cfg = with_dim(dim)
  if measure(task, cfg, rule) > target:  # even the narrowest model is over budget
    return Match(cfg, rule, target, measure(task, cfg, rule))
  # Fine-tune: the MLP hidden width moves cost almost linearly in small steps.
  hidden = _search(
    lambda h: measure(task, {**cfg, "mlp_dim": h}, rule), target, 1, 16 * ratio * dim, 1
  )
  candidates = [{**cfg, "mlp_dim": h} for h in (hidden, hidden + 1)]
  best = min(candidates, key=lambda c: abs(measure(task, c, rule) - target))
  return Match(best, rule, target, measure(task, best, rule))
