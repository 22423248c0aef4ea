"""Experiment trackers: the config in TensorBoard (text + hyperparameters), optional wandb.

TensorBoard: the resolved config as a text summary (tag ``config``, one ``key = value``
line per key) and as hyperparameters for the HParams dashboard, written into the run's own
event file (the session summaries of ``tensorboardX.summary.hparams``, as PyTorch Lightning
does), so the dashboard lists this run's ``validation/*`` and ``test/*`` scalars next to its
hyperparameters.

Weights & Biases (``train.wandb_project``, needs ``pip install 'lrm[wandb]'``): one wandb
run per run directory (files under ``<workdir>/wandb``), resumed with the same id when the
trainer resumes; ``WANDB_MODE=offline`` works without an account.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from lrm.config_cli import flat, format_config

METRIC_TAGS = ("validation/loss", "test/loss")


def hparams(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
  """Every config leaf as a TensorBoard hyperparameter (lists and tuples as text)."""
  out: dict[str, bool | int | float | str] = {}
  for k, v in flat(config).items():
    out[k] = v if isinstance(v, bool | int | float | str) else repr(v)
  return out


def tensorboard_config(writer: Any, config: dict[str, Any], main_metric: str = "") -> None:
  """Write the config text and hyperparameters into ``writer`` (a tensorboardX writer)."""
  from tensorboardX.summary import hparams as hparams_summaries

  text = "\n".join(f"    {line}" for line in format_config(config).splitlines())  # Markdown code
  writer.add_text("config", text, 0)
  tags = [*METRIC_TAGS]
  if main_metric and main_metric != "loss":
    tags = [f"validation/{main_metric}", f"test/{main_metric}", *tags]
  for summary in hparams_summaries(hparams(config), {t: 0.0 for t in tags}):
    writer.file_writer.add_summary(summary)
  writer.flush()


def session_meta(meta: dict[str, Any], config: dict[str, Any], extend_from: int) -> dict:
  """The checkpoint meta of this session: a wandb run id (kept for good once drawn) and, for
  ``--extend``, the ``[from, to]`` steps appended to the run's extensions."""
  meta = dict(meta)
  if config["train"].get("wandb_project"):
    meta.setdefault("wandb_id", uuid.uuid4().hex[:12])
  if extend_from:
    meta["extended"] = [*meta.get("extended", []), [extend_from, int(config["train"]["steps"])]]
  return meta


def check_wandb(config: dict[str, Any]) -> None:
  """Raise (before anything is written) if wandb logging is asked for but not installed."""
  project = config.get("train", {}).get("wandb_project", "")
  if not project:
    return
  try:
    import wandb  # noqa: F401
  except ImportError:
    raise ValueError(
      f"train.wandb_project='{project}' needs the wandb package: pip install 'lrm[wandb]' "
      f"(or leave train.wandb_project empty)"
    ) from None


def wandb_run(project: str, workdir: Path, config: dict[str, Any], run_id: str) -> Any:
  """A wandb run logging into ``<workdir>/wandb``; ``run_id`` resumes the same run."""
  import wandb

  (workdir / "wandb").mkdir(parents=True, exist_ok=True)
  return wandb.init(
    project=project,
    name=workdir.name,
    dir=str(workdir),
    config=config,
    id=run_id or None,
    resume="allow",
  )
