"""Running a study: train each cell with the ordinary trainer, then measure the trained model.

Each cell's ``cell.json`` holds everything the report needs besides results.json::

  cell              task, mixer, window, rule, seed        key, name   its run directory
  budget            rule, target, achieved                  model       the sized model section
  costs             params, params_non_embedding, encoder_forward_flops_per_token,
                    forward_flops_per_token, train_flops_per_token, seq_len  (``Run.costs``)
  receptive_field   per layer: measured and analytic field of the trained model
  kernels           per tested layer: effective kernels on a validation input (content.py)

A cell whose results.json exists is not trained again; one whose cell.json lacks any of these
(written by an older lrm) is measured again, which takes seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lrm.analysis import content
from lrm.analysis import receptive_field as rf
from lrm.run import Run
from lrm.study import grid, report
from lrm.train import loop, rundir

RF_LENGTH = 256  # the receptive field is measured on at most this many tokens
KERNEL_LENGTH = 128  # effective kernels: on the first tokens of one validation example


def measure(workdir: Path, mixer: str, radius: int) -> dict[str, Any]:
  """Costs, measured receptive field and effective kernels (offsets ±``radius``) of the
  layers built from preset ``mixer``, for the run's best checkpoint."""
  r = Run.from_workdir(workdir)
  layers = grid.tested_layers(r.plain["model"], mixer)
  encoder = rf.build_encoder_for_measurement(r.load_model("best"))
  length = min(r.task.seq_len, RF_LENGTH)
  fields = rf.measure(encoder, length, length - 1 if encoder.causal else length // 2)
  batch = next(r.task.dataset("validation").eval_batches(1))
  inputs = batch["inputs"] if "inputs" in batch else batch["inputs1"]  # dual encoder: the first
  tokens = np.asarray(inputs[:, :KERNEL_LENGTH], np.int32)  # [1, L]
  kernels = []
  for layer in layers:
    ek = content.layer_kernels(encoder, tokens, layer, radius)
    mixer = getattr(encoder.blocks[layer].mixer, "registered_name", "?")
    kernels.append({"layer": layer, "mixer": mixer, "radius": radius, **ek.to_dict()})
  return {
    "costs": r.costs(),
    "receptive_field": [f.to_dict() for f in fields],
    "kernels": kernels,
  }


def read_cell(workdir: Path) -> dict[str, Any] | None:
  """The cell's cell.json, or None if it is missing or does not parse."""
  try:
    return json.loads((workdir / "cell.json").read_text())
  except (OSError, ValueError):
    return None


def run_cell(plan: grid.Planner, cell: grid.Cell, out: Path) -> dict[str, Any] | None:
  """Train (or resume) one cell and write its cell.json; results, or None on SIGTERM."""
  wd = cell.workdir(out)
  old = read_cell(wd)
  radius = grid.kernel_radius(plan.study, cell)
  if (wd / "results.json").exists() and old is not None and "budget" in old:
    results = json.loads((wd / "results.json").read_text())  # trained: only measure again
    try:
      measured = measure(wd, cell.mixer, radius)
    except (OSError, KeyError, ValueError) as e:  # a run this lrm cannot rebuild: keep its file
      print(f"{cell.key}: cell.json kept as it was; measuring failed: {e}", flush=True)
      return results
    info = {k: v for k, v in old.items() if k not in report.OLD_COSTS}
  else:
    cfg, match = plan.config(cell)
    results = loop.run(cfg, wd)  # a finished run returns its results without training
    if results is None:
      return None
    budget = {"rule": match.rule, "target": match.target, "achieved": match.achieved}
    info = {"budget": budget, "model": match.model}
    measured = measure(wd, cell.mixer, radius)
  info = {"cell": cell.to_dict(), "key": cell.key, "name": cell.name, **info, **measured}
  rundir.write_json(wd / "cell.json", info)
  return results


def run_study(
  study_path: str | Path, out: str | Path, scale: str, only: str = ""
) -> list[grid.Cell]:
  """Run every unfinished cell of the study (those whose key contains ``only``), then write
  the report. A SIGTERM stops the study with exit code 1; the same command resumes it."""
  study = grid.load_study(study_path, scale)
  out = Path(out)
  cells = [c for c in grid.expand(study) if only in c.key]
  print(f"study {study['name']} ({scale}): {len(cells)} cells -> {out}", flush=True)
  plan = grid.Planner(study)
  t0 = time.perf_counter()
  for n, cell in enumerate(cells, start=1):
    head = f"[{n}/{len(cells)}] {cell.key}"
    wd = cell.workdir(out)
    have = read_cell(wd) or {}
    if (wd / "results.json").exists() and all(k in have for k in report.MEASURED):
      print(f"{head}: done, skipped", flush=True)
      continue
    t1 = time.perf_counter()
    results = run_cell(plan, cell, out)
    if results is None:  # preempted: stop the study, rerun resumes
      print("stopped by SIGTERM; rerun the same command to resume", flush=True)
      sys.exit(1)
    print(
      f"{head}: {fmt_metrics(results)} "
      f"({time.perf_counter() - t1:.0f}s, total {time.perf_counter() - t0:.0f}s)",
      flush=True,
    )
  report.write_report(study, out)
  return cells


def fmt_metrics(results: Mapping[str, Any]) -> str:
  test = results["best"]["test"]
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(test.items()) if isinstance(v, float))
