"""Experiment-config helpers shared by every file in ``experiments/``.

An experiment config is a Python file with ``get_config(arg: str | None)`` returning an
``ml_collections.ConfigDict`` with these sections (the trainer's contract)::

  seed: int
  task: str                  # registered task name
  data: {path, ...}          # the task's constructor options ("" path = generate offline)
  model: {dim, depth, mixer (spec dict or list of specs cycled over depth; presets by name
          in ``lrm.mixers.presets``), positions,
          mlp_ratio, mlp_dim, dropout, [pool | tie_embedding]}
  train: {steps, batch_size, eval_every, checkpoint_every, log_every, eval_batch_size,
          grad_accum, dtype, max_eval_batches, keep_checkpoints, profile_steps, wandb_project}
  optim: {lr, warmup_steps, schedule ("cosine" | "rsqrt" | "constant"), end_lr_ratio,
          weight_decay, clip_norm, b1, b2}

``arg`` selects a variant: ``"local"`` or ``"mixer=local,size=small,window=32"``; a hybrid
stack is ``"mixer=local+global"`` (``lrm.mixers.presets``). ``complete`` fills the ``data``
section with every option of the task's constructor that the file leaves out, so each one
can be overridden from the command line (``lrm/config_cli.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parse ``"local,size=small"`` into typed options, like big_vision's ``parse_arg``.

  A bare word sets the first default's key (``"local"`` -> ``mixer=local``). Values are
  converted to the type of their default; unknown keys raise an error listing the known, and
  a key given twice (``"local,global"`` sets ``mixer`` twice) is an error naming both values.
  """
  out = dict(defaults)
  first = next(iter(defaults)) if defaults else None
  given: dict[str, str] = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      if first is None:
        raise ValueError(f"config variant '{item}' given but this config takes no variants")
      key, value = first, item
    key, value = key.strip(), value.strip()
    if key not in defaults:
      raise ValueError(f"unknown config variant key '{key}'; known: {', '.join(defaults)}")
    if key in given:
      raise ValueError(_repeated(key, given[key], value, bare=not sep))
    given[key] = value
    out[key] = _convert(value, defaults[key], key)
  return ml_collections.ConfigDict(out)


def _repeated(key: str, old: str, new: str, *, bare: bool) -> str:
  how = f" (a bare word sets '{key}')" if bare else ""
  fix = (
    f"a hybrid stack is written with '+': {key}={old}+{new}"
    if key == "mixer"
    else f"give '{key}' once"
  )
  return f"config variant '{key}' is given twice{how}: '{old}', then '{new}'; {fix}"


def _convert(value: str, default: Any, key: str) -> Any:
  if isinstance(default, bool):
    if value.lower() in ("1", "true", "yes", ""):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"variant '{key}' expects true/false, got '{value}'")
  if isinstance(default, int):
    return int(value)
  if isinstance(default, float):
    return float(value)
  return value


def set_mixer(model: ml_collections.ConfigDict, mixer: Mapping[str, Any] | list) -> None:
  """Set ``model.mixer`` to one spec or to a list of specs (a stack cycled over depth).

  A ConfigDict field keeps its type, so a list cannot replace the base config's single
  spec in place; this swaps the field.
  """
  if "mixer" in model:
    del model["mixer"]
  model.mixer = mixer


def is_small(size: str) -> bool:
  """The ``size`` variant of a sized experiment: True for ``small``, False for ``full``."""
  if size not in ("small", "full"):
    raise ValueError(f"unknown size '{size}'; use small or full")
  return size == "small"


def lra_bytes_recipe(
  c: ml_collections.ConfigDict,
  v: ml_collections.ConfigDict,
  *,
  full_dim: int,
  full_steps: int,
  full_eval_every: int,
) -> None:
  """Model, training and optimizer of the byte-level LRA tasks (Text, Retrieval) into ``c``.

  ``v`` holds the variants ``mixer``, ``size``, ``window`` (0 = 16 small, 128 full) and
  ``rotary``. ``small``: 4000/400/400 generated examples, 2 layers of width 64, 400 steps.
  ``full``: LRA's shared base (4 layers, 4 heads, MLP 4x, dropout 0.1, batch 32, Adam(0.9,
  0.98) with weight decay 0.1 and ``0.05 * linear_warmup * rsqrt_decay`` with 8000 warm-up
  steps) at width ``full_dim`` for ``full_steps`` steps, evaluated and checkpointed every
  ``full_eval_every``. Both pool by the mean.
  """
  from lrm.mixers import presets

  small = is_small(v.size)
  if small:
    c.data.update(dict(num_train=4000, num_val=400, num_test=400))
  window = v.window or (16 if small else 128)
  c.model.dim, c.model.depth = (64, 2) if small else (full_dim, 4)
  c.model.mlp_ratio = 4
  set_mixer(
    c.model,
    presets.spec(
      v.mixer, window=window, heads=2 if small else 4, block=16 if small else 64, rotary=v.rotary
    ),
  )
  c.model.pool = "mean"
  c.model.dropout = 0.0 if small else 0.1
  if small:
    c.train.update(dict(steps=400, batch_size=32, eval_every=100, checkpoint_every=200))
    c.optim.update(dict(lr=1e-3, warmup_steps=50, schedule="cosine", weight_decay=0.05))
  else:
    every = full_eval_every
    c.train.update(dict(steps=full_steps, batch_size=32, eval_every=every, checkpoint_every=every))
    c.optim.update(
      dict(lr=0.05 / math.sqrt(8000), warmup_steps=8000, schedule="rsqrt", weight_decay=0.1)
    )
  c.optim.b2 = 0.98
  c.train.eval_batch_size = 64


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment; each file overrides what it needs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = ""
  c.data = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(
    dict(dim=128, depth=2, mixer=dict(name="local", window=32, num_heads=4)),
  )
  c.model.positions = "learned"
  c.model.mlp_ratio = 4
  c.model.mlp_dim = 0  # > 0 overrides mlp_ratio (used by budget matching)
  c.model.dropout = 0.0
  c.model.remat = False  # recompute each block in the backward pass (lrm/model.py)
  c.train = ml_collections.ConfigDict(
    dict(
      steps=1000,
      batch_size=32,
      eval_every=200,
      checkpoint_every=200,
      log_every=20,
      eval_batch_size=64,
      grad_accum=1,
      dtype="float32",
      max_eval_batches=0,  # 0 = the whole split
      keep_checkpoints=2,
      profile_steps=(),  # (first, last): a jax.profiler trace of those steps in <workdir>/profile
      wandb_project="",  # "" = off; a name logs to Weights & Biases (needs `pip install wandb`)
    )
  )
  c.optim = ml_collections.ConfigDict(
    dict(
      lr=1e-3,
      warmup_steps=100,
      schedule="cosine",
      end_lr_ratio=0.01,
      weight_decay=0.05,
      clip_norm=1.0,
      b1=0.9,
      b2=0.98,
    )
  )
  return c


def task_options(task: str) -> dict[str, Any]:
  """``{option: default}`` of a registered task's constructor: the ``data`` section's schema.

  An unknown task gives ``{}`` (building the run names the known ones).
  """
  import inspect

  from lrm import registry, tasks  # noqa: F401  (importing tasks registers them)

  try:
    cls = registry.lookup("task", task)
  except KeyError:
    return {}
  params = inspect.signature(cls.__init__).parameters
  out = {}
  for name in registry.options(cls):
    default = params[name].default
    if default is not inspect.Parameter.empty and default is not None:
      out[name] = tuple(default) if isinstance(default, list) else default
  return out


def complete(config: ml_collections.ConfigDict, task: str | None = None) -> None:
  """Give ``config.data`` every option of the task (``task`` or ``config.task``) that it lacks,
  at the constructor's default, so that ``--config.data.<option>=...`` can set it."""
  missing = {
    k: v for k, v in task_options(task or config.task).items() if k not in config.get("data", {})
  }
  if not missing:
    return
  with config.unlocked():
    if "data" not in config:
      config.data = ml_collections.ConfigDict()
    for k, v in missing.items():
      config.data[k] = v


def write_run_options(config: ml_collections.ConfigDict) -> None:
  """Write the run-level mixer options into ``config.model.mixer`` (``lrm.mixers.
  with_run_options``: the pattern seed from ``config.seed``, ``rotary=True`` in attention specs
  when ``model.positions == "rotary"``). ``lrm.run.Run`` does the same for a config built in
  code; doing it here lets ``--print_config`` show it."""
  from lrm import mixers

  mixer = config.model.mixer
  plain = mixer.to_dict() if isinstance(mixer, ml_collections.ConfigDict) else mixer
  if not isinstance(plain, dict):
    plain = [s.to_dict() if isinstance(s, ml_collections.ConfigDict) else dict(s) for s in plain]
  rotary = config.model.get("positions") == "rotary"
  filled = mixers.with_run_options(plain, seed=int(config.seed), rotary=rotary)
  if filled != plain:
    with config.unlocked():
      set_mixer(config.model, filled)


# ---- values checked when a run is built (``validate``): key -> (kind, low, high) -------------
# kind "int": an integer (not a bool) in [low, high]; "real": a finite number in [low, high),
# high None = unbounded. The numbers name what lrm can run (int32 step counters, a dropout
# rate below 1), not taste.
INT32 = 2**31 - 1
CHECKED = {
  "seed": ("int", 0, INT32),
  "model.dim": ("int", 1, None),
  "model.depth": ("int", 1, None),
  "model.mlp_ratio": ("int", 0, None),
  "model.mlp_dim": ("int", 0, None),
  "model.dropout": ("real", 0.0, 1.0),
  "train.steps": ("int", 1, INT32),
  "train.batch_size": ("int", 1, None),
  "train.eval_batch_size": ("int", 1, None),
  "train.grad_accum": ("int", 1, None),
  "train.log_every": ("int", 1, None),
  "train.eval_every": ("int", 1, None),
  "train.checkpoint_every": ("int", 1, None),
  "train.keep_checkpoints": ("int", 1, None),
  "train.max_eval_batches": ("int", 0, None),
  "optim.lr": ("real", 0.0, None),
  "optim.warmup_steps": ("int", 0, INT32),
  "optim.end_lr_ratio": ("real", 0.0, None),
  "optim.weight_decay": ("real", 0.0, None),
  "optim.clip_norm": ("real", 0.0, None),
  "optim.b1": ("real", 0.0, 1.0),
  "optim.b2": ("real", 0.0, 1.0),
}


def validate(plain: dict[str, Any], source: Any = None) -> None:
  """Raise a one-line ``ValueError`` naming the first key in ``CHECKED`` whose value lrm cannot
  run (a zero width, no layers, dropout of 1, a NaN rate, a step count past int32, ...).
  ``source``: the saved config.json the values come from, named as the fix instead of the
  ``--config.<key>`` override (which evaluate.py and generate.py do not have)."""
  import math

  for key, (kind, low, high) in CHECKED.items():
    node: Any = plain
    for part in key.split("."):
      node = node.get(part) if isinstance(node, dict) else None
    if node is None:
      continue  # absent: the default applies (or building the run names the section)
    fix = f"set --config.{key}" if source is None else f"fix it in {source}"
    if isinstance(node, bool) or not isinstance(node, int | float):
      raise ValueError(f"{key}={node!r} must be a number; {fix}")
    if kind == "int" and (not isinstance(node, int) or not low <= node <= (high or node)):
      raise ValueError(f"{key}={node!r} must be {int_span(low, high)}; {fix}")
    if kind == "real" and (
      not math.isfinite(node) or node < low or (high is not None and node >= high)
    ):
      span = f"a finite number >= {low}" + (f" and < {high}" if high is not None else "")
      raise ValueError(f"{key}={node!r} must be {span}; {fix}")


def int_span(low: int, high: int | None) -> str:
  """``"an integer >= 0 and <= 2,147,483,647"``: the words of an integer range."""
  return f"an integer >= {low}" + (f" and <= {high:,}" if high else "")
