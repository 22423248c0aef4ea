"""Whether a config may use a workdir: new run, resume, or ``--extend`` to more steps.

``--extend`` continues a finished or stopped run to a larger ``train.steps``; every other key
must be unchanged. The run resumes from its newest checkpoint (parameters, optimizer state,
data position), and the learning-rate schedule is rebuilt for the new length: warm-up is not
repeated, and a decaying schedule (cosine) now ends at the new last step, so at the resume
step the learning rate rises from where the old schedule had brought it to the value the
longer schedule has there (printed when the run starts and recorded in results.json under
``extended``). The result is not the run a fresh ``train.steps`` would give; it is the
common "train this finished run for longer" with a cosine restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrm.train import rundir
from lrm.train.optim import learning_rate


@dataclass
class Plan:
  resume: bool  # the workdir holds this run (or the run to extend)
  extend_from: int = 0  # > 0: the saved run's train.steps, which this one extends


def _saved(workdir: Path) -> dict[str, Any] | None:
  try:
    old = json.loads((workdir / "config.json").read_text())
  except (OSError, ValueError, UnicodeDecodeError):
    return None
  return old if isinstance(old, dict) else None


def _steps_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
  diff = rundir.config_diff(old, new)
  return len(diff) == 1 and diff[0].startswith("train.steps:")


def plan_workdir(workdir: Path, config: dict[str, Any], *, restart: bool, extend: bool) -> Plan:
  """Check ``workdir`` against ``config``; raise ``rundir.ConfigConflict`` (nothing touched)."""
  old = None if restart else _saved(workdir)
  if extend and not restart:
    if old is None:
      raise rundir.ConfigConflict(
        f"--extend: {workdir} holds no run to extend (no readable config.json); drop --extend "
        f"to start a new run there"
      )
    if rundir.config_diff(old, config) and not _steps_only(old, config):
      others = [d for d in rundir.config_diff(old, config) if not d.startswith("train.steps:")]
      raise rundir.ConfigConflict(
        f"--extend changes only train.steps, but the config also differs in: "
        f"{'; '.join(others[:4])}; give the run's own config, or use another --workdir"
      )
    before, after = int(old["train"]["steps"]), int(config["train"]["steps"])
    if after < before:
      raise rundir.ConfigConflict(
        f"--extend: --config.train.steps={after} is not larger than the run's {before}; "
        f"give a larger value, e.g. --config.train.steps={2 * before}"
      )
    return Plan(True, before if after > before else 0)
  try:
    return Plan(rundir.check_workdir(workdir, config, restart=restart))
  except rundir.ConfigConflict as e:
    if old is not None and _steps_only(old, config):
      raise rundir.ConfigConflict(
        f"{e}; to continue this run to train.steps={config['train']['steps']}, add --extend"
      ) from None
    raise


def lr_jump(optim: dict[str, Any], before: int, after: int) -> tuple[float, float]:
  """Learning rate at step ``before`` under the old and the rebuilt schedule."""
  old, new = learning_rate(optim, before), learning_rate(optim, after)
  return float(old(before)), float(new(before))


def extension_note(config: dict[str, Any], before: int) -> str:
  after = int(config["train"]["steps"])
  lr_old, lr_new = lr_jump(config["optim"], before, after)
  return (
    f"extending the run from {before} to {after} steps: the learning-rate schedule is rebuilt "
    f"for {after} steps, so at step {before} the lr goes from {lr_old:.3g} to {lr_new:.3g} "
    f"({config['optim']['schedule']}, no new warm-up)"
  )


def warmup_warning(config: dict[str, Any]) -> str | None:
  steps, warmup = int(config["train"]["steps"]), int(config["optim"]["warmup_steps"])
  if steps >= warmup:
    return None
  return (
    f"warning: train.steps={steps} is shorter than optim.warmup_steps={warmup}: the learning "
    f"rate never reaches optim.lr={config['optim']['lr']:g} (it stops at "
    f"{config['optim']['lr'] * steps / warmup:.3g}); lower --config.optim.warmup_steps"
  )


def workdir_state(workdir: Path, config: dict[str, Any]) -> str:
  """One line for ``--dry_run``: what training in ``workdir`` would do (reads only)."""
  if not (workdir / "config.json").exists() and not rundir.holds_a_run(workdir):
    return f"workdir {workdir}: empty, a new run would start there"
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
  at = f" (newest checkpoint: step {max(steps)})" if steps else ""
  try:
    rundir.check_workdir(workdir, config, restart=False)
  except rundir.ConfigConflict as e:
    return f"workdir {workdir}: would be refused{at}: {e}"
  done = (workdir / "results.json").exists() and steps and max(steps) >= config["train"]["steps"]
  return f"workdir {workdir}: holds this run{at}; " + (
    "it is finished (add --extend with a larger --config.train.steps to continue it)"
    if done
    else "training would resume there"
  )
