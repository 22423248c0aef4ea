"""Running a study: train each cell with the ordinary trainer, then measure the trained model.

Each cell's ``cell.json`` holds everything the report needs besides results.json::

  cell              task, mixer, window, rule, seed        key, name   its run directory
  budget            rule, target, achieved                  model       the sized model section
  costs             params, params_non_embedding, encoder_forward_flops_per_token,
                    forward_flops_per_token, train_flops_per_token, seq_len  (``Run.costs``)
  receptive_field   per layer: measured and analytic field of the trained model (first seed:
                    every architecture once; [] in the other seeds' cells)
  receptive_field_init  the same for the freshly initialised model (the architecture's field,
                    which the report checks against the analytic one)
  kernels           per tested layer: effective kernels on a validation input (content.py);
                    [] outside the content tasks' middle size (``grid.measures_kernels``)
  xla               (first seed, middle size) the tested mixers' executed analytic FLOPs
                    and XLA's count of their compiled forward, for the report's 15% check
  diverged          instead of the measurements: the trainer's message, for a run whose
                    loss became NaN (a learning rate too high; the sweep counts it worst)

A study with ``lrs`` runs in two phases: the sweep cells (every rate at each sweep seed),
then (each arm's rate chosen on the mean validation by ``lrm.study.sweep`` and written to
``lr_sweep.json``) every other cell.

A cell whose results.json exists is not trained again; one whose cell.json lacks any of these
(written by an older lrm) is measured again, which takes seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.analysis import content, cost, counting
from lrm.analysis import receptive_field as rf
from lrm.run import Run
from lrm.study import extend, grid, provenance, report, sweep
from lrm.train import loop, rundir

RF_LENGTH = 256  # the receptive field is measured on at most this many tokens
KERNEL_LENGTH = 128  # effective kernels: on the first tokens of one validation example


def content_tasks(study: Mapping[str, Any]) -> list[str]:
  """The tasks of the content panel (``content["tasks"]``, or its one ``task``)."""
  content = study.get("content") or {}
  return list(content.get("tasks") or ([content["task"]] if "task" in content else []))


def measures_kernels(study: Mapping[str, Any], cell: grid.Cell) -> bool:
  """Effective kernels are measured on the content tasks, at the middle size (every seed):
  seconds per cell, so not at every size. Studies without a ``content`` entry: every cell."""
  if not study.get("content"):
    return True
  size = grid.middle_size(study, cell.task)
  return cell.task in content_tasks(study) and (size is None or cell.size == size)


def kernel_radius(study: Mapping[str, Any], cell: grid.Cell) -> int:
  """Offsets ±radius of the effective kernels measured in a cell: the study's ``content``
  radius on its task, else twice the window (the reference's for window-free presets)."""
  t, content = study["tasks"][cell.task], study.get("content") or {}
  ours = cell.task in content_tasks(study)
  if ours and "radius" in content:
    return int(content["radius"])
  window = cell.window or (content.get("window") if ours else None) or t["reference"].get("window")
  return 2 * int(window or min(t.get("windows") or [1]))


def xla_check(encoder: Any, length: int, layers: list[int]) -> dict[str, float]:
  """The tested layers' mixers: their analytic executed forward FLOPs (``flops``) beside XLA's
  count of their compiled forward, on one sequence of ``length`` tokens."""
  analytic = counted = 0.0
  for layer in layers:
    mixer = encoder.blocks[layer].mixer
    graphdef, state = nnx.split(mixer)
    x = jnp.ones((1, length, mixer.dim), jnp.float32)
    counted += counting.xla_flops(lambda s, x, g=graphdef: nnx.merge(g, s)(x), state, x)
    analytic += float(mixer.flops(length))
  return {"length": length, "analytic": analytic, "xla": counted, "ratio": analytic / counted}


def measure(
  workdir: Path, mixer: str, radius: int | None, xla: bool = False, field: bool = True
) -> dict[str, Any]:
  """Costs, measured receptive field and effective kernels (offsets ±``radius``) of the
  layers built from preset ``mixer``, for the run's best checkpoint (and ``xla_check``)."""
  r = Run.from_workdir(workdir)
  layers = grid.tested_layers(r.plain["model"], mixer)
  encoder = rf.build_encoder_for_measurement(r.load_model("best"))
  length = min(r.task.seq_len, RF_LENGTH)
  at = length - 1 if encoder.causal else length // 2
  fields = rf.measure(encoder, length, at) if field else []
  # the architecture's field: a trained attention layer that learnt to look nearby has
  # gradients below the threshold (1e-5 of the largest) far away; a fresh one does not
  fresh = rf.build_encoder_for_measurement(r.build_model()) if field else None
  init_fields = rf.measure(fresh, length, at) if field else []
  batch = next(r.task.dataset("validation").eval_batches(1))
  inputs = batch["inputs"] if "inputs" in batch else batch["inputs1"]  # dual encoder: the first
  tokens = np.asarray(inputs[:, :KERNEL_LENGTH], np.int32)  # [1, L]
  kernels = []
  for layer in layers if radius is not None else []:  # None: not measured in this cell
    ek = content.layer_kernels(encoder, tokens, layer, radius)
    mixer = getattr(encoder.blocks[layer].mixer, "registered_name", "?")
    kernels.append({"layer": layer, "mixer": mixer, "radius": radius, **ek.to_dict()})
  levels = r.task.reference_levels()  # chance lines of the report
  pairs = (getattr(r.task, "opts", None) or {}).get("num_pairs")
  if pairs and "accuracy" in levels:  # recall: a guess among the context's values
    levels["accuracy"].setdefault("context_guess", 1.0 / pairs)
  out = {
    "reference_levels": levels,
    "costs": r.costs(),
    "receptive_field": [f.to_dict() for f in fields],
    "receptive_field_init": [f.to_dict() for f in init_fields],
    "kernels": kernels,
  }
  if xla:
    out["xla"] = xla_check(encoder, min(r.task.seq_len, RF_LENGTH), layers)
  return out


def read_cell(workdir: Path) -> dict[str, Any] | None:
  """The cell's cell.json, or None if it is missing or does not parse."""
  try:
    return json.loads((workdir / "cell.json").read_text())
  except (OSError, ValueError):
    return None


def run_cell(plan: grid.Planner, cell: grid.Cell, out: Path) -> dict[str, Any] | None:
  """Train (or resume) one cell and write its cell.json; results (``{}`` if the run
  diverged), or None on SIGTERM."""
  wd = cell.workdir(out)
  old = read_cell(wd)
  radius = kernel_radius(plan.study, cell) if measures_kernels(plan.study, cell) else None
  first = cell.seed == plan.study["seeds"][0]  # the field: one seed per architecture
  xla = first and cell.size == grid.middle_size(plan.study, cell.task)
  if (wd / "results.json").exists() and old is not None and "budget" in old:
    results = json.loads((wd / "results.json").read_text())  # trained: only measure again
    try:
      measured = measure(wd, cell.mixer, radius, xla, first)
    except (OSError, KeyError, ValueError) as e:  # a run this lrm cannot rebuild: keep its file
      print(f"{cell.key}: cell.json kept as it was; measuring failed: {e}", flush=True)
      return results
    info = {k: v for k, v in old.items() if k not in report.OLD_COSTS}
  else:
    cfg, match = plan.config(cell)
    budget = {"rule": match.rule, "target": match.target, "achieved": match.achieved}
    info = {"budget": budget, "model": match.model}
    try:
      results = loop.run(cfg, wd)  # a finished run returns its results without training
    except loop.Diverged as e:
      diverged = {"cell": cell.to_dict(), "key": cell.key, "name": cell.name, **info}
      rundir.write_json(wd / "cell.json", {**diverged, "diverged": str(e)})
      return {}
    if results is None:
      return None
    measured = measure(wd, cell.mixer, radius, xla, first)
  info = {"cell": cell.to_dict(), "key": cell.key, "name": cell.name, **info, **measured}
  info.setdefault("design", provenance.design_hash(plan.study))  # trained under this design
  info.setdefault("code", provenance.code_version())
  rundir.write_json(wd / "cell.json", info)
  return results


def finished(wd: Path, first_seed: bool = False) -> bool:
  """A cell measured by this lrm, or one that diverged (both are skipped on a rerun). A
  first-seed cell also needs the field at initialisation (older cells are measured again,
  without training)."""
  have = read_cell(wd) or {}
  if have.get("diverged"):
    return True
  need = [*report.MEASURED, *(["receptive_field_init"] if first_seed else [])]
  return (wd / "results.json").exists() and all(k in have for k in need)


def run_cells(plan: grid.Planner, cells: list[grid.Cell], out: Path, t0: float) -> None:
  """Run the unfinished ``cells``; a SIGTERM raises ``rundir.Interrupted`` (exit code 143)."""
  for n, cell in enumerate(cells, start=1):
    head = f"[{n}/{len(cells)}] {cell.key}"
    if finished(cell.workdir(out), cell.seed == plan.study["seeds"][0]):
      print(f"{head}: done, skipped", flush=True)
      continue
    t1 = time.perf_counter()
    results = run_cell(plan, cell, out)
    if results is None:  # preempted: stop the study, rerun resumes
      raise rundir.Interrupted("stopped by SIGTERM")
    print(
      f"{head}: {fmt_metrics(results) if results else 'diverged'} "
      f"({time.perf_counter() - t1:.0f}s, total {time.perf_counter() - t0:.0f}s)",
      flush=True,
    )


def choose_rates(
  plan: grid.Planner, out: Path, extra: dict[tuple, list[float]] | None = None
) -> dict[tuple, float]:
  """Read the sweep cells (with the ``extra`` rates of ``lrm.study.extend``), write
  lr_sweep.json (each arm's rate chosen on the mean validation over the sweep seeds, and where
  it lies: ``extend.position``), and return ``{arm: chosen rate}`` for the arms whose sweep has
  finished."""
  by_arm: dict[tuple, dict[float, dict[int, Path]]] = {}
  for c in grid.sweep_cells(plan.study, extra):
    key = sweep.rate_key(plan.study, c.task, c.mixer, c.window, c.size)
    by_arm.setdefault(key, {}).setdefault(c.lr, {})[c.seed] = c.workdir(out)
  arms = []
  for key, wds in by_arm.items():
    task, mixer, window, size = key
    cfg = grid.base_config(plan.study, task, window)
    mode = plan.task(task, cfg).main_mode
    arm = sweep.read_arm(wds, task, mixer, window, mode, size)
    record = arm.to_dict()
    arm.edge = extend.edge(record)
    arm.position = extend.position(plan.study, record, (extra or {}).get(key, []))
    arms.append(arm)
  if arms:
    sweep.write(arms, out)
  return sweep.chosen([a.to_dict() for a in arms])


def wait_for(cells: list[grid.Cell], plan: grid.Planner, out: Path, poll_s: float = 10.0) -> None:
  """Block until every one of ``cells`` has finished (run by other shards of the study)."""
  first = plan.study["seeds"][0]
  said = False
  while left := [c for c in cells if not finished(c.workdir(out), c.seed == first)]:
    if not said:
      print(f"waiting for {len(left)} sweep cells of other shards", flush=True)
      said = True
    time.sleep(poll_s)


def run_study(
  study_path: str | Path,
  out: str | Path,
  scale: str,
  only: str = "",
  price: cost.Price | None = None,
  shard: tuple[int, int] = (0, 1),
) -> list[grid.Cell]:
  """Run every unfinished cell of the study (those whose key contains ``only``), then write
  the report (dollars at ``price``, default the study's): the learning-rate sweep first (at
  each of ``sweep_seeds``; extended while an arm's best rate is its highest, or its lowest
  with ``down``, with ``lr_extend``), then every other cell at its arm's chosen rate. A
  SIGTERM stops the study (``rundir.Interrupted``); the same command resumes it.

  ``shard=(i, n)`` runs every n-th cell from the i-th, so n processes (each with its own
  ``shard``, same ``out``) share the grid; each waits for the whole sweep before the rest.
  Every run directory still has one writer: no two shards hold the same cell."""
  i, n = shard
  if not 0 <= i < n:
    raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
  study = grid.load_study(study_path, scale)
  out = Path(out)
  plan = grid.Planner(study)
  t0 = time.perf_counter()
  tag = f" shard {i}/{n}" if n > 1 else ""
  extra, ran = extend.load(out), set()
  while True:  # the sweep, then its extensions (lrm.study.extend), if any
    all_sweep = [c for c in grid.sweep_cells(study, extra) if only in c.key]
    sweep_cells = [c for c in all_sweep if c.key not in ran][i::n]
    ran |= {c.key for c in all_sweep}
    if sweep_cells:
      print(f"study {study['name']} ({scale}){tag}: sweep of {len(sweep_cells)} cells -> {out}")
      run_cells(plan, sweep_cells, out, t0)
    wait_for(all_sweep, plan, out)
    chosen = choose_rates(plan, out, extra)
    more = extend.propose(study, sweep.load(out), extra)
    if more == extra:
      break
    extra = more
    extend.write(out, extra)
  cells = [c for c in grid.expand(study, chosen, extra) if only in c.key]
  rest = [c for c in cells if c.key not in {s.key for s in all_sweep}][i::n]
  print(f"study {study['name']} ({scale}){tag}: {len(rest)} more cells -> {out}", flush=True)
  run_cells(plan, rest, out, t0)
  report.write_report(study, out, price)
  return cells


def fmt_metrics(results: Mapping[str, Any]) -> str:
  test = results["best"]["test"]
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(test.items()) if isinstance(v, float))
