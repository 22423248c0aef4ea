"""The run directory: what a run writes, and the rule that protects it.

Layout of ``<workdir>/``::

  config.json          the resolved config (all overrides applied); its hash names the run
  vocab.json           the task's vocabulary (token ids), so a checkpoint reloads with the same ids
  checkpoints/<step>/  orbax checkpoints (see lrm/train/checkpoint.py)
  metrics.jsonl        one JSON record per log/eval event: {"step", "split", metrics...}
  tensorboard/         TensorBoard event files (same numbers as metrics.jsonl)
  plots/curves.png     learning curves, drawn at the end
  results.json         best and final metrics, cost (params, FLOPs/token), speed, versions
  train.log            the console output of every attempt (appended on resume; --restart
                       starts it afresh when the trainer opens it, so wipe() leaves it)
  profile/             a profiler trace, when ``train.profile_steps`` asks for one
  wandb/               Weights & Biases files, when ``train.wandb_project`` names a project
  damaged/<step>/      checkpoints that failed to restore, set aside (never deleted silently)
  .lock                held by the one process that writes this directory
  eval_<split>_<checkpoint>.json   written by scripts/evaluate.py

Rule: rerunning with the same config resumes. A different config is refused with the list
of differing keys, unless ``restart`` is set, which deletes the files above (and nothing
else in the folder) and starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import ml_collections

RUN_FILES = ("config.json", "vocab.json", "metrics.jsonl", "results.json")
RUN_DIRS = ("checkpoints", "tensorboard", "plots", "profile", "wandb", "damaged")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "datasets", "numpy")


class ConfigConflict(ValueError):
  """The workdir holds a run with a different config."""


def config_to_dict(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """Plain JSON-able dict (tuples become lists), so saved and new configs compare equal."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return json.loads(json.dumps(config, sort_keys=True))


def config_hash(config: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix: d}
  out: dict[str, Any] = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return {k.rstrip("."): v for k, v in out.items()}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """``["train.lr: 0.001 -> 0.002", ...]`` for every leaf that differs."""
  a, b = _flatten(old), _flatten(new)
  return [
    f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}"
    for k in sorted(a.keys() | b.keys())
    if a.get(k, "<unset>") != b.get(k, "<unset>")
  ]


def keys_added_at_default(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Keys that a config saved by an older lrm lacks and that the new config leaves at lrm's
  default (``lrm.config.base_config`` and the task's constructor defaults): an option added
  later keeps the old behaviour at its default, so it must not make the run look different.
  Mixer options are never in this list: a mixer's defaults may change what it computes."""
  from lrm.config import base_config, task_options

  defaults = _flatten({**base_config().to_dict(), "data": task_options(str(new.get("task", "")))})
  defaults = _flatten(json.loads(json.dumps(defaults)))  # tuples -> lists, as saved
  a, b = _flatten(old), _flatten(new)
  return sorted(
    k
    for k in b.keys() - a.keys()
    if not k.startswith("model.mixer") and k in defaults and defaults[k] == b[k]
  )


def holds_a_run(workdir: Path) -> bool:
  """Whether ``workdir`` holds anything a run wrote (checkpoints, metrics or results)."""
  ckpts = workdir / "checkpoints"
  return any((workdir / n).exists() for n in ("metrics.jsonl", "results.json")) or (
    ckpts.is_dir() and any(ckpts.iterdir())
  )


def check_workdir(workdir: Path, config: dict[str, Any], *, restart: bool) -> bool:
  """Decide how to use ``workdir``; True when it holds this run already (resume).

  Raises ``ConfigConflict`` (nothing touched) when the saved config differs, does not parse,
  or is missing next to a previous run's files, unless ``restart``.
  """
  saved = workdir / "config.json"
  if restart:
    return False
  if not saved.exists():
    if holds_a_run(workdir):
      raise ConfigConflict(
        f"{workdir} holds checkpoints or metrics but no config.json, so it cannot tell which "
        f"run they belong to; restore {saved}, or add --restart to delete that run and start over"
      )
    return False
  try:
    old = json.loads(saved.read_text())
    if not isinstance(old, dict):
      raise ValueError("not a JSON object")
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigConflict(
      f"{saved} does not parse ({' '.join(str(e).split())}); restore it, or add --restart to "
      f"delete that run and start over"
    ) from None
  diff = config_diff(old, config)
  added = keys_added_at_default(old, config)
  if added:
    print(
      f"note: {saved} predates the keys {', '.join(added)}; they are at their defaults, "
      f"which keep the old behaviour, so the run resumes",
      file=sys.stderr,
      flush=True,
    )
    diff = [d for d in diff if d.split(":", 1)[0] not in added]
  if diff:
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    raise ConfigConflict(
      f"{workdir} holds a run with a different config ({shown}); use another --workdir, "
      f"or add --restart to delete that run and start over"
    )
  return True


def read_json_or_none(path: Path, note: Any = print) -> Any:
  """A derived JSON file, or None (with a note naming it) if it is missing or does not parse:
  such files are rebuilt from the checkpoints and the task, never trusted when damaged."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    note(f"warning: {path} does not parse ({' '.join(str(e).split())[:80]}); rebuilt instead")
    return None


def wipe(workdir: Path) -> None:
  """Delete a previous run's files (only those listed above) for ``--restart``."""
  for name in RUN_FILES:
    (workdir / name).unlink(missing_ok=True)
  for p in workdir.glob("eval_*.json"):
    p.unlink()
  for name in RUN_DIRS:
    shutil.rmtree(workdir / name, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
  """Atomic write: a reader (or a kill) never sees half a file."""
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
  tmp.replace(path)


def read_json(path: Path) -> Any:
  return json.loads(Path(path).read_text())


def load_config(workdir: Path) -> ml_collections.ConfigDict:
  path = workdir / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found; --workdir must be a run directory made by train.py")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out
